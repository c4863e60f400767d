/* The main <-> child control channel: message shapes, the validator,
 * send and receive with SCM_RIGHTS. */
#include "ctl.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "rules.h"
#include "util.h"
#include "vmconf.h"

typedef struct CtlShape {
    uint32_t type;
    CtlDir from;
    size_t size;
    unsigned n_fds;
} CtlShape;

static const CtlShape shapes[] = {
    {CTL_SETUP, CTL_FROM_MAIN, sizeof(CtlSetup), 1},
    {CTL_PEER, CTL_FROM_MAIN, sizeof(CtlPeer), 0},
    {CTL_PEER_REMOVE, CTL_FROM_MAIN, sizeof(CtlPeerRef), 0},
    {CTL_PEER_DOWN, CTL_FROM_MAIN, sizeof(CtlPeerRef), 0},
    {CTL_GET_BUFFER, CTL_FROM_MAIN, sizeof(CtlBuffer), 3},
    {CTL_PUT_BUFFER, CTL_FROM_MAIN, sizeof(CtlBuffer), 3},
    {CTL_PING, CTL_FROM_MAIN, sizeof(CtlPing), 0},
    {CTL_BUFFER_READY, CTL_FROM_CHILD, sizeof(CtlBuffer), 0},
    {CTL_PONG, CTL_FROM_CHILD, sizeof(CtlPong), 0},
};

static const char *const drop_names[CTL_DROP_MAX] = {
    [CTL_DROP_OVERSIZE] = "oversize",   [CTL_DROP_MALFORMED] = "malformed",
    [CTL_DROP_PEER_DOWN] = "peer_down", [CTL_DROP_RING_FULL] = "ring_full",
    [CTL_DROP_BAD_SLOT] = "bad_slot",   [CTL_DROP_GUEST_DOWN] = "guest_down",
};

static const char *const state_names[CTL_STATE_MAX] = {
    [CTL_STATE_WAITING] = "waiting",
    [CTL_STATE_SERVING] = "serving",
    [CTL_STATE_BROKEN] = "broken",
};

const char *ctl_drop_name(unsigned reason) {
    if (reason < POLICY_DROP_MAX) {
        return policy_drop_name((PolicyDrop)reason);
    }
    if (reason < CTL_DROP_MAX) {
        return drop_names[reason];
    }
    return "unknown";
}

const char *ctl_state_name(unsigned state) {
    return state < CTL_STATE_MAX ? state_names[state] : "unknown";
}

void ctl_counters_add(CtlCounters *a, const CtlCounters *b) {
    a->rx_frames += b->rx_frames;
    a->rx_bytes += b->rx_bytes;
    a->tx_frames += b->tx_frames;
    a->tx_bytes += b->tx_bytes;
    for (unsigned i = 0; i < CTL_DROP_MAX; i++) {
        a->drops[i] += b->drops[i];
    }
}

int ctl_msg_shape(CtlDir from, uint32_t type, size_t *ret_size, unsigned *ret_n_fds) {
    for (size_t i = 0; i < ELEMENTSOF(shapes); i++) {
        if (shapes[i].type == type && shapes[i].from == from) {
            *ret_size = shapes[i].size;
            *ret_n_fds = shapes[i].n_fds;
            return 0;
        }
    }
    return -EBADMSG;
}

void ctl_msg_init(CtlMsg *m, CtlType type) {
    memset(m, 0, sizeof(*m));
    m->hdr.type = type;
}

/* A name field: a VM name (rules.h), then nothing but NULs, so that no
 * stray bytes are carried along. */
static bool name_ok(const char untrusted_name[CTL_NAME_SIZE]) {
    char name[CTL_NAME_SIZE + 1];
    memcpy(name, untrusted_name, CTL_NAME_SIZE);
    name[CTL_NAME_SIZE] = '\0';
    size_t n = strlen(name);
    if (!vm_name_valid(name)) {
        return false;
    }
    for (size_t i = n; i < CTL_NAME_SIZE; i++) {
        if (name[i] != '\0') {
            return false;
        }
    }
    return true;
}

int ctl_msg_validate(CtlDir from, const void *untrusted, size_t len, unsigned n_fds, CtlMsg *ret) {
    CtlHdr untrusted_hdr;
    CtlMsg m;
    size_t size;
    unsigned want_fds;
    if (len < sizeof(untrusted_hdr)) {
        return -EBADMSG;
    }
    memcpy(&untrusted_hdr, untrusted, sizeof(untrusted_hdr));
    if (untrusted_hdr.reserved != 0 ||
        ctl_msg_shape(from, untrusted_hdr.type, &size, &want_fds) < 0) {
        return -EBADMSG;
    }
    if (len != size || n_fds != want_fds) {
        return -EBADMSG;
    }
    memset(&m, 0, sizeof(m));
    memcpy(&m, untrusted, size);
    switch (m.hdr.type) {
    case CTL_SETUP:
        if (m.setup.port >= CTL_MAX_PORTS || m.setup.role > VM_ROLE_ROUTER || m.setup.pad ||
            !vm_mac_valid(m.setup.mac) || !name_ok(m.setup.name)) {
            return -EBADMSG;
        }
        break;
    case CTL_PEER:
        if (m.peer.port >= CTL_MAX_PORTS || m.peer.role > VM_ROLE_ROUTER || m.peer.pad ||
            !vm_mac_valid(m.peer.mac)) {
            return -EBADMSG;
        }
        break;
    case CTL_PEER_REMOVE:
    case CTL_PEER_DOWN:
        if (m.ref.port >= CTL_MAX_PORTS) {
            return -EBADMSG;
        }
        break;
    case CTL_GET_BUFFER:
    case CTL_PUT_BUFFER:
    case CTL_BUFFER_READY:
        if (m.buffer.peer >= CTL_MAX_PORTS || m.buffer.pad) {
            return -EBADMSG;
        }
        break;
    case CTL_PING:
        break;
    case CTL_PONG:
        if (m.pong.state >= CTL_STATE_MAX || m.pong.pad) {
            return -EBADMSG;
        }
        break;
    default:
        return -EBADMSG;
    }
    *ret = m;
    return 0;
}

int ctl_recv(int sock, CtlDir from, CtlMsg *ret, int fds[CTL_MAX_FDS], unsigned *ret_n_fds) {
    /* One byte more than the largest message: a longer one shows as
     * MSG_TRUNC or as a length no type has. */
    union {
        CtlMsg m;
        uint8_t raw[sizeof(CtlMsg) + 1];
    } untrusted;
    int got[CTL_MAX_FDS];
    size_t n_got = 0;

    /* More fds than any message carries, control data that is not fds, a
     * truncated packet: refused there, every fd closed. */
    ssize_t n = recv_fds(sock, untrusted.raw, sizeof(untrusted.raw), got, CTL_MAX_FDS, &n_got,
                         RECV_FDS_STRICT | RECV_FDS_NONBLOCK);
    if (n < 0) {
        return (int)n;
    }
    if (n == 0 && n_got == 0) {
        return 0;
    }
    if (ctl_msg_validate(from, untrusted.raw, (size_t)n, (unsigned)n_got, ret) < 0) {
        for (size_t i = 0; i < n_got; i++) {
            safe_close(got[i]);
        }
        return -EBADMSG;
    }
    memcpy(fds, got, n_got * sizeof(int));
    *ret_n_fds = (unsigned)n_got;
    return 1;
}

_Static_assert(CTL_MAX_FDS <= SENDMSG_FDS_MAX, "a control message's fds fit sendmsg_fds()");

int ctl_send(int sock, const CtlMsg *m, const int *fds, unsigned n_fds) {
    size_t size;
    unsigned want_fds;
    CtlDir from = m->hdr.type >= CTL_BUFFER_READY ? CTL_FROM_CHILD : CTL_FROM_MAIN;
    if (ctl_msg_shape(from, m->hdr.type, &size, &want_fds) < 0 || n_fds != want_fds) {
        return -EINVAL;
    }
    ssize_t k;
    do {
        k = sendmsg_fds(sock, m, size, fds, n_fds, MSG_DONTWAIT);
    } while (k == -EINTR);
    if (k < 0) {
        return (int)k;
    }
    return (size_t)k == size ? 0 : -EIO;
}
