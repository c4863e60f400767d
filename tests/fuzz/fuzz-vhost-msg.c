/* The vhost-user message stream against a fresh virtio-net device: every
 * message goes through the validator and the dispatch table, with real fds
 * (duplicates of a memfd that stands for guest memory) attached. After each
 * message the running rings are walked a little over that memory, which
 * also holds the input's bytes. The same bytes are then received from a
 * socket to exercise message framing.
 *
 * Input: messages, each [fd count byte][12-byte header][payload of
 * header.size bytes, or what is left]. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "switch/vhost/vhost-user.h"
#include "switch/net/vu-net.h"

#define MEM_SIZE (1u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int guest_memfd(void) {
    static int fd = -1;
    if (fd < 0) {
        fd = memfd_create("fuzz-guest", MFD_CLOEXEC);
        if (fd < 0 || ftruncate(fd, MEM_SIZE) < 0) {
            abort();
        }
    }
    return fd;
}

static void walk_rings(VuDev *d) {
    static VqElem e;
    for (unsigned q = 0; q < VU_NET_N_QUEUES; q++) {
        Vq *vq = vu_dev_queue(d, q);
        for (int i = 0; vq && i < 4; i++) {
            if (vq_pop(vq, &e) <= 0) {
                break;
            }
            vq_push(vq, e.head, (uint32_t)e.in_len);
            vq_flush(vq);
            vq_need_notify(vq);
        }
        if (vq) {
            vq_enable_notify(vq);
        }
    }
}

static void direct(const uint8_t *data, size_t size) {
    static const uint8_t mac[6] = {0x52, 0x54, 0, 0, 0, 1};
    VuDev *d;
    if (vu_net_new(mac, &d) < 0) {
        abort();
    }
    while (size >= 1 + sizeof(VuMsgHdr)) {
        VuMsg m, reply;
        bool has_reply;
        memset(&m, 0, sizeof(m));
        unsigned nfds = data[0] % (VU_MAX_FDS + 1);
        memcpy(&m.hdr, data + 1, sizeof(m.hdr));
        data += 1 + sizeof(m.hdr);
        size -= 1 + sizeof(m.hdr);
        size_t n = m.hdr.size < size ? m.hdr.size : size;
        memcpy(m.payload.raw, data, n < VU_PAYLOAD_MAX ? n : VU_PAYLOAD_MAX);
        data += n;
        size -= n;
        for (unsigned i = 0; i < nfds; i++) {
            m.fds[i] = dup(guest_memfd());
            if (m.fds[i] < 0) {
                abort();
            }
        }
        m.n_fds = nfds;
        vu_dev_handle(d, &m, &reply, &has_reply);
        /* Every fd is consumed, kept or closed. */
        if (m.n_fds != 0) {
            abort();
        }
        walk_rings(d);
    }
    vu_dev_free(d);
}

static void framed(const uint8_t *data, size_t size) {
    int sv[2];
    static const uint8_t mac[6] = {0x52, 0x54, 0, 0, 0, 1};
    VuDev *d;
    if (size > 64 * 1024) {
        return;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 || vu_net_new(mac, &d) < 0) {
        abort();
    }
    /* The socket buffer holds 64 KiB and replies go nowhere: keep the
     * replies small enough not to block, by bounding the rounds. */
    int snd = 1 << 20;
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &snd, sizeof(snd));
    setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &snd, sizeof(snd));
    if (size > 0 && write(sv[0], data, size) != (ssize_t)size) {
        abort();
    }
    shutdown(sv[0], SHUT_WR);
    for (int i = 0; i < 256; i++) {
        if (vu_dev_serve(d, sv[1]) <= 0) {
            break;
        }
    }
    vu_dev_free(d);
    close(sv[0]);
    close(sv[1]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int fd = guest_memfd();
    /* Guest memory: the input's bytes, then zeros. */
    if (ftruncate(fd, 0) < 0 || ftruncate(fd, MEM_SIZE) < 0 ||
        pwrite(fd, data, size < MEM_SIZE ? size : MEM_SIZE, 0) < 0) {
        abort();
    }
    direct(data, size);
    framed(data, size);
    return 0;
}
