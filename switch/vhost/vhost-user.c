/* vhost-user backend core: receive, validate, dispatch.
 *
 * A message is the frontend's word (untrusted_) from vu_msg_recv() until
 * vu_msg_validate() has checked every field a handler reads against the
 * request's row in the dispatch table and the limits of vhost-user.h;
 * handlers only ever see validated messages. */
#include "vhost-user.h"

#include <errno.h>
#include <linux/virtio_ring.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "util.h"

typedef struct VuQueue {
    unsigned num; /* 0 until SET_VRING_NUM */
    VuVringAddr addr;
    bool addr_set;
    uint16_t base;
    int kick_fd;
    int call_fd;
    int err_fd;
    bool started; /* kick fd received, ring translated; until GET_VRING_BASE */
    bool enabled; /* SET_VRING_ENABLE (or implied without PROTOCOL_FEATURES) */
    Vq *vq;       /* while started */
} VuQueue;

struct VuDev {
    VuDevInfo info;
    uint8_t config[VU_CONFIG_MAX];
    bool owner;
    uint64_t features;
    uint64_t protocol_features;
    VuMem *mem;
    VuQueue q[VU_MAX_QUEUES];
};

/* ---- messages ------------------------------------------------------------ */

void vu_msg_close_fds(VuMsg *m) {
    for (unsigned i = 0; i < m->n_fds; i++) {
        m->fds[i] = safe_close(m->fds[i]);
    }
    m->n_fds = 0;
}

/* Exactly n bytes of a message; the fds that ride on any of them join
 * m's. More than any request carries refuses the message (-EPROTO). */
static int recv_part(int sock, void *buf, size_t n, VuMsg *m, bool *ret_eof) {
    size_t count = m->n_fds;
    int r = recv_exact_fds(sock, buf, n, m->fds, VU_MAX_FDS, &count, RECV_FDS_STRICT, ret_eof);
    m->n_fds = (unsigned)count;
    return r == -EBADMSG ? -EPROTO : r;
}

int vu_msg_recv(int sock, VuMsg *ret) {
    VuMsg *m = ret;
    bool eof = false;
    int r;

    memset(&m->hdr, 0, sizeof(m->hdr));
    m->n_fds = 0;
    r = recv_part(sock, &m->hdr, sizeof(m->hdr), m, &eof);
    if (r < 0) {
        goto fail;
    }
    if (eof) {
        return 0;
    }
    if (m->hdr.size > VU_PAYLOAD_MAX) {
        r = -EMSGSIZE;
        goto fail;
    }
    memset(&m->payload, 0, sizeof(m->payload));
    r = recv_part(sock, m->payload.raw, m->hdr.size, m, NULL);
    if (r < 0) {
        goto fail;
    }
    return 1;
fail:
    vu_msg_close_fds(m);
    return r;
}

int vu_msg_send(int sock, const VuMsg *m) {
    uint8_t buf[sizeof(VuMsgHdr) + VU_PAYLOAD_MAX];
    if (m->hdr.size > VU_PAYLOAD_MAX) {
        return -EINVAL;
    }
    memcpy(buf, &m->hdr, sizeof(m->hdr));
    memcpy(buf + sizeof(m->hdr), m->payload.raw, m->hdr.size);
    size_t n = sizeof(m->hdr) + m->hdr.size;
    size_t done = 0;
    while (done < n) {
        ssize_t k = send(sock, buf + done, n - done, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        done += (size_t)k;
    }
    return 0;
}

/* ---- the dispatch table ---------------------------------------------------- */

typedef enum VuSize {
    SIZE_NONE,   /* no payload */
    SIZE_U64,    /* one u64 */
    SIZE_STATE,  /* VuVringState */
    SIZE_ADDR,   /* VuVringAddr */
    SIZE_MEM,    /* 8 + 32 * nregions */
    SIZE_CONFIG, /* 12 + config.size */
} VuSize;

typedef enum VuFds {
    FDS_NONE,  /* never an fd */
    FDS_VRING, /* one fd, none when the NOFD bit is set */
    FDS_MEM,   /* one per memory region */
} VuFds;

typedef enum VuQueueArg {
    QUEUE_NONE,
    QUEUE_STATE, /* payload.state.index */
    QUEUE_ADDR,  /* payload.addr.index */
    QUEUE_U64,   /* payload.u64 & VU_VRING_IDX_MASK */
} VuQueueArg;

typedef int (*VuHandlerFn)(VuDev *d, VuMsg *m, VuMsg *reply);

typedef struct VuHandler {
    const char *name;
    VuSize size;
    VuFds fds;
    VuQueueArg queue;
    bool needs_owner;        /* only after SET_OWNER */
    bool needs_stopped;      /* the ring must not be running (-EBUSY, as a handler's result) */
    bool replies;            /* has a reply of its own */
    uint64_t needs_protocol; /* protocol features that must be acked */
    bool needs_pf_offered;   /* only for devices offering VU_F_PROTOCOL_FEATURES */
    VuHandlerFn fn;
} VuHandler;

static const VuHandler *handler_for(uint32_t request);

static bool is_pow2(uint64_t n) {
    return n != 0 && (n & (n - 1)) == 0;
}

/* The payload size the request's kind has; for the sized kinds, the count
 * inside the payload is bounded first. */
static int expected_size(const VuMsg *untrusted, VuSize kind, uint64_t *ret) {
    switch (kind) {
    case SIZE_NONE:
        *ret = 0;
        return 0;
    case SIZE_U64:
        *ret = sizeof(uint64_t);
        return 0;
    case SIZE_STATE:
        *ret = sizeof(VuVringState);
        return 0;
    case SIZE_ADDR:
        *ret = sizeof(VuVringAddr);
        return 0;
    case SIZE_MEM:
        if (untrusted->hdr.size < VU_MEM_TABLE_HDR_SIZE || untrusted->payload.mem.nregions == 0 ||
            untrusted->payload.mem.nregions > VU_MEM_MAX_REGIONS) {
            return -EINVAL;
        }
        *ret = VU_MEM_TABLE_HDR_SIZE +
               (uint64_t)untrusted->payload.mem.nregions * sizeof(VuMemRegionDesc);
        return 0;
    case SIZE_CONFIG:
        if (untrusted->hdr.size < VU_CONFIG_HDR_SIZE ||
            untrusted->payload.config.size > VU_CONFIG_MAX) {
            return -EINVAL;
        }
        *ret = VU_CONFIG_HDR_SIZE + (uint64_t)untrusted->payload.config.size;
        return 0;
    }
    return -EINVAL;
}

/* Header: version 1, no reply bit from the frontend, NEED_REPLY only once
 * REPLY_ACK was negotiated, nothing else; the payload size exactly the
 * request's. */
static int check_header(const VuDev *d, const VuHandler *h, const VuMsg *untrusted) {
    uint64_t size;
    if ((untrusted->hdr.flags & VU_VERSION_MASK) != VU_VERSION ||
        (untrusted->hdr.flags & ~(VU_VERSION_MASK | VU_FLAG_NEED_REPLY)) != 0) {
        return -EPROTO;
    }
    if ((untrusted->hdr.flags & VU_FLAG_NEED_REPLY) &&
        !(d->protocol_features & (UINT64_C(1) << VU_PROTOCOL_F_REPLY_ACK))) {
        return -EPROTO;
    }
    if (untrusted->hdr.size > VU_PAYLOAD_MAX) {
        return -EMSGSIZE;
    }
    int r = expected_size(untrusted, h->size, &size);
    if (r < 0) {
        return r;
    }
    return untrusted->hdr.size == size ? 0 : -EBADMSG;
}

/* State: what must have come first. */
static int check_state(const VuDev *d, const VuHandler *h) {
    if (h->needs_owner && !d->owner) {
        return -EPROTO;
    }
    if ((d->protocol_features & h->needs_protocol) != h->needs_protocol) {
        return -EPROTO;
    }
    /* qemu sends SET_VRING_ENABLE as soon as the backend offers
     * PROTOCOL_FEATURES, before any SET_FEATURES: offered is enough. */
    if (h->needs_pf_offered && !(d->info.features & (UINT64_C(1) << VU_F_PROTOCOL_FEATURES))) {
        return -EPROTO;
    }
    return 0;
}

/* The queue index, where the request has one: one of the device's. */
static int check_queue(const VuDev *d, const VuHandler *h, const VuMsg *untrusted) {
    uint32_t qi = 0;
    switch (h->queue) {
    case QUEUE_NONE:
        return 0;
    case QUEUE_STATE:
        qi = untrusted->payload.state.index;
        break;
    case QUEUE_ADDR:
        qi = untrusted->payload.addr.index;
        break;
    case QUEUE_U64:
        if (untrusted->payload.u64 & ~(uint64_t)(VU_VRING_IDX_MASK | VU_VRING_NOFD_MASK)) {
            return -EINVAL;
        }
        qi = (uint32_t)(untrusted->payload.u64 & VU_VRING_IDX_MASK);
        break;
    }
    return qi < d->info.n_queues ? 0 : -ERANGE;
}

/* Exactly as many fds as the request carries. */
static int check_fds(const VuHandler *h, const VuMsg *untrusted) {
    unsigned want_fds = 0;
    switch (h->fds) {
    case FDS_NONE:
        want_fds = 0;
        break;
    case FDS_VRING:
        want_fds = (untrusted->payload.u64 & VU_VRING_NOFD_MASK) ? 0 : 1;
        break;
    case FDS_MEM:
        want_fds = untrusted->payload.mem.nregions; /* bounded by expected_size */
        break;
    }
    return untrusted->n_fds == want_fds ? 0 : -EBADF;
}

/* The payload's values, per request. */
static int check_values(const VuDev *d, const VuMsg *untrusted) {
    switch (untrusted->hdr.request) {
    case VU_SET_FEATURES:
        return (untrusted->payload.u64 & ~d->info.features) ? -EINVAL : 0;
    case VU_SET_PROTOCOL_FEATURES:
        return (untrusted->payload.u64 & ~d->info.protocol_features) ? -EINVAL : 0;
    case VU_SET_VRING_NUM:
        return is_pow2(untrusted->payload.state.num) && untrusted->payload.state.num <= VQ_MAX_SIZE
                   ? 0
                   : -EINVAL;
    case VU_SET_VRING_BASE:
        /* Split rings: a 16-bit index and nothing above it. */
        return untrusted->payload.state.num > VU_VRING_BASE_MAX ? -EINVAL : 0;
    case VU_SET_VRING_ENABLE:
        return untrusted->payload.state.num > 1 ? -EINVAL : 0;
    case VU_SET_VRING_ADDR: {
        const VuVringAddr *a = &untrusted->payload.addr;
        /* No dirty logging is offered, so no log flag. */
        if (a->flags != 0 || a->desc % VQ_DESC_ALIGN || a->avail % VQ_AVAIL_ALIGN ||
            a->used % VQ_USED_ALIGN) {
            return -EINVAL;
        }
        return 0;
    }
    case VU_SET_VRING_KICK:
        /* We wait on kicks and never poll. */
        return (untrusted->payload.u64 & VU_VRING_NOFD_MASK) ? -EOPNOTSUPP : 0;
    case VU_SET_MEM_TABLE:
        return vu_mem_check_table(untrusted->payload.mem.regions, untrusted->payload.mem.nregions);
    case VU_GET_CONFIG:
        return (untrusted->payload.config.flags & ~VU_CONFIG_FLAGS_KNOWN) ? -EINVAL : 0;
    default:
        return 0;
    }
}

int vu_msg_validate(const VuDev *d, const VuMsg *untrusted) {
    const VuHandler *h = handler_for(untrusted->hdr.request);
    if (!h) {
        return -EOPNOTSUPP;
    }
    int r = check_header(d, h, untrusted);
    if (r >= 0) {
        r = check_state(d, h);
    }
    if (r >= 0) {
        r = check_queue(d, h, untrusted);
    }
    if (r >= 0) {
        r = check_fds(h, untrusted);
    }
    if (r >= 0) {
        r = check_values(d, untrusted);
    }
    return r;
}

/* ---- queues ------------------------------------------------------------------ */

static void queue_stop(VuQueue *q) {
    if (q->vq) {
        q->base = vq_last_avail(q->vq);
        vq_free(q->vq);
        q->vq = NULL;
    }
    q->kick_fd = safe_close(q->kick_fd);
    q->started = false;
}

static void queue_reset(VuQueue *q) {
    queue_stop(q);
    q->call_fd = safe_close(q->call_fd);
    q->err_fd = safe_close(q->err_fd);
    *q = (VuQueue){.kick_fd = -EBADF, .call_fd = -EBADF, .err_fd = -EBADF};
}

/* Translates the ring's addresses in mem and builds its walker. */
static int queue_build(const VuDev *d, const VuQueue *q, const VuMem *mem, uint16_t base,
                       Vq **ret) {
    void *desc, *avail, *used;
    int r;

    if (q->num == 0 || !q->addr_set || !mem) {
        return -EPROTO;
    }
    r = vu_mem_uva(mem, q->addr.desc, vq_desc_size(q->num), &desc);
    if (r < 0) {
        return r;
    }
    r = vu_mem_uva(mem, q->addr.avail, vq_avail_size(q->num), &avail);
    if (r < 0) {
        return r;
    }
    r = vu_mem_uva(mem, q->addr.used, vq_used_size(q->num), &used);
    if (r < 0) {
        return r;
    }
    VqConfig c = {
        .mem = mem,
        .desc = desc,
        .avail = avail,
        .used = used,
        .last_avail = base,
        .event_idx = (d->features >> VIRTIO_RING_F_EVENT_IDX) & 1,
        .indirect = (d->features >> VIRTIO_RING_F_INDIRECT_DESC) & 1,
    };
    /* vq_new refuses parts misaligned in our mapping. */
    return vq_new(&c, q->num, ret);
}

static VuQueue *msg_queue(VuDev *d, const VuMsg *m, VuQueueArg kind) {
    switch (kind) {
    case QUEUE_STATE:
        return &d->q[m->payload.state.index];
    case QUEUE_ADDR:
        return &d->q[m->payload.addr.index];
    case QUEUE_U64:
        return &d->q[m->payload.u64 & VU_VRING_IDX_MASK];
    case QUEUE_NONE:
        break;
    }
    return NULL;
}

static bool any_started(const VuDev *d) {
    for (unsigned i = 0; i < d->info.n_queues; i++) {
        if (d->q[i].started) {
            return true;
        }
    }
    return false;
}

/* ---- handlers ------------------------------------------------------------------ */

static void reply_u64(VuMsg *reply, uint64_t v) {
    reply->hdr.size = sizeof(uint64_t);
    reply->payload.u64 = v;
}

static int h_get_features(VuDev *d, VuMsg *m, VuMsg *reply) {
    reply_u64(reply, d->info.features);
    return 0;
}

static int h_set_features(VuDev *d, VuMsg *m, VuMsg *reply) {
    uint64_t ring_bits =
        (UINT64_C(1) << VIRTIO_RING_F_EVENT_IDX) | (UINT64_C(1) << VIRTIO_RING_F_INDIRECT_DESC);
    /* A running walker was built for the ring features it had. */
    if (((d->features ^ m->payload.u64) & ring_bits) && any_started(d)) {
        return -EBUSY;
    }
    d->features = m->payload.u64;
    return 0;
}

static int h_set_owner(VuDev *d, VuMsg *m, VuMsg *reply) {
    d->owner = true;
    return 0;
}

/* Deprecated; treated as a device reset: every ring stops and forgets its
 * set-up, features go back to none. Memory and ownership stay. */
static int h_reset_owner(VuDev *d, VuMsg *m, VuMsg *reply) {
    for (unsigned i = 0; i < d->info.n_queues; i++) {
        queue_reset(&d->q[i]);
    }
    d->features = 0;
    return 0;
}

static int h_get_protocol_features(VuDev *d, VuMsg *m, VuMsg *reply) {
    reply_u64(reply, d->info.protocol_features);
    return 0;
}

static int h_set_protocol_features(VuDev *d, VuMsg *m, VuMsg *reply) {
    d->protocol_features = m->payload.u64;
    return 0;
}

static int h_get_queue_num(VuDev *d, VuMsg *m, VuMsg *reply) {
    reply_u64(reply, d->info.n_queues);
    return 0;
}

static int h_set_mem_table(VuDev *d, VuMsg *m, VuMsg *reply) {
    VuMem *mem = NULL;
    Vq *rebuilt[VU_MAX_QUEUES] = {0};
    int r;

    r = vu_mem_new(m->payload.mem.regions, m->fds, m->payload.mem.nregions, &mem);
    if (r < 0) {
        return r;
    }
    /* Running rings move to the new mapping, all or none. */
    for (unsigned i = 0; i < d->info.n_queues; i++) {
        VuQueue *q = &d->q[i];
        if (!q->started) {
            continue;
        }
        r = queue_build(d, q, mem, vq_last_avail(q->vq), &rebuilt[i]);
        if (r < 0) {
            for (unsigned j = 0; j < i; j++) {
                vq_free(rebuilt[j]);
            }
            vu_mem_free(mem);
            return r;
        }
    }
    for (unsigned i = 0; i < d->info.n_queues; i++) {
        if (d->q[i].started) {
            vq_free(d->q[i].vq);
            d->q[i].vq = rebuilt[i];
        }
    }
    vu_mem_free(d->mem);
    d->mem = mem;
    /* The mappings hold the memory; the fds are closed by the caller. */
    return 0;
}

static int h_set_vring_num(VuDev *d, VuMsg *m, VuMsg *reply) {
    msg_queue(d, m, QUEUE_STATE)->num = m->payload.state.num;
    return 0;
}

static int h_set_vring_addr(VuDev *d, VuMsg *m, VuMsg *reply) {
    VuQueue *q = msg_queue(d, m, QUEUE_ADDR);
    q->addr = m->payload.addr;
    q->addr_set = true;
    return 0;
}

static int h_set_vring_base(VuDev *d, VuMsg *m, VuMsg *reply) {
    msg_queue(d, m, QUEUE_STATE)->base = (uint16_t)m->payload.state.num;
    return 0;
}

/* Stops the ring and reports where it stopped; the set-up stays, so that
 * SET_VRING_KICK starts it again without reconnecting. */
static int h_get_vring_base(VuDev *d, VuMsg *m, VuMsg *reply) {
    VuQueue *q = msg_queue(d, m, QUEUE_STATE);
    queue_stop(q);
    reply->hdr.size = sizeof(VuVringState);
    reply->payload.state = (VuVringState){.index = m->payload.state.index, .num = q->base};
    return 0;
}

static int h_set_vring_kick(VuDev *d, VuMsg *m, VuMsg *reply) {
    VuQueue *q = msg_queue(d, m, QUEUE_U64);
    if (q->started) {
        /* A new kick fd for a running ring. */
        safe_close(q->kick_fd);
        q->kick_fd = TAKE_FD(m->fds[0]);
        return 0;
    }
    Vq *vq;
    int r = queue_build(d, q, d->mem, q->base, &vq);
    if (r < 0) {
        return r;
    }
    q->vq = vq;
    q->kick_fd = TAKE_FD(m->fds[0]);
    q->started = true;
    /* Without PROTOCOL_FEATURES a ring starts enabled. */
    if (!(d->features & (UINT64_C(1) << VU_F_PROTOCOL_FEATURES))) {
        q->enabled = true;
    }
    return 0;
}

/* A call or err fd replaced by the message's (none with the NOFD flag). */
static void replace_vring_fd(int *fd, VuMsg *m) {
    safe_close(*fd);
    *fd = (m->payload.u64 & VU_VRING_NOFD_MASK) ? -EBADF : TAKE_FD(m->fds[0]);
}

static int h_set_vring_call(VuDev *d, VuMsg *m, VuMsg *reply) {
    VuQueue *q = msg_queue(d, m, QUEUE_U64);
    replace_vring_fd(&q->call_fd, m);
    if (q->call_fd >= 0) {
        /* Never block on the frontend's fd (a pipe, a saturated eventfd):
         * EAGAIN means a notification is pending already. */
        (void)fd_nonblock(q->call_fd, true);
    }
    return 0;
}

static int h_set_vring_err(VuDev *d, VuMsg *m, VuMsg *reply) {
    replace_vring_fd(&msg_queue(d, m, QUEUE_U64)->err_fd, m);
    return 0;
}

static int h_set_vring_enable(VuDev *d, VuMsg *m, VuMsg *reply) {
    VuQueue *q = msg_queue(d, m, QUEUE_STATE);
    q->enabled = m->payload.state.num == 1;
    return 0;
}

/* Reads of any offset and size (crosvm reads byte by byte); a read outside
 * the config space gets an empty reply rather than a disconnect. */
static int h_get_config(VuDev *d, VuMsg *m, VuMsg *reply) {
    uint32_t off = m->payload.config.offset;
    uint32_t len = m->payload.config.size;
    reply->payload.config.offset = off;
    reply->payload.config.flags = m->payload.config.flags;
    if (off > d->info.config_len || len > d->info.config_len - off) {
        reply->payload.config.size = 0;
        reply->hdr.size = VU_CONFIG_HDR_SIZE;
        return 0;
    }
    reply->payload.config.size = len;
    memcpy(reply->payload.config.data, d->config + off, len);
    reply->hdr.size = VU_CONFIG_HDR_SIZE + len;
    return 0;
}

#define H(req, ...) [req] = {.name = #req, __VA_ARGS__}

/* Every request this backend serves. Missing ones (log, IOTLB, inflight,
 * status, mem slots, SET_CONFIG: none of them offered) are refused. */
static const VuHandler handlers[VU_REQUEST_MAX] = {
    H(VU_GET_FEATURES, .size = SIZE_NONE, .replies = true, .fn = h_get_features),
    H(VU_SET_FEATURES, .size = SIZE_U64, .fn = h_set_features),
    H(VU_SET_OWNER, .size = SIZE_NONE, .fn = h_set_owner),
    H(VU_RESET_OWNER, .size = SIZE_NONE, .needs_owner = true, .fn = h_reset_owner),
    H(VU_SET_MEM_TABLE, .size = SIZE_MEM, .fds = FDS_MEM, .needs_owner = true,
      .fn = h_set_mem_table),
    H(VU_SET_VRING_NUM, .size = SIZE_STATE, .queue = QUEUE_STATE, .needs_owner = true,
      .needs_stopped = true, .fn = h_set_vring_num),
    H(VU_SET_VRING_ADDR, .size = SIZE_ADDR, .queue = QUEUE_ADDR, .needs_owner = true,
      .needs_stopped = true, .fn = h_set_vring_addr),
    H(VU_SET_VRING_BASE, .size = SIZE_STATE, .queue = QUEUE_STATE, .needs_owner = true,
      .needs_stopped = true, .fn = h_set_vring_base),
    H(VU_GET_VRING_BASE, .size = SIZE_STATE, .queue = QUEUE_STATE, .needs_owner = true,
      .replies = true, .fn = h_get_vring_base),
    H(VU_SET_VRING_KICK, .size = SIZE_U64, .fds = FDS_VRING, .queue = QUEUE_U64,
      .needs_owner = true, .fn = h_set_vring_kick),
    H(VU_SET_VRING_CALL, .size = SIZE_U64, .fds = FDS_VRING, .queue = QUEUE_U64,
      .needs_owner = true, .fn = h_set_vring_call),
    H(VU_SET_VRING_ERR, .size = SIZE_U64, .fds = FDS_VRING, .queue = QUEUE_U64, .needs_owner = true,
      .fn = h_set_vring_err),
    H(VU_GET_PROTOCOL_FEATURES, .size = SIZE_NONE, .replies = true, .fn = h_get_protocol_features),
    H(VU_SET_PROTOCOL_FEATURES, .size = SIZE_U64, .fn = h_set_protocol_features),
    H(VU_GET_QUEUE_NUM, .size = SIZE_NONE, .replies = true, .fn = h_get_queue_num),
    H(VU_SET_VRING_ENABLE, .size = SIZE_STATE, .queue = QUEUE_STATE, .needs_owner = true,
      .needs_pf_offered = true, .fn = h_set_vring_enable),
    H(VU_GET_CONFIG, .size = SIZE_CONFIG, .replies = true,
      .needs_protocol = UINT64_C(1) << VU_PROTOCOL_F_CONFIG, .fn = h_get_config),
};

static const VuHandler *handler_for(uint32_t request) {
    if (request >= VU_REQUEST_MAX || !handlers[request].fn) {
        return NULL;
    }
    return &handlers[request];
}

const char *vu_request_name(uint32_t request) {
    const VuHandler *h = handler_for(request);
    /* Names as the table spells them, without our prefix. */
    return h ? h->name + strlen("VU_") : "unknown";
}

int vu_dev_handle(VuDev *d, VuMsg *untrusted_msg, VuMsg *reply, bool *ret_has_reply) {
    const VuHandler *h;
    int r;

    *ret_has_reply = false;
    r = vu_msg_validate(d, untrusted_msg);
    if (r < 0) {
        vu_msg_close_fds(untrusted_msg);
        return r;
    }
    /* Validated, and in our own memory: the frontend cannot change it. */
    VuMsg *m = untrusted_msg;
    h = handler_for(m->hdr.request);

    memset(&reply->hdr, 0, sizeof(reply->hdr));
    reply->hdr.request = m->hdr.request;
    reply->hdr.flags = VU_VERSION | VU_FLAG_REPLY;
    reply->n_fds = 0;

    /* NEED_REPLY is read before the handler: SET_PROTOCOL_FEATURES may
     * change whether REPLY_ACK is on, but this message asked already. */
    bool ack = !h->replies && (m->hdr.flags & VU_FLAG_NEED_REPLY);
    if (h->needs_stopped && msg_queue(d, m, h->queue)->started) {
        r = -EBUSY; /* its walker was built from what this would change */
    } else {
        r = h->fn(d, m, reply);
    }
    vu_msg_close_fds(m);
    if (h->replies) {
        *ret_has_reply = r >= 0;
    } else if (ack) {
        reply_u64(reply, r < 0 ? 1 : 0);
        *ret_has_reply = true;
    }
    return r;
}

int vu_dev_serve(VuDev *d, int sock) {
    VuMsg untrusted_msg, reply;
    bool has_reply;
    int r, k;

    r = vu_msg_recv(sock, &untrusted_msg);
    if (r <= 0) {
        return r;
    }
    r = vu_dev_handle(d, &untrusted_msg, &reply, &has_reply);
    if (has_reply) {
        k = vu_msg_send(sock, &reply);
        if (k < 0 && r >= 0) {
            r = k;
        }
    }
    return r < 0 ? r : 1;
}

/* ---- device ----------------------------------------------------------------------- */

int vu_dev_new(const VuDevInfo *info, VuDev **ret) {
    if (info->n_queues == 0 || info->n_queues > VU_MAX_QUEUES || info->config_len > VU_CONFIG_MAX ||
        (info->config_len > 0 && !info->config)) {
        return -EINVAL;
    }
    VuDev *d = calloc(1, sizeof(*d));
    if (!d) {
        return -ENOMEM;
    }
    d->info = *info;
    if (info->config_len > 0) {
        memcpy(d->config, info->config, info->config_len);
    }
    d->info.config = d->config;
    for (unsigned i = 0; i < VU_MAX_QUEUES; i++) {
        d->q[i] = (VuQueue){.kick_fd = -EBADF, .call_fd = -EBADF, .err_fd = -EBADF};
    }
    *ret = d;
    return 0;
}

void vu_dev_free(VuDev *d) {
    if (!d) {
        return;
    }
    for (unsigned i = 0; i < VU_MAX_QUEUES; i++) {
        queue_reset(&d->q[i]);
    }
    vu_mem_free(d->mem);
    free(d);
}

uint64_t vu_dev_features(const VuDev *d) {
    return d->features;
}

uint64_t vu_dev_protocol_features(const VuDev *d) {
    return d->protocol_features;
}

Vq *vu_dev_queue(VuDev *d, unsigned idx) {
    if (idx >= d->info.n_queues || !d->q[idx].started || !d->q[idx].enabled) {
        return NULL;
    }
    return d->q[idx].vq;
}

int vu_dev_kick_fd(const VuDev *d, unsigned idx) {
    return idx < d->info.n_queues ? d->q[idx].kick_fd : -EBADF;
}

int vu_dev_call_fd(const VuDev *d, unsigned idx) {
    return idx < d->info.n_queues ? d->q[idx].call_fd : -EBADF;
}
