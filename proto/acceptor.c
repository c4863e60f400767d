/* Accepting on a listening socket: see acceptor.h. */
#include "acceptor.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>

struct Acceptor {
    sd_event_source *io;
    sd_event_source *resume; /* ends a pause; off otherwise */
    AcceptFn fn;
    void *userdata;
    bool held, paused;
};

static void acceptor_update(Acceptor *a) {
    bool on = !a->held && !a->paused;
    (void)sd_event_source_set_enabled(a->io, on ? SD_EVENT_ON : SD_EVENT_OFF);
}

static int on_resume(sd_event_source *s, uint64_t usec, void *userdata) {
    Acceptor *a = userdata;
    a->paused = false;
    acceptor_update(a);
    return 0;
}

/* What a failed accept() leaves the process short of. */
static bool out_of_resources(int r) {
    return r == -EMFILE || r == -ENFILE || r == -ENOBUFS || r == -ENOMEM;
}

static void acceptor_pause(Acceptor *a) {
    int r = sd_event_source_set_time_relative(a->resume, ACCEPT_PAUSE_USEC);
    if (r >= 0) {
        r = sd_event_source_set_enabled(a->resume, SD_EVENT_ONESHOT);
    }
    if (r < 0) {
        return; /* not paused: the next wake-up tries again */
    }
    a->paused = true;
    acceptor_update(a);
}

static int on_listen_io(sd_event_source *s, int lfd, uint32_t revents, void *userdata) {
    Acceptor *a = userdata;

    for (unsigned n = 0; n < ACCEPT_BATCH && !a->held; n++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            a->fn(a->userdata, fd);
            continue;
        }
        int r = -errno;
        if (r == -EAGAIN) {
            break;
        }
        if (r == -EINTR) {
            continue;
        }
        bool pause = out_of_resources(r);
        if (pause) {
            acceptor_pause(a);
        }
        a->fn(a->userdata, r);
        if (pause) {
            break;
        }
    }
    return 0;
}

int acceptor_new(sd_event *e, int listen_fd, AcceptFn fn, void *userdata, Acceptor **ret) {
    Acceptor *a = calloc(1, sizeof(*a));
    if (!a) {
        return -ENOMEM;
    }
    a->fn = fn;
    a->userdata = userdata;
    int r = sd_event_add_io(e, &a->io, listen_fd, EPOLLIN, on_listen_io, a);
    if (r >= 0) {
        r = sd_event_add_time_relative(e, &a->resume, CLOCK_MONOTONIC, ACCEPT_PAUSE_USEC, 0,
                                       on_resume, a);
    }
    if (r >= 0) {
        r = sd_event_source_set_enabled(a->resume, SD_EVENT_OFF);
    }
    if (r < 0) {
        acceptor_free(a);
        return r;
    }
    *ret = a;
    return 0;
}

Acceptor *acceptor_free(Acceptor *a) {
    if (!a) {
        return NULL;
    }
    sd_event_source_disable_unref(a->io);
    sd_event_source_disable_unref(a->resume);
    free(a);
    return NULL;
}

void acceptor_hold(Acceptor *a, bool hold) {
    a->held = hold;
    acceptor_update(a);
}

bool acceptor_paused(const Acceptor *a) {
    return a->paused;
}
