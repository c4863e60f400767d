/* The control messages vm-switch's processes exchange, as the receiver
 * gets them: any bytes, any fd count, from either side. A message is
 * either refused or accepted with every field in range, and accepting it
 * is stable (the copy validates again to the same bytes).
 *
 * Input: [sender and fd count byte][message bytes...]. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "switch/net/ctl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    CtlMsg m, again;
    size_t want;
    unsigned want_fds;
    if (size < 1) {
        return 0;
    }
    CtlDir from = (data[0] & 1) ? CTL_FROM_CHILD : CTL_FROM_MAIN;
    unsigned n_fds = (data[0] >> 1) & 3;
    data++;
    size--;
    if (ctl_msg_validate(from, data, size, n_fds, &m) < 0) {
        return 0;
    }
    if (ctl_msg_shape(from, m.hdr.type, &want, &want_fds) < 0 || want != size ||
        want_fds != n_fds || m.hdr.reserved != 0 || memcmp(&m, data, size) != 0) {
        abort();
    }
    switch (m.hdr.type) {
    case CTL_SETUP:
        if (m.setup.port >= CTL_MAX_PORTS || m.setup.role > 1 || (m.setup.mac[0] & 1) ||
            memchr(m.setup.name, '\0', sizeof(m.setup.name)) == NULL) {
            abort();
        }
        break;
    case CTL_PEER:
        if (m.peer.port >= CTL_MAX_PORTS || m.peer.role > 1) {
            abort();
        }
        break;
    case CTL_PEER_REMOVE:
    case CTL_PEER_DOWN:
        if (m.ref.port >= CTL_MAX_PORTS) {
            abort();
        }
        break;
    case CTL_GET_BUFFER:
    case CTL_PUT_BUFFER:
    case CTL_BUFFER_READY:
        if (m.buffer.peer >= CTL_MAX_PORTS) {
            abort();
        }
        break;
    case CTL_PONG:
        if (m.pong.state >= CTL_STATE_MAX || strcmp(ctl_state_name(m.pong.state), "unknown") == 0) {
            abort();
        }
        break;
    default:
        break;
    }
    if (ctl_msg_validate(from, &m, size, n_fds, &again) != 0 || memcmp(&m, &again, size) != 0) {
        abort();
    }
    return 0;
}
