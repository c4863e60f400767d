/* switch/ vhost-user core and virtqueue walker against a real frontend:
 * DPDK's testpmd with a virtio-user port (it plays the guest) connects to
 * our device on a unix socket and forwards every frame it receives
 * straight back (io forwarding, port 0 to itself). We inject numbered
 * frames into its receive queue and must get each one back, intact and in
 * order, from its transmit queue. It also reads the MAC through
 * GET_CONFIG, and stops the rings (GET_VRING_BASE) when it quits.
 *
 * Needs dpdk-testpmd (Debian package dpdk); runs it without hugepages. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/virtio_net.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "switch/vhost/vhost-user.h"
#include "switch/net/vu-net.h"
#include "util.h"

#define TESTPMD "dpdk-testpmd"
#define FRAMES 2000u
#define HDR_LEN sizeof(struct virtio_net_hdr_mrg_rxbuf)
#define TIMEOUT_USEC (60 * 1000000ull)
/* A frame that only says the guest's driver is up. */
#define PROBE UINT32_MAX

static const uint8_t MAC[6] = {0x52, 0x54, 0x00, 0xab, 0xcd, 0x01};

typedef struct Harness {
    char dir[64];
    char sock_path[108];
    char log_path[128];
    int listen_fd;
    int conn;
    int stdin_w; /* closing it makes testpmd quit */
    pid_t pid;
    VuDev *dev;
    VqElem e;
    uint32_t injected;
    uint32_t returned;
    bool ready;          /* a probe came back: the driver receives */
    uint64_t last_probe; /* when we last sent one */
} Harness;

static uint32_t frame_len(uint32_t seq) {
    return seq == PROBE ? 60 : 60 + (seq * 97) % (1514 - 60 + 1);
}

static void make_frame(uint8_t *f, uint32_t seq) {
    uint32_t len = frame_len(seq);
    memset(f, 0xff, 6); /* broadcast: testpmd forwards anything */
    memcpy(f + 6, MAC, 6);
    f[12] = 0x88;
    f[13] = 0xb5; /* local experimental ethertype */
    memcpy(f + 14, &seq, 4);
    for (uint32_t i = 18; i < len; i++) {
        f[i] = (uint8_t)(seq + i * 7);
    }
}

static void dump_log(const Harness *h) {
    char buf[8192];
    int fd = open(h->log_path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        if (n > 0) {
            buf[n] = '\0';
            print_message("---- testpmd output ----\n%s\n------------------------\n", buf);
        }
        close(fd);
    }
}

static bool have_testpmd(void) {
    return system("command -v " TESTPMD " >/dev/null 2>&1") == 0;
}

static void start_testpmd(Harness *h) {
    int in[2];
    char vdev[256], prefix[64];
    assert_int_equal(pipe2(in, O_CLOEXEC), 0);
    snprintf(vdev, sizeof(vdev), "net_virtio_user0,path=%s,queues=1", h->sock_path);
    snprintf(prefix, sizeof(prefix), "--file-prefix=vutest%d", (int)getpid());
    h->pid = fork();
    assert_true(h->pid >= 0);
    if (h->pid == 0) {
        int log = open(h->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (log < 0 || dup2(in[0], 0) < 0 || dup2(log, 1) < 0 || dup2(log, 2) < 0) {
            _exit(127);
        }
        /* Its runtime directory: ours unless it runs as root, which uses
         * /var/run/dpdk; with --no-shconf it stays empty either way. */
        setenv("XDG_RUNTIME_DIR", h->dir, 1);
        /* One CPU for both lcores, little memory, no PCI, no hugepages. */
        execlp(TESTPMD, TESTPMD, "--lcores", "0@0,1@0", "--no-huge", "-m", "256", "--no-pci",
               "--no-shconf", prefix, "--vdev", vdev, "--", "--forward-mode=io",
               "--port-topology=loop", "--total-num-mbufs=4096", "--rxd=256", "--txd=256",
               (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    h->stdin_w = in[1];
}

static int setup(void **state) {
    Harness *h = calloc(1, sizeof(*h));
    h->conn = h->listen_fd = h->stdin_w = -1;
    snprintf(h->dir, sizeof(h->dir), "/tmp/test-vhost-testpmd.XXXXXX");
    assert_non_null(mkdtemp(h->dir));
    snprintf(h->sock_path, sizeof(h->sock_path), "%s/vm.sock", h->dir);
    snprintf(h->log_path, sizeof(h->log_path), "%s/testpmd.log", h->dir);
    h->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, h->sock_path);
    assert_int_equal(bind(h->listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(h->listen_fd, 1), 0);
    assert_int_equal(vu_net_new(MAC, &h->dev), 0);
    *state = h;
    return 0;
}

static int teardown(void **state) {
    Harness *h = *state;
    if (h->pid > 0) {
        /* Only if it is still there after a failure. */
        if (waitpid(h->pid, NULL, WNOHANG) == 0) {
            kill(h->pid, SIGKILL);
            waitpid(h->pid, NULL, 0);
        }
    }
    safe_close(h->stdin_w);
    safe_close(h->conn);
    safe_close(h->listen_fd);
    vu_dev_free(h->dev);
    unlink(h->sock_path);
    unlink(h->log_path);
    char path[160];
    snprintf(path, sizeof(path), "%s/dpdk/vutest%d", h->dir, (int)getpid());
    rmdir(path);
    snprintf(path, sizeof(path), "%s/dpdk", h->dir);
    rmdir(path);
    snprintf(path, sizeof(path), "/var/run/dpdk/vutest%d", (int)getpid());
    rmdir(path);
    rmdir(h->dir);
    free(h);
    return 0;
}

static void notify(Harness *h, unsigned q, Vq *vq) {
    if (vq_need_notify(vq)) {
        int fd = vu_dev_call_fd(h->dev, q);
        uint64_t one = 1;
        if (fd >= 0) {
            assert_int_equal(write(fd, &one, sizeof(one)), sizeof(one));
        }
    }
}

/* Copies len bytes into the device-writable segments of an element. */
static bool copy_in(const VqElem *e, const uint8_t *src, size_t len) {
    size_t done = 0;
    if (e->in_len < len) {
        return false;
    }
    for (unsigned i = e->n_out; i < e->n_out + e->n_in && done < len; i++) {
        size_t k = MIN((size_t)e->seg[i].len, len - done);
        memcpy(e->seg[i].base, src + done, k);
        done += k;
    }
    return true;
}

/* Gathers the device-readable segments of an element. */
static size_t copy_out(const VqElem *e, uint8_t *dst, size_t cap) {
    size_t done = 0;
    for (unsigned i = 0; i < e->n_out && done < cap; i++) {
        size_t k = MIN((size_t)e->seg[i].len, cap - done);
        memcpy(dst + done, e->seg[i].base, k);
        done += k;
    }
    return done;
}

/* Puts one frame into the guest's next receive buffer: false when it
 * offered none. */
static bool put_frame(Harness *h, Vq *rx, uint32_t seq) {
    uint8_t buf[HDR_LEN + 1514];
    int r = vq_pop(rx, &h->e);
    assert_true(r >= 0);
    if (r == 0) {
        return false;
    }
    struct virtio_net_hdr_mrg_rxbuf hdr = {.num_buffers = 1};
    uint32_t len = frame_len(seq);
    memcpy(buf, &hdr, HDR_LEN);
    make_frame(buf + HDR_LEN, seq);
    assert_true(copy_in(&h->e, buf, HDR_LEN + len));
    assert_int_equal(vq_push(rx, h->e.head, HDR_LEN + len), 0);
    return true;
}

/* Puts as many of our frames into the guest's receive buffers as fit. A
 * driver drops what it finds in its rings when it starts, so until one of
 * our probes came back, only probes go (every 50 ms). */
static void inject(Harness *h) {
    Vq *rx = vu_dev_queue(h->dev, VU_NET_RX);
    bool pushed = false;
    if (!rx) {
        return;
    }
    if (!h->ready) {
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        if (now - h->last_probe >= 50000 && put_frame(h, rx, PROBE)) {
            h->last_probe = now;
            pushed = true;
        }
    }
    /* Keep a bounded number in flight so testpmd's TX never drops. */
    while (h->ready && h->injected < FRAMES && h->injected - h->returned < 64) {
        if (!put_frame(h, rx, h->injected)) {
            break;
        }
        h->injected++;
        pushed = true;
    }
    if (pushed) {
        vq_flush(rx);
        notify(h, VU_NET_RX, rx);
    }
}

/* Takes what the guest sent and checks it is our next frame. */
static void drain_tx(Harness *h) {
    Vq *tx = vu_dev_queue(h->dev, VU_NET_TX);
    uint8_t got[HDR_LEN + 2048], want[1514];
    bool pushed = false;
    if (!tx) {
        return;
    }
    for (;;) {
        int r = vq_pop(tx, &h->e);
        assert_true(r >= 0);
        if (r == 0) {
            if (!vq_enable_notify(tx)) {
                break;
            }
            continue;
        }
        size_t n = copy_out(&h->e, got, sizeof(got));
        assert_true(n > HDR_LEN + 18);
        uint32_t seq;
        memcpy(&seq, got + HDR_LEN + 14, 4);
        if (seq == PROBE) {
            h->ready = true;
        } else if (seq != h->returned) {
            fail_msg("frame %u came back where %u was expected", seq, h->returned);
        }
        assert_int_equal(n - HDR_LEN, frame_len(seq));
        make_frame(want, seq);
        assert_memory_equal(got + HDR_LEN, want, frame_len(seq));
        if (seq != PROBE) {
            h->returned++;
        }
        assert_int_equal(vq_push(tx, h->e.head, 0), 0);
        pushed = true;
    }
    if (pushed) {
        vq_flush(tx);
        notify(h, VU_NET_TX, tx);
    }
}

static void drain_eventfd(int fd) {
    uint64_t v;
    if (read(fd, &v, sizeof(v)) < 0) {
        assert_int_equal(errno, EAGAIN);
    }
}

static void test_testpmd_forwards_our_frames(void **state) {
    Harness *h = *state;
    if (!have_testpmd()) {
        fail_msg(TESTPMD " not found: this test needs DPDK's testpmd (Debian package dpdk)");
    }
    start_testpmd(h);

    /* Wait for the frontend to connect. */
    struct pollfd lp = {.fd = h->listen_fd, .events = POLLIN};
    int k = poll(&lp, 1, 30000);
    if (k != 1) {
        dump_log(h);
        fail_msg("testpmd did not connect");
    }
    h->conn = accept4(h->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    assert_true(h->conn >= 0);

    uint64_t deadline = now_usec(CLOCK_MONOTONIC) + TIMEOUT_USEC;
    bool quit_sent = false;
    for (;;) {
        struct pollfd p[3] = {{.fd = h->conn, .events = POLLIN}, {.fd = -1}, {.fd = -1}};
        int kick_rx = vu_dev_kick_fd(h->dev, VU_NET_RX);
        int kick_tx = vu_dev_kick_fd(h->dev, VU_NET_TX);
        if (kick_rx >= 0) {
            p[1] = (struct pollfd){.fd = kick_rx, .events = POLLIN};
        }
        if (kick_tx >= 0) {
            p[2] = (struct pollfd){.fd = kick_tx, .events = POLLIN};
        }
        if (now_usec(CLOCK_MONOTONIC) > deadline) {
            dump_log(h);
            fail_msg("timed out: %u frames injected, %u returned", h->injected, h->returned);
        }
        /* testpmd polls its rings and kicks rarely: look every 10 ms. */
        k = poll(p, 3, 10);
        assert_true(k >= 0);
        if (p[0].revents) {
            VuMsg m, reply;
            bool has_reply;
            int r = vu_msg_recv(h->conn, &m);
            if (r == 0) {
                break; /* testpmd closed the connection */
            }
            assert_int_equal(r, 1);
            uint32_t req = m.hdr.request;
            r = vu_dev_handle(h->dev, &m, &reply, &has_reply);
            if (has_reply) {
                assert_int_equal(vu_msg_send(h->conn, &reply), 0);
            }
            if (r < 0) {
                dump_log(h);
                fail_msg("vhost-user %s: %s", vu_request_name(req), strerror(-r));
            }
        }
        for (int i = 1; i < 3; i++) {
            if (p[i].fd >= 0 && (p[i].revents & POLLIN)) {
                fd_nonblock(p[i].fd, true);
                drain_eventfd(p[i].fd);
            }
        }
        inject(h);
        drain_tx(h);
        if (h->returned == FRAMES && !quit_sent) {
            /* All back: ask testpmd to quit (stdin closes). */
            h->stdin_w = safe_close(h->stdin_w);
            quit_sent = true;
        }
    }
    assert_int_equal(h->returned, FRAMES);
    /* On its way out testpmd stopped the rings. */
    assert_null(vu_dev_queue(h->dev, VU_NET_RX));
    assert_null(vu_dev_queue(h->dev, VU_NET_TX));

    int status;
    assert_int_equal(waitpid(h->pid, &status, 0), h->pid);
    h->pid = 0;
    char log[16384] = "";
    int fd = open(h->log_path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    ssize_t n = read(fd, log, sizeof(log) - 1);
    close(fd);
    assert_true(n > 0);
    log[n] = '\0';
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        print_message("%s\n", log);
        fail_msg("testpmd exited with status 0x%x", status);
    }
    /* Its own count: every frame went in and out (plus a few probes). */
    const char *rx = strstr(log, "RX-packets:");
    const char *tx = strstr(log, "TX-packets:");
    if (!rx || !tx || strtoul(rx + 11, NULL, 10) < FRAMES || strtoul(tx + 11, NULL, 10) < FRAMES) {
        print_message("%s\n", log);
        fail_msg("testpmd's counters do not show %u frames each way", FRAMES);
    }
    print_message("%u frames through testpmd and back\n", h->returned);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_testpmd_forwards_our_frames, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
