/* A child's vhost-user side: the VM's frontend (qemu or crosvm) connects
 * to the listening socket the main process gave it, one at a time, and
 * speaks vhost-user (switch/vhost/: every message validated before any
 * handler). A frontend that breaks the protocol, a guest that breaks a
 * queue (a descriptor violation), or a kick fd that epoll cannot watch (a
 * regular file or memfd) costs only its own connection: the device is
 * reset and the next connection accepted (the state shows "broken" until
 * then); frames already taken from its TX queue in that round are still
 * published to the peers. A frontend that disconnects is forgotten the
 * same way (state "waiting"). */
#pragma once

#include <stddef.h>

#include "child-state.h"

/* A fresh virtio-net device with our MAC (none of the old one's state). */
void device_reset(Child *c);
/* The guest broke its `what` queue (r, a negative errno): logged, the
 * frontend dropped. */
void device_broken(Child *c, const char *what, int r);
/* The listening socket is readable: accept the frontend. */
void on_listen(Child *c);
/* The frontend's socket is readable: one vhost-user message. */
void on_conn(Child *c);
/* The virtio-net header length the guest's features give. */
size_t net_hdr_len(const Child *c);
/* After a used->idx publish: interrupts the guest when it asked for it. */
void guest_notify(Child *c, unsigned q, Vq *vq);
