/* Blocking frame I/O for simple clients and one-shot replies (the fd in
 * blocking mode, or a fresh socket whose buffer takes the frame whole). */
#pragma once

#include <stddef.h>

#include "msg.h"

int wire_send(int fd, const Msg *m);
/* Sends a frame with fd attached (SCM_RIGHTS) to its first byte. */
int wire_send_fd(int sock, const Msg *m, int fd);
/* Receives one frame. -EPIPE when the peer closed before a whole frame,
 * -ECONNRESET on a clean EOF between frames. With ret_fd, an fd that came
 * with the frame is returned there (else any received fd is closed). */
int wire_recv(int fd, Msg *ret, int *ret_fd);
/* The same, keeping up to max (at most WIRE_RECV_FDS_MAX) fds that came
 * with the frame in fds[0 .. *ret_count); others are closed. */
#define WIRE_RECV_FDS_MAX 4u
int wire_recv_fds(int fd, Msg *ret, int *fds, size_t max, size_t *ret_count);
