/* What the host agent's modules share (agent.h). */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

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
