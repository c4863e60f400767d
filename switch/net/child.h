/* One VM's vhost-user-net backend: a vm-switch child.
 *
 * It owns nothing it did not get from the main process over its control
 * socket: the VM's listening vhost-user socket, and the rings (memfds and
 * eventfds) shared with the peers. Its epoll set is made before the first
 * message. Serving needs accept4, recvmsg/sendmsg, mmap/munmap, read/write
 * on eventfds and epoll_*; no open(), no socket(), no fork and no exec. So
 * once SETUP has given it its listening socket it locks itself down
 * (confine_lockdown_child(): every capability gone, RLIMIT_NPROC 0, the
 * child's allowlist stacked on the main's).
 *
 * It accepts one frontend at a time, serves vhost-user, and moves frames:
 * guest TX queue -> policy -> rings towards the peers; rings from the
 * peers -> guest RX queue. Everything is driven by eventfds through one
 * epoll set: an idle child sleeps. */
#pragma once

#include <stdbool.h>

#include "switch/sandbox/filter.h"

/* Runs the child on its control socket until the main process goes away
 * or breaks the protocol. With `lockdown`, the child drops what it does
 * not need and adds its seccomp filter (in `mode`) once it is set up.
 * Returns the process exit status. */
int child_run(int ctl_fd, bool lockdown, FilterMode mode);
