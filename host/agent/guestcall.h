/* One control request to the guest agent, without blocking the event
 * loop: connect (from a reserved port on vsock), Hello and the request,
 * then wait for the matching reply, all within a timeout.
 *
 *   MSG_PING            -> MSG_PONG           (is the guest agent there?)
 *   MSG_STATUS_REQUEST  -> MSG_STATUS         (live sessions)
 *   MSG_SHUTDOWN        -> MSG_SHUTDOWN_REPLY (power the VM off) */
#pragma once

#include <stdint.h>
#include <systemd/sd-event.h>

#include "addr.h"
#include "wire.h"

typedef struct GuestCall GuestCall;

/* Called once: r = 0 with the validated reply, or a negative errno
 * (-ETIMEDOUT, a connect error, -EPROTO for an unexpected answer, the
 * guest's Error as -EREMOTEIO). The call may be freed from the callback. */
typedef void (*GuestCallDone)(GuestCall *call, int r, const Msg *reply, void *userdata);

/* `secret` (WIRE_SECRET_SIZE bytes, or NULL) goes in our Hello: the VM's
 * secret, which the guest agent asks of the host agent (agent_secret()). */
int guest_call_start(sd_event *e, const Addr *guest, const uint8_t *secret, MsgType request,
                     uint64_t timeout_usec, GuestCallDone done, void *userdata,
                     GuestCall **ret);
/* Cancels a call in progress (the callback is not called). NULL is fine. */
void guest_call_free(GuestCall *call);
