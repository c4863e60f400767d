/* vmhelper: a small static tool for the VM tests (runs inside the guest).
 *
 *   vmhelper cid                          print the local CID (/dev/vsock)
 *   vmhelper echo-server PORT             accept on vsock::PORT, echo each
 *                                         connection until EOF (forever)
 *   vmhelper echo-client CID PORT TEXT    send TEXT, print what comes back
 *   vmhelper probe CID PORT [-u UID] [-p SRCPORT|reserved] [-t SECONDS]
 *       Connect (as UID, from SRCPORT if given; "reserved": the first free
 *       port below 1024), send Hello and Ping in the
 *       agent protocol, read frames until EOF or the timeout and print
 *       one summary line:  PROBE pong | PROBE denied <message> |
 *       PROBE error <code> <message> | PROBE eof | PROBE connect-failed <why>
 *       Exit status: 0 pong, 3 denied, 1 anything else.
 *   vmhelper pty CMD [ARG...]             run CMD on a new pty (24x80) as
 *                                         its controlling terminal, copy
 *                                         its output to stdout, exit as it did
 *   vmhelper sigdfl CMD [ARG...]          exec CMD with every signal at its
 *                                         default action and none blocked (a
 *                                         shell's `&` ignores SIGINT/SIGQUIT)
 *
 * The probe carries its own few lines of protobuf encoding so that it needs
 * nothing but libc; it knows just enough of the schema in
 * proto/qubes-lite.proto: Envelope.hello = 1, .error = 11, .ping = 14,
 * .pong = 15; Hello.major = 1; Ping.nonce = 1; Error.code = 1 (DENIED is
 * 4), Error.message = 2. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

static void die(const char *m) {
    perror(m);
    exit(1);
}

static int vsock_listen(unsigned port) {
    int s = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        die("socket");
    struct sockaddr_vm a = {.svm_family = AF_VSOCK, .svm_port = port, .svm_cid = VMADDR_CID_ANY};
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0)
        die("bind");
    if (listen(s, 16) < 0)
        die("listen");
    return s;
}

static int vsock_connect(unsigned cid, unsigned port, long srcport) {
    int s = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -errno;
    /* srcport -2: the first free reserved port, from 1023 down (a port
     * just closed can linger for a while, so a fixed one may be busy). */
    for (long p = srcport == -2 ? 1023 : srcport; p >= 0; p--) {
        struct sockaddr_vm b = {.svm_family = AF_VSOCK, .svm_port = (unsigned)p,
                                .svm_cid = VMADDR_CID_ANY};
        if (bind(s, (struct sockaddr *)&b, sizeof b) == 0)
            break;
        if (srcport != -2 || errno != EADDRINUSE || p <= 512) {
            int e = errno;
            close(s);
            return -e;
        }
    }
    struct sockaddr_vm a = {.svm_family = AF_VSOCK, .svm_port = port, .svm_cid = cid};
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) {
        int e = errno;
        close(s);
        return -e;
    }
    return s;
}

static int write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n > 0) {
        ssize_t k = write(fd, c, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

static int cmd_cid(void) {
    unsigned cid = 0;
    int fd = open("/dev/vsock", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid) < 0)
        die("/dev/vsock");
    printf("%u\n", cid);
    return 0;
}

static int cmd_echo_server(unsigned port) {
    int s = vsock_listen(port);
    signal(SIGCHLD, SIG_IGN);
    for (;;) {
        int c = accept4(s, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) {
            if (errno == EINTR)
                continue;
            die("accept");
        }
        if (fork() == 0) {
            char b[65536];
            ssize_t n;
            while ((n = read(c, b, sizeof b)) > 0)
                if (write_all(c, b, (size_t)n) < 0)
                    _exit(1);
            _exit(0);
        }
        close(c);
    }
}

static int cmd_echo_client(unsigned cid, unsigned port, const char *text) {
    int s = -ECONNRESET;
    for (int i = 0; i < 200 && (s == -ECONNRESET || s == -ECONNREFUSED); i++) {
        if (i)
            usleep(20000); /* the server may not be listening yet */
        s = vsock_connect(cid, port, -1);
    }
    if (s < 0) {
        fprintf(stderr, "connect: %s\n", strerror(-s));
        return 1;
    }
    if (write_all(s, text, strlen(text)) < 0)
        die("write");
    shutdown(s, SHUT_WR);
    char b[4096];
    ssize_t n;
    while ((n = read(s, b, sizeof b)) > 0)
        fwrite(b, 1, (size_t)n, stdout);
    putchar('\n');
    return n < 0;
}

/* --- just enough protobuf for the probe --- */

static size_t put_varint(uint8_t *p, uint64_t v) {
    size_t n = 0;
    do {
        p[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return n;
}

/* Frame holding Envelope{field: {1: value}} (a submessage with one varint). */
static size_t frame_varmsg(uint8_t *out, unsigned field, uint64_t value) {
    uint8_t inner[16], env[32];
    size_t ni = 0, ne = 0;
    inner[ni++] = 0x08; /* field 1, varint */
    ni += put_varint(inner + ni, value);
    env[ne++] = (uint8_t)(field << 3 | 2);
    ne += put_varint(env + ne, ni);
    memcpy(env + ne, inner, ni);
    ne += ni;
    out[0] = out[1] = out[2] = 0;
    out[3] = (uint8_t)ne;
    memcpy(out + 4, env, ne);
    return ne + 4;
}

static int get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
    *v = 0;
    for (int shift = 0; *p < end && shift < 64; shift += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return 0;
    }
    return -1;
}

/* Walks one message's fields; calls back for varint and length fields. */
struct field {
    unsigned num, wire;
    uint64_t v;
    const uint8_t *p;
    size_t len;
};
static int next_field(const uint8_t **p, const uint8_t *end, struct field *f) {
    uint64_t key;
    if (*p >= end || get_varint(p, end, &key) < 0)
        return -1;
    f->num = (unsigned)(key >> 3);
    f->wire = key & 7;
    if (f->wire == 0)
        return get_varint(p, end, &f->v);
    if (f->wire == 2) {
        if (get_varint(p, end, &f->v) < 0 || f->v > (uint64_t)(end - *p))
            return -1;
        f->p = *p;
        f->len = (size_t)f->v;
        *p += f->len;
        return 0;
    }
    if (f->wire == 1 && end - *p >= 8) {
        *p += 8;
        return 0;
    }
    if (f->wire == 5 && end - *p >= 4) {
        *p += 4;
        return 0;
    }
    return -1;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int cmd_probe(unsigned cid, unsigned port, long uid, long srcport, double timeout) {
    signal(SIGPIPE, SIG_IGN);
    if (uid >= 0) {
        if (setgroups(0, NULL) < 0 || setgid((gid_t)uid) < 0 || setuid((uid_t)uid) < 0)
            die("dropping privileges");
    }
    int s = vsock_connect(cid, port, srcport);
    if (s < 0) {
        printf("PROBE connect-failed %s\n", strerror(-s));
        return 1;
    }
    uint8_t out[64];
    size_t n = frame_varmsg(out, 1, 1);            /* Hello{major: 1} */
    n += frame_varmsg(out + n, 14, 0x51c0ffee);    /* Ping{nonce} */
    (void)write_all(s, out, n);                    /* the peer may have closed */

    static uint8_t buf[1 << 21];
    size_t have = 0;
    double end = now() + timeout;
    for (;;) {
        /* Parse every complete frame in the buffer. */
        while (have >= 4) {
            size_t len = (size_t)buf[0] << 24 | (size_t)buf[1] << 16 | (size_t)buf[2] << 8 | buf[3];
            if (len > sizeof buf - 4) {
                printf("PROBE error bad-frame-length %zu\n", len);
                return 1;
            }
            if (have < 4 + len)
                break;
            const uint8_t *p = buf + 4, *e = buf + 4 + len;
            struct field f;
            while (next_field(&p, e, &f) == 0) {
                if (f.num == 15) {
                    printf("PROBE pong\n");
                    return 0;
                }
                if (f.num == 11 && f.wire == 2) {
                    const uint8_t *q = f.p, *qe = f.p + f.len;
                    struct field g;
                    uint64_t code = 0;
                    char msg[256] = "";
                    while (next_field(&q, qe, &g) == 0) {
                        if (g.num == 1 && g.wire == 0)
                            code = g.v;
                        if (g.num == 2 && g.wire == 2)
                            snprintf(msg, sizeof msg, "%.*s", (int)g.len, (const char *)g.p);
                    }
                    if (code == 4) {
                        printf("PROBE denied %s\n", msg);
                        return 3;
                    }
                    printf("PROBE error %llu %s\n", (unsigned long long)code, msg);
                    return 1;
                }
            }
            memmove(buf, buf + 4 + len, have - 4 - len);
            have -= 4 + len;
        }
        double left = end - now();
        if (left <= 0) {
            printf("PROBE timeout\n");
            return 1;
        }
        struct pollfd pfd = {.fd = s, .events = POLLIN};
        int r = poll(&pfd, 1, (int)(left * 1000) + 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            continue;
        ssize_t k = read(s, buf + have, sizeof buf - have);
        if (k == 0 || (k < 0 && errno == ECONNRESET)) {
            printf("PROBE eof\n");
            return 1;
        }
        if (k < 0)
            die("read");
        have += (size_t)k;
    }
}

static int cmd_pty(char **argv) {
    int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (m < 0 || grantpt(m) < 0 || unlockpt(m) < 0)
        die("posix_openpt");
    char *name = ptsname(m);
    if (!name)
        die("ptsname");
    struct winsize ws = {.ws_row = 24, .ws_col = 80};
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        setsid();
        int sl = open(name, O_RDWR);
        if (sl < 0)
            die(name);
        ioctl(sl, TIOCSCTTY, 0);
        ioctl(sl, TIOCSWINSZ, &ws);
        dup2(sl, 0);
        dup2(sl, 1);
        dup2(sl, 2);
        if (sl > 2)
            close(sl);
        execvp(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    char b[4096];
    for (;;) {
        ssize_t n = read(m, b, sizeof b);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* EIO once the last slave fd is closed */
        if (write_all(1, b, (size_t)n) < 0)
            break;
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            die("waitpid");
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int cmd_sigdfl(char **argv) {
    for (int sig = 1; sig < NSIG; sig++)
        signal(sig, SIG_DFL); /* fails harmlessly for KILL, STOP, 32, 33 */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execvp(argv[0], argv);
    fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
    return 127;
}

static void usage(void) {
    fprintf(stderr, "usage: vmhelper cid | echo-server PORT | echo-client CID PORT TEXT |\n"
                    "       probe CID PORT [-u UID] [-p SRCPORT|reserved] [-t SECONDS] |\n"
                    "       pty CMD [ARG...] | sigdfl CMD [ARG...]\n");
    exit(2);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2)
        usage();
    const char *c = argv[1];
    if (!strcmp(c, "cid"))
        return cmd_cid();
    if (!strcmp(c, "echo-server") && argc == 3)
        return cmd_echo_server((unsigned)atoi(argv[2]));
    if (!strcmp(c, "echo-client") && argc == 5)
        return cmd_echo_client((unsigned)atoi(argv[2]), (unsigned)atoi(argv[3]), argv[4]);
    if (!strcmp(c, "pty") && argc >= 3)
        return cmd_pty(argv + 2);
    if (!strcmp(c, "sigdfl") && argc >= 3)
        return cmd_sigdfl(argv + 2);
    if (!strcmp(c, "probe") && argc >= 4) {
        long uid = -1, src = -1;
        double t = 10;
        int o;
        optind = 4;
        while ((o = getopt(argc, argv, "u:p:t:")) != -1) {
            if (o == 'u')
                uid = atol(optarg);
            else if (o == 'p')
                src = strcmp(optarg, "reserved") ? atol(optarg) : -2;
            else if (o == 't')
                t = atof(optarg);
            else
                usage();
        }
        return cmd_probe((unsigned)atoi(argv[2]), (unsigned)atoi(argv[3]), uid, src, t);
    }
    usage();
    return 2;
}
