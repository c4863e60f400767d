/* Wayland readiness: see wayland.h. Runs in the forked child before exec,
 * as the target user, so the permission check is the program's own. */
#include "wayland.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <time.h>
#include <wayland-client.h>

#include "util.h"

static void sync_done(void *data, struct wl_callback *cb, uint32_t serial) {
    *(bool *)data = true;
}

static const struct wl_callback_listener sync_listener = {
    .done = sync_done,
};

/* One bounded roundtrip: wl_display_roundtrip() itself could block for
 * ever on a compositor that accepted but hangs. */
static int roundtrip(struct wl_display *d, uint64_t deadline) {
    bool done = false;
    struct wl_callback *cb = wl_display_sync(d);
    int r = 0;

    if (!cb) {
        return -errno ?: -EIO;
    }
    wl_callback_add_listener(cb, &sync_listener, &done);
    while (!done) {
        while (wl_display_prepare_read(d) != 0) {
            if (wl_display_dispatch_pending(d) < 0) {
                r = -EIO;
                goto out;
            }
        }
        if (done) {
            wl_display_cancel_read(d);
            break;
        }
        if (wl_display_flush(d) < 0 && errno != EAGAIN) {
            wl_display_cancel_read(d);
            r = -EIO;
            goto out;
        }
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        if (now >= deadline) {
            wl_display_cancel_read(d);
            r = -ETIMEDOUT;
            goto out;
        }
        struct pollfd p = {.fd = wl_display_get_fd(d), .events = POLLIN};
        int k = poll(&p, 1, (int)MIN((deadline - now) / 1000 + 1, 1000));
        if (k <= 0) {
            wl_display_cancel_read(d);
            continue;
        }
        if (wl_display_read_events(d) < 0 || wl_display_dispatch_pending(d) < 0) {
            r = -EIO;
            goto out;
        }
    }
out:
    wl_callback_destroy(cb);
    return r;
}

int wayland_wait(const char *runtime_dir, const char *display, uint64_t timeout_usec) {
    char path[4096];
    uint64_t deadline = now_usec(CLOCK_MONOTONIC) + timeout_usec;

    if (!display || !display[0]) {
        display = "wayland-0";
    }
    if (display[0] == '/') {
        if (snprintf(path, sizeof(path), "%s", display) >= (int)sizeof(path)) {
            return -EINVAL;
        }
    } else {
        if (!runtime_dir || runtime_dir[0] != '/') {
            return -EINVAL;
        }
        if (snprintf(path, sizeof(path), "%s/%s", runtime_dir, display) >= (int)sizeof(path)) {
            return -EINVAL;
        }
    }

    for (;;) {
        struct wl_display *d = wl_display_connect(path);
        if (d) {
            int r = roundtrip(d, deadline);
            wl_display_disconnect(d);
            if (r == 0) {
                return 0;
            }
        }
        if (now_usec(CLOCK_MONOTONIC) >= deadline) {
            return -ETIMEDOUT;
        }
        struct timespec ts = {.tv_nsec = 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
