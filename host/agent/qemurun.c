/* qemu behind VmmOps, and what runs beside it (qemurun.h). */
#include "qemurun.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "addr.h"
#include "log.h"
#include "qemu.h"
#include "qmp.h"
#include "vmmproc.h"

#define QMP_RETRY_USEC (20 * 1000ULL)
#define DEVICE_ADD_RETRY_USEC (100 * 1000ULL)
#define VSOCK_RESTART_MIN_USEC (200 * 1000ULL)
#define VSOCK_RESTART_MAX_USEC (5 * 1000000ULL)
#define VSOCK_DEVICE_ID "vsock0"
#define VSOCK_CHARDEV "vsock"

static const char *const qemu_stop_steps[] = {"system_powerdown", "quit"};

typedef enum DeviceState {
    DEVICE_NONE,   /* not added (yet) */
    DEVICE_ADDING, /* device_add, again until qemu takes it */
    DEVICE_ADDED,
    DEVICE_DELETING, /* device_del sent: waiting for DEVICE_DELETED */
} DeviceState;

struct VmmRun {
    VmmRunContext ctx;
    bool vsock_ours; /* qubes-lite-vsock is the VM's vsock device */
    bool freeing;
    Qmp *qmp;
    bool resumed; /* `cont` sent (qemu started paused) */
    /* qubes-lite-vsock and its device in qemu. */
    VmmProc *vsock;
    sd_event_source *vsock_timer; /* its restart, or the next device_add */
    uint64_t vsock_backoff;
    DeviceState device;
    uint64_t device_deadline;
    /* One virtiofsd per shared directory (NULL once it exited). */
    VmmProc **fs;
    size_t n_fs;
    /* The sockets of ours to remove at the end. */
    char **sockets;
};

static void run_failed(VmmRun *run, const char *fmt, ...) _printf_(2, 3);
static void run_failed(VmmRun *run, const char *fmt, ...) {
    char msg[ERROR_TEXT_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_error("VM '%s': %s", run->ctx.vm->name, msg);
    run->ctx.failed(run->ctx.userdata, msg);
}

static int timer_in(VmmRun *run, sd_event_source **src, uint64_t usec, sd_event_time_handler_t cb) {
    uint64_t at = now_usec(CLOCK_MONOTONIC) + usec;
    if (!*src) {
        return sd_event_add_time(run->ctx.event, src, CLOCK_MONOTONIC, at, 0, cb, run);
    }
    int r = sd_event_source_set_time(*src, at);
    return r < 0 ? r : sd_event_source_set_enabled(*src, SD_EVENT_ONESHOT);
}

/* ---- companions ---------------------------------------------------------------- */

/* A companion in a session of its own, /dev/null as stdin and stdout, its
 * stderr logged as the VMM's. */
static int spawn_companion(VmmRun *run, char **argv, const char *name, VmmProcExitFn on_exit,
                           VmmProc **ret, ErrorText *err) {
    _cleanup_close_ int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    VmmProcSpec spec = {
        .argv = argv,
        .name = name,
        .vm_name = run->ctx.vm->name,
        .in = null,
        .out = null,
        .log_stderr = true,
        .own_group = true,
        .env_extra = run->ctx.env_extra,
        .n_env_extra = run->ctx.n_env_extra,
    };
    ErrorText perr;
    int r = vmm_proc_spawn(run->ctx.event, &spec, on_exit, run, ret, &perr);
    if (r < 0) {
        return error_set(err, r, "cannot start %s: %s", name, perr.message);
    }
    log_ctx_info(vmm_proc_log(*ret), "VM '%s': started %s (pid %d)", run->ctx.vm->name, argv[0],
                 (int)vmm_proc_pid(*ret));
    return 0;
}

static void companion_end(VmmProc *p) {
    if (p) {
        (void)vmm_proc_kill(p);
        vmm_proc_reap(p, true);
        vmm_proc_free(p);
    }
}

static void log_exit(VmmProc *p, const char *what, const char *vm, const siginfo_t *si) {
    log_ctx_warning(vmm_proc_log(p), "VM '%s': %s (pid %d) %s %d", vm, what, (int)vmm_proc_pid(p),
                    si->si_code == CLD_EXITED ? "exited with status" : "was killed by signal",
                    si->si_status);
}

/* ---- the vsock device --------------------------------------------------------------- */

static void device_add(VmmRun *run);

static int on_vsock_timer(sd_event_source *s, uint64_t usec, void *userdata);

static void on_vsock_exit(void *userdata, const siginfo_t *si) {
    VmmRun *run = userdata;

    log_exit(run->vsock, "qubes-lite-vsock", run->ctx.vm->name, si);
    vmm_proc_drain(run->vsock);
    /* Its process group goes too (nothing of it may hold the sockets). */
    (void)vmm_proc_kill(run->vsock);
    vmm_proc_free(TAKE_PTR(run->vsock));
    run->vsock_backoff = run->vsock_backoff ? MIN(run->vsock_backoff * 2, VSOCK_RESTART_MAX_USEC)
                                            : VSOCK_RESTART_MIN_USEC;
    log_warning("VM '%s': starting qubes-lite-vsock again in %" PRIu64 " ms", run->ctx.vm->name,
                run->vsock_backoff / 1000);
    int r = timer_in(run, &run->vsock_timer, run->vsock_backoff, on_vsock_timer);
    if (r < 0) {
        run_failed(run, "cannot restart its vsock device: %s", strerror(-r));
    }
}

static int vsock_start(VmmRun *run, ErrorText *err) {
    _cleanup_strv_free_ char **argv = NULL;
    int r = vmm_qemu_vsock_argv(run->ctx.host, run->ctx.vm, &argv);
    if (r < 0) {
        return error_set(err, r, "out of memory");
    }
    return spawn_companion(run, argv, "qubes-lite-vsock", on_vsock_exit, &run->vsock, err);
}

static void on_device_deleted(VmmRun *run) {
    run->device = DEVICE_NONE;
    device_add(run);
}

static void on_device_del(void *userdata, int r, json_t *ret, const char *error) {
    VmmRun *run = userdata;
    if (run->device != DEVICE_DELETING) {
        return;
    }
    if (r < 0) {
        /* Not there (any more): add the new one at once. */
        log_debug("VM '%s': device_del %s: %s", run->ctx.vm->name, VSOCK_DEVICE_ID,
                  error ? error : strerror(-r));
        on_device_deleted(run);
    }
}

/* A fresh qubes-lite-vsock: qemu sets a vhost-user-vsock device up only
 * once, so the old one goes (the guest acknowledges) and a new one comes. */
static void device_replace(VmmRun *run) {
    if (run->device == DEVICE_NONE || run->device == DEVICE_ADDING) {
        device_add(run);
        return;
    }
    if (run->device == DEVICE_DELETING) {
        return;
    }
    run->device = DEVICE_DELETING;
    json_t *args = json_pack("{s:s}", "id", VSOCK_DEVICE_ID);
    int r = args ? qmp_execute(run->qmp, "device_del", args, on_device_del, run) : -ENOMEM;
    if (r < 0) {
        run_failed(run, "cannot replace its vsock device: device_del: %s", strerror(-r));
    }
}

static int on_vsock_timer(sd_event_source *s, uint64_t usec, void *userdata) {
    VmmRun *run = userdata;
    ErrorText err;

    if (!run->vsock) {
        int r = vsock_start(run, &err);
        if (r < 0) {
            run_failed(run, "%s", err.message);
            return 0;
        }
        if (run->qmp && qmp_is_ready(run->qmp)) {
            device_replace(run);
        }
        return 0;
    }
    if (run->device == DEVICE_ADDING) {
        device_add(run);
    }
    return 0;
}

static void on_cont(void *userdata, int r, json_t *ret, const char *error) {
    VmmRun *run = userdata;
    if (r < 0) {
        run_failed(run, "qemu did not resume the VM: %s", error ? error : strerror(-r));
    }
}

static void resume(VmmRun *run) {
    if (run->resumed) {
        return;
    }
    run->resumed = true;
    int r = qmp_execute(run->qmp, "cont", NULL, on_cont, run);
    if (r < 0) {
        run_failed(run, "qemu did not resume the VM: %s", strerror(-r));
    }
}

static void on_device_add(void *userdata, int r, json_t *ret, const char *error) {
    VmmRun *run = userdata;

    if (run->device != DEVICE_ADDING) {
        return;
    }
    if (r == 0) {
        run->device = DEVICE_ADDED;
        run->vsock_backoff = 0;
        log_info("VM '%s': vsock device attached", run->ctx.vm->name);
        resume(run);
        return;
    }
    if (r != -EREMOTEIO || now_usec(CLOCK_MONOTONIC) >= run->device_deadline) {
        run_failed(run, "qemu did not take its vsock device: %s", error ? error : strerror(-r));
        return;
    }
    /* Its chardev has not connected yet. */
    log_debug("VM '%s': device_add: %s; again", run->ctx.vm->name, error);
    r = timer_in(run, &run->vsock_timer, DEVICE_ADD_RETRY_USEC, on_vsock_timer);
    if (r < 0) {
        run_failed(run, "cannot attach its vsock device: %s", strerror(-r));
    }
}

static void device_add(VmmRun *run) {
    if (run->device == DEVICE_NONE) {
        run->device = DEVICE_ADDING;
        run->device_deadline = now_usec(CLOCK_MONOTONIC) + QEMU_DEVICE_ADD_TIMEOUT_USEC;
    }
    if (!run->vsock) {
        return; /* once it runs again */
    }
    json_t *args = json_pack("{s:s, s:s, s:s}", "driver", "vhost-user-vsock-pci", "chardev",
                             VSOCK_CHARDEV, "id", VSOCK_DEVICE_ID);
    int r = args ? qmp_execute(run->qmp, "device_add", args, on_device_add, run) : -ENOMEM;
    if (r < 0) {
        run_failed(run, "cannot attach its vsock device: %s", strerror(-r));
    }
}

/* ---- QMP --------------------------------------------------------------------------- */

static void on_qmp_ready(void *userdata) {
    VmmRun *run = userdata;

    log_debug("VM '%s': QMP ready", run->ctx.vm->name);
    if (run->vsock_ours) {
        device_add(run);
    }
}

static void on_qmp_event(void *userdata, const char *name, json_t *data) {
    VmmRun *run = userdata;

    log_debug("VM '%s': QMP event %s", run->ctx.vm->name, name);
    if (streq(name, "DEVICE_DELETED") && run->device == DEVICE_DELETING) {
        json_t *dev = json_object_get(data, "device");
        if (json_is_string(dev) && streq(json_string_value(dev), VSOCK_DEVICE_ID)) {
            on_device_deleted(run);
        }
    }
}

static void on_qmp_closed(void *userdata, int r) {
    VmmRun *run = userdata;

    qmp_free(TAKE_PTR(run->qmp));
    if (r == -ETIMEDOUT) {
        run_failed(run, "qemu made no QMP socket within %llu s",
                   (unsigned long long)(QEMU_QMP_TIMEOUT_USEC / 1000000));
        return;
    }
    /* Mostly qemu exiting: its exit, seen next, says how. */
    log_debug("VM '%s': QMP closed: %s", run->ctx.vm->name, strerror(-r));
}

static const QmpOps run_qmp_ops = {
    .ready = on_qmp_ready,
    .event = on_qmp_event,
    .closed = on_qmp_closed,
};

/* ---- VmmOps ------------------------------------------------------------------------ */

static void on_fs_exit(void *userdata, const siginfo_t *si) {
    VmmRun *run = userdata;

    for (size_t i = 0; i < run->n_fs; i++) {
        if (run->fs[i] && vmm_proc_pid(run->fs[i]) == si->si_pid) {
            log_exit(run->fs[i], "virtiofsd", run->ctx.vm->name, si);
            log_warning("VM '%s': shared directory '%s' is gone from the guest (qemu does not "
                        "reconnect to virtiofsd)",
                        run->ctx.vm->name, run->ctx.vm->shared_directories.v[i].tag);
            vmm_proc_drain(run->fs[i]);
            (void)vmm_proc_kill(run->fs[i]);
            vmm_proc_free(TAKE_PTR(run->fs[i]));
        }
    }
}

/* virtiofsd listens before qemu starts: qemu connects once. */
static int wait_socket(const char *path, VmmProc *p, ErrorText *err) {
    for (int waited = 0; waited < QEMU_VIRTIOFSD_TIMEOUT_MS; waited += 10) {
        if (access(path, F_OK) == 0) {
            return 0;
        }
        siginfo_t si = {0};
        if (waitid(P_PID, (id_t)vmm_proc_pid(p), &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
            si.si_pid == 0) {
            (void)poll(NULL, 0, 10);
            continue;
        }
        return error_set(err, -ECHILD, "virtiofsd exited before it made %s (its log says why)",
                         path);
    }
    return error_set(err, -ETIMEDOUT, "virtiofsd made no socket %s within %d s", path,
                     QEMU_VIRTIOFSD_TIMEOUT_MS / 1000);
}

static int remember_socket(VmmRun *run, char *path) {
    size_t n = 0;
    while (run->sockets && run->sockets[n]) {
        n++;
    }
    char **v = reallocarray(run->sockets, n + 2, sizeof(char *));
    if (!v || !path) {
        free(path);
        if (v) {
            run->sockets = v;
        }
        return -ENOMEM;
    }
    v[n] = path;
    v[n + 1] = NULL;
    run->sockets = v;
    return 0;
}

static void qemu_run_free(VmmRun *run) {
    if (!run) {
        return;
    }
    run->freeing = true;
    qmp_free(run->qmp);
    sd_event_source_disable_unref(run->vsock_timer);
    companion_end(run->vsock);
    for (size_t i = 0; i < run->n_fs; i++) {
        companion_end(run->fs[i]);
    }
    free(run->fs);
    /* Ours alone, and the VM is over: removed even when a sandboxed
     * companion's inner process is still on its way out and listening. */
    for (char **p = run->sockets; p && *p; p++) {
        (void)unlink(*p);
    }
    strv_free(run->sockets);
    free(run);
}

static int start_fs(VmmRun *run, ErrorText *err) {
    const VmConfig *vm = run->ctx.vm;

    run->fs = calloc(vm->shared_directories.n + 1, sizeof(VmmProc *));
    if (!run->fs) {
        return error_set(err, -ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < vm->shared_directories.n; i++) {
        _cleanup_strv_free_ char **argv = NULL;
        char what[32];
        snprintf(what, sizeof(what), "fs-%zu", i);
        char *sock = vmm_qemu_socket(vm, what);
        int r = remember_socket(run, sock);
        if (r < 0) {
            return error_set(err, r, "out of memory");
        }
        (void)addr_unix_remove_stale(sock);
        r = vmm_qemu_virtiofsd_argv(vm, i, &argv, err);
        if (r >= 0) {
            r = spawn_companion(run, argv, "virtiofsd", on_fs_exit, &run->fs[i], err);
        }
        if (r >= 0) {
            run->n_fs = i + 1;
            r = wait_socket(sock, run->fs[i], err);
        }
        if (r < 0) {
            return r;
        }
    }
    return 0;
}

static int qemu_run_new(const VmmRunContext *ctx, VmmRun **ret, ErrorText *err) {
    static bool tcg_said;
    const QemuHost *qh = qemu_host_probe();
    int r = 0;

    if (!qh->kvm && !tcg_said) {
        log_info("VM '%s': no usable KVM (%s): qemu runs under TCG, much slower", ctx->vm->name,
                 qh->kvm_why);
        tcg_said = true;
    }
    VmmRun *run = calloc(1, sizeof(*run));
    if (!run) {
        return error_set(err, -ENOMEM, "out of memory");
    }
    run->ctx = *ctx;
    run->vsock_ours = !qh->vhost_vsock;
    if (run->vsock_ours) {
        char *vhost = vmm_qemu_socket(ctx->vm, "vsock-vhost");
        char *path = config_vm_runtime_file(ctx->vm->name, CONFIG_RUNTIME_VSOCK);
        r = remember_socket(run, vhost);
        if (r >= 0) {
            r = remember_socket(run, path);
        }
        if (r < 0) {
            error_set(err, r, "out of memory");
        } else {
            (void)addr_unix_remove_stale(vhost);
            (void)addr_unix_remove_stale(path);
            r = vsock_start(run, err);
        }
    }
    if (r >= 0) {
        r = start_fs(run, err);
    }
    if (r < 0) {
        qemu_run_free(run);
        return r;
    }
    *ret = run;
    return 0;
}

static void qemu_run_started(VmmRun *run) {
    _cleanup_free_ char *path = vmm_qemu_socket(run->ctx.vm, "qmp");
    int r = path ? qmp_connect(run->ctx.event, path, QMP_RETRY_USEC,
                               now_usec(CLOCK_MONOTONIC) + QEMU_QMP_TIMEOUT_USEC, &run_qmp_ops, run,
                               &run->qmp)
                 : -ENOMEM;
    if (r < 0) {
        run_failed(run, "cannot reach qemu's QMP socket: %s", strerror(-r));
    }
}

static char *qemu_control_socket(const VmConfig *vm) {
    return vmm_qemu_socket(vm, "qmp");
}

static int qemu_run_stop(VmmRun *run, unsigned step) {
    if (!run->qmp || !qmp_is_ready(run->qmp) || step >= ELEMENTSOF(qemu_stop_steps)) {
        return -ENOTCONN;
    }
    return qmp_execute(run->qmp, qemu_stop_steps[step], NULL, NULL, NULL);
}

const VmmOps vmm_qemu = {
    .name = "qemu",
    .argv = vmm_qemu_argv,
    .control_socket = qemu_control_socket,
    .guest_address = vmm_qemu_guest_address,
    .run_new = qemu_run_new,
    .run_started = qemu_run_started,
    .run_stop = qemu_run_stop,
    .run_free = qemu_run_free,
    .stop_steps = qemu_stop_steps,
    .n_stop_steps = ELEMENTSOF(qemu_stop_steps),
};
