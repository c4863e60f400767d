/* qubes-lite-init: PID 1 of the guest image (/init in its initramfs).
 *
 * It sets the VM up from the kernel command line (params.h): file
 * systems, modules, host name, network address, default user, and the
 * VM's secret from fw_cfg (fwcfg.h) into a root-only file. Then it
 * starts the guest agent and a root shell on the console and restarts
 * either when it dies, runs the image's services once, and reaps every
 * orphan. It powers the VM off when asked: SIGUSR2 (busybox poweroff, the
 * guest agent's poweroff command), SIGUSR1 (halt: a halted VM is of no
 * use), SIGPWR, or the ACPI power button (qemu's system_powerdown); and
 * reboots on SIGTERM (busybox reboot) or SIGINT (Ctrl-Alt-Del). Either way
 * every process gets SIGTERM, then SIGKILL after a timeout, file systems
 * are synced and unmounted, and the kernel is told to power off or reboot.
 * PID 1 never exits: the kernel would panic. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/input.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "fwcfg.h"
#include "log.h"
#include "net.h"
#include "params.h"
#include "secret-file.h"
#include "sysinit.h"
#include "util.h"

#define PROGRAM "qubes-lite-init"
#define AGENT_PATH "/usr/bin/qubes-lite-guest-agent"
#define AGENT_LISTEN "vsock::5200"
#define AGENT_ARGS_FILE "/etc/qubes-lite/guest-agent.args"
/* The VM's secret, for the guest agent's --secret-file: on /run's tmpfs,
 * root's alone. */
#define SECRET_DIR "/run/qubes-lite"
#define SECRET_PATH SECRET_DIR "/secret"
#define MODULE_LIST "/etc/qubes-lite/modules"
#define MODULE_DIR "/lib/modules"
#define SERVICE_DIR "/etc/qubes-lite/init.d"
#define POWEROFF_COMMAND "/sbin/poweroff"
#define DEFAULT_HOSTNAME "qubes-lite"
#define SANITIZER_RESTART "--sanitizer-restart"

#define USEC_PER_SEC 1000000ULL
/* A child that ran this long is restarted at once; one that died sooner
 * waits RESTART_MIN, doubled with each quick exit in a row, RESTART_MAX at
 * most: a broken agent costs a line every 30 s, not a busy loop. */
#define QUICK_EXIT_USEC (10 * USEC_PER_SEC)
#define RESTART_MIN_USEC (1 * USEC_PER_SEC)
#define RESTART_MAX_USEC (30 * USEC_PER_SEC)
/* At shutdown: SIGTERM, then SIGKILL for whatever still runs. */
#define TERM_TIMEOUT_USEC (5 * USEC_PER_SEC)
#define KILL_TIMEOUT_USEC (2 * USEC_PER_SEC)

#define AGENT_EXTRA_MAX 32
#define SERVICES_MAX 16
#define BUTTONS_MAX 4

typedef struct Child {
    const char *what; /* for the log */
    const char *path;
    char **argv;
    char **envp;
    const char *tty;  /* its own session on this terminal; NULL: /dev/null */
    pid_t pid;        /* 0: not running */
    uint64_t started; /* CLOCK_MONOTONIC µs */
    bool restart_due;
    uint64_t restart_at;
    unsigned quick_exits;
} Child;

typedef struct Service {
    char name[NAME_MAX + 1];
    pid_t pid;
} Service;

typedef struct Init {
    int sigfd;
    Child agent, shell;
    Service services[SERVICES_MAX];
    size_t n_services;
    int buttons[BUTTONS_MAX];
    size_t n_buttons;
} Init;

static char *agent_env[] = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                            NULL};
static char *shell_env[] = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                            "HOME=/root",
                            "TERM=vt220",
                            "USER=root",
                            "LOGNAME=root",
                            "SHELL=/bin/sh",
                            NULL};

static double uptime_s(void) {
    return (double)now_usec(CLOCK_BOOTTIME) / (double)USEC_PER_SEC;
}

/* PID 1 cannot exit; when it cannot go on it powers the VM off. */
_noreturn_ _printf_(1, 2) static void fatal(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_error("%s; powering off", msg);
    sync();
    for (;;) {
        (void)reboot(RB_POWER_OFF);
        pause();
    }
}

/* ---- children ------------------------------------------------------------------ */

/* In the child: default signal state, a session of its own, stdio on its
 * terminal (which becomes its controlling terminal) or stdin on /dev/null
 * and output on the console, nothing else open. */
_noreturn_ static void child_exec(const char *path, char **argv, char **envp, const char *tty) {
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigset_t none;
    int fd;

    for (int sig = 1; sig < NSIG; sig++) {
        (void)sigaction(sig, &dfl, NULL);
    }
    sigemptyset(&none);
    (void)sigprocmask(SIG_SETMASK, &none, NULL);
    (void)setsid();
    if (tty) {
        fd = open(tty, O_RDWR | O_NOCTTY);
        if (fd < 0 || ioctl(fd, TIOCSCTTY, 0) < 0) {
            log_error_errno(-errno, "Failed to open %s as a terminal: %m", tty);
            _exit(EXIT_FAILURE);
        }
        for (int i = 0; i < 3; i++) {
            (void)dup2(fd, i);
        }
    } else {
        fd = open("/dev/null", O_RDONLY);
        (void)dup2(fd, STDIN_FILENO);
    }
    (void)fd_close_from(3);
    if (tty && chdir("/root") < 0) {
        /* a shell in / then */
    }
    execve(path, argv, envp);
    log_error_errno(-errno, "Failed to execute %s: %m", path);
    _exit(127);
}

static int spawn(const char *path, char **argv, char **envp, const char *tty, pid_t *ret_pid) {
    pid_t pid = fork();
    if (pid < 0) {
        return -errno;
    }
    if (pid == 0) {
        child_exec(path, argv, envp, tty);
    }
    *ret_pid = pid;
    return 0;
}

static void child_schedule_restart(Child *c, uint64_t now) {
    uint64_t delay = 0;
    if (now - c->started < QUICK_EXIT_USEC) {
        delay = RESTART_MIN_USEC << MIN(c->quick_exits, 5u);
        delay = MIN(delay, RESTART_MAX_USEC);
        c->quick_exits++;
    } else {
        c->quick_exits = 0;
    }
    c->restart_due = true;
    c->restart_at = now + delay;
}

static void child_start(Child *c) {
    uint64_t now = now_usec(CLOCK_MONOTONIC);
    int r;

    c->started = now;
    c->restart_due = false;
    r = spawn(c->path, c->argv, c->envp, c->tty, &c->pid);
    if (r < 0) {
        c->pid = 0;
        log_error_errno(r, "Failed to start the %s: %m", c->what);
        child_schedule_restart(c, now);
    }
}

static void describe_status(int status, char *buf, size_t size) {
    if (WIFEXITED(status)) {
        snprintf(buf, size, "exited with status %d", WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
        snprintf(buf, size, "was killed by signal %d (%s)%s", WTERMSIG(status),
                 sigabbrev_np(WTERMSIG(status)) ?: "?", WCOREDUMP(status) ? ", core dumped" : "");
    } else {
        snprintf(buf, size, "ended (status 0x%x)", (unsigned)status);
    }
}

static bool child_reaped(Child *c, pid_t pid, int status) {
    char how[96];
    if (c->pid == 0 || c->pid != pid) {
        return false;
    }
    uint64_t now = now_usec(CLOCK_MONOTONIC);
    c->pid = 0;
    child_schedule_restart(c, now);
    describe_status(status, how, sizeof(how));
    if (c->restart_at > now) {
        log_warning("The %s %s; restarting it in %llu s", c->what, how,
                    (unsigned long long)((c->restart_at - now) / USEC_PER_SEC));
    } else {
        log_notice("The %s %s; restarting it", c->what, how);
    }
    return true;
}

/* Every child that has exited, ours or an orphan the kernel gave us. */
static void reap(Init *in) {
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0) {
            return;
        }
        if (child_reaped(&in->agent, pid, status) || child_reaped(&in->shell, pid, status)) {
            continue;
        }
        for (size_t i = 0; i < in->n_services; i++) {
            if (in->services[i].pid == pid) {
                char how[96];
                describe_status(status, how, sizeof(how));
                log_info("Service %s %s", in->services[i].name, how);
                in->services[i].pid = 0;
            }
        }
    }
}

/* ---- what runs ------------------------------------------------------------------ */

/* The guest agent's command line: the VM's settings, then the image's
 * extra words (AGENT_ARGS_FILE, one a line). */
static char **agent_argv(const InitParams *p) {
    static char idle[16];
    static char *argv[16 + AGENT_EXTRA_MAX];
    static char extra[AGENT_EXTRA_MAX][256];
    size_t n = 0;

    argv[n++] = AGENT_PATH;
    argv[n++] = "--listen";
    argv[n++] = AGENT_LISTEN;
    argv[n++] = "--poweroff-command";
    argv[n++] = POWEROFF_COMMAND;
    if (p->idle_s > 0) {
        snprintf(idle, sizeof(idle), "%u", p->idle_s);
        argv[n++] = "--idle-timeout";
        argv[n++] = idle;
    }
    if (p->user[0]) {
        argv[n++] = "--default-user";
        argv[n++] = (char *)p->user;
    }
    /* Always: without the file (no secret came) the agent refuses every
     * connection instead of serving whoever passes the peer check. */
    argv[n++] = "--secret-file";
    argv[n++] = SECRET_PATH;
    FILE *f = fopen(AGENT_ARGS_FILE, "re");
    for (size_t i = 0; f && i < AGENT_EXTRA_MAX && fgets(extra[i], sizeof(extra[i]), f);) {
        extra[i][strcspn(extra[i], "\n")] = '\0';
        if (extra[i][0]) {
            argv[n++] = extra[i++];
        }
    }
    if (f) {
        fclose(f);
    }
    argv[n] = NULL;
    return argv;
}

/* The terminal behind /dev/console (the last console= of the command
 * line), for the shell: /dev/console itself cannot be a controlling
 * terminal. NULL when there is none. */
static const char *console_tty(void) {
    static char path[64];
    char active[128] = "";
    FILE *f = fopen("/sys/class/tty/console/active", "re");
    if (!f) {
        return NULL;
    }
    if (!fgets(active, sizeof(active), f)) {
        active[0] = '\0';
    }
    fclose(f);
    char *last = NULL;
    for (char *w = strtok(active, " \n"); w; w = strtok(NULL, " \n")) {
        last = w;
    }
    if (!last || strchr(last, '/')) {
        return NULL;
    }
    snprintf(path, sizeof(path), "/dev/%s", last);
    return access(path, R_OK | W_OK) == 0 ? path : NULL;
}

static int service_filter(const struct dirent *d) {
    return d->d_name[0] != '.';
}

/* Each executable in SERVICE_DIR, once, in name order. */
static void start_services(Init *in) {
    struct dirent **list = NULL;
    int n = scandir(SERVICE_DIR, &list, service_filter, alphasort);
    for (int i = 0; i < n; i++) {
        char path[PATH_MAX];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", SERVICE_DIR, list[i]->d_name);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111) &&
            in->n_services < SERVICES_MAX) {
            Service *s = &in->services[in->n_services];
            char *argv[] = {path, NULL};
            int r = spawn(path, argv, agent_env, NULL, &s->pid);
            if (r < 0) {
                log_error_errno(r, "Failed to start service %s: %m", path);
            } else {
                snprintf(s->name, sizeof(s->name), "%s", list[i]->d_name);
                in->n_services++;
            }
        }
        free(list[i]);
    }
    free(list);
}

static bool has_power_key(int fd) {
    enum { BITS = 8 * sizeof(unsigned long) };
    unsigned long keys[KEY_MAX / BITS + 1] = {0};
    if (ioctl(fd, EVIOCGBIT(EV_KEY, sizeof(keys)), keys) < 0) {
        return false;
    }
    return (keys[KEY_POWER / BITS] >> (KEY_POWER % BITS)) & 1;
}

/* The input devices that have a power button key (the ACPI button driver
 * makes one; evdev gives it a /dev/input/event node). */
static void open_power_buttons(Init *in) {
    DIR *d = opendir("/dev/input");
    struct dirent *e;
    while (d && (e = readdir(d)) && in->n_buttons < BUTTONS_MAX) {
        char path[300];
        if (!startswith(e->d_name, "event")) {
            continue;
        }
        snprintf(path, sizeof(path), "/dev/input/%s", e->d_name);
        int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) {
            continue;
        }
        if (has_power_key(fd)) {
            in->buttons[in->n_buttons++] = fd;
        } else {
            safe_close(fd);
        }
    }
    if (d) {
        closedir(d);
    }
}

static bool power_button_pressed(int fd) {
    struct input_event ev[16];
    ssize_t n;
    bool pressed = false;
    while ((n = read(fd, ev, sizeof(ev))) > 0) {
        for (size_t i = 0; i < (size_t)n / sizeof(ev[0]); i++) {
            if (ev[i].type == EV_KEY && ev[i].code == KEY_POWER && ev[i].value == 1) {
                pressed = true;
            }
        }
    }
    return pressed;
}

/* ---- shutdown ------------------------------------------------------------------- */

/* Reaps until no process is left or the timeout passed; true when none is. */
static bool reap_all(int sigfd, uint64_t timeout) {
    uint64_t deadline = now_usec(CLOCK_MONOTONIC) + timeout;
    for (;;) {
        while (waitpid(-1, NULL, WNOHANG) > 0) {
        }
        if (errno == ECHILD) {
            return true;
        }
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        if (now >= deadline) {
            return false;
        }
        struct pollfd p = {.fd = sigfd, .events = POLLIN};
        if (poll(&p, 1, (int)((deadline - now + 999) / 1000)) > 0) {
            struct signalfd_siginfo si;
            while (read(sigfd, &si, sizeof(si)) == sizeof(si)) {
            }
        }
    }
}

/* /proc/self/mounts escapes blanks and backslashes as \ooo. */
static void unescape_octal(char *s) {
    char *o = s;
    for (; *s; s++) {
        if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
            s[3] >= '0' && s[3] <= '7') {
            *o++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 | (s[3] - '0'));
            s += 3;
        } else {
            *o++ = *s;
        }
    }
    *o = '\0';
}

/* Every file system but the root, last mounted first; one that stays busy
 * is made read-only so that nothing is lost. */
static void unmount_all(void) {
    char targets[64][256];
    size_t n = 0;
    char line[1024];
    FILE *f = fopen("/proc/self/mounts", "re");
    while (f && n < ELEMENTSOF(targets) && fgets(line, sizeof(line), f)) {
        char *target = strchr(line, ' ');
        if (!target) {
            continue;
        }
        target++;
        target[strcspn(target, " ")] = '\0';
        unescape_octal(target);
        if (!streq(target, "/")) {
            snprintf(targets[n++], sizeof(targets[0]), "%s", target);
        }
    }
    if (f) {
        fclose(f);
    }
    while (n-- > 0) {
        if (umount2(targets[n], 0) < 0 && errno != EINVAL && errno != ENOENT &&
            mount(NULL, targets[n], NULL, MS_REMOUNT | MS_RDONLY, NULL) < 0) {
            log_warning_errno(-errno, "Failed to unmount %s: %m", targets[n]);
        }
    }
}

_noreturn_ static void shutdown_system(Init *in, int cmd, const char *why) {
    log_notice("%s: %s", why, cmd == RB_AUTOBOOT ? "rebooting" : "powering off");
    /* Everyone, the agent and its sessions included, gets SIGTERM (and
     * SIGCONT, should it be stopped); the console shell, which as an
     * interactive shell ignores SIGTERM, is hung up like a terminal. */
    (void)kill(-1, SIGTERM);
    if (in->shell.pid > 0) {
        (void)kill(-in->shell.pid, SIGHUP);
    }
    (void)kill(-1, SIGCONT);
    if (!reap_all(in->sigfd, TERM_TIMEOUT_USEC)) {
        log_warning("Processes left after %llu s; killing them", TERM_TIMEOUT_USEC / USEC_PER_SEC);
        (void)kill(-1, SIGKILL);
        if (!reap_all(in->sigfd, KILL_TIMEOUT_USEC)) {
            log_warning("Processes left after SIGKILL");
        }
    }
    sync();
    unmount_all();
    sync();
    for (;;) {
        if (reboot(cmd) < 0) {
            log_error_errno(-errno, "reboot() failed: %m");
        }
        pause();
    }
}

static void on_signal(Init *in, const struct signalfd_siginfo *si) {
    char why[96];
    int sig = (int)si->ssi_signo;

    if (sig == SIGCHLD) {
        reap(in);
        return;
    }
    snprintf(why, sizeof(why), "SIG%s from pid %u", sigabbrev_np(sig) ?: "?", si->ssi_pid);
    switch (sig) {
    case SIGUSR2: /* poweroff */
    case SIGUSR1: /* halt */
    case SIGPWR:
        shutdown_system(in, RB_POWER_OFF, why);
    case SIGTERM: /* reboot */
    case SIGINT:  /* Ctrl-Alt-Del */
        shutdown_system(in, RB_AUTOBOOT, why);
    default:
        break;
    }
}

/* ---- set-up --------------------------------------------------------------------- */

static void report_param(const char *message, void *userdata) {
    log_error("%s", message);
}

static InitParams read_params(void) {
    InitParams p;
    char cmdline[4096] = "";
    FILE *f = fopen("/proc/cmdline", "re");
    if (!f || !fgets(cmdline, sizeof(cmdline), f)) {
        log_error_errno(-errno, "Failed to read /proc/cmdline: %m");
    }
    if (f) {
        fclose(f);
    }
    params_parse(cmdline, &p, report_param, NULL);
    return p;
}

static void setup_network(const InitParams *p) {
    char ifname[IFNAMSIZ], ip[INET_ADDRSTRLEN];
    int r;

    r = net_link_up("lo");
    if (r < 0) {
        log_error_errno(r, "Failed to bring lo up: %m");
    }
    if (!p->has_ip) {
        return;
    }
    inet_ntop(AF_INET, &p->ip, ip, sizeof(ip));
    r = net_find_nic(p->has_mac ? p->mac : NULL, ifname);
    if (r < 0) {
        log_error("No network interface %s for %s/%u", p->has_mac ? "with that MAC" : "", ip,
                  p->prefix);
        return;
    }
    r = net_set_address(ifname, p->ip, p->prefix);
    if (r < 0) {
        log_error_errno(r, "Failed to set %s/%u on %s: %m", ip, p->prefix, ifname);
        return;
    }
    if (p->has_gw) {
        r = net_add_default_route(p->gw);
        if (r < 0) {
            char gw[INET_ADDRSTRLEN];
            inet_ntop(AF_INET, &p->gw, gw, sizeof(gw));
            log_error_errno(r, "Failed to add the default route through %s: %m", gw);
        }
    }
}

static int write_secret(const uint8_t *secret) {
    /* 0700 and 0400, whatever was there: only root may ever read it. */
    if (mkdir(SECRET_DIR, 0700) < 0 && errno != EEXIST) {
        return -errno;
    }
    if (chmod(SECRET_DIR, 0700) < 0) {
        return -errno;
    }
    if (unlink(SECRET_PATH) < 0 && errno != ENOENT) {
        return -errno;
    }
    _cleanup_close_ int fd =
        open(SECRET_PATH, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0400);
    if (fd < 0) {
        return -errno;
    }
    int r = loop_write(fd, secret, WIRE_SECRET_SIZE);
    if (r < 0) {
        (void)unlink(SECRET_PATH);
    }
    return r;
}

/* The VM's secret: what the host agent proves itself with (the project
 * README, "Threat: local host processes"). The VMM gives it in the fw_cfg
 * file SECRET_FW_CFG_NAME; we read it over the I/O ports ourselves
 * (fwcfg.h says why not through the kernel) and leave a root-only copy
 * for the guest agent's --secret-file. No secret: one line, and the agent
 * refuses every connection (its file is missing). */
static void setup_secret(void) {
    uint8_t secret[WIRE_SECRET_SIZE];

    int r = fwcfg_read_file(SECRET_FW_CFG_NAME, secret, sizeof(secret));
    if (r < 0) {
        log_error("No VM secret: fw_cfg file %s: %s; the guest agent will refuse every "
                  "connection", SECRET_FW_CFG_NAME, fwcfg_strerror(r));
        return;
    }
    r = write_secret(secret);
    explicit_bzero(secret, sizeof(secret));
    if (r < 0) {
        log_error_errno(r, "Failed to write the VM's secret to %s: %m; the guest agent will "
                           "refuse every connection", SECRET_PATH);
    }
}

static void setup_user(const InitParams *p) {
    uid_t uid;
    gid_t gid;
    sysinit_runtime_dir(0, 0);
    if (!p->user[0]) {
        return;
    }
    int r = sysinit_user(p->user, &uid, &gid);
    if (r < 0) {
        log_error_errno(r, "Failed to set up user %s: %m", p->user);
        return;
    }
    sysinit_runtime_dir(uid, gid);
}

/* The kernel opens /dev/console for us when the initramfs has it; else
 * stdio goes to devtmpfs's, or to /dev/null. */
static void setup_stdio(void) {
    if (fcntl(STDERR_FILENO, F_GETFD) >= 0) {
        return;
    }
    int fd = open("/dev/console", O_RDWR | O_NOCTTY);
    if (fd < 0) {
        fd = open("/dev/null", O_RDWR);
    }
    for (int i = 0; i < 3 && fd >= 0; i++) {
        if (fd != i) {
            (void)dup2(fd, i);
        }
    }
}

static void help(void) {
    printf("Usage: %s\n"
           "PID 1 of the qubes-lite guest image: sets the VM up from the qubes_lite.*\n"
           "kernel parameters, supervises the guest agent and a console shell, reaps\n"
           "orphans and powers the VM off when asked. It runs only as PID 1.\n",
           PROGRAM);
}

int main(int argc, char **argv) {
    Init in = {.sigfd = -EBADF};
    sigset_t mask;

    log_setup(PROGRAM);
    if (argc > 1 && streq(argv[1], "--help")) {
        help();
        return EXIT_SUCCESS;
    }
    if (getpid() != 1) {
        fprintf(stderr, "%s: runs only as PID 1 (the guest image's /init); see --help\n", PROGRAM);
        return EXIT_FAILURE;
    }
    umask(022);

    /* Signals first: a poweroff asked for while we set up waits in the
     * signalfd instead of killing us (PID 1 has no default actions, but
     * a handled signal must not be lost). */
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGUSR1);
    sigaddset(&mask, SIGUSR2);
    sigaddset(&mask, SIGPWR);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    in.sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    /* Ctrl-Alt-Del becomes SIGINT to us instead of an instant reboot. */
    (void)reboot(RB_DISABLE_CAD);

    bool restarted = argc > 1 && streq(argv[1], SANITIZER_RESTART);
    bool mounted = restarted || sysinit_mount();
#ifdef __SANITIZE_ADDRESS__
    /* The sanitizer runtime looked for our stack in /proc/self/maps
     * before there was a /proc, and would warn of false positives at
     * every noreturn call: start again once, with /proc there. */
    if (!restarted && mounted) {
        execv(argv[0], (char *[]){argv[0], SANITIZER_RESTART, NULL});
    }
#endif
    setup_stdio();
    if (in.sigfd < 0) {
        fatal("Cannot create the signalfd: %s", strerror(errno));
    }
    if (!mounted) {
        fatal("Cannot mount /proc and /dev");
    }
    log_debug("Started at %.2f s", uptime_s());
    InitParams p = read_params();
    unsigned failed = sysinit_modules(MODULE_LIST, MODULE_DIR);
    log_debug("Modules loaded at %.2f s", uptime_s());
    sysinit_hostname(p.name[0] ? p.name : DEFAULT_HOSTNAME);
    setup_network(&p);
    if (p.n_dns > 0) {
        sysinit_resolv_conf(p.dns, p.n_dns);
    }
    setup_user(&p);
    setup_secret();
    open_power_buttons(&in);
    log_debug("Set up at %.2f s", uptime_s());

    in.agent = (Child){
        .what = "guest agent", .path = AGENT_PATH, .argv = agent_argv(&p), .envp = agent_env};
    child_start(&in.agent);
    log_info("%s: guest agent started at %.2f s%s", p.name[0] ? p.name : DEFAULT_HOSTNAME,
             uptime_s(), failed ? " (some modules failed to load)" : "");
    const char *tty = console_tty();
    if (tty) {
        /* "-sh": a login shell, which reads /etc/profile. */
        static char *shell_argv[] = {"-sh", NULL};
        in.shell = (Child){.what = "console shell",
                           .path = "/bin/sh",
                           .argv = shell_argv,
                           .envp = shell_env,
                           .tty = tty};
        child_start(&in.shell);
    }
    start_services(&in);

    for (;;) {
        struct pollfd pfd[1 + BUTTONS_MAX];
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        int timeout = -1;

        Child *children[] = {&in.agent, &in.shell};
        for (size_t k = 0; k < ELEMENTSOF(children); k++) {
            Child *c = children[k];
            if (!c->restart_due) {
                continue;
            }
            if (c->restart_at <= now) {
                child_start(c);
            } else {
                int ms = (int)((c->restart_at - now + 999) / 1000);
                timeout = timeout < 0 ? ms : MIN(timeout, ms);
            }
        }
        pfd[0] = (struct pollfd){.fd = in.sigfd, .events = POLLIN};
        for (size_t i = 0; i < in.n_buttons; i++) {
            pfd[1 + i] = (struct pollfd){.fd = in.buttons[i], .events = POLLIN};
        }
        if (poll(pfd, 1 + in.n_buttons, timeout) < 0) {
            continue; /* EINTR; nothing else can fail here */
        }
        for (size_t i = 0; i < in.n_buttons; i++) {
            if ((pfd[1 + i].revents & POLLIN) && power_button_pressed(in.buttons[i])) {
                shutdown_system(&in, RB_POWER_OFF, "Power button");
            }
        }
        struct signalfd_siginfo si;
        while (read(in.sigfd, &si, sizeof(si)) == sizeof(si)) {
            on_signal(&in, &si);
        }
    }
}
