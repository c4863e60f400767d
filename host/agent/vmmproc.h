/* The VMM's process, and its stop command's: started with a minimal
 * environment and no fd of ours but its stdio, watched until it exits,
 * killed with its process group.
 *
 * The environment holds from ours only what a VMM needs: PATH to find its
 * helpers (a default one when we have none), TZ for its log, where a
 * display or sound server is (--gpu, --virtio-snd: XDG_RUNTIME_DIR,
 * WAYLAND_DISPLAY, DISPLAY, PULSE_SERVER), RUST_BACKTRACE, and what
 * --vmm-env adds (NAME, or PREFIX* for every variable starting with
 * PREFIX). Nothing of systemd's hand-over to us (NOTIFY_SOCKET, LISTEN_*,
 * WATCHDOG_*: READY=1 and the watchdog are ours); JOURNAL_STREAM only when
 * its stderr is a journal stream, naming that stream. crosvm's log level
 * is its --log-level.
 *
 * Its stderr, when the caller wants it logged, goes to the journal (a
 * stream of its own, tagged <vmm>-<vm>) when JOURNAL_STREAM says ours is
 * the journal, else through a pipe whose lines we log as "<vmm>: …",
 * control characters escaped: what a VMM prints may quote its guest. */
#pragma once

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "log.h"
#include "util.h"

/* How many --vmm-env patterns. */
#define VMM_ENV_EXTRA_MAX 32u
/* The VMM's PATH when we have none. */
#define VMM_ENV_DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
/* A line of the VMM's stderr longer than this is passed on in pieces. */
#define VMM_LINE_MAX 1024u

typedef struct VmmProc VmmProc;

typedef struct VmmProcSpec {
    char **argv;                  /* argv[0] is looked up in our PATH (the one it gets) */
    const char *name;             /* the VMM's: "crosvm" */
    const char *vm_name;          /* with name, the journal stream's tag */
    int in, out;                  /* its stdin and stdout, or -1: ours */
    bool log_stderr;              /* its stderr to the journal or our log; else ours */
    bool own_group;               /* a session and process group of its own (setsid) */
    const char *const *env_extra; /* --vmm-env patterns */
    size_t n_env_extra;
} VmmProcSpec;

/* Called once the process has exited. It is not reaped yet during the
 * call: its pid, and so its process group's id, cannot be reused. The
 * VmmProc may be freed from the callback. */
typedef void (*VmmProcExitFn)(void *userdata, const siginfo_t *si);

/* Forks and execs spec->argv: a clean signal state, the environment
 * above, every fd of ours closed (close-on-exec or not) but the stdio it
 * is given. Watched through sd-event (SIGCHLD must be blocked). On
 * failure nothing is left running, and err says what failed ("fork: …"). */
int vmm_proc_spawn(sd_event *e, const VmmProcSpec *spec, VmmProcExitFn on_exit, void *userdata,
                   VmmProc **ret, ErrorText *err);
pid_t vmm_proc_pid(const VmmProc *p);
/* The context of records about the process: no prefix, its pid as the
 * journal field QUBES_LITE_PID (its stderr's relayed lines carry it). */
const LogContext *vmm_proc_log(const VmmProc *p);
bool vmm_proc_own_group(const VmmProc *p);
/* SIGKILL to its whole process group when it leads one (a VMM's device
 * and jail processes hold the TAP, vfio devices and disks), else to it. */
int vmm_proc_kill(const VmmProc *p);
/* After its exit: logs what its stderr still holds, without waiting for
 * processes of its that may still hold the pipe. */
void vmm_proc_drain(VmmProc *p);
/* Leaving, after vmm_proc_kill(): reaps it (without blocking unless
 * `block`). */
void vmm_proc_reap(VmmProc *p, bool block);
/* Stops watching; neither kills nor reaps. NULL is fine. */
void vmm_proc_free(VmmProc *p);

/* The environment above, from `from` (our environ): a NULL-terminated
 * array to free with strv_free(). journal_fd >= 0 is the journal
 * stream that will be its stderr (JOURNAL_STREAM names it); -1 for none. */
int vmm_environ(char *const *from, const char *const *extra, size_t n_extra, int journal_fd,
                char ***ret);
