/* sandbox-driver: vm-switch's process shape around the real sandbox, for
 * the sandbox's own tests.
 *
 *   sandbox-driver --print-seccomp ROLE
 *   sandbox-driver [--no-sandbox] [--seccomp-mode MODE] [--user NAME]
 *                  --config-dir DIR --socket-dir DIR inspect|serve
 *
 * Like vm-switch, it opens its own program first, enters the sandbox right
 * after option parsing, then forks a child that re-executes the program
 * from that descriptor (after pivot_root), receives its descriptors from
 * the main process over a SOCK_SEQPACKET pair (SCM_RIGHTS), maps the
 * shared memory it got and locks itself down.
 *
 * inspect: the main process prints what it sees from inside, one fact a
 *          line ("pid 1", "uid_map 0 65534 1", "mount /config", "proc 1
 *          sandbox-driver", "netdev lo", "root config", "child ok …"), then
 *          exits 0.
 * serve:   creates driver.sock in the socket directory, starts the child,
 *          prints "ready", tells systemd READY=1 and waits for SIGTERM;
 *          the child serves until the main process goes. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "switch/net/confine.h"
#include "switch/sandbox/sandbox.h"
#include "util.h"

typedef struct Options {
    bool no_sandbox;
    FilterMode mode;
    const char *user;
    const char *config_dir;
    const char *socket_dir;
    const char *command;
    int child_fd;                    /* --child FD: the re-executed child */
    const FilterTable *print_filter; /* --print-seccomp ROLE */
} Options;

static void out(const char *fmt, ...) _printf_(1, 2);
static void out(const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n > 0 && loop_write(STDOUT_FILENO, buf, MIN((size_t)n, sizeof(buf) - 1)) < 0) {
        _exit(3);
    }
}

/* Our pid as /proc says it: neither role's allowlist has getpid(). */
static int proc_self_pid(void) {
    char stat[64] = "";
    _cleanup_close_ int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, stat, sizeof(stat) - 1) <= 0) {
        return -1;
    }
    return atoi(stat);
}

/* ---- the child ---------------------------------------------------------- */

/* Re-executed from the program's descriptor: gets a memfd (standing in for
 * a ring) over the control channel, maps it, locks down, answers. */
static int child_main(const Options *o) {
    char c;
    int memfd = -1;
    ssize_t n = recv_with_fd(o->child_fd, &c, 1, &memfd);
    if (n != 1 || memfd < 0) {
        return log_error_errno(n < 0 ? (int)n : -EBADMSG, "child: no set-up message: %m");
    }
    char *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (m == MAP_FAILED) {
        return log_error_errno(-errno, "child: mmap: %m");
    }
    int self = proc_self_pid();
    if (!o->no_sandbox) {
        int r = confine_lockdown_child(o->mode);
        if (r < 0) {
            return log_error_errno(r, "child: lockdown: %m");
        }
    }
    /* Under the child filter from here: only what a serving child does. */
    char msg[64];
    int len = snprintf(msg, sizeof(msg), "child ok pid=%d shm=%.8s", self, m);
    if (send(o->child_fd, msg, (size_t)len, 0) < 0) {
        return log_error_errno(-errno, "child: send: %m");
    }
    /* Serve until the main process closes the channel. */
    while (read(o->child_fd, msg, sizeof(msg)) > 0) {
    }
    return 0;
}

/* ---- the main process ---------------------------------------------------- */

static int start_child(const Options *o, int exe_fd, pid_t *ret_pid, int *ret_ctl) {
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0) {
        return -errno;
    }
    pid_t pid = fork();
    if (pid < 0) {
        int r = -errno;
        close_pair(pair);
        return r;
    }
    if (pid == 0) {
        /* The child's end, inherited by the exec. */
        if (fd_cloexec(pair[1], false) < 0) {
            _exit(120);
        }
        char *argv[8], child[32];
        int i = 0;
        snprintf(child, sizeof(child), "--child=%d", pair[1]);
        argv[i++] = "sandbox-driver";
        argv[i++] = child;
        argv[i++] = o->no_sandbox ? "--no-sandbox" : "--sandboxed";
        char mode[32];
        snprintf(mode, sizeof(mode), "--seccomp-mode=%s", filter_mode_to_string(o->mode));
        argv[i++] = mode;
        argv[i] = NULL;
        extern char **environ;
        syscall(SYS_execveat, exe_fd, "", argv, environ, AT_EMPTY_PATH);
        _exit(121);
    }
    close(pair[1]);
    _cleanup_close_ int memfd = memfd_create("ring", MFD_CLOEXEC);
    if (memfd < 0 || ftruncate(memfd, 4096) < 0) {
        int r = -errno;
        close(pair[0]);
        return r;
    }
    char *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (m == MAP_FAILED) {
        int r = -errno;
        close(pair[0]);
        return r;
    }
    memcpy(m, "ringdata", 8);
    munmap(m, 4096);
    int r = send_with_fd(pair[0], "s", 1, memfd);
    if (r < 0) {
        close(pair[0]);
        return r;
    }
    *ret_pid = pid;
    *ret_ctl = pair[0];
    return 0;
}

static int wait_child_hello(int ctl) {
    char msg[64];
    struct pollfd p = {.fd = ctl, .events = POLLIN};
    struct timespec timeout = {.tv_sec = 20};
    if (ppoll(&p, 1, &timeout, NULL) != 1) {
        return -ETIMEDOUT;
    }
    ssize_t n = read(ctl, msg, sizeof(msg) - 1);
    if (n <= 0) {
        return n < 0 ? -errno : -ECONNRESET;
    }
    msg[n] = '\0';
    out("%s\n", msg);
    return 0;
}

static void print_file_lines(const char *key, const char *path) {
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        out("%s error %d\n", key, errno);
        return;
    }
    char buf[8192];
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    if (n < 0) {
        return;
    }
    buf[n] = '\0';
    for (char *save = NULL, *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        /* Squeeze the columns of the id maps. */
        char w[3][32];
        if (sscanf(l, "%31s %31s %31s", w[0], w[1], w[2]) == 3 && !startswith(key, "mount")) {
            out("%s %s %s %s\n", key, w[0], w[1], w[2]);
        } else {
            out("%s %s\n", key, l);
        }
    }
}

static void print_mounts(void) {
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f) {
        out("mount error %d\n", errno);
        return;
    }
    char line[1024];
    while (fgets(line, sizeof(line), f)) {
        char point[512], opts[256];
        if (sscanf(line, "%*s %*s %*s %*s %511s %255s", point, opts) == 2) {
            out("mount %s %s\n", point, opts);
        }
    }
    fclose(f);
}

static void print_dir(const char *key, const char *path, bool numeric_only) {
    DIR *d = opendir(path);
    if (!d) {
        out("%s error %d\n", key, errno);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (streq(e->d_name, ".") || streq(e->d_name, "..")) {
            continue;
        }
        if (numeric_only) {
            if (e->d_name[0] < '0' || e->d_name[0] > '9') {
                continue;
            }
            char p[300], comm[64] = "";
            snprintf(p, sizeof(p), "/proc/%s/comm", e->d_name);
            _cleanup_close_ int fd = open(p, O_RDONLY | O_CLOEXEC);
            ssize_t n = fd >= 0 ? read(fd, comm, sizeof(comm) - 1) : -1;
            if (n > 0) {
                comm[strcspn(comm, "\n")] = '\0';
            }
            out("%s %s %s\n", key, e->d_name, comm);
        } else {
            out("%s %s\n", key, e->d_name);
        }
    }
    closedir(d);
}

static void print_netdevs(void) {
    FILE *f = fopen("/proc/net/dev", "re");
    if (!f) {
        out("netdev error %d\n", errno);
        return;
    }
    char line[512];
    while (fgets(line, sizeof(line), f)) {
        char *colon = strchr(line, ':');
        if (!colon) {
            continue;
        }
        *colon = '\0';
        out("netdev %s\n", line + strspn(line, " "));
    }
    fclose(f);
}

static int inspect(const Options *o, int exe_fd) {
    out("pid %d\n", proc_self_pid());
    print_file_lines("uid_map", "/proc/self/uid_map");
    print_file_lines("gid_map", "/proc/self/gid_map");
    print_file_lines("hostname", "/proc/sys/kernel/hostname");
    print_mounts();
    print_dir("root", "/", false);
    print_dir("config", o->no_sandbox ? o->config_dir : VM_SWITCH_CONFIG_DIR, false);
    print_netdevs();
    pid_t pid;
    _cleanup_close_ int ctl = -EBADF;
    int r = start_child(o, exe_fd, &pid, &ctl);
    if (r < 0) {
        return log_error_errno(r, "Failed to start the child: %m");
    }
    /* While the child runs: every process in our /proc. */
    r = wait_child_hello(ctl);
    print_dir("proc", "/proc", true);
    ctl = safe_close(ctl);
    int status;
    if (waitpid(pid, &status, 0) < 0) {
        return log_error_errno(-errno, "waitpid: %m");
    }
    out("child status %d\n", status);
    return r;
}

static int serve(const Options *o, int exe_fd) {
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    if ((size_t)snprintf(path, sizeof(path), "%s/driver.sock", o->socket_dir) >= sizeof(path)) {
        return -ENAMETOOLONG;
    }
    _cleanup_close_ int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, path);
    unlinkat(AT_FDCWD, path, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 4) < 0) {
        return log_error_errno(-errno, "Failed to listen on %s: %m", path);
    }
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    _cleanup_close_ int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
    if (sfd < 0) {
        return log_error_errno(-errno, "signalfd: %m");
    }
    pid_t pid;
    _cleanup_close_ int ctl = -EBADF;
    int r = start_child(o, exe_fd, &pid, &ctl);
    if (r < 0) {
        return log_error_errno(r, "Failed to start the child: %m");
    }
    r = wait_child_hello(ctl);
    if (r < 0) {
        return log_error_errno(r, "The child did not answer: %m");
    }
    out("ready\n");
    r = sandbox_notify("READY=1");
    if (r < 0) {
        log_warning_errno(r, "READY=1: %m");
    }
    struct signalfd_siginfo si;
    while (read(sfd, &si, sizeof(si)) != sizeof(si)) {
        if (errno != EINTR) {
            return -errno;
        }
    }
    sandbox_notify("STOPPING=1");
    ctl = safe_close(ctl);
    int status;
    if (waitpid(pid, &status, 0) < 0) {
        return log_error_errno(-errno, "waitpid: %m");
    }
    out("child status %d\n", status);
    return 0;
}

static int parse(int argc, char **argv, Options *o) {
    enum {
        OPT_NO_SANDBOX = 256,
        OPT_SANDBOXED,
        OPT_MODE,
        OPT_USER,
        OPT_CONFIG,
        OPT_SOCKET,
        OPT_CHILD,
        OPT_PRINT
    };
    static const struct option longopts[] = {
        {"no-sandbox", no_argument, NULL, OPT_NO_SANDBOX},
        {"sandboxed", no_argument, NULL, OPT_SANDBOXED},
        {"seccomp-mode", required_argument, NULL, OPT_MODE},
        {"user", required_argument, NULL, OPT_USER},
        {"config-dir", required_argument, NULL, OPT_CONFIG},
        {"socket-dir", required_argument, NULL, OPT_SOCKET},
        {"child", required_argument, NULL, OPT_CHILD},
        {"print-seccomp", required_argument, NULL, OPT_PRINT},
        {},
    };
    *o = (Options){.mode = FILTER_KILL, .child_fd = -1};
    int c, r;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) >= 0) {
        switch (c) {
        case OPT_NO_SANDBOX:
            o->no_sandbox = true;
            break;
        case OPT_SANDBOXED:
            break;
        case OPT_MODE:
            r = filter_mode_from_string(optarg);
            if (r < 0) {
                return -EINVAL;
            }
            o->mode = (FilterMode)r;
            break;
        case OPT_USER:
            o->user = optarg;
            break;
        case OPT_CONFIG:
            o->config_dir = optarg;
            break;
        case OPT_SOCKET:
            o->socket_dir = optarg;
            break;
        case OPT_CHILD:
            o->child_fd = atoi(optarg);
            break;
        case OPT_PRINT:
            o->print_filter = confine_role(optarg);
            if (!o->print_filter) {
                return -EINVAL;
            }
            break;
        default:
            return -EINVAL;
        }
    }
    if (o->child_fd >= 0 || o->print_filter) {
        return 0;
    }
    if (optind != argc - 1 || !o->config_dir || !o->socket_dir) {
        return -EINVAL;
    }
    o->command = argv[optind];
    return 0;
}

int main(int argc, char **argv) {
    Options o;
    log_setup("sandbox-driver");
    /* The program, for re-executing children once / is gone. */
    int exe_fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (exe_fd < 0) {
        die("Failed to open /proc/self/exe: %m");
    }
    if (parse(argc, argv, &o) < 0) {
        fprintf(stderr, "usage: sandbox-driver [--no-sandbox] [--seccomp-mode MODE] [--user NAME] "
                        "--config-dir DIR --socket-dir DIR inspect|serve\n");
        return 2;
    }
    if (o.print_filter) {
        filter_print(o.print_filter, stdout);
        return 0;
    }
    if (o.child_fd >= 0) {
        return child_main(&o) < 0 ? 1 : 0;
    }
    if (!o.no_sandbox) {
        int r = confine_enter(o.config_dir, o.socket_dir, o.user, o.mode);
        if (r < 0) {
            log_error_errno(r, "Failed to enter the sandbox: %m");
            return 1;
        }
    }
    int r;
    if (streq(o.command, "inspect")) {
        r = inspect(&o, exe_fd);
    } else if (streq(o.command, "serve")) {
        r = serve(&o, exe_fd);
    } else {
        return 2;
    }
    return r < 0 ? 1 : 0;
}
