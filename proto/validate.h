/* The one validator of the agent protocol: every field of a decoded
 * Envelope is checked against the limits of msg.h and copied into a plain
 * Msg before any handler sees it. wire_decode() calls it; nothing else
 * reads protobuf-c structs that came from a peer. */
#pragma once

#include "msg.h"
#include "qubes-lite.pb-c.h"

/* Fills *m (its type, its fields, and m->_env when the message needs an
 * arena of its own: Exec's strings) from the decoded untrusted_env, whose
 * storage must outlive *m. Returns 0, -EINVAL when a field fails
 * validation, -EBADMSG when no message is set, or -ENOMEM. On failure
 * m->_env may be set: msg_done() releases it. */
int msg_validate(const Qubeslite__Envelope *untrusted_env, Msg *m);
