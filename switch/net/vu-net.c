/* virtio-net device description for the vhost-user core. */
#include "vu-net.h"

#include <linux/virtio_config.h>
#include <linux/virtio_net.h>
#include <linux/virtio_ring.h>
#include <string.h>

uint64_t vu_net_features(void) {
    return (UINT64_C(1) << VIRTIO_F_VERSION_1) | (UINT64_C(1) << VIRTIO_NET_F_MAC) |
           (UINT64_C(1) << VIRTIO_NET_F_MRG_RXBUF) | (UINT64_C(1) << VIRTIO_RING_F_EVENT_IDX) |
           (UINT64_C(1) << VU_F_PROTOCOL_FEATURES);
}

uint64_t vu_net_protocol_features(void) {
    return (UINT64_C(1) << VU_PROTOCOL_F_REPLY_ACK) | (UINT64_C(1) << VU_PROTOCOL_F_CONFIG);
}

int vu_net_new(const uint8_t mac[6], VuDev **ret) {
    /* Only mac is meaningful: STATUS, MQ and MTU are not offered, so the
     * guest reads nothing past it. */
    struct virtio_net_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    memcpy(cfg.mac, mac, sizeof(cfg.mac));
    VuDevInfo info = {
        .features = vu_net_features(),
        .protocol_features = vu_net_protocol_features(),
        .n_queues = VU_NET_N_QUEUES,
        .config = (const uint8_t *)&cfg,
        .config_len = sizeof(cfg.mac),
    };
    return vu_dev_new(&info, ret);
}
