/* The virtio-net device on top of the vhost-user core: exactly the
 * features both qemu and crosvm need (VERSION_1, MAC, MRG_RXBUF,
 * EVENT_IDX and PROTOCOL_FEATURES; protocol features REPLY_ACK and CONFIG:
 * no MQ, dirty log, inflight or IOTLB), and a config space holding the
 * MAC (crosvm reads it through GET_CONFIG; qemu uses its own mac=
 * option). */
#pragma once

#include <stdint.h>

#include "switch/vhost/vhost-user.h"

/* Virtqueues: receive (guest RX) and transmit (guest TX). */
#define VU_NET_RX 0
#define VU_NET_TX 1
#define VU_NET_N_QUEUES 2

/* VERSION_1, MAC, MRG_RXBUF, EVENT_IDX, PROTOCOL_FEATURES. */
uint64_t vu_net_features(void);
/* REPLY_ACK, CONFIG. */
uint64_t vu_net_protocol_features(void);

/* A virtio-net device whose config space holds mac. */
int vu_net_new(const uint8_t mac[6], VuDev **ret);
