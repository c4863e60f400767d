/* The VM's lifecycle (lifecycle.h).
 *
 * Starting (lifecycle_start) is one step per function, in this order: the
 * vfio check, the VMM's command line, the runtime directory, the control
 * socket, the serial console (not with --foreground), the VMM's process,
 * then the wait for the guest agent: a probe (Ping) with a backoff until
 * it answers, bounded by --guest-timeout from the VMM's start (then the VM
 * is stopped: "the guest agent never answered within N s"). A step that
 * fails says why in one line, "cannot start VM 'x': …", and undoes what
 * the earlier ones made: a later start begins afresh.
 *
 * Stopping (lifecycle_stop) goes through phases, each bounded by its
 * timeout, until the VMM exits: Shutdown to the guest agent
 * (--shutdown-timeout; skipped before the guest agent answered, or with
 * --shutdown-timeout 0), the VMM's stop command (--stop-timeout; one
 * still running at the end of its step is killed with its process group),
 * SIGKILL to the VMM's process group (--kill-timeout; a VMM still there
 * after that is given up on and the host agent exits 1). The step during
 * which the VMM exited is HostStopped's method.
 *
 * When the VMM exits, for whatever reason: what it left in its process
 * group is killed, its last stderr and console output are read, the
 * clients are told (LifecycleEvents.exited), the console and control
 * sockets go; then either the VM is started again for clients that want
 * it (at most once each, not after a failed start, not while the host
 * agent exits), or the host agent exits: 0, so that its systemd socket
 * starts a fresh one for the next client, or with --foreground the VMM's
 * status (128+N for signal N). */
#include "lifecycle.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>

#include "console.h"
#include "guestcall.h"
#include "host/common/paths.h"
#include "log.h"
#include "secret.h"
#include "tap.h"
#include "vfio.h"

typedef enum StopPhase {
    STOP_PHASE_NONE,
    STOP_PHASE_SHUTDOWN, /* the guest agent was asked to power off */
    STOP_PHASE_VMM_STOP, /* the VMM's stop command, or its stop steps (VmmOps.run_stop) */
    STOP_PHASE_KILL,     /* SIGKILL */
} StopPhase;

struct Lifecycle {
    Agent *agent;
    const LifecycleEvents *events;
    void *userdata;
    VmState state;
    VmmProc *vmm; /* while it runs */
    uint64_t vmm_start;
    Console *console;
    char *control_path;
    /* Waiting for the guest agent's first answer. */
    GuestCall *probe;
    sd_event_source *probe_timer;
    sd_event_source *start_timer; /* --guest-timeout from the VMM's start */
    uint64_t probe_backoff;
    /* Stopping it. */
    StopPhase stop_phase;
    uint64_t stop_start;
    sd_event_source *stop_timer;
    VmmProc *stop_cmd;  /* the VMM's stop command while it runs */
    unsigned stop_step; /* which of VmmOps.stop_steps */
    VmmRun *run;        /* what runs beside the VMM (VmmOps.run_new) */
    GuestCall *shutdown_call;
    bool vmm_unkillable; /* still there after SIGKILL and --kill-timeout */
    bool tap_created;    /* hostNetworking's TAP is ours to remove (tap.c) */
    char *secret_path;   /* the VM's secret while the VM has one (secret.h) */
};

int lifecycle_new(Agent *a, const LifecycleEvents *events, void *userdata, Lifecycle **ret) {
    Lifecycle *l = calloc(1, sizeof(*l));
    if (!l) {
        return -ENOMEM;
    }
    *l = (Lifecycle){.agent = a, .events = events, .userdata = userdata, .state = VM_STOPPED};
    *ret = l;
    return 0;
}

VmState lifecycle_state(const Lifecycle *l) {
    return l->state;
}

bool lifecycle_up(const Lifecycle *l) {
    return l->state == VM_STARTING || l->state == VM_RUNNING;
}

uint64_t lifecycle_started_at(const Lifecycle *l) {
    return l->vmm_start;
}

bool lifecycle_killing(const Lifecycle *l) {
    return l->stop_phase == STOP_PHASE_KILL;
}

/* ---- waiting for the guest agent ------------------------------------------- */

static void probe(Lifecycle *l);

static int on_probe_timer(sd_event_source *s, uint64_t usec, void *userdata) {
    Lifecycle *l = userdata;
    if (l->state == VM_STARTING && !l->probe) {
        probe(l);
    }
    return 0;
}

/* The guest agent did not answer (r): try again after a backoff, as long
 * as the VM is starting. */
static void probe_retry(Lifecycle *l, int r) {
    Agent *a = l->agent;

    log_debug("VM '%s': guest agent at %s not answering yet: %s", a->vm_name, a->guest_str,
              strerror(-r));
    l->probe_backoff = l->probe_backoff ? MIN(l->probe_backoff * 2, GUEST_BACKOFF_MAX_USEC)
                                        : GUEST_BACKOFF_MIN_USEC;
    r = agent_timer_in(a, &l->probe_timer, l->probe_backoff, on_probe_timer, l);
    if (r < 0) {
        log_error_errno(r, "Cannot schedule a probe of the guest agent: %m");
    }
}

static void probe_stop(Lifecycle *l) {
    guest_call_free(TAKE_PTR(l->probe));
    agent_timer_off(l->probe_timer);
}

/* The first answer: the VM runs. READY=1 (once), and the clients that
 * waited for the start are served. */
static void vm_answered(Lifecycle *l) {
    Agent *a = l->agent;
    uint64_t now = now_mono();

    l->state = VM_RUNNING;
    probe_stop(l);
    log_info("VM '%s': the guest agent answered after %" PRIu64 " ms", a->vm_name,
             (now - l->vmm_start) / 1000);
    agent_ready(a, "VM %s running", a->vm_name);
    l->events->running(l->userdata);
}

static void on_probe_done(GuestCall *call, int r, const Msg *reply, void *userdata) {
    Lifecycle *l = userdata;

    guest_call_free(TAKE_PTR(l->probe));
    if (l->state != VM_STARTING) {
        return;
    }
    if (r == 0) {
        vm_answered(l);
        return;
    }
    probe_retry(l, r);
}

static void probe(Lifecycle *l) {
    Agent *a = l->agent;
    int r = guest_call_start(a->event, &a->guest, agent_secret(a), MSG_PING, PROBE_TIMEOUT_USEC,
                             on_probe_done, l, &l->probe);
    if (r < 0) {
        probe_retry(l, r);
    }
}

/* A VM whose guest agent does not answer within --guest-timeout of the
 * VMM's start is stopped, rather than left starting for ever. */
static int on_start_timer(sd_event_source *s, uint64_t usec, void *userdata) {
    Lifecycle *l = userdata;
    Agent *a = l->agent;
    char why[128];

    if (l->state != VM_STARTING) {
        return 0;
    }
    snprintf(why, sizeof(why), "the guest agent never answered within %" PRIu64 " s",
             a->guest_timeout / USEC_PER_SEC);
    log_warning("VM '%s': %s, stopping it", a->vm_name, why);
    lifecycle_stop(l, why);
    return 0;
}

/* ---- starting it ------------------------------------------------------------ */

static void on_vmm_exit(void *userdata, const siginfo_t *si);

/* The one writer of start failures: "cannot start VM 'x': <detail>" into
 * err (what waiting clients get in Error(UNAVAILABLE)) and the log. */
_printf_(4, 5) static int start_failed(Lifecycle *l, ErrorText *err, int r, const char *fmt, ...) {
    char detail[ERROR_TEXT_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    error_set(err, r, "cannot start VM '%s': %s", l->agent->vm_name, detail);
    return log_error_errno(r, "%s", err->message);
}

/* Every PCI device of the VM is bound to vfio-pci with its whole IOMMU
 * group (vfio.c). */
static int start_check_vfio(Lifecycle *l, ErrorText *err) {
    ErrorText verr;
    int r = vfio_check_vm(l->agent->vm, &verr);
    return r < 0 ? start_failed(l, err, r, "%s", verr.message) : 0;
}

/* The VMM's command line (VmmOps): fails when the configuration lacks
 * what it needs (a kernel). */
static int start_argv(Lifecycle *l, char ***ret_argv, ErrorText *err) {
    Agent *a = l->agent;
    ErrorText cerr;
    int r = a->vmm->argv(a->host, a->vm, ret_argv, &cerr);
    return r < 0 ? start_failed(l, err, r, "%s", cerr.message) : 0;
}

/* The runtime directory holds the console and control sockets: checked
 * before every start, in every mode (socket-activated too, where nothing
 * else looked at it). */
static int start_check_runtime_dir(Lifecycle *l, ErrorText *err) {
    ErrorText derr;
    int r = agent_runtime_dir_check(config_runtime_dir(), &derr);
    return r < 0 ? start_failed(l, err, r, "%s", derr.message) : 0;
}

/* A fresh secret for every start of the VM, in the checked runtime
 * directory, for the VMM's fw_cfg (secret.h). */
static int start_secret(Lifecycle *l, ErrorText *err) {
    Agent *a = l->agent;
    free(l->secret_path);
    l->secret_path = vm_secret_path(a->vm_name);
    if (!l->secret_path) {
        return start_failed(l, err, -ENOMEM, "out of memory");
    }
    int r = vm_secret_create(l->secret_path, a->secret);
    if (r < 0) {
        free(TAKE_PTR(l->secret_path));
        return start_failed(l, err, r, "cannot create the VM's secret: %s", strerror(-r));
    }
    a->have_secret = true;
    return 0;
}

static void remove_secret(Lifecycle *l) {
    vm_secret_remove(l->secret_path);
    free(TAKE_PTR(l->secret_path));
}

/* hostNetworking: the TAP vm-<name> the VMM opens by name, with the
 * host's address of the VM's /31, owned by the configured user. One the
 * system made is used as it is; one we make is removed once the VMM has
 * exited for good (tap.c). */
static int start_tap(Lifecycle *l, ErrorText *err) {
    Agent *a = l->agent;
    ConfigAddresses ad;
    ErrorText terr;
    bool user = a->host && a->host->user, created = false;

    if (!a->vm->host_networking) {
        return 0;
    }
    int r = config_vm_host_link_check(a->host, a->vm, &terr);
    if (r < 0) {
        return start_failed(l, err, r, "%s", terr.message);
    }
    config_vm_addresses(a->host, a->vm, &ad);
    r = tap_ensure(a->vm->tap_name, user ? a->host->user_uid : (uid_t)-1,
                   user ? a->host->user_gid : (gid_t)-1, ad.host_ip, ad.prefix, &created, &terr);
    if (r < 0) {
        return start_failed(l, err, r, "%s", terr.message);
    }
    l->tap_created = l->tap_created || created;
    return 0;
}

/* The TAP goes when the VM has stopped for good, and only ours. */
static void remove_tap(Lifecycle *l) {
    ErrorText terr;

    if (!l->tap_created) {
        return;
    }
    int r = tap_remove(l->agent->vm->tap_name, &terr);
    if (r < 0) {
        log_warning("VM '%s': %s", l->agent->vm_name, terr.message);
    }
    l->tap_created = false;
}

/* The VMM's control socket: one left by a VMM that did not clean up is
 * removed; one that answers belongs to a VMM we do not know of. */
static int start_control_socket(Lifecycle *l, ErrorText *err) {
    Agent *a = l->agent;

    free(l->control_path);
    l->control_path = a->vmm->control_socket(a->vm);
    if (!l->control_path) {
        return start_failed(l, err, -ENOMEM, "out of memory");
    }
    int r = addr_unix_remove_stale(l->control_path);
    if (r < 0) {
        return start_failed(l, err, r, "%s: %s", l->control_path,
                            r == -EADDRINUSE ? "another VMM listens on it" : strerror(-r));
    }
    return 0;
}

/* Something the VM cannot run without failed (VmmRunContext.failed). */
static void on_run_failed(void *userdata, const char *message) {
    Lifecycle *l = userdata;
    lifecycle_stop(l, message);
}

/* What runs beside the VMM and must be there before it starts
 * (VmmOps.run_new: qemu's virtiofsd and vsock device). */
static int start_run(Lifecycle *l, ErrorText *err) {
    Agent *a = l->agent;
    ErrorText rerr;

    if (!a->vmm->run_new) {
        return 0;
    }
    VmmRunContext ctx = {
        .event = a->event,
        .host = a->host,
        .vm = a->vm,
        .env_extra = a->vmm_env,
        .n_env_extra = a->n_vmm_env,
        .failed = on_run_failed,
        .userdata = l,
    };
    int r = a->vmm->run_new(&ctx, &l->run, &rerr);
    return r < 0 ? start_failed(l, err, r, "%s", rerr.message) : 0;
}

static void run_free(Lifecycle *l) {
    if (l->run) {
        l->agent->vmm->run_free(TAKE_PTR(l->run));
    }
}

/* Somebody at the serial console is using the VM as much as a command
 * is: the clients' side counts a lease. */
static void on_console_attach(void *userdata, bool attached) {
    Lifecycle *l = userdata;
    l->events->console(l->userdata, attached);
}

/* The serial console: a fresh pty whose slave (*ret_slave) is the VMM's
 * stdin and stdout, relayed on RUNTIME_DIR/<vm>.console (console.c),
 * owned by the configured user like the command socket. */
static int start_console(Lifecycle *l, int *ret_slave, ErrorText *err) {
    Agent *a = l->agent;
    _cleanup_close_ int master = -EBADF, slave = -EBADF;
    _cleanup_free_ char *path = NULL;
    bool user = a->host && a->host->user;
    int r;

    r = console_open_pty(&master, &slave);
    if (r < 0) {
        return start_failed(l, err, r, "no pty for its console: %s", strerror(-r));
    }
    if (!(path = config_vm_runtime_file(a->vm_name, CONFIG_RUNTIME_CONSOLE))) {
        return start_failed(l, err, -ENOMEM, "out of memory");
    }
    r = console_new(a->event, a->vm_name, TAKE_FD(master), path,
                    user ? a->host->user_uid : (uid_t)-1, user ? a->host->user_gid : (gid_t)-1,
                    &l->console);
    if (r < 0) {
        return start_failed(l, err, r, "cannot serve its console on %s: %s", path,
                            r == -EADDRINUSE ? "another process listens there" : strerror(-r));
    }
    console_set_attach_cb(l->console, on_console_attach, l);
    *ret_slave = TAKE_FD(slave);
    return 0;
}

/* The VMM's process (vmmproc.c): the console pty as its stdin and stdout,
 * its stderr logged, a process group of its own; with --foreground our
 * stdio and our process group. */
static int start_vmm(Lifecycle *l, char **argv, int console_fd, ErrorText *err) {
    Agent *a = l->agent;
    VmmProcSpec spec = {
        .argv = argv,
        .name = a->vmm->name,
        .vm_name = a->vm_name,
        .in = console_fd,
        .out = console_fd,
        .log_stderr = !a->foreground,
        .own_group = !a->foreground,
        .env_extra = a->vmm_env,
        .n_env_extra = a->n_vmm_env,
    };
    ErrorText perr;
    int r = vmm_proc_spawn(a->event, &spec, on_vmm_exit, l, &l->vmm, &perr);
    if (r < 0) {
        return start_failed(l, err, r, "%s", perr.message);
    }
    l->vmm_start = now_mono();
    l->state = VM_STARTING;
    log_ctx_info(vmm_proc_log(l->vmm),
                 "VM '%s': started %s (pid %d), waiting for the guest agent at %s", a->vm_name,
                 argv[0], (int)vmm_proc_pid(l->vmm), a->guest_str);
    (void)sd_notifyf(0, "STATUS=Starting VM %s", a->vm_name);
    return 0;
}

/* The start is bounded by --guest-timeout; the probing begins. */
static void start_wait_guest(Lifecycle *l) {
    Agent *a = l->agent;
    int r = agent_timer_at(a, &l->start_timer, l->vmm_start + a->guest_timeout, on_start_timer, l);
    if (r < 0) {
        log_error_errno(r, "Cannot bound the start of VM '%s': %m", a->vm_name);
    }
    l->probe_backoff = 0;
    probe(l);
}

/* The steps in order; the console only without --foreground (then the
 * serial console is our terminal). */
int lifecycle_reload_config(Lifecycle *l, ErrorText *err) {
    Agent *a = l->agent;
    _cleanup_(vm_config_freep) VmConfig *vm = NULL;
    _cleanup_(host_config_freep) HostConfig *host = NULL;

    if (lifecycle_up(l)) {
        return -EBUSY;
    }
    int r = config_load_vm(config_dir(), a->vm_name, &vm, err);
    if (r == -ENOENT) {
        return error_set(err, r, "%s/vms/%s.json: no longer exists", config_dir(), a->vm_name);
    }
    if (r >= 0) {
        r = config_load_host(config_dir(), &host, err);
    }
    if (r < 0 && r != -ENOENT) {
        return r;
    }
    /* The guest agent's address derived from the id (no --guest) follows
     * it: the id is the VM's vsock CID. */
    if (a->guest.family == AF_VSOCK && a->guest.vm.svm_cid == a->vm->id && vm->id != a->vm->id) {
        a->guest.vm.svm_cid = vm->id;
        addr_format(&a->guest, a->guest_str, sizeof(a->guest_str));
    }
    vm_config_free(a->vm);
    host_config_free(a->host);
    a->vm = TAKE_PTR(vm);
    a->host = TAKE_PTR(host);
    return 0;
}

int lifecycle_start(Lifecycle *l, ErrorText *err) {
    Agent *a = l->agent;
    _cleanup_strv_free_ char **argv = NULL;
    _cleanup_close_ int console_fd = -EBADF;
    int r;

    /* What the administrator last wrote, not what we read at our start. */
    r = lifecycle_reload_config(l, err);
    if (r >= 0) {
        r = start_check_vfio(l, err);
    }
    if (r >= 0) {
        r = start_argv(l, &argv, err);
    }
    if (r >= 0) {
        r = start_check_runtime_dir(l, err);
    }
    if (r >= 0) {
        r = start_secret(l, err);
    }
    if (r >= 0) {
        r = start_tap(l, err);
    }
    if (r >= 0) {
        r = start_control_socket(l, err);
    }
    if (r >= 0 && !l->agent->foreground) {
        r = start_console(l, &console_fd, err);
    }
    if (r >= 0) {
        r = start_run(l, err);
    }
    if (r >= 0) {
        r = start_vmm(l, argv, console_fd, err);
    }
    if (r < 0) {
        run_free(l);
        console_free(TAKE_PTR(l->console));
        remove_tap(l);
        remove_secret(l);
        return r;
    }
    start_wait_guest(l);
    l->events->started(l->userdata);
    /* Last: what it does may stop the VM already (on_run_failed). */
    if (l->run && a->vmm->run_started) {
        a->vmm->run_started(l->run);
    }
    return 0;
}

/* ---- stopping it ------------------------------------------------------------ */

static void stop_phase(Lifecycle *l, StopPhase phase);
static bool stop_next_step(Lifecycle *l);

/* The stop command (its own session) did not finish in its time, or is
 * of no use any more: it goes, with whatever it started. */
static void kill_stop_command(Lifecycle *l, bool late) {
    if (!l->stop_cmd) {
        return;
    }
    log_ctx_full_errno(vmm_proc_log(l->stop_cmd), late ? LOG_WARNING : LOG_DEBUG, 0,
                       "VM '%s': killing %s's stop command (pid %d)", l->agent->vm_name,
                       l->agent->vmm->name, (int)vmm_proc_pid(l->stop_cmd));
    (void)vmm_proc_kill(l->stop_cmd);
}

/* SIGKILL did not end the VMM within --kill-timeout (a process stuck in
 * the kernel, say): nothing more we can do. Whoever waits is told, and
 * we exit with a failure rather than wait for ever. */
static void kill_timed_out(Lifecycle *l) {
    Agent *a = l->agent;
    char msg[192];

    snprintf(msg, sizeof(msg), "%s (pid %d) did not die after SIGKILL (%" PRIu64 " s)",
             a->vmm->name, (int)vmm_proc_pid(l->vmm), a->kill_timeout / USEC_PER_SEC);
    log_ctx_error(vmm_proc_log(l->vmm), "VM '%s': %s; giving up", a->vm_name, msg);
    (void)sd_notifyf(0, "STATUS=VM %s: %s", a->vm_name, msg);
    l->events->gave_up(l->userdata, msg);
    l->vmm_unkillable = true;
    a->exit_code = EXIT_FAILURE;
    (void)sd_event_exit(a->event, EXIT_FAILURE);
}

/* The phase's time is up: on to the next one. */
static int on_stop_timer(sd_event_source *s, uint64_t usec, void *userdata) {
    Lifecycle *l = userdata;
    Agent *a = l->agent;

    switch (l->stop_phase) {
    case STOP_PHASE_SHUTDOWN:
        log_warning("VM '%s': not powered off after %" PRIu64 " s, asking %s to stop", a->vm_name,
                    a->shutdown_timeout / USEC_PER_SEC, a->vmm->name);
        stop_phase(l, STOP_PHASE_VMM_STOP);
        break;
    case STOP_PHASE_VMM_STOP:
        if (stop_next_step(l)) {
            break;
        }
        log_warning("VM '%s': %s did not stop within %" PRIu64 " s, killing it", a->vm_name,
                    a->vmm->name, a->vmm_stop_timeout / USEC_PER_SEC);
        kill_stop_command(l, true);
        stop_phase(l, STOP_PHASE_KILL);
        break;
    case STOP_PHASE_KILL:
        kill_timed_out(l);
        break;
    default:
        break;
    }
    return 0;
}

static void stop_timer_arm(Lifecycle *l, uint64_t usec) {
    int r = agent_timer_in(l->agent, &l->stop_timer, usec, on_stop_timer, l);
    if (r < 0) {
        log_error_errno(r, "Cannot arm the stop timer: %m");
    }
}

static void on_shutdown_done(GuestCall *call, int r, const Msg *reply, void *userdata) {
    Lifecycle *l = userdata;
    Agent *a = l->agent;

    guest_call_free(TAKE_PTR(l->shutdown_call));
    if (l->stop_phase != STOP_PHASE_SHUTDOWN) {
        return;
    }
    if (r < 0) {
        log_warning("VM '%s': the guest agent did not take Shutdown (%s), asking %s to stop",
                    a->vm_name, strerror(-r), a->vmm->name);
        stop_phase(l, STOP_PHASE_VMM_STOP);
        return;
    }
    log_info("VM '%s': the guest is powering off", a->vm_name);
}

/* Phase 1: Shutdown to the guest agent, and --shutdown-timeout for the
 * VMM to exit (0: straight to phase 2). */
static void stop_by_guest(Lifecycle *l) {
    Agent *a = l->agent;

    if (a->shutdown_timeout == 0) {
        stop_phase(l, STOP_PHASE_VMM_STOP);
        return;
    }
    stop_timer_arm(l, a->shutdown_timeout);
    int r = guest_call_start(a->event, &a->guest, agent_secret(a), MSG_SHUTDOWN,
                             MIN(a->shutdown_timeout, SHUTDOWN_CALL_TIMEOUT_USEC), on_shutdown_done,
                             l, &l->shutdown_call);
    if (r < 0) {
        log_warning_errno(r, "VM '%s': cannot ask the guest agent to power off: %m", a->vm_name);
        stop_phase(l, STOP_PHASE_VMM_STOP);
    }
}

static void on_stop_command_exit(void *userdata, const siginfo_t *si) {
    Lifecycle *l = userdata;
    Agent *a = l->agent;

    vmm_proc_free(TAKE_PTR(l->stop_cmd));
    if (si->si_code != CLD_EXITED || si->si_status != 0) {
        log_warning("VM '%s': %s's stop command failed (%s %d)", a->vm_name, a->vmm->name,
                    si->si_code == CLD_EXITED ? "status" : "signal", si->si_status);
    }
}

/* The VMM's stop command, in a session of its own, with the VMM's
 * environment and /dev/null for stdin. */
static int spawn_stop_command(Lifecycle *l) {
    Agent *a = l->agent;
    _cleanup_strv_free_ char **argv = NULL;
    _cleanup_close_ int null = -EBADF;
    int r;

    r = a->vmm->stop_argv(a->vm, &argv);
    if (r < 0) {
        return r;
    }
    /* One from a run before this one, killed when its VMM exited. */
    if (l->stop_cmd) {
        vmm_proc_reap(l->stop_cmd, false);
        vmm_proc_free(TAKE_PTR(l->stop_cmd));
    }
    null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    VmmProcSpec spec = {
        .argv = argv,
        .name = a->vmm->name,
        .vm_name = a->vm_name,
        .in = null,
        .out = -1,
        .own_group = true,
        .env_extra = a->vmm_env,
        .n_env_extra = a->n_vmm_env,
    };
    r = vmm_proc_spawn(a->event, &spec, on_stop_command_exit, l, &l->stop_cmd, NULL);
    if (r < 0) {
        return r;
    }
    log_ctx_info(vmm_proc_log(l->stop_cmd), "VM '%s': running %s stop (pid %d)", a->vm_name,
                 a->vmm->name, (int)vmm_proc_pid(l->stop_cmd));
    return 0;
}

/* One of the VMM's stop steps (VmmOps.run_stop), and --stop-timeout for
 * the VMM to exit; one that cannot be asked goes on to the next at once.
 * False when there is no step left. */
static bool stop_by_step(Lifecycle *l) {
    Agent *a = l->agent;

    for (; l->run && l->stop_step < a->vmm->n_stop_steps; l->stop_step++) {
        const char *step = a->vmm->stop_steps[l->stop_step];
        int r = a->vmm->run_stop(l->run, l->stop_step);
        if (r >= 0) {
            log_info("VM '%s': asked %s to stop (%s)", a->vm_name, a->vmm->name, step);
            stop_timer_arm(l, a->vmm_stop_timeout);
            return true;
        }
        log_warning_errno(r, "VM '%s': cannot ask %s to stop (%s): %m", a->vm_name, a->vmm->name,
                          step);
    }
    return false;
}

/* The VMM's stop step's time is up: the next one, if any. */
static bool stop_next_step(Lifecycle *l) {
    Agent *a = l->agent;

    if (a->vmm->stop_argv || l->stop_step + 1 >= a->vmm->n_stop_steps) {
        return false;
    }
    log_warning("VM '%s': %s did not stop within %" PRIu64 " s after %s", a->vm_name, a->vmm->name,
                a->vmm_stop_timeout / USEC_PER_SEC, a->vmm->stop_steps[l->stop_step]);
    l->stop_step++;
    if (!stop_by_step(l)) {
        stop_phase(l, STOP_PHASE_KILL);
    }
    return true;
}

/* Phase 2: the VMM's stop command, or its stop steps one after the other,
 * each with --stop-timeout for the VMM to exit (0: straight to phase 3). */
static void stop_by_command(Lifecycle *l) {
    Agent *a = l->agent;

    guest_call_free(TAKE_PTR(l->shutdown_call));
    if (!a->vmm->stop_argv) {
        l->stop_step = 0;
        if (a->vmm_stop_timeout == 0 || !stop_by_step(l)) {
            stop_phase(l, STOP_PHASE_KILL);
        }
        return;
    }
    stop_timer_arm(l, a->vmm_stop_timeout);
    int r = spawn_stop_command(l);
    if (r < 0) {
        log_warning_errno(r, "VM '%s': cannot run %s's stop command: %m", a->vm_name, a->vmm->name);
    }
    if (a->vmm_stop_timeout == 0) {
        stop_phase(l, STOP_PHASE_KILL);
    }
}

/* Phase 3: SIGKILL to the VMM's process group, and --kill-timeout for it
 * to go. Until we reap the VMM its pid, and so its group's id, cannot be
 * reused. */
static void stop_by_kill(Lifecycle *l) {
    Agent *a = l->agent;

    if (!l->vmm) {
        return;
    }
    stop_timer_arm(l, a->kill_timeout);
    pid_t pid = vmm_proc_pid(l->vmm);
    log_ctx_warning(vmm_proc_log(l->vmm), "VM '%s': killing %s (pid %d%s)", a->vm_name,
                    a->vmm->name, (int)pid,
                    vmm_proc_own_group(l->vmm) ? " and its process group" : "");
    int r = vmm_proc_kill(l->vmm);
    if (r < 0) {
        log_ctx_error_errno(vmm_proc_log(l->vmm), r, "Cannot kill pid %d: %m", (int)pid);
    }
}

static void stop_phase(Lifecycle *l, StopPhase phase) {
    l->stop_phase = phase;
    switch (phase) {
    case STOP_PHASE_SHUTDOWN:
        stop_by_guest(l);
        break;
    case STOP_PHASE_VMM_STOP:
        stop_by_command(l);
        break;
    case STOP_PHASE_KILL:
        stop_by_kill(l);
        break;
    default:
        break;
    }
}

void lifecycle_stop(Lifecycle *l, const char *why) {
    Agent *a = l->agent;
    char msg[160];

    if (!lifecycle_up(l)) {
        return;
    }
    log_info("VM '%s': stopping (%s)", a->vm_name, why);
    (void)sd_notifyf(0, "STATUS=Stopping VM %s", a->vm_name);
    bool was_running = l->state == VM_RUNNING;
    l->state = VM_STOPPING;
    l->stop_start = now_mono();
    probe_stop(l);
    snprintf(msg, sizeof(msg), "VM '%s' is stopping (%s)", a->vm_name, why);
    l->events->stopping(l->userdata, msg);
    /* Before it answered, the guest agent cannot take Shutdown. */
    stop_phase(l, was_running ? STOP_PHASE_SHUTDOWN : STOP_PHASE_VMM_STOP);
}

void lifecycle_kill(Lifecycle *l) {
    stop_phase(l, STOP_PHASE_KILL);
}

/* ---- the VMM's exit --------------------------------------------------------- */

/* "crosvm exited with status N" or "crosvm was killed by signal N
 * (name)" into how; returns the status --foreground passes on. */
static int exit_how(const Lifecycle *l, const siginfo_t *si, char *how, size_t size) {
    const char *name = l->agent->vmm->name;

    if (si->si_code == CLD_EXITED) {
        snprintf(how, size, "%s exited with status %d", name, si->si_status);
        return si->si_status;
    }
    snprintf(how, size, "%s was killed by signal %d (%s)", name, si->si_status,
             strsignal(si->si_status));
    return 128 + si->si_status;
}

/* The stop phase during which it exited. */
static StopMethod exit_method(const Lifecycle *l) {
    switch (l->stop_phase) {
    case STOP_PHASE_KILL:
        return STOP_KILLED;
    case STOP_PHASE_VMM_STOP:
        return STOP_VMM_STOP;
    default:
        return STOP_GUEST_POWEROFF;
    }
}

static void exit_log(const Lifecycle *l, const siginfo_t *si, StopMethod method, const char *how,
                     uint64_t now) {
    static const char *const method_names[] = {"not running", "the guest powered off",
                                               "stopped on its control socket", "killed"};
    const char *vm = l->agent->vm_name;

    if (l->state == VM_STOPPING) {
        log_info("VM '%s': stopped in %" PRIu64 " ms (%s): %s", vm, (now - l->stop_start) / 1000,
                 method_names[method], how);
    } else if (si->si_code == CLD_EXITED && si->si_status == 0) {
        log_info("VM '%s': %s (the guest powered off)", vm, how);
    } else {
        log_warning("VM '%s': %s", vm, how);
    }
}

/* The VMM is gone: what it left in its process group (not yet reaped, the
 * group's id is still its own) would hold the VM's devices and goes too;
 * the probe, the stop phase and a stop command still running end (it has
 * nothing left to stop); its last stderr and console output are read.
 * Returns whether it had a process group of its own, killed now. */
static bool vm_stopped(Lifecycle *l) {
    bool group = vmm_proc_own_group(l->vmm);
    if (group) {
        (void)vmm_proc_kill(l->vmm);
    }
    l->state = VM_STOPPED;
    probe_stop(l);
    guest_call_free(TAKE_PTR(l->shutdown_call));
    agent_timer_off(l->stop_timer);
    kill_stop_command(l, false);
    vmm_proc_drain(l->vmm);
    vmm_proc_free(TAKE_PTR(l->vmm));
    run_free(l);
    if (l->console) {
        console_drain(l->console);
    }
    return group;
}

/* The VMM's control socket goes once the VMM has. It is removed only when
 * stale (nobody answers on it). After we killed the VMM's process group, a
 * process of it that has not died yet may still hold the socket: a few
 * more tries, a little apart, while that one dies. */
static void remove_control_socket(Lifecycle *l, bool group_killed) {
    if (!l->control_path) {
        return;
    }
    for (unsigned i = 0;; i++) {
        int r = addr_unix_remove_stale(l->control_path);
        if (r != -EADDRINUSE || !group_killed || i + 1 >= CONTROL_SOCKET_TRIES) {
            return;
        }
        (void)usleep(CONTROL_SOCKET_RETRY_USEC);
    }
}

/* Clients wait for a fresh start (they came while it stopped, or were
 * connecting to the guest that went): start it again. */
static int restart_for(Lifecycle *l, unsigned clients) {
    ErrorText err;

    l->stop_phase = STOP_PHASE_NONE;
    log_info("VM '%s': starting it again for %u waiting client(s)", l->agent->vm_name, clients);
    int r = lifecycle_start(l, &err);
    if (r < 0) {
        l->events->start_failed(l->userdata, err.message);
    }
    return r;
}

/* The VM is down for good: the host agent exits. */
static void exit_agent(Lifecycle *l, const char *how, int status) {
    Agent *a = l->agent;

    /* A VMM gone before its guest agent answered: under Type=notify a run
     * without READY=1 is a failed start, and enough of them stop the
     * socket unit. This was a short run; the journal says why. */
    agent_ready(a, "VM %s stopped before it ran: %s", a->vm_name, how);
    a->exit_code = a->foreground ? status : 0;
    (void)sd_event_exit(a->event, a->exit_code);
}

/* In this order: how it ended (logged), the VM stopped, the clients told,
 * the console and control sockets removed, then a fresh start for the
 * clients that want one, or the exit. */
static void on_vmm_exit(void *userdata, const siginfo_t *si) {
    Lifecycle *l = userdata;
    Agent *a = l->agent;
    char how[96], msg[256];
    int status = exit_how(l, si, how, sizeof(how));
    uint64_t now = now_mono();
    StopMethod method = exit_method(l);
    VmState was = l->state;

    exit_log(l, si, method, how, now);
    bool group_killed = vm_stopped(l);
    snprintf(msg, sizeof(msg), "VM '%s' stopped%s: %s", a->vm_name,
             was == VM_STARTING ? " before its guest agent answered" : "", how);
    LifecycleExit e = {
        .now = now,
        .method = method,
        .stop_ms = (now - l->stop_start) / 1000,
        .message = msg,
        .restart_ok = was != VM_STARTING && !a->terminating && !a->foreground,
    };
    unsigned restart = l->events->exited(l->userdata, &e);
    console_free(TAKE_PTR(l->console));
    remove_control_socket(l, group_killed);
    remove_secret(l);
    if (restart > 0 && restart_for(l, restart) == 0) {
        return;
    }
    remove_tap(l);
    exit_agent(l, how, status);
}

void lifecycle_free(Lifecycle *l) {
    if (!l) {
        return;
    }
    Agent *a = l->agent;
    if (l->vmm) {
        /* Leaving (a failure of the loop itself): the VMM must not outlive us. */
        log_ctx_warning(vmm_proc_log(l->vmm), "VM '%s': killing %s (pid %d) on the way out",
                        a->vm_name, a->vmm->name, (int)vmm_proc_pid(l->vmm));
        (void)vmm_proc_kill(l->vmm);
        /* Not one that SIGKILL did not end already: we would hang here. */
        vmm_proc_reap(l->vmm, !l->vmm_unkillable);
        remove_control_socket(l, vmm_proc_own_group(l->vmm));
    }
    run_free(l);
    console_free(l->console);
    remove_secret(l);
    guest_call_free(l->probe);
    guest_call_free(l->shutdown_call);
    vmm_proc_free(l->vmm);
    if (l->stop_cmd) {
        kill_stop_command(l, false);
        vmm_proc_reap(l->stop_cmd, false);
        vmm_proc_free(l->stop_cmd);
    }
    sd_event_source_disable_unref(l->probe_timer);
    sd_event_source_disable_unref(l->start_timer);
    sd_event_source_disable_unref(l->stop_timer);
    free(l->control_path);
    free(l);
}
