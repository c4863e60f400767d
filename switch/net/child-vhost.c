/* A child's vhost-user side: the frontend and the device. */
#include "child-vhost.h"

#include <errno.h>
#include <linux/virtio_config.h>
#include <linux/virtio_net.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "log.h"
#include "util.h"

/* Registers the device's kick fds. They are the frontend's: one epoll
 * cannot watch (a regular file, a memfd) is refused, -EPERM and the like. */
static int sync_kick_fds(Child *c) {
    int ret = 0;
    for (unsigned q = 0; q < VU_NET_N_QUEUES; q++) {
        if (c->kick_reg[q] >= 0) {
            child_epoll_del(c, c->kick_reg[q]);
            c->kick_reg[q] = -EBADF;
        }
        int fd = c->dev ? vu_dev_kick_fd(c->dev, q) : -EBADF;
        if (fd >= 0 && ret == 0) {
            /* Never block on a frontend's eventfd. */
            (void)fd_nonblock(fd, true);
            struct epoll_event ev = {.events = EPOLLIN, .data.u64 = EV(EV_KICK, q)};
            if (epoll_ctl(c->epoll, EPOLL_CTL_ADD, fd, &ev) < 0) {
                ret = -errno;
                continue;
            }
            c->kick_reg[q] = fd;
        }
    }
    return ret;
}

void device_reset(Child *c) {
    vu_dev_free(c->dev);
    c->dev = NULL;
    int r = vu_net_new(c->mac, &c->dev);
    if (r < 0) {
        die("%s: cannot create the device: %s", c->name, strerror(-r));
    }
}

/* The frontend is gone (or we dropped it): forget the device and accept
 * the next connection. */
static void frontend_drop(Child *c, CtlState state) {
    if (c->conn >= 0) {
        child_epoll_del(c, c->conn);
        c->conn = safe_close(c->conn);
        child_epoll_add(c, c->listen_fd, EV(EV_LISTEN, 0));
    }
    device_reset(c);
    (void)sync_kick_fds(c); /* a new device has none */
    c->state = state;
    c->tx_blocked = false;
    c->rx_waiting = false;
}

void device_broken(Child *c, const char *what, int r) {
    log_warning("%s: the guest broke its %s queue (%s): dropping the frontend", c->name, what,
                strerror(-r));
    frontend_drop(c, CTL_STATE_BROKEN);
}

void on_listen(Child *c) {
    int fd = accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
            log_warning("%s: accept: %m", c->name);
        }
        return;
    }
    /* vu_dev_serve() reads whole messages from a blocking socket. */
    (void)fd_nonblock(fd, false);
    child_epoll_del(c, c->listen_fd);
    c->conn = fd;
    child_epoll_add(c, fd, EV(EV_CONN, 0));
    c->state = CTL_STATE_SERVING;
    log_info("%s: frontend connected", c->name);
}

void on_conn(Child *c) {
    int r = vu_dev_serve(c->dev, c->conn);
    if (r == 0) {
        log_info("%s: frontend disconnected", c->name);
        frontend_drop(c, CTL_STATE_WAITING);
        return;
    }
    if (r == -ECONNRESET || r == -EPIPE) {
        log_info("%s: frontend disconnected: %s", c->name, strerror(-r));
        frontend_drop(c, CTL_STATE_WAITING);
        return;
    }
    if (r < 0) {
        /* A message the validator or a handler refused: the frontend broke
         * the protocol, as a guest breaks it with a bad descriptor. */
        log_warning("%s: vhost-user: %s: dropping the frontend", c->name, strerror(-r));
        frontend_drop(c, CTL_STATE_BROKEN);
        return;
    }
    r = sync_kick_fds(c);
    if (r < 0) {
        log_warning("%s: vhost-user: a kick fd that cannot be polled (%s): dropping the frontend",
                    c->name, strerror(-r));
        frontend_drop(c, CTL_STATE_BROKEN);
        return;
    }
    /* A ring may have started (or restarted): look at everything. */
    c->work_pending = true;
    c->rx_waiting = false;
}

size_t net_hdr_len(const Child *c) {
    uint64_t f = vu_dev_features(c->dev);
    if (f & ((1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_NET_F_MRG_RXBUF))) {
        return sizeof(struct virtio_net_hdr_mrg_rxbuf);
    }
    return sizeof(struct virtio_net_hdr);
}

void guest_notify(Child *c, unsigned q, Vq *vq) {
    if (vq_need_notify(vq)) {
        int fd = vu_dev_call_fd(c->dev, q);
        if (fd >= 0) {
            efd_signal(fd);
        }
    }
}
