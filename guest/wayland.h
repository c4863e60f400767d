/* Waiting for a Wayland compositor to answer (Exec's wait_wayland). */
#pragma once

#include <stdint.h>

/* Connects to display (a name relative to runtime_dir, or an absolute
 * path) every 50 ms until a wl_display roundtrip succeeds, for at most
 * timeout_usec. 0 once it answered, -ETIMEDOUT otherwise, -EINVAL when no
 * socket path can be formed. Blocking: meant for a forked child. */
int wayland_wait(const char *runtime_dir, const char *display, uint64_t timeout_usec);
