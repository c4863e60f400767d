/* A client of qemu's monitor protocol (QMP) on the event loop.
 *
 * QMP is one JSON object per line each way. qemu greets first ({"QMP":
 * {...}}); nothing but qmp_capabilities is taken until that has been
 * answered; then each command ({"execute": NAME, "arguments": {...},
 * "id": N}) gets one reply with the same id ({"return": ...} or {"error":
 * {"class", "desc"}}), and events ({"event": NAME, "data": {...}}) may
 * come at any time, between replies too.
 *
 * qemu is less trusted than we are (it runs the guest's devices): every
 * line is bounded (QMP_LINE_MAX) and parsed into jansson before it is
 * looked at, a reply must carry the id of a command we sent, and anything
 * else ends the connection. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

/* The longest line we take from qemu: the replies we ask for are small. */
#define QMP_LINE_MAX (64u * 1024u)
/* How many commands may wait for their reply at once. */
#define QMP_PENDING_MAX 32u

typedef struct Qmp Qmp;

typedef struct QmpOps {
    /* The capabilities are negotiated: commands are answered from now. */
    void (*ready)(void *userdata);
    /* An event: its name and its "data" (borrowed; NULL without one). */
    void (*event)(void *userdata, const char *name, json_t *data);
    /* The connection is over: r says why (-ECONNRESET when qemu closed it,
     * -EPROTO for a line that is not QMP, -EMSGSIZE, -ETIMEDOUT when
     * connecting gave up). Commands still waiting got their reply callback
     * with r first. Nothing is called after this; the Qmp may be freed
     * from it. */
    void (*closed)(void *userdata, int r);
} QmpOps;

/* A command's reply: r == 0 with `ret` its "return" value (borrowed),
 * -EREMOTEIO with `error` qemu's "desc", or the negative errno that ended
 * the connection. */
typedef void (*QmpReplyFn)(void *userdata, int r, json_t *ret, const char *error);

/* QMP on a connected socket (taken, also on failure). */
int qmp_new(sd_event *e, int fd, const QmpOps *ops, void *userdata, Qmp **ret);
/* QMP on the unix socket `path`, tried again every `retry_usec` while
 * nobody listens there yet (qemu makes it while it starts), until the
 * CLOCK_MONOTONIC time `deadline` (then closed(-ETIMEDOUT)). */
int qmp_connect(sd_event *e, const char *path, uint64_t retry_usec, uint64_t deadline,
                const QmpOps *ops, void *userdata, Qmp **ret);
/* Sends `command` with `args` (a JSON object, taken; NULL for none);
 * `done` (may be NULL) gets the reply. Commands sent before the
 * capabilities are negotiated wait for that. -ENOTCONN once closed,
 * -EBUSY with QMP_PENDING_MAX commands waiting. */
int qmp_execute(Qmp *q, const char *command, json_t *args, QmpReplyFn done, void *userdata);
bool qmp_is_ready(const Qmp *q);
/* Closes without calling anything. NULL is fine. */
void qmp_free(Qmp *q);
