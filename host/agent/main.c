/* qubes-lite-host-agent: one per VM. Accepts vm-run and friends on the
 * VM's command socket (clients.c); starts the VMM (crosvm) on the first
 * Connect or on HostStart, supervises it and stops it (lifecycle.c:
 * HostStop, the idle backstop of disposable VMs, SIGTERM); connects
 * clients to the guest agent and hands them the connected socket
 * (handoff.c), then holds their connection as a lease (idle.c); relays
 * the serial console (console.c).
 *
 * With --no-vmm it only attaches to a guest agent that is already
 * running. With --foreground the VMM runs at once on our stdio (no console
 * relay) and we exit with its status. Otherwise we exit 0 once the VMM
 * has exited, so that a systemd socket re-arms.
 *
 * This file: the options, the one-shot modes (--check, --print-command,
 * --bind-vfio, --write-switch-config), the listening socket, signals, and
 * the modules' setup, with the lifecycle's events wired to the clients
 * and the idle backstop. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "agent.h"
#include "clients.h"
#include "crosvm.h"
#include "host/common/opts.h"
#include "idle.h"
#include "lifecycle.h"
#include "qemurun.h"
#include "log.h"
#include "secret.h"
#include "switchconf.h"
#include "vfio.h"

#define GUEST_TIMEOUT_DEFAULT_S 60u
#define SHUTDOWN_TIMEOUT_DEFAULT_S 30u
#define VMM_STOP_TIMEOUT_DEFAULT_S 10u
#define KILL_TIMEOUT_DEFAULT_S 5u
#define IDLE_GRACE_DEFAULT_S 30u
/* The longest any of the timeouts above may be set to. */
#define TIMEOUT_MAX_S (24u * 3600u)

typedef enum Mode {
    MODE_SERVE,
    MODE_CHECK,
    MODE_PRINT_COMMAND,
    MODE_BIND_VFIO,
    MODE_WRITE_SWITCH_CONFIG,
} Mode;

typedef struct Options {
    Mode mode;
    const char *listen;                  /* --listen */
    const char *guest;                   /* --guest */
    const char *switch_net, *switch_dir; /* --write-switch-config NET DIR */
    bool config_only;                    /* --check --config-only */
} Options;

/* The listening socket. */
typedef struct Listener {
    int fd;
    char *socket_path;     /* a unix socket we created, unlinked at exit */
    struct stat socket_st; /* ... while it is still the one we bound */
} Listener;

static void help(void) {
    printf("Usage: qubes-lite-host-agent --vm NAME [OPTION]...\n"
           "       qubes-lite-host-agent --check [--config-only]\n"
           "       qubes-lite-host-agent --vm NAME --print-command\n"
           "       qubes-lite-host-agent --bind-vfio\n"
           "       qubes-lite-host-agent --write-switch-config NET DIR\n"
           "Broker between vm-run and friends and the guest agent of one VM.\n"
           "\n"
           "  --check               validate host.json and every vms/*.json, one line\n"
           "                        per problem, and that the kernels, initramfs,\n"
           "                        disks and shared directories they name are here;\n"
           "                        exit 1 if there is any\n"
           "  --config-only         with --check: the files alone, not what they name\n"
           "                        (checking a configuration for another machine)\n"
           "  --print-command       print the VM's VMM command line, one argument\n"
           "                        per line, and exit\n"
           "  --bind-vfio           bind host.json's isolatedPciDevices to vfio-pci\n"
           "  --write-switch-config NET DIR\n"
           "                        write vm-switch's <vm>.conf of every VM on\n"
           "                        network NET into DIR, remove the others'\n"
           "  --vm NAME             the VM (configuration: vms/NAME.json)\n"
           "  --listen ADDR         listen on ADDR (unix:PATH); default: the socket\n"
           "                        passed by systemd, else RUNTIME_DIR/NAME.sock\n"
           "  --guest ADDR          the guest agent (default vsock:ID:%u)\n"
           "  --guest-timeout SECS  how long to wait for the guest agent (default %u)\n"
           "  --no-vmm              do not start a VMM; attach to a running guest agent\n"
           "  --foreground          start the VMM now on our stdin/stdout/stderr (no\n"
           "                        console relay) and exit with its exit status\n"
           "                        (no effect with --no-vmm)\n"
           "  --shutdown-timeout SECS  stopping: how long the guest has to power off\n"
           "                        after Shutdown (default %u; 0: skip that step)\n"
           "  --stop-timeout SECS   then how long the VMM has after its stop command\n"
           "                        (default %u), before SIGKILL\n"
           "  --kill-timeout SECS   how long to wait after SIGKILL (default %u)\n"
           "  --idle-grace SECS     disposable VMs: stop the VM after idleTimeout plus\n"
           "                        this without a lease (default %u)\n"
           "  --vmm-env NAME        pass our variable NAME (or every PREFIX* one) to the\n"
           "                        VMM too; it gets PATH, TZ, RUST_BACKTRACE,\n"
           "                        XDG_RUNTIME_DIR, WAYLAND_DISPLAY, DISPLAY and\n"
           "                        PULSE_SERVER, nothing else of ours\n"
           "  --log-level LEVEL     error, warning, info, debug\n"
           "  -h, --help            show this help\n"
           "\n"
           "Environment: QUBES_LITE_CONFIG_DIR (default %s),\n"
           "QUBES_LITE_RUNTIME_DIR (default %s).\n",
           GUEST_AGENT_VSOCK_PORT, GUEST_TIMEOUT_DEFAULT_S, SHUTDOWN_TIMEOUT_DEFAULT_S,
           VMM_STOP_TIMEOUT_DEFAULT_S, KILL_TIMEOUT_DEFAULT_S, IDLE_GRACE_DEFAULT_S,
           DEFAULT_CONFIG_DIR, DEFAULT_RUNTIME_DIR);
}

/* ---- options ------------------------------------------------------------------ */

enum {
    ARG_VM = 0x100,
    ARG_LISTEN,
    ARG_GUEST,
    ARG_GUEST_TIMEOUT,
    ARG_NO_VMM,
    ARG_FOREGROUND,
    ARG_LOG_LEVEL,
    ARG_CHECK,
    ARG_CONFIG_ONLY,
    ARG_PRINT_COMMAND,
    ARG_BIND_VFIO,
    ARG_WRITE_SWITCH_CONFIG,
    ARG_SHUTDOWN_TIMEOUT,
    ARG_STOP_TIMEOUT,
    ARG_KILL_TIMEOUT,
    ARG_IDLE_GRACE,
    ARG_VMM_ENV,
};

/* --shutdown-timeout, --stop-timeout, --kill-timeout, --idle-grace:
 * seconds from the option's minimum to TIMEOUT_MAX_S. */
static void parse_stop_timeout(Agent *a, int c, const char *arg) {
    const struct {
        int option;
        const char *name;
        unsigned long long min;
        uint64_t *dst;
    } timeouts[] = {
        {ARG_SHUTDOWN_TIMEOUT, "shutdown-timeout", 0, &a->shutdown_timeout},
        {ARG_STOP_TIMEOUT, "stop-timeout", 0, &a->vmm_stop_timeout},
        {ARG_KILL_TIMEOUT, "kill-timeout", 1, &a->kill_timeout},
        {ARG_IDLE_GRACE, "idle-grace", 0, &a->idle_grace},
    };
    unsigned long long v;

    for (size_t i = 0; i < ELEMENTSOF(timeouts); i++) {
        if (timeouts[i].option != c) {
            continue;
        }
        if (parse_uint(arg, timeouts[i].min, TIMEOUT_MAX_S, &v) < 0) {
            die("--%s wants seconds from %llu to 86400, not '%s'", timeouts[i].name,
                timeouts[i].min, arg);
        }
        *timeouts[i].dst = v * USEC_PER_SEC;
        return;
    }
}

/* The modes exclude each other; a second one is an error. */
static void set_mode(Options *o, Mode mode) {
    if (o->mode != MODE_SERVE && o->mode != mode) {
        die("--check, --print-command, --bind-vfio and --write-switch-config exclude "
            "each other");
    }
    o->mode = mode;
}

/* After the options: the positional arguments and what each mode needs. */
static void check_arguments(int argc, char **argv, const Agent *a, Options *o) {
    if (o->mode == MODE_WRITE_SWITCH_CONFIG) {
        if (optind + 1 != argc) {
            die("--write-switch-config wants NET DIR");
        }
        o->switch_dir = argv[optind];
        return;
    }
    if (optind < argc) {
        die("Unexpected argument '%s' (see --help)", argv[optind]);
    }
    if (o->config_only && o->mode != MODE_CHECK) {
        die("--config-only goes with --check");
    }
    if (o->mode == MODE_PRINT_COMMAND && !a->vm_name) {
        die("--print-command needs --vm NAME");
    }
    if (o->mode == MODE_SERVE && !a->vm_name) {
        die("--vm NAME is required");
    }
}

/* Fills a and o from the command line; dies on a bad value. 0 to go on,
 * 1 when --help was shown, -1 for a refused option (after one line). */
static int parse_options(int argc, char **argv, Agent *a, Options *o) {
    static const struct option longopts[] = {
        {"check", no_argument, NULL, ARG_CHECK},
        {"config-only", no_argument, NULL, ARG_CONFIG_ONLY},
        {"print-command", no_argument, NULL, ARG_PRINT_COMMAND},
        {"bind-vfio", no_argument, NULL, ARG_BIND_VFIO},
        {"write-switch-config", required_argument, NULL, ARG_WRITE_SWITCH_CONFIG},
        {"vm", required_argument, NULL, ARG_VM},
        {"listen", required_argument, NULL, ARG_LISTEN},
        {"guest", required_argument, NULL, ARG_GUEST},
        {"guest-timeout", required_argument, NULL, ARG_GUEST_TIMEOUT},
        {"no-vmm", no_argument, NULL, ARG_NO_VMM},
        {"foreground", no_argument, NULL, ARG_FOREGROUND},
        {"log-level", required_argument, NULL, ARG_LOG_LEVEL},
        {"shutdown-timeout", required_argument, NULL, ARG_SHUTDOWN_TIMEOUT},
        {"stop-timeout", required_argument, NULL, ARG_STOP_TIMEOUT},
        {"kill-timeout", required_argument, NULL, ARG_KILL_TIMEOUT},
        {"idle-grace", required_argument, NULL, ARG_IDLE_GRACE},
        {"vmm-env", required_argument, NULL, ARG_VMM_ENV},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    unsigned long long v;
    ErrorText err;
    int c, r;

    /* Our words for a refused option, not getopt's (host/common/opts.h). */
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) >= 0) {
        switch (c) {
        case ARG_VM:
            a->vm_name = optarg;
            break;
        case ARG_LISTEN:
            o->listen = optarg;
            break;
        case ARG_GUEST:
            o->guest = optarg;
            break;
        case ARG_GUEST_TIMEOUT:
            if (parse_uint(optarg, 1, TIMEOUT_MAX_S, &v) < 0) {
                die("--guest-timeout wants seconds from 1 to 86400, not '%s'", optarg);
            }
            a->guest_timeout = v * USEC_PER_SEC;
            break;
        case ARG_NO_VMM:
            a->no_vmm = true;
            break;
        case ARG_VMM_ENV:
            if (a->n_vmm_env >= VMM_ENV_EXTRA_MAX || !*optarg || strchr(optarg, '=')) {
                die("--vmm-env wants a variable NAME or PREFIX*, at most %u times, not '%s'",
                    VMM_ENV_EXTRA_MAX, optarg);
            }
            a->vmm_env[a->n_vmm_env++] = optarg;
            break;
        case ARG_FOREGROUND:
            a->foreground = true;
            break;
        case ARG_SHUTDOWN_TIMEOUT:
        case ARG_STOP_TIMEOUT:
        case ARG_KILL_TIMEOUT:
        case ARG_IDLE_GRACE:
            parse_stop_timeout(a, c, optarg);
            break;
        case ARG_WRITE_SWITCH_CONFIG:
            o->switch_net = optarg;
            set_mode(o, MODE_WRITE_SWITCH_CONFIG);
            break;
        case ARG_CHECK:
            set_mode(o, MODE_CHECK);
            break;
        case ARG_CONFIG_ONLY:
            o->config_only = true;
            break;
        case ARG_PRINT_COMMAND:
            set_mode(o, MODE_PRINT_COMMAND);
            break;
        case ARG_BIND_VFIO:
            set_mode(o, MODE_BIND_VFIO);
            break;
        case ARG_LOG_LEVEL:
            r = log_level_from_string(optarg);
            if (r < 0) {
                die("Unknown log level '%s' (error, warning, info, debug)", optarg);
            }
            log_set_max_level(r);
            break;
        case 'h':
            help();
            return 1;
        default:
            opts_error(&err, c, argv);
            log_error("%s", err.message);
            return -1;
        }
    }
    check_arguments(argc, argv, a, o);
    if (a->no_vmm) {
        /* No VMM to run in the foreground; the agent itself never forks
         * away (what --foreground meant before it ran a VMM). */
        a->foreground = false;
    }
    return 0;
}

/* ---- the one-shot modes ------------------------------------------------------- */

/* --check: every problem of every file, one line each. */
static int run_check(bool config_only) {
    ErrorText err;
    if (config_dir_check(&err) < 0) {
        log_error("%s", err.message);
        return EXIT_FAILURE;
    }
    FILE *report = config_report_open(stderr, "qubes-lite-host-agent");
    if (!report) {
        log_error("Out of memory");
        return EXIT_FAILURE;
    }
    int n = config_check_all(config_dir(), report, config_only ? 0 : CONFIG_CHECK_FILES);
    fclose(report);
    if (n < 0) {
        log_error_errno(n, "Cannot read %s: %m", config_dir());
        return EXIT_FAILURE;
    }
    if (n > 0) {
        log_error("%d problem%s in %s", n, n == 1 ? "" : "s", config_dir());
        return EXIT_FAILURE;
    }
    return EXIT_SUCCESS;
}

/* vms/<name>.json, or die saying why. */
static void load_vm_or_die(const char *name, VmConfig **ret) {
    ErrorText err;
    int r = config_load_vm(config_dir(), name, ret, &err);
    if (r == -ENOENT) {
        die("No VM named '%s' (%s)", name, err.message);
    }
    if (r < 0) {
        die("%s", err.message);
    }
}

/* The VM's VMM: its "vmm", else host.json's, crosvm by default. */
static const VmmOps *choose_vmm(const HostConfig *h, const VmConfig *vm) {
    ConfigVmm which = vm->vmm != CONFIG_VMM_UNSET ? vm->vmm : h ? h->vmm : CONFIG_VMM_CROSVM;
    return which == CONFIG_VMM_QEMU ? &vmm_qemu : &vmm_crosvm;
}

/* --print-command: the VMM's argv, one argument per line. */
static int run_print_command(const char *name) {
    _cleanup_(host_config_freep) HostConfig *host = NULL;
    _cleanup_(vm_config_freep) VmConfig *vm = NULL;
    ErrorText err;

    if (config_load_host_or_defaults(config_dir(), &host, &err) < 0) {
        die("%s", err.message);
    }
    load_vm_or_die(name, &vm);
    if (vmm_print_command(choose_vmm(host, vm), host, vm, stdout, &err) < 0) {
        die("%s", err.message);
    }
    return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* --bind-vfio: host.json's isolatedPciDevices to vfio-pci, each device
 * that fails one line. */
static int run_bind_vfio(void) {
    _cleanup_(host_config_freep) HostConfig *host = NULL;
    const ConfigStrv *bdfs;
    ErrorText err;
    int failed = 0;

    if (config_load_host_or_defaults(config_dir(), &host, &err) < 0) {
        die("%s", err.message);
    }
    bdfs = &host->isolated_pci_devices;
    for (size_t i = 0; i < bdfs->n; i++) {
        if (vfio_bind(bdfs->v[i], &err) < 0) {
            log_error("%s", err.message);
            failed++;
        }
    }
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* --write-switch-config NET DIR: vm-switch's <vm>.conf files for NET
 * (switchconf.h). Exit 1 only when DIR cannot be made or written: a VM
 * whose file does not load is reported and keeps its <vm>.conf, so that
 * one broken VM does not stop its network. */
static int run_write_switch_config(const char *net, const char *dir) {
    int r = switchconf_write(config_dir(), net, dir, stderr);
    if (r == -ENXIO) {
        log_error("No VM is on network '%s' (no vmNetwork.%s in %s/vms/*.json); %s not made", net,
                  net, config_dir(), dir);
        return EXIT_FAILURE;
    }
    if (r < 0) {
        log_error_errno(r, "Cannot write the configuration of network '%s' to %s: %m", net, dir);
        return EXIT_FAILURE;
    }
    log_info("Network '%s': %d VM%s in %s", net, r, r == 1 ? "" : "s", dir);
    return EXIT_SUCCESS;
}

/* ---- the listening socket ----------------------------------------------------- */

/* A unix socket we create: the default <runtime dir>/<vm>.sock (its
 * CONFIG_RUNTIME_COMMAND file) or
 * --listen unix:PATH. Its directory is checked (agent_runtime_dir_check)
 * and created when missing. A file at the path is replaced only when it
 * is a stale socket; one somebody listens on (another host agent, the
 * systemd socket unit) makes us refuse to start. Born 0600 and handed to
 * the configured user, so that nobody else may connect; removed at exit
 * only while it is still the one we bound (listen_close). */
static int listen_unix(const Agent *a, const Addr *addr, Listener *l) {
    const char *path = addr->un.sun_path;
    _cleanup_free_ char *dir = strdup(path);
    char *slash;
    int r;

    if (!dir) {
        return log_error_errno(-ENOMEM, "Out of memory");
    }
    slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        ErrorText err;
        *slash = '\0';
        r = agent_runtime_dir_check(dir, &err);
        if (r < 0) {
            return log_error_errno(r, "%s", err.message);
        }
    }
    /* Born 0600 (umask 0177): nobody may connect before the owner is
     * right, and no chmod by path is needed after. */
    mode_t old = umask(0177);
    r = addr_listen(addr, &l->fd);
    umask(old);
    if (r == -EADDRINUSE) {
        return log_error_errno(r,
                               "Cannot listen on unix:%s: another process listens there (a host "
                               "agent of VM '%s', or its systemd socket unit); leaving it alone",
                               path, a->vm_name);
    }
    if (r < 0) {
        return log_error_errno(r, "Cannot listen on unix:%s: %m", path);
    }
    if (lstat(path, &l->socket_st) < 0) {
        return log_error_errno(-errno, "Cannot check %s: %m", path);
    }
    l->socket_path = strdup(path);
    if (!l->socket_path) {
        return log_error_errno(-ENOMEM, "Out of memory");
    }
    if (a->host && a->host->user && a->host->user_uid != geteuid()) {
        /* Not through a symlink put in the socket's place. */
        if (fchownat(AT_FDCWD, path, a->host->user_uid, a->host->user_gid, AT_SYMLINK_NOFOLLOW) <
            0) {
            if (errno != EPERM || geteuid() == 0) {
                return log_error_errno(-errno, "Cannot hand %s to user '%s': %m", path,
                                       a->host->user);
            }
            /* Unprivileged (tests): the socket stays ours. */
            log_warning("Not root: %s stays owned by uid %u, user '%s' cannot connect", path,
                        (unsigned)geteuid(), a->host->user);
        }
    }
    return 0;
}

/* --listen ADDR, else the socket systemd passed, else the default unix
 * socket. */
static int listen_open(Agent *a, const char *listen_arg, Listener *l) {
    Addr addr;
    char buf[ADDR_STR_MAX];
    int r;

    if (listen_arg) {
        r = addr_parse(listen_arg, &addr);
        if (r < 0) {
            return log_error_errno(r, "Invalid --listen address '%s'", listen_arg);
        }
        if (addr.family == AF_UNIX) {
            return listen_unix(a, &addr, l);
        }
        r = addr_listen(&addr, &l->fd);
        if (r < 0) {
            return log_error_errno(r, "Cannot listen on %s: %m", listen_arg);
        }
        return 0;
    }
    r = addr_listen_fd_from_systemd(&l->fd);
    if (r >= 0) {
        a->activated = true;
        return 0;
    }
    if (r != -ENOENT) {
        return log_error_errno(r, "Cannot use the socket passed by systemd: %m");
    }
    _cleanup_free_ char *path = config_vm_runtime_file(a->vm_name, CONFIG_RUNTIME_COMMAND);
    if (!path) {
        return log_error_errno(-ENOMEM, "Out of memory");
    }
    snprintf(buf, sizeof(buf), "unix:%s", path);
    r = addr_parse(buf, &addr);
    if (r < 0) {
        return log_error_errno(r, "The socket path %s is too long", buf + 5);
    }
    return listen_unix(a, &addr, l);
}

static void listen_close(Listener *l) {
    if (l->socket_path) {
        /* Not a socket that replaced ours meanwhile (another agent's). */
        (void)addr_unix_unlink_bound(l->socket_path, &l->socket_st);
        free(l->socket_path);
    }
    safe_close(l->fd);
}

/* ---- the modules and the lifecycle's events ---------------------------------- */

static void on_vm_started(void *userdata) {
    Agent *a = userdata;
    idle_vm_started(a->idle, lifecycle_started_at(a->life));
    idle_update(a->idle);
    idle_linger_update(a->idle);
}

static void on_vm_running(void *userdata) {
    Agent *a = userdata;
    clients_vm_running(a->clients);
}

static void on_vm_stopping(void *userdata, const char *message) {
    Agent *a = userdata;
    idle_update(a->idle);
    clients_refuse_waiting(a->clients, WIRE_ERR_SHUTTING_DOWN, message);
}

static unsigned on_vm_exited(void *userdata, const LifecycleExit *e) {
    Agent *a = userdata;
    return clients_vm_exited(a->clients, e);
}

static void on_vm_start_failed(void *userdata, const char *message) {
    Agent *a = userdata;
    clients_refuse_waiting(a->clients, WIRE_ERR_UNAVAILABLE, message);
}

static void on_vm_gave_up(void *userdata, const char *message) {
    Agent *a = userdata;
    clients_vm_gave_up(a->clients, message);
}

/* Somebody at the serial console is using the VM as much as a command
 * is: a lease, so that the idle backstop leaves it alone. */
static void on_vm_console(void *userdata, bool attached) {
    Agent *a = userdata;
    if (attached) {
        idle_lease_begin(a->idle);
    } else {
        idle_lease_end(a->idle);
    }
    log_debug("Console client %s, %u lease(s)", attached ? "attached" : "gone",
              idle_leases(a->idle));
    idle_update(a->idle);
}

static const LifecycleEvents agent_vm_events = {
    .started = on_vm_started,
    .running = on_vm_running,
    .stopping = on_vm_stopping,
    .exited = on_vm_exited,
    .start_failed = on_vm_start_failed,
    .gave_up = on_vm_gave_up,
    .console = on_vm_console,
};

/* The modules, once the event loop and the listening socket are: the
 * leases, the VM's lifecycle (its events to the clients and the idle
 * backstop), the clients served on listen_fd. */
static int modules_new(Agent *a, int listen_fd) {
    int r = idle_new(a, &a->idle);
    if (r >= 0) {
        r = lifecycle_new(a, &agent_vm_events, a, &a->life);
    }
    if (r >= 0) {
        r = clients_new(a, listen_fd, &a->clients);
    }
    return r;
}

/* Teardown: every client dropped, a VMM still running killed. */
static void modules_free(Agent *a) {
    /* Teardown: no lease or linger bookkeeping any more. */
    a->activated = false;
    a->no_vmm = true;
    clients_free(TAKE_PTR(a->clients));
    lifecycle_free(TAKE_PTR(a->life));
    idle_free(TAKE_PTR(a->idle));
}

/* ---- serving ------------------------------------------------------------------ */

/* SIGTERM/SIGINT: with a VM up, stop it (a second signal kills it) and
 * exit once the VMM has; else exit now. */
static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
    Agent *a = userdata;
    VmState state = lifecycle_state(a->life);

    if (a->no_vmm || state == VM_STOPPED) {
        log_info("Got signal %u, exiting", si->ssi_signo);
        return sd_event_exit(a->event, 0);
    }
    if (state == VM_STOPPING && a->terminating) {
        if (!lifecycle_killing(a->life)) {
            log_info("Got signal %u again, killing the VMM", si->ssi_signo);
            lifecycle_kill(a->life);
        }
        return 0;
    }
    /* We go once the VMM has: nobody waits for a start any more. */
    a->terminating = true;
    if (state == VM_STOPPING) {
        char msg[128];
        log_info("Got signal %u while stopping the VM: exiting once it has stopped", si->ssi_signo);
        snprintf(msg, sizeof(msg), "VM '%s' is stopping and its host agent exits", a->vm_name);
        clients_refuse_waiting(a->clients, WIRE_ERR_SHUTTING_DOWN, msg);
        return 0;
    }
    lifecycle_stop(a->life, strsignal((int)si->ssi_signo));
    return 0;
}

/* SIGHUP: the configuration read again now, its problems reported as
 * --check words them; a start reads it again in any case. A running VM
 * keeps what it started with until its next start. */
static int on_reload(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
    Agent *a = userdata;
    ErrorText err = {{0}};
    (void)s;
    (void)si;

    if (!a->life) {
        return 0;
    }
    int r = lifecycle_reload_config(a->life, &err);
    if (r == -EBUSY) {
        log_info("VM '%s' is running: its configuration is read again at its next start",
                 a->vm_name);
    } else if (r < 0) {
        log_error("%s", err.message);
    } else {
        log_info("Configuration of VM '%s' read again", a->vm_name);
    }
    return 0;
}

/* vms/<vm>.json (required) and host.json (optional: without it only root
 * may connect); dies on errors. */
static void load_configuration(Agent *a) {
    ErrorText err;

    load_vm_or_die(a->vm_name, &a->vm);
    int r = config_load_host(config_dir(), &a->host, &err);
    if (r == -ENOENT) {
        log_info("%s/host.json does not exist: only root may connect", config_dir());
    } else if (r < 0) {
        die("%s", err.message);
    }
    a->vmm = choose_vmm(a->host, a->vm);
}

/* --guest ADDR, else where the VMM puts the guest agent (qemu with
 * qubes-lite-vsock: hvsock:PATH:5200), else its vsock port at the VM's
 * CID. */
static void set_guest_address(Agent *a, const char *guest_arg) {
    char vmm_guest[ADDR_STR_MAX];

    if (!guest_arg && a->vmm->guest_address &&
        a->vmm->guest_address(a->host, a->vm, vmm_guest, sizeof(vmm_guest)) == 0) {
        guest_arg = vmm_guest;
    }
    if (guest_arg) {
        if (addr_parse(guest_arg, &a->guest) < 0) {
            die("Invalid --guest address '%s' (vsock:CID:PORT, hvsock:PATH:PORT or unix:PATH)",
                guest_arg);
        }
    } else {
        char buf[64];
        snprintf(buf, sizeof(buf), "vsock:%u:%u", a->vm->id, GUEST_AGENT_VSOCK_PORT);
        if (addr_parse(buf, &a->guest) < 0) {
            die("Invalid guest address %s", buf);
        }
    }
    addr_format(&a->guest, a->guest_str, sizeof(a->guest_str));
}

/* SIGTERM, SIGINT and SIGHUP come through the event loop, and so do the
 * exits of the VMM and its stop command (SIGCHLD). */
static int setup_signals(Agent *a) {
    signals_take((const int[]){SIGTERM, SIGINT, SIGHUP, SIGCHLD, 0}, NULL);
    int r = sd_event_default(&a->event);
    if (r < 0) {
        return log_error_errno(r, "Cannot create the event loop: %m");
    }
    return 0;
}

/* What the agent does first: with --no-vmm READY=1 at once; with
 * --foreground the VM starts now; else READY=1 comes once the guest
 * agent of a started VM answers, and lingering begins. */
static int serve_begin(Agent *a) {
    if (a->no_vmm) {
        /* A guest agent someone else started: its VM's secret, when they
         * left it where we would have (secret.h). */
        _cleanup_free_ char *path = vm_secret_path(a->vm_name);
        int r = path ? vm_secret_load(path, a->secret) : -ENOMEM;
        if (r < 0 && r != -ENOENT) {
            return log_error_errno(r, "Cannot use the VM's secret %s: %m", path ? path : "");
        }
        a->have_secret = r >= 0;
        log_debug("Guest connections %s the VM's secret", r >= 0 ? "carry" : "without");
        sd_notify(0, "READY=1");
        return 0;
    }
    if (a->foreground) {
        ErrorText err;
        return lifecycle_start(a->life, &err);
    }
    idle_linger_update(a->idle);
    return 0;
}

/* Serves the VM's command socket until the VM has stopped (or, never
 * started, the agent lingered long enough). In this order: the
 * configuration, the guest agent's address, signals and the event loop,
 * the listening socket, the modules, what comes first
 * (serve_begin), the loop; then the teardown, which kills a VMM still
 * running. */
static int run_serve(Agent *a, const Options *o) {
    Listener l = {.fd = -EBADF};
    int r;

    /* A lease is a connection: 1,000 clients at once need more fds than a
     * service manager's default soft limit. */
    r = fd_limit_raise();
    if (r < 0) {
        log_warning_errno(r, "Cannot raise the fd limit: %m");
    }
    load_configuration(a);
    set_guest_address(a, o->guest);
    r = setup_signals(a);
    if (r >= 0) {
        r = listen_open(a, o->listen, &l);
    }
    if (r >= 0) {
        r = modules_new(a, l.fd);
        if (r >= 0) {
            r = sd_event_add_signal(a->event, NULL, SIGTERM, on_signal, a);
        }
        if (r >= 0) {
            r = sd_event_add_signal(a->event, NULL, SIGINT, on_signal, a);
        }
        if (r >= 0) {
            r = sd_event_add_signal(a->event, NULL, SIGHUP, on_reload, a);
        }
        if (r < 0) {
            log_error_errno(r, "Cannot set up the event loop: %m");
        }
    }
    if (r >= 0) {
        log_info("VM '%s': serving, guest agent at %s", a->vm_name, a->guest_str);
        r = serve_begin(a);
    }
    if (r >= 0) {
        r = sd_event_loop(a->event);
        if (r < 0) {
            log_error_errno(r, "Event loop failed: %m");
        }
    }
    modules_free(a);
    listen_close(&l);
    host_config_free(a->host);
    vm_config_free(a->vm);
    sd_event_unref(a->event);
    return r < 0 ? EXIT_FAILURE : a->exit_code;
}

int main(int argc, char **argv) {
    Agent a = {
        .vmm = &vmm_crosvm,
        .guest_timeout = GUEST_TIMEOUT_DEFAULT_S * USEC_PER_SEC,
        .shutdown_timeout = SHUTDOWN_TIMEOUT_DEFAULT_S * USEC_PER_SEC,
        .vmm_stop_timeout = VMM_STOP_TIMEOUT_DEFAULT_S * USEC_PER_SEC,
        .kill_timeout = KILL_TIMEOUT_DEFAULT_S * USEC_PER_SEC,
        .idle_grace = IDLE_GRACE_DEFAULT_S * USEC_PER_SEC,
    };
    Options o = {.mode = MODE_SERVE};

    log_setup("qubes-lite-host-agent");
    /* Under systemd our records go to the journal with their fields: the
     * VM's name on each, the VMM's pid on those about its process. */
    log_use_journal();
    int r = parse_options(argc, argv, &a, &o);
    if (r != 0) {
        return r > 0 ? EXIT_SUCCESS : EXIT_FAILURE;
    }
    if (a.vm_name) {
        log_set_field("QUBES_LITE_VM", a.vm_name);
    }
    switch (o.mode) {
    case MODE_CHECK:
        return run_check(o.config_only);
    case MODE_PRINT_COMMAND:
        return run_print_command(a.vm_name);
    case MODE_BIND_VFIO:
        return run_bind_vfio();
    case MODE_WRITE_SWITCH_CONFIG:
        return run_write_switch_config(o.switch_net, o.switch_dir);
    default:
        return run_serve(&a, &o);
    }
}
