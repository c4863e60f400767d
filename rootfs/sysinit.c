/* The init's set-up steps: see sysinit.h. */
#include "sysinit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define FIRST_UID 1000
#define LAST_UID 59999 /* Debian's LAST_UID: above are system ranges */

DEFINE_TRIVIAL_CLEANUP_FUNC(FILE *, fclose)

static int write_file(const char *path, const char *text, mode_t mode) {
    _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        return -errno;
    }
    return loop_write(fd, text, strlen(text));
}

bool sysinit_mount(void) {
    static const struct {
        const char *source, *target, *type;
        unsigned long flags;
        const char *data;
        bool needed;
    } mounts[] = {
        {"proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, true},
        {"sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, false},
        {"devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755", true},
        /* gid 5 is the tty group: a pty's slave is the user's and the group's. */
        {"devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "mode=0620,gid=5,ptmxmode=0666",
         false},
        {"tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", false},
        {"tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755", false},
    };
    static const struct {
        const char *path, *target;
    } links[] = {
        {"/dev/fd", "/proc/self/fd"},
        {"/dev/stdin", "/proc/self/fd/0"},
        {"/dev/stdout", "/proc/self/fd/1"},
        {"/dev/stderr", "/proc/self/fd/2"},
    };
    bool ok = true;

    for (size_t i = 0; i < ELEMENTSOF(mounts); i++) {
        /* Mount points below /dev exist only once devtmpfs is there. */
        if (mkdir(mounts[i].target, 0755) < 0 && errno != EEXIST) {
            log_error_errno(-errno, "Failed to create %s: %m", mounts[i].target);
        }
        if (mount(mounts[i].source, mounts[i].target, mounts[i].type, mounts[i].flags,
                  mounts[i].data) < 0) {
            log_error_errno(-errno, "Failed to mount %s on %s: %m", mounts[i].type,
                            mounts[i].target);
            ok = ok && !mounts[i].needed;
        }
    }
    for (size_t i = 0; i < ELEMENTSOF(links); i++) {
        if (symlink(links[i].target, links[i].path) < 0 && errno != EEXIST) {
            log_warning_errno(-errno, "Failed to create %s: %m", links[i].path);
        }
    }
    return ok;
}

unsigned sysinit_modules(const char *list, const char *dir) {
    _cleanup_(fclosep) FILE *f = fopen(list, "re");
    char line[512];
    unsigned failed = 0;

    if (!f) {
        log_error_errno(-errno, "Failed to open %s: %m", list);
        return 1;
    }
    while (fgets(line, sizeof(line), f)) {
        char path[PATH_MAX];
        line[strcspn(line, "\n")] = '\0';
        if (line[0] == '\0' || line[0] == '#') {
            continue;
        }
        snprintf(path, sizeof(path), "%s/%s", dir, line);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        uint64_t t0 = now_usec(CLOCK_MONOTONIC);
        /* finit_module: the kernel reads the file itself (and checks its
         * signature, when it is told to). EEXIST: already there. */
        if (fd < 0 || (syscall(SYS_finit_module, fd, "", 0) < 0 && errno != EEXIST)) {
            log_error_errno(-errno, "Failed to load module %s: %m", line);
            failed++;
            continue;
        }
        log_debug("Loaded %s in %llu ms", line,
                  (unsigned long long)(now_usec(CLOCK_MONOTONIC) - t0) / 1000);
    }
    return failed;
}

void sysinit_hostname(const char *name) {
    char hosts[256];
    int r;

    if (sethostname(name, strlen(name)) < 0) {
        log_error_errno(-errno, "Failed to set the host name %s: %m", name);
        return;
    }
    snprintf(hosts, sizeof(hosts), "%s\n", name);
    r = write_file("/etc/hostname", hosts, 0644);
    if (r < 0) {
        log_warning_errno(r, "Failed to write /etc/hostname: %m");
    }
    snprintf(hosts, sizeof(hosts), "127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t%s\n", name);
    r = write_file("/etc/hosts", hosts, 0644);
    if (r < 0) {
        log_warning_errno(r, "Failed to write /etc/hosts: %m");
    }
}

/* The passwd entry of name, or the highest uid and gid of the ordinary
 * range in use. fgetpwent() reads the file itself: no NSS, which a static
 * PID 1 must not load. */
static int user_lookup(const char *name, uid_t *ret_uid, gid_t *ret_gid, uid_t *ret_max) {
    _cleanup_(fclosep) FILE *f = fopen("/etc/passwd", "re");
    struct passwd *pw;
    uid_t max = FIRST_UID - 1;

    if (!f) {
        return -errno;
    }
    while ((pw = fgetpwent(f))) {
        if (streq(pw->pw_name, name)) {
            *ret_uid = pw->pw_uid;
            *ret_gid = pw->pw_gid;
            return 1;
        }
        if (pw->pw_uid >= FIRST_UID && pw->pw_uid <= LAST_UID && pw->pw_uid > max) {
            max = pw->pw_uid;
        }
    }
    *ret_max = max;
    return 0;
}

static bool group_taken(const char *name, gid_t gid) {
    _cleanup_(fclosep) FILE *f = fopen("/etc/group", "re");
    struct group *gr;
    while (f && (gr = fgetgrent(f))) {
        if (streq(gr->gr_name, name) || gr->gr_gid == gid) {
            return true;
        }
    }
    return false;
}

static int append_line(const char *path, const char *line) {
    _cleanup_close_ int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    return loop_write(fd, line, strlen(line));
}

int sysinit_user(const char *name, uid_t *ret_uid, gid_t *ret_gid) {
    char home[80], line[256];
    uid_t uid = 0, max = 0;
    gid_t gid = 0;
    int r;

    r = user_lookup(name, &uid, &gid, &max);
    if (r < 0) {
        return r;
    }
    if (r == 0) {
        if (max >= LAST_UID) {
            return -EUSERS;
        }
        uid = max + 1;
        gid = uid;
        if (group_taken(name, gid)) {
            return -EEXIST;
        }
        snprintf(home, sizeof(home), "/home/%s", name);
        snprintf(line, sizeof(line), "%s:x:%u:\n", name, (unsigned)gid);
        r = append_line("/etc/group", line);
        if (r < 0) {
            return r;
        }
        snprintf(line, sizeof(line), "%s:x:%u:%u:%s:%s:/bin/sh\n", name, (unsigned)uid,
                 (unsigned)gid, name, home);
        r = append_line("/etc/passwd", line);
        if (r < 0) {
            return r;
        }
        if (mkdir(home, 0700) < 0 && errno != EEXIST) {
            return -errno;
        }
        if (chown(home, uid, gid) < 0) {
            return -errno;
        }
    }
    *ret_uid = uid;
    *ret_gid = gid;
    return 0;
}

void sysinit_runtime_dir(uid_t uid, gid_t gid) {
    char path[64];
    if (mkdir("/run/user", 0755) < 0 && errno != EEXIST) {
        log_warning_errno(-errno, "Failed to create /run/user: %m");
        return;
    }
    snprintf(path, sizeof(path), "/run/user/%u", (unsigned)uid);
    if ((mkdir(path, 0700) < 0 && errno != EEXIST) || chown(path, uid, gid) < 0) {
        log_warning_errno(-errno, "Failed to create %s: %m", path);
    }
}

void sysinit_resolv_conf(const struct in_addr *dns, unsigned n) {
    char text[64 * 4] = "", addr[INET_ADDRSTRLEN];
    size_t len = 0;
    for (unsigned i = 0; i < n && len < sizeof(text); i++) {
        inet_ntop(AF_INET, &dns[i], addr, sizeof(addr));
        len += (size_t)snprintf(text + len, sizeof(text) - len, "nameserver %s\n", addr);
    }
    int r = write_file("/etc/resolv.conf", text, 0644);
    if (r < 0) {
        log_warning_errno(r, "Failed to write /etc/resolv.conf: %m");
    }
}
