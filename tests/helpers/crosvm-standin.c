/* A stand-in for crosvm in the host agent's lifecycle tests (crosvm is not
 * packaged here). It takes crosvm's command line as the host agent builds
 * it and behaves like crosvm where the host agent can tell:
 *
 *   crosvm-standin [--log-level L] [ARG]... run [OPTION]... KERNEL
 *     records its argv (one argument per line) in $QL_STANDIN_ARGV, prints
 *     a boot banner on stdout (the serial console; $QL_STANDIN_BANNER
 *     bytes of it), starts the real guest agent ($QL_STANDIN_GUEST_AGENT,
 *     listening on unix:$QL_STANDIN_GUEST_SOCKET) whose poweroff command
 *     makes this process exit 0 as a VM powering off does, listens on the
 *     control socket given by --socket, and echoes what it reads on stdin
 *     (the serial console's input). The fw_cfg file opt/qubes-lite/secret
 *     (--fw-cfg name=...,path=FILE) reaches that guest agent as its
 *     --secret-file, as the guest's init hands it over. A console line
 *     "flood N" writes N bytes and then "FLOOD-END" (and says "flood done" on stderr), "size"
 *     prints the console's window size as "SIZE ROWS COLS". Its pid goes
 *     to $QL_STANDIN_PIDFILE, the fds it was given (one number a line) to
 *     $QL_STANDIN_FDS, its environment (one variable a line) to
 *     $QL_STANDIN_ENVIRON.
 *   crosvm-standin stop SOCKET
 *     asks the stand-in listening on SOCKET to stop, as `crosvm stop` does.
 *
 * Misbehaviour on demand: $QL_STANDIN_CRASH_MS (die by SIGSEGV after that
 * long), $QL_STANDIN_IGNORE_STOP=1 (acknowledge stop, keep running),
 * $QL_STANDIN_IGNORE_POWEROFF=1 (the guest's poweroff does nothing),
 * $QL_STANDIN_STOP_HANG=1 (`stop` hangs, its pid in $QL_STANDIN_PIDFILE.stop),
 * $QL_STANDIN_BOOT_MS (boot that long before the guest agent starts),
 * $QL_STANDIN_STRAY_MS (leave a process that holds our stderr for that
 * long after we are gone, as a VMM's device process may; its pid goes to
 * $QL_STANDIN_PIDFILE.stray). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static pid_t guest_pid;

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("crosvm-standin: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static long env_num(const char *name, long def) {
    const char *e = getenv(name);
    return e && *e ? strtol(e, NULL, 10) : def;
}

static bool env_flag(const char *name) {
    return env_num(name, 0) != 0;
}

static void write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN) {
                struct pollfd pf = {.fd = fd, .events = POLLOUT};
                poll(&pf, 1, -1);
                continue;
            }
            return; /* the console went away: nothing to tell */
        }
        p += k;
        n -= (size_t)k;
    }
}

static void say(const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    write_all(STDOUT_FILENO, buf, (size_t)n);
}

static int unix_socket(const char *path, struct sockaddr_un *un) {
    memset(un, 0, sizeof(*un));
    un->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(un->sun_path)) {
        die("socket path too long: %s", path);
    }
    strcpy(un->sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        die("socket: %s", strerror(errno));
    }
    return fd;
}

static int cmd_stop(const char *path) {
    struct sockaddr_un un;
    char buf[64];

    if (env_flag("QL_STANDIN_STOP_HANG")) {
        /* A stop command that never returns; its pid for the test. */
        const char *pidfile = getenv("QL_STANDIN_PIDFILE");
        if (pidfile) {
            char p[512];
            snprintf(p, sizeof(p), "%s.stop", pidfile);
            FILE *f = fopen(p, "w");
            if (f) {
                fprintf(f, "%d\n", (int)getpid());
                fclose(f);
            }
        }
        for (;;) {
            pause();
        }
    }
    int fd = unix_socket(path, &un);
    if (connect(fd, (struct sockaddr *)&un, sizeof(un)) < 0) {
        die("cannot reach %s: %s", path, strerror(errno));
    }
    write_all(fd, "stop\n", 5);
    while (read(fd, buf, sizeof(buf)) > 0) {
    }
    close(fd);
    return 0;
}

static void stop_guest(void) {
    if (guest_pid > 0) {
        kill(guest_pid, SIGTERM);
        waitpid(guest_pid, NULL, 0);
        guest_pid = 0;
    }
}

/* What the VM's fw_cfg would show as opt/qubes-lite/secret: the path= of
 * that --fw-cfg, or NULL. */
static const char *fw_cfg_secret;

static void start_guest(void) {
    const char *agent = getenv("QL_STANDIN_GUEST_AGENT");
    const char *sock = getenv("QL_STANDIN_GUEST_SOCKET");
    char listen[256], poweroff[64];
    pid_t me = getpid();

    if (!agent || !sock) {
        die("QL_STANDIN_GUEST_AGENT and QL_STANDIN_GUEST_SOCKET must be set");
    }
    snprintf(listen, sizeof(listen), "unix:%s", sock);
    if (env_flag("QL_STANDIN_IGNORE_POWEROFF")) {
        snprintf(poweroff, sizeof(poweroff), "true");
    } else {
        snprintf(poweroff, sizeof(poweroff), "kill -USR1 %d", (int)me);
    }
    guest_pid = fork();
    if (guest_pid < 0) {
        die("fork: %s", strerror(errno));
    }
    if (guest_pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        /* A VM's guest goes with its VMM, however the VMM ends. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != me) {
            _exit(1);
        }
        int null = open("/dev/null", O_RDONLY);
        dup2(null, STDIN_FILENO);
        dup2(STDERR_FILENO, STDOUT_FILENO);
        if (fw_cfg_secret) {
            execl(agent, agent, "--listen", listen, "--poweroff-command", poweroff, "--log-level",
                  "debug", "--kill-grace", "2", "--secret-file", fw_cfg_secret, (char *)NULL);
        } else {
            execl(agent, agent, "--listen", listen, "--poweroff-command", poweroff, "--log-level",
                  "debug", "--kill-grace", "2", (char *)NULL);
        }
        fprintf(stderr, "crosvm-standin: cannot execute %s: %s\n", agent, strerror(errno));
        _exit(127);
    }
}

/* A process of ours that outlives us, holding stderr open. */
static void start_stray(long ms) {
    pid_t pid = fork();
    if (pid < 0) {
        die("fork: %s", strerror(errno));
    }
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        usleep((useconds_t)ms * 1000);
        _exit(0);
    }
    const char *pidfile = getenv("QL_STANDIN_PIDFILE");
    if (pidfile) {
        char path[512];
        snprintf(path, sizeof(path), "%s.stray", pidfile);
        FILE *f = fopen(path, "w");
        if (f) {
            fprintf(f, "%d\n", (int)pid);
            fclose(f);
        }
    }
}

static void record_argv(int argc, char **argv) {
    const char *path = getenv("QL_STANDIN_ARGV");
    if (!path) {
        return;
    }
    FILE *f = fopen(path, "w");
    if (!f) {
        die("cannot write %s: %s", path, strerror(errno));
    }
    for (int i = 0; i < argc; i++) {
        fprintf(f, "%s\n", argv[i]);
    }
    fclose(f);
}

/* What the VMM inherited from the host agent, before we open anything. */
static void record_inherited(void) {
    extern char **environ;
    const char *path = getenv("QL_STANDIN_FDS");
    if (path) {
        DIR *d = opendir("/proc/self/fd");
        FILE *f = fopen(path, "w");
        if (!d || !f) {
            die("cannot list our fds into %s: %s", path, strerror(errno));
        }
        struct dirent *de;
        while ((de = readdir(d))) {
            if (de->d_name[0] != '.' && atoi(de->d_name) != dirfd(d) &&
                atoi(de->d_name) != fileno(f)) {
                fprintf(f, "%s\n", de->d_name);
            }
        }
        closedir(d);
        fclose(f);
    }
    path = getenv("QL_STANDIN_ENVIRON");
    if (path) {
        FILE *f = fopen(path, "w");
        if (!f) {
            die("cannot write %s: %s", path, strerror(errno));
        }
        for (char **e = environ; *e; e++) {
            fprintf(f, "%s\n", *e);
        }
        fclose(f);
    }
}

static void banner(const char *kernel) {
    long want = env_num("QL_STANDIN_BANNER", 0);
    char line[128];
    long n = 0;

    say("standin: booting %s\r\n", kernel);
    for (long i = 0; n < want; i++) {
        int k =
            snprintf(line, sizeof(line), "boot line %08ld ................................\r\n", i);
        write_all(STDOUT_FILENO, line, (size_t)k);
        n += k;
    }
    say("standin: boot done\r\n");
}

static void flood(long n) {
    char chunk[4096];
    memset(chunk, 'x', sizeof(chunk));
    for (long left = n; left > 0;) {
        size_t k = left > (long)sizeof(chunk) ? sizeof(chunk) : (size_t)left;
        write_all(STDOUT_FILENO, chunk, k);
        left -= (long)k;
    }
    say("\r\nFLOOD-END\r\n");
    fprintf(stderr, "crosvm-standin: flood done\n");
}

static void console_line(const char *line) {
    if (strncmp(line, "flood ", 6) == 0) {
        flood(strtol(line + 6, NULL, 10));
    } else if (strcmp(line, "size") == 0) {
        struct winsize ws = {0};
        ioctl(STDIN_FILENO, TIOCGWINSZ, &ws);
        say("\r\nSIZE %u %u\r\n", ws.ws_row, ws.ws_col);
    }
}

static long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void crash(void) {
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    stop_guest();
    signal(SIGSEGV, SIG_DFL);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGSEGV);
    sigprocmask(SIG_UNBLOCK, &s, NULL);
    raise(SIGSEGV);
    _exit(99);
}

static int cmd_run(int argc, char **argv, int run_at) {
    const char *control = NULL, *kernel = argv[argc - 1];
    struct sockaddr_un un;
    char line[256];
    size_t line_len = 0;
    bool serial_stdin = false;

    for (int i = run_at + 1; i + 1 < argc; i++) {
        if (strcmp(argv[i], "--socket") == 0) {
            control = argv[i + 1];
        }
        if (strcmp(argv[i], "--serial") == 0 && strstr(argv[i + 1], "stdin")) {
            serial_stdin = true;
        }
        static const char secret_cfg[] = "name=opt/qubes-lite/secret,path=";
        if (strcmp(argv[i], "--fw-cfg") == 0 &&
            strncmp(argv[i + 1], secret_cfg, sizeof(secret_cfg) - 1) == 0) {
            fw_cfg_secret = argv[i + 1] + sizeof(secret_cfg) - 1;
        }
    }
    if (!control) {
        die("run: --socket is missing");
    }
    record_inherited();
    record_argv(argc, argv);
    const char *pidfile = getenv("QL_STANDIN_PIDFILE");
    if (pidfile) {
        FILE *f = fopen(pidfile, "w");
        if (f) {
            fprintf(f, "%d\n", (int)getpid());
            fclose(f);
        }
    }

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGUSR1);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC);

    long crash_ms = env_num("QL_STANDIN_CRASH_MS", -1);
    long crash_at = crash_ms >= 0 ? now_ms() + crash_ms : -1;
    long boot_ms = env_num("QL_STANDIN_BOOT_MS", 0);

    banner(kernel);
    int lfd = unix_socket(control, &un);
    if (bind(lfd, (struct sockaddr *)&un, sizeof(un)) < 0 || listen(lfd, 8) < 0) {
        die("cannot listen on %s: %s", control, strerror(errno));
    }
    fprintf(stderr, "crosvm-standin: control socket %s\n", control);
    long stray_ms = env_num("QL_STANDIN_STRAY_MS", 0);
    if (stray_ms > 0) {
        start_stray(stray_ms);
    }
    if (boot_ms > 0) {
        usleep((useconds_t)boot_ms * 1000);
    }
    start_guest();

    for (;;) {
        struct pollfd p[3] = {
            {.fd = serial_stdin ? STDIN_FILENO : -1, .events = POLLIN},
            {.fd = lfd, .events = POLLIN},
            {.fd = sfd, .events = POLLIN},
        };
        int timeout = -1;
        if (crash_at >= 0) {
            long left = crash_at - now_ms();
            timeout = left > 0 ? (int)left : 0;
        }
        int n = poll(p, 3, timeout);
        if (n < 0 && errno != EINTR) {
            die("poll: %s", strerror(errno));
        }
        if (crash_at >= 0 && now_ms() >= crash_at) {
            fprintf(stderr, "crosvm-standin: crashing as asked\n");
            crash();
        }
        if (p[0].revents & POLLIN) {
            char buf[1024];
            ssize_t k = read(STDIN_FILENO, buf, sizeof(buf));
            if (k > 0) {
                write_all(STDOUT_FILENO, buf, (size_t)k); /* the echo */
                for (ssize_t i = 0; i < k; i++) {
                    if (buf[i] == '\r' || buf[i] == '\n') {
                        line[line_len] = '\0';
                        console_line(line);
                        line_len = 0;
                    } else if (line_len + 1 < sizeof(line)) {
                        line[line_len++] = buf[i];
                    }
                }
            }
        } else if (p[0].revents & (POLLHUP | POLLERR)) {
            serial_stdin = false;
        }
        if (p[1].revents & POLLIN) {
            int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
            if (c >= 0) {
                char cmd[16] = {0};
                ssize_t k = read(c, cmd, sizeof(cmd) - 1);
                bool stop = k > 0 && strncmp(cmd, "stop", 4) == 0;
                write_all(c, "ok\n", 3);
                close(c);
                if (stop && !env_flag("QL_STANDIN_IGNORE_STOP")) {
                    fprintf(stderr, "crosvm-standin: stopping on the control socket\n");
                    stop_guest();
                    return 0;
                }
                if (stop) {
                    fprintf(stderr, "crosvm-standin: ignoring stop as asked\n");
                }
            }
        }
        if (p[2].revents & POLLIN) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof(si)) == sizeof(si)) {
                if (si.ssi_signo == SIGUSR1) {
                    say("standin: reboot: Power down\r\n");
                    fprintf(stderr, "crosvm-standin: the guest powered off\n");
                } else {
                    fprintf(stderr, "crosvm-standin: signal %u\n", si.ssi_signo);
                }
                stop_guest();
                return 0;
            }
        }
    }
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "run") == 0) {
            if (i + 1 >= argc) {
                die("run: no kernel");
            }
            return cmd_run(argc, argv, i);
        }
        if (strcmp(argv[i], "stop") == 0) {
            if (i + 1 >= argc) {
                die("stop: no socket");
            }
            return cmd_stop(argv[i + 1]);
        }
    }
    die("usage: crosvm-standin [OPTION]... run [OPTION]... KERNEL | stop SOCKET");
}
