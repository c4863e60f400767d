/* qubes-lite-guest-agent: runs programs inside the VM for the host.
 *
 * One event loop (sd-event) serves every connection; each connection is a
 * session (session.c). This file holds the command line, the listening
 * socket, peer authentication, idle poweroff and Status. */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "addr.h"
#include "agent.h"
#include "conn.h"
#include "idle.h"
#include "log.h"
#include "power.h"
#include "secret-file.h"
#include "session.h"
#include "util.h"
#include "wire.h"
#include "rootfs/fwcfg.h"

#define PROGRAM "qubes-lite-guest-agent"

static void help(void) {
    printf("Usage: %s [OPTION]...\n"
           "Runs programs inside the VM on behalf of the host agent.\n\n"
           "  --listen ADDR             vsock:CID:PORT, vsock::PORT or unix:PATH (default: the\n"
           "                            socket passed by systemd, else vsock::%u)\n"
           "  --idle-timeout SECONDS    power off after this long without a live session\n"
           "                            (0, the default: never)\n"
           "  --poweroff-command CMD    run CMD with /bin/sh -c instead of asking systemd\n"
           "  --allow-uid UID           also accept this uid on unix sockets (root always)\n"
           "  --allow-local-cid         accept vsock peers on the local CID (tests)\n"
           "  --secret-file FILE        the VM's secret, which every connection's Hello must\n"
           "                            carry (read once; a file only we may read; missing:\n"
           "                            every connection is refused)\n"
           "  --secret-fw-cfg           the VM's secret from the VMM's fw_cfg file\n"
           "                            " SECRET_FW_CFG_NAME " (read once, as root)\n"
           "  --no-secret               ask no secret (tests only); without it and without\n"
           "                            either of the above, every connection is refused\n"
           "  --default-user NAME       user for an Exec without one (default: our own)\n"
           "  --wayland-timeout SECONDS how long wait_wayland waits (default 30)\n"
           "  --kill-grace SECONDS      SIGHUP to SIGKILL delay after a client is gone\n"
           "                            (default 5)\n"
           "  --log-level LEVEL         error, warning, info (default) or debug\n"
           "  --help                    this text\n",
           PROGRAM, GUEST_AGENT_VSOCK_PORT);
}

static void parse_args(int argc, char **argv, AgentOptions *o) {
    enum {
        OPT_LISTEN = 0x100,
        OPT_IDLE_TIMEOUT,
        OPT_POWEROFF_COMMAND,
        OPT_ALLOW_UID,
        OPT_ALLOW_LOCAL_CID,
        OPT_DEFAULT_USER,
        OPT_WAYLAND_TIMEOUT,
        OPT_KILL_GRACE,
        OPT_LOG_LEVEL,
        OPT_SECRET_FILE,
        OPT_SECRET_FW_CFG,
        OPT_NO_SECRET,
        OPT_HELP,
    };
    static const struct option options[] = {
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT},
        {"poweroff-command", required_argument, NULL, OPT_POWEROFF_COMMAND},
        {"allow-uid", required_argument, NULL, OPT_ALLOW_UID},
        {"allow-local-cid", no_argument, NULL, OPT_ALLOW_LOCAL_CID},
        {"default-user", required_argument, NULL, OPT_DEFAULT_USER},
        {"wayland-timeout", required_argument, NULL, OPT_WAYLAND_TIMEOUT},
        {"kill-grace", required_argument, NULL, OPT_KILL_GRACE},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"secret-file", required_argument, NULL, OPT_SECRET_FILE},
        {"secret-fw-cfg", no_argument, NULL, OPT_SECRET_FW_CFG},
        {"no-secret", no_argument, NULL, OPT_NO_SECRET},
        {"help", no_argument, NULL, OPT_HELP},
        {},
    };
    unsigned long long v;
    int c, r;

    while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0) {
        switch (c) {
        case OPT_LISTEN:
            o->listen = optarg;
            break;
        case OPT_IDLE_TIMEOUT:
            if (parse_uint(optarg, 0, 365ULL * 24 * 3600, &v) < 0) {
                die("--idle-timeout: not a number of seconds: %s", optarg);
            }
            o->idle_timeout_s = (unsigned)v;
            break;
        case OPT_POWEROFF_COMMAND:
            o->poweroff_command = optarg;
            break;
        case OPT_ALLOW_UID:
            if (parse_uint(optarg, 0, UINT32_MAX - 1, &v) < 0) {
                die("--allow-uid: not a uid: %s", optarg);
            }
            if (o->n_allow_uid >= AGENT_ALLOW_UID_MAX) {
                die("--allow-uid: at most %d", AGENT_ALLOW_UID_MAX);
            }
            o->allow_uid[o->n_allow_uid++] = (uid_t)v;
            break;
        case OPT_ALLOW_LOCAL_CID:
            o->allow_local_cid = true;
            break;
        case OPT_DEFAULT_USER:
            o->default_user = optarg;
            break;
        case OPT_WAYLAND_TIMEOUT:
            if (parse_uint(optarg, 0, 3600, &v) < 0) {
                die("--wayland-timeout: not a number of seconds: %s", optarg);
            }
            o->wayland_timeout_s = (unsigned)v;
            break;
        case OPT_KILL_GRACE:
            if (parse_uint(optarg, 0, 3600, &v) < 0) {
                die("--kill-grace: not a number of seconds: %s", optarg);
            }
            o->kill_grace_s = (unsigned)v;
            break;
        case OPT_LOG_LEVEL:
            r = log_level_from_string(optarg);
            if (r < 0) {
                die("--log-level: unknown level: %s", optarg);
            }
            log_set_max_level(r);
            break;
        case OPT_SECRET_FILE:
            o->secret_file = optarg;
            break;
        case OPT_SECRET_FW_CFG:
            o->secret_fw_cfg = true;
            break;
        case OPT_NO_SECRET:
            o->no_secret = true;
            break;
        case OPT_HELP:
            help();
            exit(EXIT_SUCCESS);
        default:
            fprintf(stderr, "Try '%s --help'.\n", PROGRAM);
            exit(EXIT_FAILURE);
        }
    }
    if (optind < argc) {
        die("Unexpected argument: %s", argv[optind]);
    }
    if (o->secret_file && o->secret_fw_cfg) {
        die("--secret-file and --secret-fw-cfg: one secret only");
    }
}

/* ---- idle and poweroff --------------------------------------------------------- */

uint64_t agent_now(void) {
    /* Boot time: the VM's uptime, and idle time keeps counting across a
     * suspended host. */
    return now_usec(CLOCK_BOOTTIME);
}

static int on_idle_timer(sd_event_source *s, uint64_t usec, void *userdata) {
    Agent *a = userdata;
    if (idle_expired(&a->idle, agent_now())) {
        log_info("No live session for %u s", a->opt.idle_timeout_s);
        (void)agent_power_off(a, "idle timeout");
    }
    return 0;
}

static void agent_idle_rearm(Agent *a) {
    uint64_t deadline = idle_deadline_usec(&a->idle);
    if (!a->idle_timer) {
        return;
    }
    if (deadline == IDLE_NEVER || a->powering_off) {
        (void)sd_event_source_set_enabled(a->idle_timer, SD_EVENT_OFF);
        return;
    }
    (void)sd_event_source_set_time(a->idle_timer, deadline);
    (void)sd_event_source_set_enabled(a->idle_timer, SD_EVENT_ONESHOT);
}

void agent_live_begin(Agent *a) {
    idle_session_begin(&a->idle, agent_now());
    agent_idle_rearm(a);
}

void agent_live_end(Agent *a) {
    idle_session_end(&a->idle, agent_now());
    agent_idle_rearm(a);
}

/* The VM did not go down: serve again, and let the idle timer try again. */
static void agent_power_off_failed(void *userdata) {
    Agent *a = userdata;
    a->powering_off = false;
    idle_restart(&a->idle, agent_now());
    agent_idle_rearm(a);
}

int agent_power_off(Agent *a, const char *why) {
    if (a->powering_off) {
        return 0;
    }
    a->powering_off = true;
    agent_idle_rearm(a);
    log_notice("Powering off: %s", why);
    int r = power_off(a->event, a->opt.poweroff_command, agent_power_off_failed, a);
    if (r < 0) {
        agent_power_off_failed(a);
    }
    return r;
}

/* ---- accepting ---------------------------------------------------------------- */

/* Accepting stops while AGENT_CONN_MAX connections are open. */
static void agent_update_listen(Agent *a) {
    acceptor_hold(a->acceptor, a->n_conns >= AGENT_CONN_MAX);
}

void agent_conn_closed(Agent *a) {
    if (a->n_conns > 0) {
        a->n_conns--;
    }
    /* The last connection gone: what a crowd of sessions took goes back
     * to the system (glibc keeps freed heap pages for itself otherwise). */
    if (a->n_conns == 0) {
        (void)malloc_trim(0);
    }
    agent_update_listen(a);
}

/* Who may talk to us: on vsock the host (or the local CID when asked for)
 * from a reserved port; on unix sockets root and the allowed uids. A
 * refusal's reason goes to err. */
static int agent_check_peer(Agent *a, int fd, uint64_t *ret_peer, ErrorText *err) {
    int family = socket_family(fd);
    int r;

    if (family == AF_VSOCK) {
        uint32_t cid, port;
        r = peer_vsock(fd, &cid, &port);
        if (r < 0) {
            return r;
        }
        bool cid_ok = cid == VMADDR_CID_HOST || (a->opt.allow_local_cid && cid == VMADDR_CID_LOCAL);
        if (!cid_ok || port > VSOCK_RESERVED_PORT_MAX) {
            return error_set(err, -EPERM, "vsock peer %u:%u refused", cid, port);
        }
        *ret_peer = session_peer_vsock(cid);
        return 0;
    }
    if (family == AF_UNIX) {
        uid_t uid;
        r = peer_ucred(fd, &uid, NULL, NULL);
        if (r < 0) {
            return r;
        }
        *ret_peer = session_peer_unix(uid);
        if (uid == 0) {
            return 0;
        }
        for (size_t i = 0; i < a->opt.n_allow_uid; i++) {
            if (a->opt.allow_uid[i] == uid) {
                return 0;
            }
        }
        return error_set(err, -EPERM, "uid %u refused", (unsigned)uid);
    }
    return error_set(err, -EAFNOSUPPORT, "unsupported socket family %d", family);
}

/* A refused peer gets no session and takes no connection slot: whoever can
 * reach the port but may not use it must not be able to crowd out the host
 * agent. One Error frame goes into the fresh socket's empty buffer (the fd
 * is non-blocking, so this never waits), then the connection is closed.
 * The warning is rate-limited for the same reason. */
static void agent_log_refusal(const char *why) {
    static uint64_t window_start;
    static unsigned logged, suppressed;
    uint64_t now = now_usec(CLOCK_MONOTONIC);

    if (now - window_start >= 1000000ULL) {
        if (suppressed > 0) {
            log_warning("Refused %u more connections in the last second", suppressed);
        }
        window_start = now;
        logged = suppressed = 0;
    }
    if (logged < 5) {
        logged++;
        log_warning("Refusing a connection: %s", why);
    } else {
        suppressed++;
    }
}

static void agent_refuse(int fd, const char *why) {
    agent_log_refusal(why);
    conn_refuse_fd(fd, WIRE_ERR_DENIED, "permission denied");
}

/* The second check, on the first Hello: the peer passed agent_check_peer()
 * (which any host process with CAP_NET_BIND_SERVICE can), and now proves
 * it is the host agent with the VM's secret. The secret is never logged
 * and never sent back. */
int agent_check_hello(Agent *a, const Msg *m, unsigned id) {
    char why[128];
    const char *reason;

    if (a->opt.no_secret) {
        return 0;
    }
    if (!a->have_secret) {
        reason = "the VM has no secret, so no peer can prove it is the host agent";
    } else if (!m->hello.secret) {
        reason = "its Hello carries no secret";
    } else if (!secret_equal(a->secret, m->hello.secret)) {
        reason = "its Hello carries a wrong secret";
    } else {
        return 0;
    }
    a->refused_secret++;
    snprintf(why, sizeof(why), "session %u: %s (%llu refused so far)", id, reason,
             a->refused_secret);
    agent_log_refusal(why);
    return -EPERM;
}

/* --secret-fw-cfg: the VM's secret straight from the VMM (a guest whose
 * init does not copy it to a file, as the NixOS guest's systemd). */
static void agent_load_fw_cfg_secret(Agent *a) {
    int r = fwcfg_read_file(SECRET_FW_CFG_NAME, a->secret, sizeof(a->secret));
    if (r < 0) {
        explicit_bzero(a->secret, sizeof(a->secret));
        log_error("--secret-fw-cfg: no secret: fw_cfg file %s: %s; every connection will be "
                  "refused",
                  SECRET_FW_CFG_NAME, fwcfg_strerror(r));
        return;
    }
    a->have_secret = true;
}

/* The VM's secret, read once. Fail closed: whatever goes wrong, or when
 * no secret is named at all, every connection is refused (--no-secret,
 * for tests, is the only way to ask none). A file others may read is
 * refused at start: it would prove nothing. */
static void agent_load_secret(Agent *a) {
    if (a->opt.no_secret) {
        log_warning("--no-secret: any peer that passes the peer check is served");
        return;
    }
    if (a->opt.secret_fw_cfg) {
        agent_load_fw_cfg_secret(a);
        return;
    }
    if (!a->opt.secret_file) {
        log_error("No --secret-file, --secret-fw-cfg or --no-secret: every connection will be "
                  "refused");
        return;
    }
    int r = secret_read_file(a->opt.secret_file, a->secret);
    if (r == -ENOENT) {
        /* Fail closed: the VM was started without a secret. */
        log_error("--secret-file %s: missing; every connection will be refused",
                  a->opt.secret_file);
        return;
    }
    if (r == -EPERM) {
        die("--secret-file %s: must be owned by uid %u and readable by nobody else",
            a->opt.secret_file, (unsigned)geteuid());
    }
    if (r == -EBADMSG) {
        die("--secret-file %s: not a regular file of %u bytes", a->opt.secret_file,
            WIRE_SECRET_SIZE);
    }
    if (r < 0) {
        die("--secret-file %s: %s", a->opt.secret_file, strerror(-r));
    }
    a->have_secret = true;
}

static void on_accept(void *userdata, int fd) {
    Agent *a = userdata;

    if (fd < 0) {
        /* Out of fds or memory: accepting pauses, sessions ending free
         * what we need. Else only that connection is lost (ECONNABORTED). */
        log_full_errno(acceptor_paused(a->acceptor) ? LOG_WARNING : LOG_DEBUG, fd,
                       "Failed to accept a connection: %m");
        return;
    }
    ErrorText err = {};
    uint64_t peer = 0;
    int r = agent_check_peer(a, fd, &peer, &err);
    if (r < 0) {
        agent_refuse(fd, err.message[0] ? err.message : strerror(-r));
        return;
    }
    r = session_new(a, fd, peer);
    if (r < 0) {
        log_warning_errno(r, "Failed to set up a session: %m");
    }
    agent_update_listen(a);
}

static int agent_listen(Agent *a, int *ret_fd) {
    Addr addr;
    int r;

    if (!a->opt.listen) {
        r = addr_listen_fd_from_systemd(ret_fd);
        if (r != -ENOENT) {
            if (r < 0) {
                return log_error_errno(r, "Failed to take the socket from systemd: %m");
            }
            return 0;
        }
    }
    char def[32];
    const char *s = a->opt.listen;
    if (!s) {
        snprintf(def, sizeof(def), "vsock::%u", GUEST_AGENT_VSOCK_PORT);
        s = def;
    }
    r = addr_parse(s, &addr);
    if (r < 0) {
        return log_error_errno(r, "Bad address: %s", s);
    }
    r = addr_listen(&addr, ret_fd);
    if (r < 0) {
        return log_error_errno(r, "Failed to listen on %s: %m", s);
    }
    log_info("Listening on %s", s);
    return 0;
}

/* Children get pipes and ptys that must not land on 0-2. */
static void ensure_std_fds(void) {
    for (int fd = 0; fd < 3; fd++) {
        if (fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
            int n = open("/dev/null", O_RDWR);
            if (n < 0) {
                die("Cannot open /dev/null: %m");
            }
            if (n != fd) {
                die("Unexpected fd %d for /dev/null", n);
            }
        }
    }
}

int main(int argc, char **argv) {
    Agent a = {
        .opt = {.wayland_timeout_s = 30, .kill_grace_s = 5},
    };
    _cleanup_close_ int lfd = -EBADF;
    int r;

    log_setup(PROGRAM);
    log_use_journal(); /* sessions' records carry their fields */
    parse_args(argc, argv, &a.opt);
    ensure_std_fds();
    agent_load_secret(&a);
    /* A connection or two and a few pipes per session: 1,000 sessions at
     * once need more fds than a service manager's default soft limit. */
    r = fd_limit_raise();
    if (r < 0) {
        log_warning_errno(r, "Cannot raise the fd limit: %m");
    }

    /* Writing to a program that closed its stdin is an EPIPE, not death;
     * sockets use MSG_NOSIGNAL. Children restore the default. */
    signals_take((const int[]){SIGTERM, SIGINT, 0}, NULL);

    r = sd_event_default(&a.event);
    if (r < 0) {
        die("Failed to create the event loop: %s", strerror(-r));
    }
    (void)sd_event_add_signal(a.event, NULL, SIGTERM, NULL, NULL);
    (void)sd_event_add_signal(a.event, NULL, SIGINT, NULL, NULL);

    /* Only root switches users; an unprivileged agent runs programs as
     * itself and looks itself up at each Exec, without the group modules. */
    if (geteuid() == 0) {
        r = user_cache_new(a.event, &a.users);
        if (r < 0) {
            die("Failed to set up the user cache: %s", strerror(-r));
        }
    }

    idle_init(&a.idle, agent_now(), (uint64_t)a.opt.idle_timeout_s * 1000000ULL);
    if (a.opt.idle_timeout_s > 0) {
        r = sd_event_add_time(a.event, &a.idle_timer, CLOCK_BOOTTIME, IDLE_NEVER, 100000,
                              on_idle_timer, &a);
        if (r < 0) {
            die("Failed to set up the idle timer: %s", strerror(-r));
        }
        agent_idle_rearm(&a);
    }

    if (agent_listen(&a, &lfd) < 0) {
        return EXIT_FAILURE;
    }
    r = acceptor_new(a.event, lfd, on_accept, &a, &a.acceptor);
    if (r < 0) {
        die("Failed to watch the listening socket: %s", strerror(-r));
    }

    (void)sd_notify(0, "READY=1\nSTATUS=Accepting sessions");
    r = sd_event_loop(a.event);
    if (r < 0) {
        log_error_errno(r, "Event loop failed: %m");
    }
    (void)sd_notify(0, "STOPPING=1");

    session_free_all(&a);
    a.users = user_cache_free(a.users);
    power_done();
    a.acceptor = acceptor_free(a.acceptor);
    a.idle_timer = sd_event_source_disable_unref(a.idle_timer);
    a.event = sd_event_unref(a.event);
    explicit_bzero(a.secret, sizeof(a.secret));
    return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
