/* Forwarding policy: static MACs, router and clients. */
#include "policy.h"

#include <errno.h>
#include <linux/if_ether.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

_Static_assert(POLICY_HDR_LEN == ETH_HLEN, "the policy reads the Ethernet header only");

typedef struct PolicyPort {
    bool present;
    uint8_t mac[6];
    VmRole role;
    uint64_t drops[POLICY_DROP_MAX];
} PolicyPort;

struct Policy {
    PolicyPort port[POLICY_MAX_PORTS];
};

static const char *const drop_names[POLICY_DROP_MAX] = {
    [POLICY_DROP_RUNT] = "runt",
    [POLICY_DROP_SPOOFED_SOURCE] = "spoofed_source",
    [POLICY_DROP_CLIENT_TO_CLIENT] = "client_to_client",
    [POLICY_DROP_UNKNOWN_UNICAST] = "unknown_unicast",
    [POLICY_DROP_TO_SELF] = "to_self",
    [POLICY_DROP_NO_DESTINATION] = "no_destination",
};

int policy_new(Policy **ret) {
    Policy *p = calloc(1, sizeof(*p));
    if (!p) {
        return -ENOMEM;
    }
    *ret = p;
    return 0;
}

void policy_free(Policy *p) {
    free(p);
}

int policy_set_port(Policy *p, unsigned port, const uint8_t mac[6], VmRole role) {
    if (port >= POLICY_MAX_PORTS) {
        return -ERANGE;
    }
    if (role != VM_ROLE_CLIENT && role != VM_ROLE_ROUTER) {
        return -EINVAL;
    }
    for (unsigned i = 0; i < POLICY_MAX_PORTS; i++) {
        const PolicyPort *o = &p->port[i];
        if (i == port || !o->present) {
            continue;
        }
        if (memcmp(o->mac, mac, 6) == 0) {
            return -EEXIST;
        }
        if (role == VM_ROLE_ROUTER && o->role == VM_ROLE_ROUTER) {
            return -EEXIST;
        }
    }
    p->port[port] = (PolicyPort){.present = true, .role = role};
    memcpy(p->port[port].mac, mac, 6);
    return 0;
}

int policy_remove_port(Policy *p, unsigned port) {
    if (port >= POLICY_MAX_PORTS) {
        return -ERANGE;
    }
    if (!p->port[port].present) {
        return -ENOENT;
    }
    p->port[port] = (PolicyPort){0};
    return 0;
}

static int drop(PolicyPort *src, PolicyDrop reason, PolicyDrop *ret_reason) {
    src->drops[reason]++;
    if (ret_reason) {
        *ret_reason = reason;
    }
    return 0;
}

int policy_route(Policy *p, unsigned port, const uint8_t *untrusted_frame, size_t len,
                 uint64_t *ret_mask, PolicyDrop *ret_reason) {
    if (port >= POLICY_MAX_PORTS || !p->port[port].present) {
        return -EINVAL;
    }
    PolicyPort *src = &p->port[port];
    if (len < ETH_HLEN) {
        return drop(src, POLICY_DROP_RUNT, ret_reason);
    }
    const uint8_t *dst_mac = untrusted_frame, *src_mac = untrusted_frame + ETH_ALEN;
    if (memcmp(src_mac, src->mac, ETH_ALEN) != 0) {
        return drop(src, POLICY_DROP_SPOOFED_SOURCE, ret_reason);
    }
    uint64_t mask = 0;
    if (dst_mac[0] & 1) {
        /* Broadcast and multicast: a client's reach the router, the
         * router's reach every client. */
        for (unsigned i = 0; i < POLICY_MAX_PORTS; i++) {
            const PolicyPort *d = &p->port[i];
            if (i == port || !d->present) {
                continue;
            }
            if (src->role == VM_ROLE_ROUTER || d->role == VM_ROLE_ROUTER) {
                mask |= UINT64_C(1) << i;
            }
        }
        if (!mask) {
            return drop(src, POLICY_DROP_NO_DESTINATION, ret_reason);
        }
        *ret_mask = mask;
        return 1;
    }
    if (memcmp(dst_mac, src->mac, ETH_ALEN) == 0) {
        return drop(src, POLICY_DROP_TO_SELF, ret_reason);
    }
    for (unsigned i = 0; i < POLICY_MAX_PORTS; i++) {
        const PolicyPort *d = &p->port[i];
        if (!d->present || memcmp(d->mac, dst_mac, ETH_ALEN) != 0) {
            continue;
        }
        if (src->role == VM_ROLE_CLIENT && d->role == VM_ROLE_CLIENT) {
            return drop(src, POLICY_DROP_CLIENT_TO_CLIENT, ret_reason);
        }
        *ret_mask = UINT64_C(1) << i;
        return 1;
    }
    return drop(src, POLICY_DROP_UNKNOWN_UNICAST, ret_reason);
}

uint64_t policy_drops(const Policy *p, unsigned port, PolicyDrop reason) {
    if (port >= POLICY_MAX_PORTS || reason >= POLICY_DROP_MAX) {
        return 0;
    }
    return p->port[port].drops[reason];
}

const char *policy_drop_name(PolicyDrop reason) {
    return reason < POLICY_DROP_MAX ? drop_names[reason] : "unknown";
}
