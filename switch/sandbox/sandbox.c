/* The sandbox (sandbox.h).
 *
 * sandbox_enter() runs one step per function, in this order (the order
 * matters, each step says why it stands where it does):
 *
 *   leave_root        started as root: become the unprivileged user first,
 *                     because a user namespace belongs to the uid that
 *                     creates it (or, asked to keep root, only drop the
 *                     supplementary groups)
 *   resolve_binds     the description's paths, while the host's are there
 *   collect_mapped_files  what the dynamic loader mapped, for the new root
 *   notify_connect    without a supervisor: $NOTIFY_SOCKET, before the
 *                     root and the network namespace change (supervisor.c)
 *   enter_user_ns     uid 0 inside, the unprivileged user outside
 *   enter_other_ns    mount, IPC, UTS, cgroup and an empty network
 *                     namespace, shared by the supervisor and the main
 *   supervisor_split  (with a supervisor) fork: the main process is PID 1
 *                     of a new pid namespace, the caller stays outside
 *                     (supervisor.c)
 *   setup_root        the process's own mount namespace: a fresh tmpfs
 *                     root with only what is needed; pivot_root; the old
 *                     root detached
 *   drop_capabilities all of them, the bounding set too
 *   set_rlimits       no core dumps, bounded descriptors and processes
 *   set_no_new_privs  nothing we exec can gain privileges
 *   filter_apply      the process's seccomp allowlist, last
 *
 * Children may be re-executed after pivot_root from a descriptor of the
 * program opened before. The new root therefore holds, read-only and at
 * their own paths, exactly the files the program is mapped from (its ELF
 * interpreter and shared libraries, as the dynamic loader found them:
 * dl_iterate_phdr() and the program's PT_INTERP, each resolved, since the
 * interpreter's path is a symbolic link to an absolute path on Debian)
 * and the loader's cache, so that the same lookups find the same files.
 * Static linking would do for the normal build but not for the sanitizer
 * build (ASan cannot be linked statically), and the tests must run the
 * program as it ships; this works unchanged for both, and for Nix store
 * paths (RUNPATH, no cache). Those files are the only host files in the
 * root, read-only and nosuid, and hold nothing the process had not mapped
 * already. */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <pwd.h>
#include <grp.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "sandbox.h"
#include "supervisor.h"
#include "util.h"

/* The mapped files bound into the new root. */
#define MAX_MAPPED_FILES 64
/* tmpfs sizes: the scratch root that holds the two roots while the new
 * one is built, the new root (mount points only), the private /tmp. */
#define SCRATCH_TMPFS "mode=0700,size=64k"
#define ROOT_TMPFS "mode=0755,size=1m,nr_inodes=1024"
#define TMP_TMPFS "mode=1777,size=4m,nr_inodes=256"

/* sandbox_enter() has returned into this process. */
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
 * maps to, unless the description asks to keep root (sandbox.h says why
 * and what it costs): then only the supplementary groups go. Under
 * systemd's DynamicUser= or User= we are already that user and this step
 * does nothing. */
static int leave_root(const char *user, bool keep_root, Ids *ret) {
    Ids ids = {geteuid(), getegid()};
    if (ids.uid == 0 && keep_root) {
        if (setgroups(0, NULL) < 0) {
            return -errno;
        }
        *ret = ids;
        return 0;
    }
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

/* Mount, IPC, UTS and cgroup namespaces, and a network namespace holding
 * nothing but a loopback interface that stays down: a device backend
 * moves data through shared memory and talks over unix sockets only (path
 * sockets, which need no network). Done before the split so that the
 * supervisor has none of the host's either; its mount namespace is a
 * copy of the host's, where systemd's notification socket is. */
static int enter_other_ns(const char *hostname) {
    if (unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP | CLONE_NEWNET) < 0) {
        return -errno;
    }
    if (sethostname(hostname, strlen(hostname)) < 0) {
        return -errno;
    }
    return 0;
}

/* ---- the new root ----------------------------------------------------- */

/* What a bind is mounted with: never a device, a setuid program or code
 * from a bind (the mapped files are the exception: code, read-only). */
#define BIND_RW (MS_NOSUID | MS_NODEV | MS_NOEXEC)
#define BIND_RO (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
#define BIND_CODE (MS_RDONLY | MS_NOSUID | MS_NODEV)

/* One host file or directory in the new root. The source is resolved
 * before pivot_root, because a symbolic link to an absolute path (the ELF
 * interpreter's is one on Debian) means something else under /oldroot. */
typedef struct RootEntry {
    char *source;
    char *target;
    unsigned long flags;
    bool own; /* at its own path on the host (not at a target of its own) */
} RootEntry;

/* Everything bound into the new root, in order: the mapped files, then
 * the description's binds. */
typedef struct RootList {
    RootEntry e[MAX_MAPPED_FILES + SANDBOX_MAX_BINDS];
    size_t n;
    int error;
} RootList;

static void root_list_free(RootList *l) {
    for (size_t i = 0; i < l->n; i++) {
        free(l->e[i].source);
        free(l->e[i].target);
    }
    l->n = 0;
}

/* Adds source (resolved) at target; a target already in the list is not
 * added twice. Errors stay in l->error. */
static void root_list_add(RootList *l, const char *source, const char *target, unsigned long flags,
                          bool own) {
    if (l->error < 0) {
        return;
    }
    for (size_t i = 0; i < l->n; i++) {
        if (streq(l->e[i].target, target)) {
            return;
        }
    }
    if (l->n == ELEMENTSOF(l->e)) {
        l->error = -E2BIG;
        return;
    }
    char *copy = strdup(target);
    char *resolved = realpath(source, NULL);
    if (!copy || !resolved) {
        l->error = -errno;
        free(copy);
        free(resolved);
        return;
    }
    l->e[l->n++] = (RootEntry){.source = resolved, .target = copy, .flags = flags, .own = own};
}

static int mapped_file_cb(struct dl_phdr_info *info, size_t size, void *data) {
    RootList *l = data;
    /* The program itself ("") is executed from its descriptor; the vDSO
     * has no file. Everything else is a path the loader opened. */
    if (info->dlpi_name[0] == '/') {
        root_list_add(l, info->dlpi_name, info->dlpi_name, BIND_CODE, true);
    }
    if (info->dlpi_name[0] == '\0') {
        /* The program's PT_INTERP, as the kernel will look it up. */
        for (int i = 0; i < info->dlpi_phnum; i++) {
            if (info->dlpi_phdr[i].p_type == PT_INTERP) {
                const char *interp = (const char *)(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
                if (interp[0] == '/') {
                    root_list_add(l, interp, interp, BIND_CODE, true);
                }
            }
        }
    }
    return 0;
}

/* The files a re-executed child needs before main() runs: the ELF
 * interpreter, the shared libraries (at the paths the loader found them,
 * which are the paths it will look for again) and the loader's cache. */
static int collect_mapped_files(RootList *l) {
    dl_iterate_phdr(mapped_file_cb, l);
    if (access("/etc/ld.so.cache", F_OK) == 0) {
        root_list_add(l, "/etc/ld.so.cache", "/etc/ld.so.cache", BIND_CODE, true);
    }
    return l->error;
}

/* The description's binds, each resolved now: at its target, or at its
 * own canonical path. */
static int resolve_binds(const SandboxConfig *c, RootList *l) {
    for (size_t i = 0; i < c->n_binds; i++) {
        const SandboxBind *b = &c->binds[i];
        unsigned long flags = b->writable ? BIND_RW : BIND_RO;
        if (b->target) {
            root_list_add(l, b->source, b->target, flags, false);
            continue;
        }
        _cleanup_free_ char *own = realpath(b->source, NULL);
        if (!own) {
            return -errno;
        }
        root_list_add(l, own, own, flags, true);
    }
    return l->error;
}

static bool path_under(const char *p, const char *dir) {
    size_t n = strlen(dir);
    return strncmp(p, dir, n) == 0 && (p[n] == '\0' || p[n] == '/');
}

/* Every target absolute, not the root itself and not where the sandbox
 * puts something of its own; a file bound at its own path not under a
 * target the description chose (say /config). */
static int root_list_check(const RootList *l) {
    static const char *const reserved[] = {"/proc", "/dev", "/oldroot", "/newroot"};
    for (size_t i = 0; i < l->n; i++) {
        const char *t = l->e[i].target;
        if (t[0] != '/' || streq(t, "/")) {
            return -EINVAL;
        }
        for (size_t k = 0; k < ELEMENTSOF(reserved); k++) {
            if (path_under(t, reserved[k])) {
                return -EINVAL;
            }
        }
        for (size_t k = 0; k < l->n && l->e[i].own; k++) {
            if (!l->e[k].own && path_under(t, l->e[k].target)) {
                return -EINVAL;
            }
        }
    }
    return 0;
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

/* Builds the new root under /newroot from the old one at /oldroot. */
static int populate_root(const SandboxConfig *c, const RootList *l) {
    static const char *const devices[] = {"/dev/null", "/dev/zero", "/dev/urandom"};
    int r;
    /* A pid namespace needs its own /proc: children's /proc/self, and what
     * the main process may see of processes are ours only. */
    if (c->supervisor) {
        r = mount_fs("proc", "/newroot/proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
        if (r < 0) {
            return r;
        }
    }
    /* A private /tmp, mounted before anything bound below it. */
    r = mount_fs("tmpfs", "/newroot/tmp", MS_NOSUID | MS_NODEV | MS_NOEXEC, TMP_TMPFS);
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
    /* What the program is mapped from, read-only, at its own paths; then
     * the description's binds. */
    for (size_t i = 0; i < l->n; i++) {
        r = bind_into(l->e[i].source, l->e[i].target, l->e[i].flags);
        if (r < 0) {
            return r;
        }
    }
    return 0;
}

/* A new root on a fresh tmpfs, holding /proc (with a supervisor), /tmp,
 * /dev/null, /dev/zero, /dev/urandom, the program's own files and the
 * binds: nothing else of the host is reachable, and the old root is
 * detached, not just hidden.
 *
 * As bubblewrap does: a scratch tmpfs becomes the root first, with the
 * old root at /oldroot and the new one being built at /newroot, so that
 * every source is reachable whatever is mounted where; then the new root
 * replaces the scratch one. */
static int setup_root(const SandboxConfig *c, const RootList *l) {
    /* A mount namespace of the process's own: pivot_root moves the root of
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
    if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, SCRATCH_TMPFS) < 0) {
        return -errno;
    }
    if (chdir("/tmp") < 0 || mkdir("newroot", 0755) < 0 || mkdir("oldroot", 0755) < 0) {
        return -errno;
    }
    if (mount("tmpfs", "newroot", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, ROOT_TMPFS) < 0) {
        return -errno;
    }
    if (syscall(SYS_pivot_root, ".", "oldroot") < 0 || chdir("/") < 0) {
        return -errno;
    }
    int r = populate_root(c, l);
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
static int set_rlimits(const SandboxLimits *limits) {
    int r = set_one_rlimit(RLIMIT_CORE, 0);
    if (r < 0) {
        return r;
    }
    r = set_one_rlimit(RLIMIT_NOFILE, limits->max_fds);
    if (r < 0) {
        return r;
    }
    return set_one_rlimit(RLIMIT_NPROC, limits->max_procs);
}

/* No exec can grant privileges (setuid, file capabilities); also what
 * allows an unprivileged process to load a seccomp filter. */
static int set_no_new_privs(void) {
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
        return -errno;
    }
    return 0;
}

/* The last steps every process shares, in order. */
static int lockdown(const FilterTable *filter, FilterMode mode, const SandboxLimits *limits) {
    int r = drop_capabilities();
    if (r < 0) {
        return r;
    }
    r = set_rlimits(limits);
    if (r < 0) {
        return r;
    }
    r = set_no_new_privs();
    if (r < 0) {
        return r;
    }
    return filter_apply(filter, mode);
}

/* ---- entry points ----------------------------------------------------- */

static int config_check(const SandboxConfig *c) {
    if (!c || !c->filter || !c->hostname || c->n_binds > SANDBOX_MAX_BINDS ||
        (c->n_binds > 0 && !c->binds) || (c->keep_root && c->user) ||
        c->n_main_fds > SANDBOX_MAX_MAIN_FDS || (c->n_main_fds > 0 && !c->main_fds)) {
        return -EINVAL;
    }
    for (size_t i = 0; i < c->n_binds; i++) {
        if (!c->binds[i].source) {
            return -EINVAL;
        }
    }
    return 0;
}

int sandbox_enter(const SandboxConfig *c) {
    _cleanup_(root_list_free) RootList root = {0};
    Ids ids = {0};
    int r = config_check(c);
    if (r < 0) {
        return r;
    }
    /* Resolve the user (NSS, /etc) and the paths while the host's files
     * are still there. */
    r = leave_root(c->user, c->keep_root, &ids);
    if (r < 0) {
        return r;
    }
    r = collect_mapped_files(&root);
    if (r < 0) {
        return r;
    }
    r = resolve_binds(c, &root);
    if (r < 0) {
        return r;
    }
    r = root_list_check(&root);
    if (r < 0) {
        return r;
    }
    if (!c->supervisor) {
        r = notify_connect();
        if (r < 0) {
            return r;
        }
    }
    r = enter_user_ns(&ids);
    if (r < 0) {
        return r;
    }
    r = enter_other_ns(c->hostname);
    if (r < 0) {
        return r;
    }
    if (c->supervisor) {
        r = supervisor_split(c->filter_mode, c->main_fds, c->n_main_fds);
        if (r < 0) {
            return r;
        }
        /* From here on: the main process, PID 1. */
    }
    r = setup_root(c, &root);
    if (r < 0) {
        return r;
    }
    r = lockdown(c->filter, c->filter_mode, &c->limits);
    if (r < 0) {
        return r;
    }
    active = true;
    return 0;
}

int sandbox_lockdown(const FilterTable *filter, FilterMode mode, const SandboxLimits *limits) {
    if (!filter || !limits) {
        return -EINVAL;
    }
    return lockdown(filter, mode, limits);
}
