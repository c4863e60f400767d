/* The virtio side of qubes-lite-vsock: see device.h. */
#include "device.h"

#include <endian.h>
#include <errno.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>
#include <linux/virtio_vsock.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "util.h"

/* Chains handled per queue and round, so that one busy direction does not
 * starve the other nor the host side's events. */
#define BUDGET 256

struct VsockDevice {
    VsockMux *mux;
    uint64_t guest_cid;
    VuDev *dev;
    bool attached;
    bool running;     /* receive and transmit queues started */
    bool reset_owed;  /* TRANSPORT_RESET not yet given */
    bool rx_waiting;  /* out of receive buffers: until a kick */
    uint16_t rx_seen; /* avail->idx when they ran out */
    bool tx_blocked;  /* the multiplexer cannot queue a reply: until rx moved */
    VsockDeviceStats stats;
    VqElem elem;
    struct iovec iov[VQ_MAX_SEGS];
};

uint64_t vu_vsock_features(void) {
    return (UINT64_C(1) << VIRTIO_F_VERSION_1) | (UINT64_C(1) << VIRTIO_RING_F_EVENT_IDX) |
           (UINT64_C(1) << VIRTIO_RING_F_INDIRECT_DESC) | (UINT64_C(1) << VU_F_PROTOCOL_FEATURES);
}

uint64_t vu_vsock_protocol_features(void) {
    return (UINT64_C(1) << VU_PROTOCOL_F_REPLY_ACK) | (UINT64_C(1) << VU_PROTOCOL_F_CONFIG);
}

int vu_vsock_new(uint64_t guest_cid, VuDev **ret) {
    struct virtio_vsock_config cfg = {.guest_cid = htole64(guest_cid)};
    VuDevInfo info = {
        .features = vu_vsock_features(),
        .protocol_features = vu_vsock_protocol_features(),
        .n_queues = VSOCK_N_QUEUES,
        .config = (const uint8_t *)&cfg,
        .config_len = sizeof(cfg),
    };
    return vu_dev_new(&info, ret);
}

/* ---- chains ------------------------------------------------------------------ */

/* Segments [first, first + count) of e, from byte skip on, as iovecs. */
static int elem_iov(const VqElem *e, unsigned first, unsigned count, size_t skip,
                    struct iovec *iov) {
    int n = 0;
    for (unsigned i = first; i < first + count; i++) {
        size_t len = e->seg[i].len;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        iov[n++] = (struct iovec){.iov_base = (uint8_t *)e->seg[i].base + skip,
                                  .iov_len = len - skip};
        skip = 0;
    }
    return n;
}

/* Copies between a flat buffer and the first len bytes of iov (which hold
 * at least that many). */
static void iov_copy(const struct iovec *iov, int n, void *buf, size_t len, bool to_iov) {
    uint8_t *p = buf;
    for (int i = 0; i < n && len > 0; i++) {
        size_t k = MIN(iov[i].iov_len, len);
        if (to_iov) {
            memcpy(iov[i].iov_base, p, k);
        } else {
            memcpy(p, iov[i].iov_base, k);
        }
        p += k;
        len -= k;
    }
}

static void notify(VsockDevice *d, unsigned q, Vq *vq) {
    if (vq_need_notify(vq)) {
        int fd = vu_dev_call_fd(d->dev, q);
        uint64_t one = 1;
        /* Non-blocking (the core made it so): a full counter means the
         * guest has a notification pending anyway. */
        if (fd >= 0 && write(fd, &one, sizeof(one)) < 0 && errno != EAGAIN) {
            /* Nothing to do: the frontend's fd is its own business. */
        }
    }
}

/* ---- guest -> host ------------------------------------------------------------- */

static int process_tx(VsockDevice *d, uint64_t now, bool *ret_more) {
    Vq *tx = vu_dev_queue(d->dev, VSOCK_QUEUE_TX);
    VqElem *e = &d->elem;
    bool pushed = false;
    unsigned n = 0;

    if (!tx || d->tx_blocked) {
        return 0;
    }
    vq_disable_notify(tx);
    for (;;) {
        if (n == BUDGET) {
            *ret_more = true;
            break;
        }
        int r = vq_pop(tx, e);
        if (r < 0) {
            return r;
        }
        if (r == 0) {
            if (vq_enable_notify(tx)) {
                continue; /* more came while we asked for kicks */
            }
            break;
        }
        n++;
        /* The header is copied out of guest memory once and only the copy
         * is judged; the payload is passed on as it is (the guest may
         * change its own data, nothing else). */
        struct virtio_vsock_hdr h;
        if (e->n_in > 0 || e->out_len < VSOCK_HDR_SIZE) {
            d->stats.bad_chains++;
        } else {
            int k = elem_iov(e, 0, e->n_out, 0, d->iov);
            iov_copy(d->iov, k, &h, sizeof(h), false);
            k = elem_iov(e, 0, e->n_out, VSOCK_HDR_SIZE, d->iov);
            r = vsock_mux_guest_packet(d->mux, &h, d->iov, k, e->out_len - VSOCK_HDR_SIZE, now);
            if (r == -ENOBUFS) {
                /* Its reply cannot be queued yet: the packet waits in the
                 * guest's queue until the guest took ours. */
                (void)vq_rewind(tx, 1);
                d->tx_blocked = true;
                break;
            }
            d->stats.tx_packets++;
        }
        r = vq_push(tx, e->head, 0);
        if (r < 0) {
            return r;
        }
        pushed = true;
    }
    if (pushed) {
        vq_flush(tx);
        notify(d, VSOCK_QUEUE_TX, tx);
    }
    return 0;
}

/* ---- host -> guest --------------------------------------------------------------- */

static int process_rx(VsockDevice *d, uint64_t now, bool *ret_more) {
    Vq *rx = vu_dev_queue(d->dev, VSOCK_QUEUE_RX);
    VqElem *e = &d->elem;
    bool pushed = false;
    unsigned n = 0;

    if (!rx || d->rx_waiting) {
        return 0;
    }
    /* Kicks on the receive queue matter only once we ran out of buffers. */
    vq_disable_notify(rx);
    while (vsock_mux_rx_pending(d->mux)) {
        if (n == BUDGET) {
            *ret_more = true;
            break;
        }
        int r = vq_pop(rx, e);
        if (r < 0) {
            return r;
        }
        if (r == 0) {
            d->rx_seen = vq_last_avail(rx);
            if (vq_enable_notify_after(rx, d->rx_seen)) {
                continue;
            }
            d->rx_waiting = true;
            break;
        }
        n++;
        if (e->n_out > 0 || e->in_len < VSOCK_HDR_SIZE) {
            /* Not a receive buffer: given back empty, which Linux drops. */
            d->stats.bad_chains++;
            r = vq_push(rx, e->head, 0);
            if (r < 0) {
                return r;
            }
            pushed = true;
            continue;
        }
        struct virtio_vsock_hdr h;
        size_t len;
        size_t room = (size_t)MIN(e->in_len - VSOCK_HDR_SIZE, (uint64_t)VSOCK_MAX_PAYLOAD);
        int k = elem_iov(e, e->n_out, e->n_in, VSOCK_HDR_SIZE, d->iov);
        r = vsock_mux_next_packet(d->mux, d->iov, k, room, &h, &len, now);
        if (r == 0) {
            /* Nothing after all (a host side with no data): the buffer
             * stays the guest's. */
            (void)vq_rewind(rx, 1);
            break;
        }
        k = elem_iov(e, e->n_out, e->n_in, 0, d->iov);
        iov_copy(d->iov, k, &h, sizeof(h), true);
        r = vq_push(rx, e->head, (uint32_t)(VSOCK_HDR_SIZE + len));
        if (r < 0) {
            return r;
        }
        d->stats.rx_packets++;
        pushed = true;
        /* Its replies can be queued again. */
        d->tx_blocked = false;
    }
    if (pushed) {
        vq_flush(rx);
        notify(d, VSOCK_QUEUE_RX, rx);
    }
    return 0;
}

/* ---- events ------------------------------------------------------------------------ */

static int process_event(VsockDevice *d) {
    Vq *ev = vu_dev_queue(d->dev, VSOCK_QUEUE_EVENT);
    VqElem *e = &d->elem;

    if (!ev || !d->reset_owed) {
        return 0;
    }
    for (;;) {
        int r = vq_pop(ev, e);
        if (r < 0) {
            return r;
        }
        if (r == 0) {
            if (vq_enable_notify(ev)) {
                continue;
            }
            return 0; /* a kick brings a buffer */
        }
        struct virtio_vsock_event event = {.id = htole32(VIRTIO_VSOCK_EVENT_TRANSPORT_RESET)};
        uint32_t used = 0;
        if (e->n_out == 0 && e->in_len >= sizeof(event)) {
            int k = elem_iov(e, 0, e->n_in, 0, d->iov);
            iov_copy(d->iov, k, &event, sizeof(event), true);
            used = sizeof(event);
        } else {
            d->stats.bad_chains++;
        }
        r = vq_push(ev, e->head, used);
        if (r < 0) {
            return r;
        }
        vq_flush(ev);
        notify(d, VSOCK_QUEUE_EVENT, ev);
        if (used > 0) {
            d->reset_owed = false;
            d->stats.resets_sent++;
            return 0;
        }
    }
}

int vsock_device_process(VsockDevice *d, uint64_t now) {
    bool more = false;
    int r;

    if (!d->attached) {
        return 0;
    }
    r = process_tx(d, now, &more);
    bool blocked = d->tx_blocked;
    if (r >= 0) {
        r = process_rx(d, now, &more);
    }
    if (r >= 0 && blocked && !d->tx_blocked) {
        /* The guest took replies that held its transmit queue up. */
        r = process_tx(d, now, &more);
    }
    if (r >= 0) {
        r = process_event(d);
    }
    if (r < 0) {
        return r;
    }
    return more ? 1 : 0;
}

/* ---- the frontend ------------------------------------------------------------------- */

bool vsock_device_guest_ready(VsockDevice *d) {
    return d->attached && vu_dev_queue(d->dev, VSOCK_QUEUE_RX) &&
           vu_dev_queue(d->dev, VSOCK_QUEUE_TX);
}

int vsock_device_attach(VsockDevice *d) {
    VuDev *dev;
    int r = vu_vsock_new(d->guest_cid, &dev);
    if (r < 0) {
        return r;
    }
    vu_dev_free(d->dev);
    d->dev = dev;
    d->attached = true;
    d->running = false;
    d->rx_waiting = d->tx_blocked = false;
    d->reset_owed = true;
    d->stats.frontends++;
    vsock_mux_reset_all(d->mux);
    return 0;
}

void vsock_device_detach(VsockDevice *d) {
    vu_dev_free(d->dev);
    d->dev = NULL;
    d->attached = d->running = false;
    vsock_mux_reset_all(d->mux);
}

bool vsock_device_attached(const VsockDevice *d) {
    return d->attached;
}

int vsock_device_serve(VsockDevice *d, int sock) {
    int r = vu_dev_serve(d->dev, sock);
    if (r <= 0) {
        return r;
    }
    bool running = vsock_device_guest_ready(d);
    if (d->running && !running) {
        /* The frontend stopped the device (the guest reset it, the VM
         * stopped): the guest's ends of our connections are gone. */
        vsock_mux_reset_all(d->mux);
    }
    d->running = running;
    /* A ring may have (re)started: look at everything again. */
    d->rx_waiting = d->tx_blocked = false;
    return 1;
}

int vsock_device_kick_fd(const VsockDevice *d, unsigned q) {
    return d->attached ? vu_dev_kick_fd(d->dev, q) : -EBADF;
}

void vsock_device_kicked(VsockDevice *d, unsigned q) {
    if (q == VSOCK_QUEUE_RX) {
        d->rx_waiting = false;
    }
}

int vsock_device_new(VsockMux *mux, uint64_t guest_cid, VsockDevice **ret) {
    VsockDevice *d = calloc(1, sizeof(*d));
    if (!d) {
        return -ENOMEM;
    }
    d->mux = mux;
    d->guest_cid = guest_cid;
    *ret = d;
    return 0;
}

void vsock_device_free(VsockDevice *d) {
    if (!d) {
        return;
    }
    vu_dev_free(d->dev);
    free(d);
}

const VsockDeviceStats *vsock_device_stats(const VsockDevice *d) {
    return &d->stats;
}
