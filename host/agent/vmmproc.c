/* The VMM's process (vmmproc.h). */
#include "vmmproc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include "log.h"
#include "vmm.h"

struct VmmProc {
    pid_t pid;
    bool own_group;
    const char *name;
    LogContext log; /* QUBES_LITE_PID */
    sd_event_source *child;
    VmmProcExitFn on_exit;
    void *userdata;
    /* The pipe its stderr is relayed through, and the line being read
     * (escaped before it is logged). */
    int err_fd;
    sd_event_source *err_src;
    char line[VMM_LINE_MAX];
    size_t line_len;
};

/* What the VMM's environment may hold from ours besides what --vmm-env
 * adds (vmmproc.h says why each). */
static const char *const vmm_env_default[] = {
    "PATH", "TZ", "RUST_BACKTRACE", "XDG_RUNTIME_DIR", "WAYLAND_DISPLAY", "DISPLAY", "PULSE_SERVER",
};

/* NAME, or PREFIX* for every variable starting with PREFIX. */
static bool env_pattern_match(const char *pattern, const char *entry, size_t name_len) {
    size_t n = strlen(pattern);
    if (n > 0 && pattern[n - 1] == '*') {
        return name_len >= n - 1 && strncmp(entry, pattern, n - 1) == 0;
    }
    return name_len == n && strncmp(entry, pattern, n) == 0;
}

static bool env_name_is(const char *entry, size_t name_len, const char *name) {
    return name_len == strlen(name) && strncmp(entry, name, name_len) == 0;
}

/* Whether the variable `entry` (NAME=value, NAME name_len bytes long)
 * goes to the VMM. Never JOURNAL_STREAM: it would name our stderr, not
 * the VMM's. */
static bool env_passed(const char *entry, size_t name_len, const char *const *extra,
                       size_t n_extra) {
    bool pass = false;

    for (size_t i = 0; i < ELEMENTSOF(vmm_env_default) && !pass; i++) {
        pass = env_pattern_match(vmm_env_default[i], entry, name_len);
    }
    for (size_t i = 0; i < n_extra && !pass; i++) {
        pass = env_pattern_match(extra[i], entry, name_len);
    }
    return pass && !env_name_is(entry, name_len, "JOURNAL_STREAM");
}

int vmm_environ(char *const *from, const char *const *extra, size_t n_extra, int journal_fd,
                char ***ret) {
    size_t n = 0, max = 2;
    bool have_path = false;

    for (char *const *e = from; *e; e++) {
        max++;
    }
    _cleanup_strv_free_ char **env = calloc(max + 1, sizeof(char *));
    if (!env) {
        return -ENOMEM;
    }
    for (char *const *e = from; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq) {
            continue;
        }
        size_t len = (size_t)(eq - *e);
        if (!env_passed(*e, len, extra, n_extra)) {
            continue;
        }
        have_path = have_path || env_name_is(*e, len, "PATH");
        if (!(env[n++] = strdup(*e))) {
            return -ENOMEM;
        }
    }
    if (!have_path && !(env[n++] = strdup("PATH=" VMM_ENV_DEFAULT_PATH))) {
        return -ENOMEM;
    }
    struct stat st;
    if (journal_fd >= 0 && fstat(journal_fd, &st) == 0) {
        if (asprintf(&env[n], "JOURNAL_STREAM=%llu:%llu", (unsigned long long)st.st_dev,
                     (unsigned long long)st.st_ino) < 0) {
            env[n] = NULL;
            return -ENOMEM;
        }
        n++;
    }
    *ret = TAKE_PTR(env);
    return 0;
}

/* ---- its stderr ------------------------------------------------------------ */

/* One line of the VMM's stderr into our log, control characters escaped. */
static void log_line(VmmProc *p, const char *line, size_t len) {
    char buf[4 * VMM_LINE_MAX + 1];
    if (len > 0 && line[len - 1] == '\r') {
        len--;
    }
    log_ctx_info(&p->log, "%s: %s", p->name, str_sanitize(line, len, buf, sizeof(buf)));
}

/* Logs the complete lines read so far; a partial one too when it fills
 * the buffer or flush_partial says the stream ended. */
static void log_lines(VmmProc *p, bool flush_partial) {
    char *nl;
    while ((nl = memchr(p->line, '\n', p->line_len))) {
        size_t used = (size_t)(nl - p->line) + 1;
        log_line(p, p->line, used - 1);
        memmove(p->line, nl + 1, p->line_len - used);
        p->line_len -= used;
    }
    if (p->line_len > 0 && (flush_partial || p->line_len == sizeof(p->line) - 1)) {
        log_line(p, p->line, p->line_len);
        p->line_len = 0;
    }
}

static void stderr_close(VmmProc *p) {
    log_lines(p, true);
    p->err_src = sd_event_source_disable_unref(p->err_src);
    p->err_fd = safe_close(p->err_fd);
}

/* Reads what the VMM wrote to stderr: 1 when bytes came, 0 at EOF or on
 * an error, -EAGAIN when there is nothing now. */
static int stderr_read(VmmProc *p) {
    ssize_t k = read(p->err_fd, p->line + p->line_len, sizeof(p->line) - 1 - p->line_len);
    if (k < 0 && (errno == EAGAIN || errno == EINTR)) {
        return -EAGAIN;
    }
    if (k <= 0) {
        return 0;
    }
    p->line_len += (size_t)k;
    log_lines(p, false);
    return 1;
}

static int on_stderr(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
    VmmProc *p = userdata;
    if (stderr_read(p) == 0) {
        stderr_close(p);
    }
    return 0;
}

void vmm_proc_drain(VmmProc *p) {
    if (!p || p->err_fd < 0) {
        return;
    }
    while (stderr_read(p) > 0) {
    }
    stderr_close(p);
}

/* Where the VMM's stderr goes: the journal (its own stream) under
 * systemd, else a pipe whose lines we log. *ret_journal says which. */
static int stderr_open(sd_event *e, VmmProc *p, const VmmProcSpec *spec, int *ret_write,
                       bool *ret_journal) {
    int fds[2];
    int r;

    if (getenv("JOURNAL_STREAM")) {
        char ident[64];
        snprintf(ident, sizeof(ident), "%s-%s", spec->name, spec->vm_name);
        int fd = sd_journal_stream_fd(ident, LOG_INFO, 0);
        if (fd >= 0) {
            *ret_write = fd;
            *ret_journal = true;
            return 0;
        }
        log_debug_errno(fd, "No journal stream for the VMM, relaying its stderr: %m");
    }
    if (pipe2(fds, O_CLOEXEC) < 0) {
        return -errno;
    }
    r = fd_nonblock(fds[0], true);
    if (r >= 0) {
        r = sd_event_add_io(e, &p->err_src, fds[0], EPOLLIN, on_stderr, p);
    }
    if (r < 0) {
        close_pair(fds);
        return r;
    }
    p->err_fd = fds[0];
    p->line_len = 0;
    *ret_write = fds[1];
    *ret_journal = false;
    return 0;
}

/* ---- the process ----------------------------------------------------------- */

/* Forks and execs argv with the environment env. stdin/stdout: `in`,
 * `out` or ours when -1; stderr: `err` or ours when -1; nothing else of
 * ours. `new_session` detaches it from our terminal and makes it the
 * leader of its own process group, which is what we kill. */
static int fork_exec(char **argv, char **env, int in, int out, int err, bool new_session,
                     pid_t *ret_pid) {
    pid_t pid = fork();
    if (pid < 0) {
        return -errno;
    }
    if (pid == 0) {
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        signal(SIGPIPE, SIG_DFL);
        if (new_session) {
            (void)setsid();
        }
        if ((in >= 0 && dup2(in, STDIN_FILENO) < 0) || (out >= 0 && dup2(out, STDOUT_FILENO) < 0) ||
            (err >= 0 && dup2(err, STDERR_FILENO) < 0)) {
            _exit(127);
        }
        (void)fd_close_from(3);
        /* Our raised fd limit is for our many clients, not the VMM's. */
        fd_limit_restore();
        /* execvpe searches our PATH, the one the VMM gets too. */
        execvpe(argv[0], argv, env);
        fprintf(stderr, "cannot execute %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    *ret_pid = pid;
    return 0;
}

static int on_child(sd_event_source *s, const siginfo_t *si, void *userdata) {
    VmmProc *p = userdata;
    /* Ours: the callback may free p, and with it the event source that
     * holds *si. */
    siginfo_t info = *si;
    p->on_exit(p->userdata, &info);
    return 0;
}

pid_t vmm_proc_pid(const VmmProc *p) {
    return p->pid;
}

const LogContext *vmm_proc_log(const VmmProc *p) {
    return &p->log;
}

bool vmm_proc_own_group(const VmmProc *p) {
    return p->own_group;
}

int vmm_proc_kill(const VmmProc *p) {
    if (p->own_group && kill(-p->pid, SIGKILL) == 0) {
        return 0;
    }
    if (kill(p->pid, SIGKILL) < 0) {
        return -errno;
    }
    return 0;
}

void vmm_proc_reap(VmmProc *p, bool block) {
    (void)waitpid(p->pid, NULL, block ? 0 : WNOHANG);
}

void vmm_proc_free(VmmProc *p) {
    if (!p) {
        return;
    }
    sd_event_source_disable_unref(p->child);
    sd_event_source_disable_unref(p->err_src);
    safe_close(p->err_fd);
    free(p);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(VmmProc *, vmm_proc_free)

int vmm_proc_spawn(sd_event *e, const VmmProcSpec *spec, VmmProcExitFn on_exit, void *userdata,
                   VmmProc **ret, ErrorText *err) {
    extern char **environ;
    _cleanup_strv_free_ char **env = NULL;
    _cleanup_close_ int err_fd = -EBADF;
    bool err_journal = false;
    int r;

    _cleanup_(vmm_proc_freep) VmmProc *p = calloc(1, sizeof(*p));
    if (!p) {
        return error_set(err, -ENOMEM, "%s", strerror(ENOMEM));
    }
    p->err_fd = -EBADF;
    p->name = spec->name;
    p->own_group = spec->own_group;
    p->on_exit = on_exit;
    p->userdata = userdata;
    if (spec->log_stderr) {
        r = stderr_open(e, p, spec, &err_fd, &err_journal);
        if (r < 0) {
            return error_set(err, r, "%s", strerror(-r));
        }
    }
    r = vmm_environ(environ, spec->env_extra, spec->n_env_extra, err_journal ? err_fd : -1, &env);
    if (r >= 0) {
        r = fork_exec(spec->argv, env, spec->in, spec->out, err_fd, spec->own_group, &p->pid);
    }
    if (r < 0) {
        return error_set(err, r, "fork: %s", strerror(-r));
    }
    /* No prefix (the context is zeroed), the pid as a field. */
    log_context_set(&p->log, "QUBES_LITE_PID", "%d", (int)p->pid);
    r = sd_event_add_child(e, &p->child, p->pid, WEXITED, on_child, p);
    if (r < 0) {
        /* Unwatched, it could not be stopped: do not leave it running. */
        (void)vmm_proc_kill(p);
        vmm_proc_reap(p, true);
        return error_set(err, r, "%s", strerror(-r));
    }
    *ret = TAKE_PTR(p);
    return 0;
}
