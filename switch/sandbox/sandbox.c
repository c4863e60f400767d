/* vm-switch's sandbox.
 *
 * sandbox_enter() runs one step per function, in this order (the order
 * matters, each step says why it stands where it does):
 *
 *   leave_root        started as root: become the unprivileged user first,
 *                     because a user namespace belongs to the uid that
 *                     creates it
 *   enter_user_ns     uid 0 inside, the unprivileged user outside
 *   enter_other_ns    mount, IPC, UTS, cgroup and an empty network
 *                     namespace, shared by the supervisor and the main
 *   enter_pid_ns      fork: the main process is PID 1 of a new pid
 *                     namespace, the caller stays outside as supervisor
 *   setup_root        the main's own mount namespace: a fresh tmpfs root
 *                     with only what is needed; pivot_root; the old root
 *                     detached
 *   drop_capabilities all of them, the bounding set too
 *   set_rlimits       no core dumps, bounded descriptors and processes
 *   set_no_new_privs  nothing we exec can gain privileges
 *   filter_apply      the main role's seccomp allowlist, last
 *
 * Children are re-executed after pivot_root from a descriptor of the
 * program opened before. The new root therefore holds, read-only and at
 * their own paths, exactly the files the program is mapped from (its ELF
 * interpreter and shared libraries, as the dynamic loader found them) and
 * the loader's cache, so that the same lookups find the same files. This
 * works for the normal and for the sanitizer build alike; ASan cannot be
 * linked statically, and the tests must run the program we ship. */
#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <poll.h>
#include <pwd.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "sandbox.h"
#include "util.h"

/* Descriptors: the main process and its children each get at most this
 * many (a VM needs a few dozen: memory regions, kick/call, rings). */
#define SANDBOX_MAX_FDS 4096
/* Processes of our user inside the user namespace: the main process, one
 * child per VM, and children being restarted. */
#define SANDBOX_MAX_PROCS 512
/* The mapped files bound into the new root. */
#define MAX_MAPPED_FILES 64
#define HOSTNAME "vm-switch"

/* The main process's end of the relay to the supervisor. */
static int relay_fd = -EBADF;
static bool active;

bool sandbox_active(void) {
    return active;
}

static int write_file(const char *path, const char *s) {
    _cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    return loop_write(fd, s, strlen(s));
}

/* ---- who we run as ---------------------------------------------------- */

typedef struct Ids {
    uid_t uid;
    gid_t gid;
} Ids;

static int resolve_user(const char *name, Ids *ret) {
    char buf[4096];
    struct passwd pw, *found = NULL;
    int r = getpwnam_r(name, &pw, buf, sizeof(buf), &found);
    if (r != 0) {
        return -r;
    }
    if (!found) {
        return -ESRCH;
    }
    /* The whole point is to run as someone other than root. */
    if (pw.pw_uid == 0 || pw.pw_gid == 0) {
        return -EPERM;
    }
    *ret = (Ids){pw.pw_uid, pw.pw_gid};
    return 0;
}

/* Started as root (a plain system service): become the unprivileged user
 * before anything else. The user namespace created next belongs to the
 * uid that creates it, and root outside must never be what uid 0 inside
 * maps to. Under systemd's DynamicUser= or User= we are already that user
 * and this step does nothing. */
static int leave_root(const char *user, Ids *ret) {
    Ids ids = {geteuid(), getegid()};
    if (ids.uid != 0) {
        if (user) {
            Ids want;
            int r = resolve_user(user, &want);
            if (r < 0) {
                return r;
            }
            if (want.uid != ids.uid) {
                return -EPERM;
            }
        }
        *ret = ids;
        return 0;
    }
    if (!user) {
        return -EPERM;
    }
    int r = resolve_user(user, &ids);
    if (r < 0) {
        return r;
    }
    if (setgroups(0, NULL) < 0 || setresgid(ids.gid, ids.gid, ids.gid) < 0 ||
        setresuid(ids.uid, ids.uid, ids.uid) < 0) {
        return -errno;
    }
    uid_t ru, eu, su;
    if (getresuid(&ru, &eu, &su) < 0 || ru != ids.uid || eu != ids.uid || su != ids.uid) {
        return -EPERM;
    }
    /* Changing ids made us non-dumpable, which leaves /proc/self owned by
     * root, and the uid_map we write next out of our reach. */
    if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) < 0) {
        return -errno;
    }
    *ret = ids;
    return 0;
}

/* ---- namespaces ------------------------------------------------------- */

/* A user namespace gives us the capabilities the next steps need (mounts,
 * pivot_root, new namespaces) inside it only, never outside: uid 0 here is
 * the unprivileged user there, and nothing else is mapped. setgroups is
 * denied, as the kernel requires before an unprivileged gid_map. */
static int enter_user_ns(const Ids *ids) {
    if (unshare(CLONE_NEWUSER) < 0) {
        return -errno;
    }
    char map[64];
    int r = write_file("/proc/self/setgroups", "deny\n");
    if (r < 0) {
        return r;
    }
    snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)ids->uid);
    r = write_file("/proc/self/uid_map", map);
    if (r < 0) {
        return r;
    }
    snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)ids->gid);
    return write_file("/proc/self/gid_map", map);
}

static const int forwarded_signals[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

/* One relayed notification: known assignments only, one per line, so that
 * a compromised main process cannot speak for the service (MAINPID=,
 * FDSTORE=, …). */
static bool notify_state_valid(const char *s, size_t n) {
    static const char *const exact[] = {"READY=1", "STOPPING=1", "RELOADING=1"};
    size_t i = 0;
    while (i < n) {
        const char *line = s + i;
        const char *nl = memchr(line, '\n', n - i);
        size_t len = nl ? (size_t)(nl - line) : n - i;
        bool ok = false;
        for (size_t k = 0; k < ELEMENTSOF(exact) && !ok; k++) {
            ok = len == strlen(exact[k]) && memcmp(line, exact[k], len) == 0;
        }
        if (!ok && len >= 7 && memcmp(line, "STATUS=", 7) == 0) {
            ok = true;
            for (size_t k = 7; k < len; k++) {
                ok = ok && (unsigned char)line[k] >= 0x20 && line[k] != 0x7f;
            }
        }
        if (!ok) {
            return false;
        }
        i += len + 1;
    }
    return n > 0;
}

static int lockdown(FilterRole role, FilterMode mode, rlim_t nofile, rlim_t nproc);

/* One datagram to $NOTIFY_SOCKET (a path, or "@" for the abstract
 * namespace): the whole of the protocol we use, without a library. */
static int notify_send(const char *state) {
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (!path || (path[0] != '/' && path[0] != '@')) {
        return 0;
    }
    size_t n = strlen(path);
    if (n >= sizeof(sa.sun_path)) {
        return -ENAMETOOLONG;
    }
    memcpy(sa.sun_path, path, n);
    if (path[0] == '@') {
        sa.sun_path[0] = '\0';
    }
    _cleanup_close_ int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa,
               (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)) < 0) {
        return -errno;
    }
    return 1;
}

/* The process that called sandbox_enter(), outside the new pid namespace:
 * systemd's main PID. It forwards signals (PID 1 only gets those it
 * handles, and the main process does), relays notifications and mirrors the
 * main process's exit. It is locked down like the rest: no capabilities,
 * its own small filter. */
static _noreturn_ void supervise(pid_t main_pid, int relay, const sigset_t *mask, FilterMode mode) {
    int sfd = signalfd(-1, mask, SFD_CLOEXEC);
    if (sfd < 0) {
        log_error_errno(-errno, "Failed to create the supervisor's signalfd: %m");
        kill(main_pid, SIGKILL);
        _exit(1);
    }
    int r = lockdown(FILTER_ROLE_SUPERVISOR, mode, 16, 0);
    if (r < 0) {
        log_error_errno(r, "Failed to lock the supervisor down: %m");
        kill(main_pid, SIGKILL);
        _exit(1);
    }
    struct pollfd p[2] = {{.fd = sfd, .events = POLLIN}, {.fd = relay, .events = POLLIN}};
    for (;;) {
        if (ppoll(p, 2, NULL, NULL) < 0) {
            if (errno == EINTR) {
                continue;
            }
            kill(main_pid, SIGKILL);
            _exit(1);
        }
        if (p[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof(si)) == sizeof(si)) {
                if (si.ssi_signo != SIGCHLD) {
                    kill(main_pid, (int)si.ssi_signo);
                }
            }
            int status;
            pid_t pid = wait4(main_pid, &status, WNOHANG, NULL);
            if (pid == main_pid) {
                if (WIFEXITED(status)) {
                    _exit(WEXITSTATUS(status));
                }
                _exit(128 + WTERMSIG(status));
            }
        }
        if (p[1].revents & (POLLIN | POLLHUP)) {
            char buf[256];
            ssize_t n = read(relay, buf, sizeof(buf) - 1);
            if (n <= 0) {
                /* The main process closed its end (exiting); wait for it. */
                p[1].fd = -1;
            } else if (notify_state_valid(buf, (size_t)n)) {
                buf[n] = '\0';
                r = notify_send(buf);
                if (r < 0) {
                    log_warning_errno(r, "Failed to notify the service manager: %m");
                }
            } else {
                log_warning("Dropped a notification the supervisor does not relay");
            }
        }
    }
}

/* A new pid namespace: the main process becomes its PID 1, sees only its
 * own children in /proc, cannot signal anything outside, and when it dies
 * the kernel kills every child with it. unshare(CLONE_NEWPID) applies to
 * the next child, so this is where the process splits: the child goes on
 * into the sandbox, the parent supervises and never returns. */
static int enter_pid_ns(FilterMode mode) {
    if (unshare(CLONE_NEWPID) < 0) {
        return -errno;
    }
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0) {
        return -errno;
    }
    sigset_t mask, old;
    sigemptyset(&mask);
    for (size_t i = 0; i < ELEMENTSOF(forwarded_signals); i++) {
        sigaddset(&mask, forwarded_signals[i]);
    }
    sigaddset(&mask, SIGCHLD);
    /* Blocked before the fork so that none is lost in between. */
    if (sigprocmask(SIG_BLOCK, &mask, &old) < 0) {
        int r = -errno;
        close_pair(pair);
        return r;
    }
    pid_t pid = fork();
    if (pid < 0) {
        int r = -errno;
        sigprocmask(SIG_SETMASK, &old, NULL);
        close_pair(pair);
        return r;
    }
    if (pid > 0) {
        close(pair[1]);
        supervise(pid, pair[0], &mask, mode);
    }
    close(pair[0]);
    relay_fd = pair[1];
    if (sigprocmask(SIG_SETMASK, &old, NULL) < 0) {
        return -errno;
    }
    /* Die with the supervisor; if it is already gone, its end of the relay
     * has hung up. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) {
        return -errno;
    }
    struct pollfd p = {.fd = relay_fd, .events = POLLIN};
    if (poll(&p, 1, 0) > 0 && (p.revents & POLLHUP)) {
        _exit(1);
    }
    return 0;
}

/* Mount, IPC, UTS and cgroup namespaces, and a network namespace holding
 * nothing but a loopback interface that stays down: the switch moves
 * frames through shared memory and talks over unix sockets only (path
 * sockets, which need no network). Done before the split so that the
 * supervisor has none of the host's either; its mount namespace is a
 * copy of the host's, where systemd's notification socket is. */
static int enter_other_ns(void) {
    if (unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP | CLONE_NEWNET) < 0) {
        return -errno;
    }
    if (sethostname(HOSTNAME, strlen(HOSTNAME)) < 0) {
        return -errno;
    }
    return 0;
}

/* ---- the new root ----------------------------------------------------- */

/* A file bound at its own path; the source is resolved before pivot_root,
 * because a symbolic link to an absolute path (the ELF interpreter's is
 * one on Debian) means something else under /oldroot. */
typedef struct MappedFile {
    char *path;
    char *source;
} MappedFile;

typedef struct PathList {
    MappedFile files[MAX_MAPPED_FILES];
    size_t n;
    int error;
} PathList;

static void path_list_free(PathList *l) {
    for (size_t i = 0; i < l->n; i++) {
        free(l->files[i].path);
        free(l->files[i].source);
    }
    l->n = 0;
}

static void path_list_add(PathList *l, const char *path) {
    if (!path || path[0] != '/' || l->error < 0) {
        return;
    }
    for (size_t i = 0; i < l->n; i++) {
        if (streq(l->files[i].path, path)) {
            return;
        }
    }
    if (l->n == ELEMENTSOF(l->files)) {
        l->error = -E2BIG;
        return;
    }
    char *copy = strdup(path);
    char *source = realpath(path, NULL);
    if (!copy || !source) {
        l->error = -errno;
        free(copy);
        free(source);
        return;
    }
    l->files[l->n++] = (MappedFile){copy, source};
}

static int mapped_file_cb(struct dl_phdr_info *info, size_t size, void *data) {
    PathList *l = data;
    /* The program itself ("") is executed from its descriptor; the vDSO
     * has no file. Everything else is a path the loader opened. */
    path_list_add(l, info->dlpi_name);
    if (info->dlpi_name[0] == '\0') {
        /* The program's PT_INTERP, as the kernel will look it up. */
        for (int i = 0; i < info->dlpi_phnum; i++) {
            if (info->dlpi_phdr[i].p_type == PT_INTERP) {
                path_list_add(l, (const char *)(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr));
            }
        }
    }
    return 0;
}

/* The files a re-executed child needs before main() runs: the ELF
 * interpreter, the shared libraries (at the paths the loader found them,
 * which are the paths it will look for again) and the loader's cache. */
static int collect_mapped_files(PathList *l) {
    dl_iterate_phdr(mapped_file_cb, l);
    if (access("/etc/ld.so.cache", F_OK) == 0) {
        path_list_add(l, "/etc/ld.so.cache");
    }
    return l->error;
}

/* mkdir -p, for the mount points under the new root. */
static int mkdir_parents(const char *path, mode_t mode) {
    char buf[PATH_MAX];
    if (strlen(path) >= sizeof(buf)) {
        return -ENAMETOOLONG;
    }
    strcpy(buf, path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') {
            continue;
        }
        *p = '\0';
        if (mkdir(buf, mode) < 0 && errno != EEXIST) {
            return -errno;
        }
        *p = '/';
    }
    return 0;
}

/* Remounts a bind mount with `flags` added. Flags the mount already has
 * are kept: in a user namespace the kernel refuses to clear those that
 * the mount came with from outside (nosuid, nodev, noexec, atime). */
static int remount_bind(const char *path, unsigned long flags) {
    struct statvfs st;
    if (statvfs(path, &st) < 0) {
        return -errno;
    }
    static const struct {
        unsigned long st, ms;
    } keep[] = {
        {ST_RDONLY, MS_RDONLY},     {ST_NOSUID, MS_NOSUID},   {ST_NODEV, MS_NODEV},
        {ST_NOEXEC, MS_NOEXEC},     {ST_NOATIME, MS_NOATIME}, {ST_NODIRATIME, MS_NODIRATIME},
        {ST_RELATIME, MS_RELATIME},
    };
    for (size_t i = 0; i < ELEMENTSOF(keep); i++) {
        if (st.f_flag & keep[i].st) {
            flags |= keep[i].ms;
        }
    }
    if (!(st.f_flag & (ST_NOATIME | ST_RELATIME))) {
        flags |= MS_STRICTATIME;
    }
    if (mount(NULL, path, NULL, MS_REMOUNT | MS_BIND | flags, NULL) < 0) {
        return -errno;
    }
    return 0;
}

/* Binds the old root's `src` at `dst` under the new root (both absolute),
 * creating the mount point, then remounts it with `flags`. */
static int bind_into(const char *src, const char *dst, unsigned long flags) {
    char from[PATH_MAX], to[PATH_MAX];
    if ((size_t)snprintf(from, sizeof(from), "/oldroot%s", src) >= sizeof(from) ||
        (size_t)snprintf(to, sizeof(to), "/newroot%s", dst) >= sizeof(to)) {
        return -ENAMETOOLONG;
    }
    struct stat st;
    if (stat(from, &st) < 0) {
        return -errno;
    }
    int r = mkdir_parents(to, 0755);
    if (r < 0) {
        return r;
    }
    if (S_ISDIR(st.st_mode)) {
        if (mkdir(to, 0755) < 0 && errno != EEXIST) {
            return -errno;
        }
    } else {
        _cleanup_close_ int fd = open(to, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0444);
        if (fd < 0) {
            return -errno;
        }
    }
    if (mount(from, to, NULL, MS_BIND, NULL) < 0) {
        return -errno;
    }
    return remount_bind(to, flags);
}

static int mount_fs(const char *type, const char *dst, unsigned long flags, const char *data) {
    if (mkdir(dst, 0755) < 0 && errno != EEXIST) {
        return -errno;
    }
    if (mount(type, dst, type, flags, data) < 0) {
        return -errno;
    }
    return 0;
}

/* A path we may bind at its own place in the new root: absolute, and not
 * where the sandbox puts something of its own. */
static bool own_path_ok(const char *p) {
    static const char *const reserved[] = {"/proc", "/dev", SANDBOX_CONFIG_DIR, "/oldroot",
                                           "/newroot"};
    if (p[0] != '/' || streq(p, "/")) {
        return false;
    }
    for (size_t i = 0; i < ELEMENTSOF(reserved); i++) {
        size_t n = strlen(reserved[i]);
        if (strncmp(p, reserved[i], n) == 0 && (p[n] == '\0' || p[n] == '/')) {
            return false;
        }
    }
    return true;
}

/* Builds the new root under /newroot from the old one at /oldroot. */
static int populate_root(const char *config_dir, const char *socket_dir, const PathList *files) {
    static const char *const devices[] = {"/dev/null", "/dev/zero", "/dev/urandom"};
    int r;
    /* A pid namespace needs its own /proc: children's /proc/self, and what
     * the main process may see of processes are ours only. */
    r = mount_fs("proc", "/newroot/proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    if (r < 0) {
        return r;
    }
    /* A private /tmp, mounted before anything bound below it. */
    r = mount_fs("tmpfs", "/newroot/tmp", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                 "mode=1777,size=4m,nr_inodes=256");
    if (r < 0) {
        return r;
    }
    if (mkdir("/newroot/dev", 0755) < 0) {
        return -errno;
    }
    /* No mknod in a user namespace: the device nodes are bound. */
    for (size_t i = 0; i < ELEMENTSOF(devices); i++) {
        r = bind_into(devices[i], devices[i], MS_NOSUID | MS_NOEXEC);
        if (r < 0) {
            return r;
        }
    }
    /* What the program is mapped from, read-only, at its own paths. */
    for (size_t i = 0; i < files->n; i++) {
        if (!own_path_ok(files->files[i].path)) {
            return -EINVAL;
        }
        r = bind_into(files->files[i].source, files->files[i].path,
                      MS_RDONLY | MS_NOSUID | MS_NODEV);
        if (r < 0) {
            return r;
        }
    }
    /* The vhost-user sockets: the only writable place besides /tmp. */
    r = bind_into(socket_dir, socket_dir, MS_NOSUID | MS_NODEV | MS_NOEXEC);
    if (r < 0) {
        return r;
    }
    return bind_into(config_dir, SANDBOX_CONFIG_DIR, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC);
}

/* A new root on a fresh tmpfs, holding /config (read-only), the socket
 * directory, /dev/null, /dev/zero, /dev/urandom, /proc, /tmp and the
 * program's own files: nothing else of the host is reachable, and the old
 * root is detached, not just hidden.
 *
 * As bubblewrap does: a scratch tmpfs becomes the root first, with the
 * old root at /oldroot and the new one being built at /newroot, so that
 * every source is reachable whatever is mounted where; then the new root
 * replaces the scratch one. */
static int setup_root(const char *config_dir, const char *socket_dir, const PathList *files) {
    /* A mount namespace of the main's own: pivot_root moves the root of
     * every process in the namespace, and the supervisor must keep the
     * host's view. */
    if (unshare(CLONE_NEWNS) < 0) {
        return -errno;
    }
    /* Nothing we mount may propagate back to the host, nor the host's
     * later mounts into here. */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
        return -errno;
    }
    if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700,size=64k") <
        0) {
        return -errno;
    }
    if (chdir("/tmp") < 0 || mkdir("newroot", 0755) < 0 || mkdir("oldroot", 0755) < 0) {
        return -errno;
    }
    if (mount("tmpfs", "newroot", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
              "mode=0755,size=1m,nr_inodes=1024") < 0) {
        return -errno;
    }
    if (syscall(SYS_pivot_root, ".", "oldroot") < 0 || chdir("/") < 0) {
        return -errno;
    }
    int r = populate_root(config_dir, socket_dir, files);
    if (r < 0) {
        return r;
    }
    /* Detach the old root: it stays alive only for mounts bound from it. */
    if (mount(NULL, "/oldroot", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
        umount2("/oldroot", MNT_DETACH) < 0) {
        return -errno;
    }
    /* Make /newroot the root; the scratch tmpfs ends up stacked on it at
     * "." and is detached in turn. */
    if (chdir("/newroot") < 0 || syscall(SYS_pivot_root, ".", ".") < 0 ||
        umount2(".", MNT_DETACH) < 0 || chdir("/") < 0) {
        return -errno;
    }
    /* Nothing in the root itself is ever written. */
    if (mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
              NULL) < 0) {
        return -errno;
    }
    return 0;
}

/* ---- privileges ------------------------------------------------------- */

DEFINE_TRIVIAL_CLEANUP_FUNC(cap_t, cap_free)

/* Every capability, in every set. The bounding set goes first, while we
 * still hold CAP_SETPCAP, and it is what keeps a re-executed child (uid 0
 * in the namespace) from getting any back; a child inherits it empty and
 * only checks. Ambient capabilities are cleared, then the process sets
 * are emptied. Nothing after this needs one: the sockets and files are
 * the user's own. */
static int drop_capabilities(void) {
    for (cap_value_t c = 0; c < (cap_value_t)cap_max_bits(); c++) {
        int in = cap_get_bound(c);
        if (in > 0 && cap_drop_bound(c) < 0) {
            return -errno;
        }
    }
    if (CAP_AMBIENT_SUPPORTED() && cap_reset_ambient() < 0) {
        return -errno;
    }
    _cleanup_(cap_freep) cap_t none = cap_init();
    if (!none) {
        return -ENOMEM;
    }
    if (cap_set_proc(none) < 0) {
        return -errno;
    }
    return 0;
}

static int set_one_rlimit(int resource, rlim_t max) {
    struct rlimit rl;
    if (getrlimit(resource, &rl) < 0) {
        return -errno;
    }
    /* Only ever lower: never raise what the service manager set. */
    rl.rlim_max = MIN(rl.rlim_max, max);
    rl.rlim_cur = MIN(rl.rlim_cur, rl.rlim_max);
    if (setrlimit(resource, &rl) < 0) {
        return -errno;
    }
    return 0;
}

/* No core dumps (they would hold guest memory and frames), and bounds on
 * descriptors and processes so that a compromised process cannot exhaust
 * the host's. RLIMIT_NPROC counts our user's processes in the user
 * namespace, so it bounds the main process's children. */
static int set_rlimits(rlim_t nofile, rlim_t nproc) {
    int r = set_one_rlimit(RLIMIT_CORE, 0);
    if (r < 0) {
        return r;
    }
    r = set_one_rlimit(RLIMIT_NOFILE, nofile);
    if (r < 0) {
        return r;
    }
    return set_one_rlimit(RLIMIT_NPROC, nproc);
}

/* No exec can grant privileges (setuid, file capabilities); also what
 * allows an unprivileged process to load a seccomp filter. */
static int set_no_new_privs(void) {
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
        return -errno;
    }
    return 0;
}

/* The last steps every role shares, in order. */
static int lockdown(FilterRole role, FilterMode mode, rlim_t nofile, rlim_t nproc) {
    int r = drop_capabilities();
    if (r < 0) {
        return r;
    }
    r = set_rlimits(nofile, nproc);
    if (r < 0) {
        return r;
    }
    r = set_no_new_privs();
    if (r < 0) {
        return r;
    }
    return filter_apply(role, mode);
}

/* ---- entry points ----------------------------------------------------- */

int sandbox_enter(const SandboxOptions *o) {
    _cleanup_free_ char *config_dir = NULL, *socket_dir = NULL;
    _cleanup_(path_list_free) PathList files = {0};
    Ids ids = {0};
    int r;

    if (!o || !o->config_dir || !o->socket_dir) {
        return -EINVAL;
    }
    /* Resolve the user (NSS, /etc) and the paths while the host's files
     * are still there. */
    r = leave_root(o->user, &ids);
    if (r < 0) {
        return r;
    }
    config_dir = realpath(o->config_dir, NULL);
    socket_dir = realpath(o->socket_dir, NULL);
    if (!config_dir || !socket_dir) {
        return -errno;
    }
    if (!own_path_ok(socket_dir)) {
        return -EINVAL;
    }
    r = collect_mapped_files(&files);
    if (r < 0) {
        return r;
    }
    r = enter_user_ns(&ids);
    if (r < 0) {
        return r;
    }
    r = enter_other_ns();
    if (r < 0) {
        return r;
    }
    r = enter_pid_ns(o->filter_mode);
    if (r < 0) {
        return r;
    }
    /* From here on: the main process, PID 1. */
    r = setup_root(config_dir, socket_dir, &files);
    if (r < 0) {
        return r;
    }
    r = lockdown(FILTER_ROLE_MAIN, o->filter_mode, SANDBOX_MAX_FDS, SANDBOX_MAX_PROCS);
    if (r < 0) {
        return r;
    }
    active = true;
    return 0;
}

int sandbox_lockdown_child(FilterMode mode) {
    /* A child makes no process: RLIMIT_NPROC 0 backs the filter up. */
    return lockdown(FILTER_ROLE_CHILD, mode, SANDBOX_MAX_FDS, 0);
}

int sandbox_notify(const char *state) {
    if (relay_fd < 0) {
        return notify_send(state);
    }
    size_t n = strlen(state);
    if (send(relay_fd, state, n, MSG_NOSIGNAL) < 0) {
        return -errno;
    }
    return 0;
}
