/* qubes-lite-generator: a systemd generator that turns the configuration
 * into units, so that every configured VM gets its socket-activated host
 * agent on any systemd distribution without per-VM unit files to keep in
 * step by hand:
 *
 *   qubes-lite-<vm>.socket       enabled (sockets.target.wants)
 *   qubes-lite-<vm>-vm.service   the host agent, after its networks' switches
 *   qubes-lite-vfio.service      --bind-vfio, when isolatedPciDevices is set
 *   vm-switch-<net>.service      vm-switch for every network a vmNetwork
 *                                entry names, enabled (multi-user.target.wants)
 *
 * systemd runs it at boot and on every daemon-reload as
 * `qubes-lite-generator NORMAL_DIR EARLY_DIR LATE_DIR`; it writes to
 * NORMAL_DIR, so units in /etc still override what it writes. Run by hand
 * (one directory), it shows what it would generate. A VM whose file does
 * not load gets no units; every problem is reported (systemd logs a
 * generator's stderr) and makes the exit status 1. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "addr.h"
#include "host/common/config.h"
#include "host/common/paths.h"
#include "rules.h"
#include "units.h"
#include "util.h"

#ifndef QUBES_LITE_BINDIR
#define QUBES_LITE_BINDIR "/usr/bin"
#endif
#define AGENT_NAME "qubes-lite-host-agent"
#define SWITCH_NAME "vm-switch"

static const char usage[] =
    "Usage: qubes-lite-generator DIR [EARLY_DIR LATE_DIR]\n"
    "Write systemd units for every VM configured in the configuration\n"
    "directory ($QUBES_LITE_CONFIG_DIR, default " DEFAULT_CONFIG_DIR ") into DIR: a\n"
    "socket-activated host agent per VM, a vm-switch per VM network, and\n"
    "the vfio binding of isolatedPciDevices. Installed in systemd's system-generators directory,\n"
    "systemd runs it at boot and on daemon-reload.\n";

static unsigned problems;

_printf_(1, 2) static void problem(const char *fmt, ...) {
    va_list ap;
    fputs("qubes-lite-generator: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    problems++;
}

/* A program of ours beside our real path (a build tree, a package whose
 * generator is a symlink to its bin directory), else in QUBES_LITE_BINDIR. */
static char *program_path(const char *name) {
    char *p = config_program_beside_self(name);

    if (!p && asprintf(&p, "%s/%s", QUBES_LITE_BINDIR, name) < 0) {
        return NULL;
    }
    return p;
}

typedef int (*WriteFn)(FILE *f, const HostConfig *h, const VmConfig *vm, const UnitsEnv *env);

/* Writes one unit file (replacing a symlink would be wrong: O_NOFOLLOW). */
static int write_unit(const char *dir, const char *name, WriteFn fn, const HostConfig *h,
                      const VmConfig *vm, const UnitsEnv *env) {
    _cleanup_free_ char *path = NULL;
    int fd, r;

    if (asprintf(&path, "%s/%s", dir, name) < 0) {
        return -ENOMEM;
    }
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
        r = -errno;
        problem("cannot write %s: %s", path, strerror(-r));
        return r;
    }
    FILE *f = fdopen(fd, "w");
    if (!f) {
        r = -errno;
        close(fd);
        return r;
    }
    r = fn(f, h, vm, env);
    if (fclose(f) != 0 && r >= 0) {
        r = -errno;
    }
    if (r < 0) {
        problem("cannot write %s: %s", path, strerror(-r));
        unlink(path);
    }
    return r;
}

static int write_vfio(FILE *f, const HostConfig *h, const VmConfig *vm, const UnitsEnv *env) {
    (void)vm;
    return units_write_vfio(f, h, env);
}

/* DIR/TARGET.wants/UNIT -> ../UNIT */
static int enable(const char *dir, const char *target, const char *unit) {
    _cleanup_free_ char *wants = NULL, *link = NULL, *dest = NULL;

    if (asprintf(&wants, "%s/%s.wants", dir, target) < 0 ||
        asprintf(&link, "%s/%s", wants, unit) < 0 || asprintf(&dest, "../%s", unit) < 0) {
        return -ENOMEM;
    }
    if (mkdir(wants, 0755) < 0 && errno != EEXIST) {
        int r = -errno;
        problem("cannot create %s: %s", wants, strerror(-r));
        return r;
    }
    (void)unlink(link);
    if (symlink(dest, link) < 0) {
        int r = -errno;
        problem("cannot link %s: %s", link, strerror(-r));
        return r;
    }
    return 0;
}

static int write_switch(FILE *f, const HostConfig *h, const VmConfig *vm, const UnitsEnv *env) {
    /* The network's name rides in vm->name (see generate_switches()). */
    return units_write_switch(f, h, vm->name, env);
}

/* The networks the VMs' vmNetwork entries name, each once, in the order
 * met. */
typedef struct Networks {
    char **v;
    size_t n;
} Networks;

static int networks_add(Networks *nets, const char *net) {
    for (size_t i = 0; i < nets->n; i++) {
        if (streq(nets->v[i], net)) {
            return 0;
        }
    }
    char **v = realloc(nets->v, (nets->n + 1) * sizeof(*v));
    if (!v) {
        return -ENOMEM;
    }
    nets->v = v;
    nets->v[nets->n] = strdup(net);
    if (!nets->v[nets->n]) {
        return -ENOMEM;
    }
    nets->n++;
    return 0;
}

static void networks_done(Networks *nets) {
    for (size_t i = 0; i < nets->n; i++) {
        free(nets->v[i]);
    }
    free(nets->v);
}

static void generate_switches(const char *dir, const HostConfig *h, const Networks *nets,
                              const UnitsEnv *env) {
    char unit[300];

    for (size_t i = 0; i < nets->n; i++) {
        VmConfig as_net = {.name = nets->v[i]};
        snprintf(unit, sizeof(unit), "vm-switch-%s.service", nets->v[i]);
        if (write_unit(dir, unit, write_switch, h, &as_net, env) >= 0) {
            (void)enable(dir, "multi-user.target", unit);
        }
    }
}

static void generate_vm(const char *dir, const HostConfig *h, const char *name, const UnitsEnv *env,
                        Networks *nets) {
    _cleanup_(vm_config_freep) VmConfig *vm = NULL;
    ErrorText err = {{0}};
    char unit[300];

    /* config_check_all() has reported why a file does not load. */
    if (config_load_vm(config_dir(), name, &vm, &err) < 0) {
        return;
    }
    for (size_t i = 0; i < vm->n_vm_networks; i++) {
        if (networks_add(nets, vm->vm_networks[i].network) < 0) {
            problem("out of memory");
        }
    }
    snprintf(unit, sizeof(unit), "qubes-lite-%s.socket", name);
    if (write_unit(dir, unit, units_write_socket, h, vm, env) < 0) {
        return;
    }
    (void)enable(dir, "sockets.target", unit);
    snprintf(unit, sizeof(unit), "qubes-lite-%s-vm.service", name);
    (void)write_unit(dir, unit, units_write_service, h, vm, env);
}

/* Where the units' programs and directories are, into env (agent and
 * vm_switch hold the paths); false, with the problem told, when one
 * cannot stand in a unit file. */
static bool units_env(UnitsEnv *env, char **agent, char **vm_switch) {
    *agent = program_path(AGENT_NAME);
    *vm_switch = program_path(SWITCH_NAME);
    if (!*agent || !*vm_switch) {
        problem("out of memory");
        return false;
    }
    *env = (UnitsEnv){
        .host_agent = *agent,
        .config_dir = streq(config_dir(), DEFAULT_CONFIG_DIR) ? NULL : config_dir(),
        .runtime_dir = config_runtime_dir(),
        .vm_switch = *vm_switch,
        .switch_dir = config_switch_dir(),
    };
    if (!units_value_safe(env->host_agent) || !units_value_safe(env->runtime_dir) ||
        (env->config_dir && !units_value_safe(env->config_dir)) ||
        !units_value_safe(env->vm_switch) || !units_value_safe(env->switch_dir)) {
        problem("the host agent's or vm-switch's path, the configuration, the runtime or "
                "the switch directory holds characters a unit file cannot carry as they "
                "are: %s, %s, %s, %s, %s",
                env->host_agent, env->vm_switch, config_dir(), env->runtime_dir, env->switch_dir);
        return false;
    }
    return true;
}

/* qubes-lite-vfio.service, when host.json isolates PCI devices. */
static void generate_vfio(const char *dir, const HostConfig *host, const UnitsEnv *env) {
    if (host->isolated_pci_devices.n > 0 &&
        write_unit(dir, UNITS_VFIO_SERVICE, write_vfio, host, NULL, env) >= 0) {
        (void)enable(dir, "multi-user.target", UNITS_VFIO_SERVICE);
    }
}

/* Every VM's units, then a switch unit per network they name. */
static void generate_vms(const char *dir, const HostConfig *host, const UnitsEnv *env) {
    Networks nets = {0};
    ConfigVmFile *files = NULL;
    size_t n = 0;

    /* config_check_all() has reported a directory that cannot be read
     * and the files that are no VM's. */
    if (config_vm_files(config_dir(), &files, &n) == 0) {
        for (size_t i = 0; i < n; i++) {
            if (files[i].name[0]) {
                generate_vm(dir, host, files[i].name, env, &nets);
            }
        }
        config_vm_files_free(files, n);
    }
    if (nets.n > 0 && strncmp(env->switch_dir, "/run/", 5) != 0) {
        problem("the switch directory %s is not under /run: no vm-switch units", env->switch_dir);
    } else {
        generate_switches(dir, host, &nets, env);
    }
    networks_done(&nets);
}

/* The command line: DIR, or systemd's three directories (the first is
 * where units go); --help. A bad one is one line and exit 2. */
static const char *parse_command_line(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (streq(argv[i], "--help") || streq(argv[i], "-h")) {
            fputs(usage, stdout);
            exit(EXIT_SUCCESS);
        }
        if (argv[i][0] == '-') {
            fprintf(stderr, "qubes-lite-generator: unknown option '%.64s' (see --help)\n", argv[i]);
            exit(2);
        }
    }
    if (argc != 2 && argc != 4) {
        fprintf(stderr, "qubes-lite-generator: wants DIR, or systemd's NORMAL_DIR EARLY_DIR "
                        "LATE_DIR (see --help)\n");
        exit(2);
    }
    return argv[1];
}

/* The directory the units go to: one line, rather than one per unit,
 * when it is not a directory we can write. */
static bool output_dir_usable(const char *dir) {
    struct stat st;
    int e = 0;

    if (stat(dir, &st) < 0) {
        e = errno;
    } else if (!S_ISDIR(st.st_mode)) {
        e = ENOTDIR;
    } else if (access(dir, W_OK | X_OK) < 0) {
        e = errno;
    }
    if (e) {
        problem("cannot write units to %s: %s", dir, strerror(e));
        return false;
    }
    return true;
}

/* The configuration's problems, every one, in --check's words; not the
 * files it names, which may be on a file system not mounted this early
 * (the VM's start then says what is missing). */
static int check_configuration(void) {
    FILE *report = config_report_open(stderr, "qubes-lite-generator");
    if (!report) {
        return -ENOMEM;
    }
    int r = config_check_all(config_dir(), report, 0);
    fclose(report);
    return r;
}

/* The command line; the units' environment; every problem of the
 * configuration, once, in --check's words; then the units. */
int main(int argc, char **argv) {
    _cleanup_(host_config_freep) HostConfig *host = NULL;
    _cleanup_free_ char *agent = NULL, *vm_switch = NULL;
    ErrorText err = {{0}};
    UnitsEnv env;
    int r;

    const char *dir = parse_command_line(argc, argv);
    if (config_dir_check(&err) < 0) {
        /* No configuration is not "no VMs": say so, write nothing. */
        problem("%s", err.message);
        return 1;
    }
    if (!output_dir_usable(dir) || !units_env(&env, &agent, &vm_switch)) {
        return 1;
    }
    r = check_configuration();
    if (r < 0) {
        problem("cannot read %s: %s", config_dir(), strerror(-r));
        return 1;
    }
    problems += (unsigned)r;

    r = config_load_host_or_defaults(config_dir(), &host, &err);
    if (r < 0) {
        /* Without host.json no unit would be right (the socket's owner). */
        return 1;
    }
    generate_vfio(dir, host, &env);
    generate_vms(dir, host, &env);
    return problems ? 1 : 0;
}
