/* What the host agent's modules share (agent.h), and how they are wired:
 * the lifecycle's events go to the clients and to the idle backstop. */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "clients.h"
#include "idle.h"
#include "lifecycle.h"
#include "log.h"

int agent_timer_at(Agent *a, sd_event_source **src, uint64_t usec, sd_event_time_handler_t cb,
                   void *userdata) {
    int r;
    if (!*src) {
        return sd_event_add_time(a->event, src, CLOCK_MONOTONIC, usec, 0, cb, userdata);
    }
    r = sd_event_source_set_time(*src, usec);
    return r < 0 ? r : sd_event_source_set_enabled(*src, SD_EVENT_ONESHOT);
}

int agent_timer_in(Agent *a, sd_event_source **src, uint64_t usec, sd_event_time_handler_t cb,
                   void *userdata) {
    return agent_timer_at(a, src, now_mono() + usec, cb, userdata);
}

void agent_timer_off(sd_event_source *src) {
    if (src) {
        sd_event_source_set_enabled(src, SD_EVENT_OFF);
    }
}

void agent_ready(Agent *a, const char *fmt, ...) {
    char status[512];
    va_list ap;

    if (a->ready_sent) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(status, sizeof(status), fmt, ap);
    va_end(ap);
    (void)sd_notifyf(0, "READY=1\nSTATUS=%s", status);
    a->ready_sent = true;
}

uint32_t agent_idle_timeout_s(const Agent *a) {
    return a->vm->disposable ? a->vm->idle_timeout : 0;
}

int agent_runtime_dir_check(const char *dir, ErrorText *err) {
    struct stat st;

    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        int r = -errno;
        return error_set(err, r, "cannot create %s: %s", dir, strerror(-r));
    }
    _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0) {
        int r = -errno;
        return error_set(err, r,
                         "%s must be a directory owned by uid %u that only it may write to (%s)",
                         dir, (unsigned)geteuid(), strerror(-r));
    }
    if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 0022)) {
        return error_set(err, -EPERM,
                         "%s must be a directory owned by uid %u that only it may write to", dir,
                         (unsigned)geteuid());
    }
    return 0;
}

/* ---- the lifecycle's events --------------------------------------------------- */

static void on_vm_started(void *userdata) {
    Agent *a = userdata;
    idle_vm_started(a->idle, lifecycle_started_at(a->life));
    idle_update(a->idle);
    idle_linger_update(a->idle);
}

static void on_vm_running(void *userdata) {
    Agent *a = userdata;
    clients_vm_running(a->clients);
}

static void on_vm_stopping(void *userdata, const char *message) {
    Agent *a = userdata;
    idle_update(a->idle);
    clients_refuse_waiting(a->clients, WIRE_ERR_SHUTTING_DOWN, message);
}

static unsigned on_vm_exited(void *userdata, const LifecycleExit *e) {
    Agent *a = userdata;
    return clients_vm_exited(a->clients, e);
}

static void on_vm_start_failed(void *userdata, const char *message) {
    Agent *a = userdata;
    clients_refuse_waiting(a->clients, WIRE_ERR_UNAVAILABLE, message);
}

static void on_vm_gave_up(void *userdata, const char *message) {
    Agent *a = userdata;
    clients_vm_gave_up(a->clients, message);
}

/* Somebody at the serial console is using the VM as much as a command
 * is: a lease, so that the idle backstop leaves it alone. */
static void on_vm_console(void *userdata, bool attached) {
    Agent *a = userdata;
    if (attached) {
        idle_lease_begin(a->idle);
    } else {
        idle_lease_end(a->idle);
    }
    log_debug("Console client %s, %u lease(s)", attached ? "attached" : "gone",
              idle_leases(a->idle));
    idle_update(a->idle);
}

static const LifecycleEvents agent_vm_events = {
    .started = on_vm_started,
    .running = on_vm_running,
    .stopping = on_vm_stopping,
    .exited = on_vm_exited,
    .start_failed = on_vm_start_failed,
    .gave_up = on_vm_gave_up,
    .console = on_vm_console,
};

int agent_modules_new(Agent *a, int listen_fd) {
    int r = idle_new(a, &a->idle);
    if (r >= 0) {
        r = lifecycle_new(a, &agent_vm_events, a, &a->life);
    }
    if (r >= 0) {
        r = clients_new(a, listen_fd, &a->clients);
    }
    return r;
}

void agent_modules_free(Agent *a) {
    /* Teardown: no lease or linger bookkeeping any more. */
    a->activated = false;
    a->no_vmm = true;
    clients_free(TAKE_PTR(a->clients));
    lifecycle_free(TAKE_PTR(a->life));
    idle_free(TAKE_PTR(a->idle));
}
