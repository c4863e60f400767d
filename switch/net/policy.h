/* Who may send frames to whom on a vm-switch network. Ports are VMs, each
 * with its static MAC and role. A frame's source MAC must be its sender's;
 * clients reach only the router, the router reaches every client;
 * broadcast and multicast follow the same rule; unicast to a MAC nobody
 * has is dropped, never flooded. Nothing is learnt. Drops are counted per
 * sending port and reason. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmconf.h"

#define POLICY_MAX_PORTS 64
/* What policy_route() reads of a frame: its Ethernet header. */
#define POLICY_HDR_LEN 14

typedef enum PolicyDrop {
    POLICY_DROP_RUNT,             /* shorter than an Ethernet header */
    POLICY_DROP_SPOOFED_SOURCE,   /* source MAC is not the sender's */
    POLICY_DROP_CLIENT_TO_CLIENT, /* a client addressed another client */
    POLICY_DROP_UNKNOWN_UNICAST,  /* no port has that MAC */
    POLICY_DROP_TO_SELF,          /* addressed to the sender's own MAC */
    POLICY_DROP_NO_DESTINATION,   /* broadcast or multicast with no one to reach */
    POLICY_DROP_MAX,
} PolicyDrop;

typedef struct Policy Policy;

int policy_new(Policy **ret);
void policy_free(Policy *p);

/* Adds or replaces port's VM. -EEXIST when another port has the same MAC,
 * or when it would be a second router; -ERANGE for a port number
 * >= POLICY_MAX_PORTS. Replacing a port resets its counters. */
int policy_set_port(Policy *p, unsigned port, const uint8_t mac[6], VmRole role);
int policy_remove_port(Policy *p, unsigned port);

/* Decides where a frame of len bytes from port goes: the judge of every
 * frame a guest (or a peer's child) sends. Only the Ethernet header is
 * read: untrusted_frame holds at least MIN(len, POLICY_HDR_LEN) bytes, our
 * own copy (not shared memory the sender can still change), and that copy
 * is what must travel on as the frame's header. 1: forward to every port in
 * *ret_mask (never the sender); 0: dropped, the reason counted and stored
 * in *ret_reason when given; -EINVAL: port is not configured. */
int policy_route(Policy *p, unsigned port, const uint8_t *untrusted_frame, size_t len,
                 uint64_t *ret_mask, PolicyDrop *ret_reason);

uint64_t policy_drops(const Policy *p, unsigned port, PolicyDrop reason);
/* "spoofed_source" and so on, for counters files and logs. */
const char *policy_drop_name(PolicyDrop reason);
