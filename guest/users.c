/* The users programs run as: see users.h. */
#include "users.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define RECORD_HEADER_SIZE 20u
#define GROUPS_MAX ((USER_RECORD_MAX - RECORD_HEADER_SIZE) / 4u)

static const char *const watched_files[] = {"/etc/passwd", "/etc/group", "/etc/nsswitch.conf"};

/* What the lookup's answer depends on, as far as a stat() tells. */
typedef struct FilesSig {
    struct {
        bool present;
        dev_t dev;
        ino_t ino;
        off_t size;
        struct timespec mtime, ctime;
    } f[ELEMENTSOF(watched_files)];
} FilesSig;

typedef struct Entry {
    bool used, own; /* own: the agent's own user (no name) */
    char *name;
    UserRecord *rec; /* NULL: the lookup found nothing usable */
    FilesSig sig;    /* taken before the lookup started */
    uint64_t at;     /* when that lookup started */
    uint64_t last_used;
} Entry;

struct UserCache {
    sd_event *event;
    Entry entries[USER_CACHE_MAX];
    /* The lookup in flight, at most one. */
    Entry *lookup_for;
    FilesSig lookup_sig;
    uint64_t lookup_at;
    pid_t pid;
    int pidfd, pipe_fd;
    sd_event_source *pid_src, *timer;
};

struct passwd *user_lookup(const char *name) {
    unsigned long long uid;
    errno = 0;
    if (!name) {
        return getpwuid(geteuid());
    }
    if (parse_uint(name, 0, UINT32_MAX - 1, &uid) == 0) {
        return getpwuid((uid_t)uid);
    }
    return getpwnam(name);
}

/* ---- the record's wire form --------------------------------------------- */

static void put_u32(uint8_t *p, uint32_t v) {
    memcpy(p, &v, sizeof(v));
}

static void put_u16(uint8_t *p, uint16_t v) {
    memcpy(p, &v, sizeof(v));
}

static uint32_t get_u32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static uint16_t get_u16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

ssize_t user_record_encode(const struct passwd *pw, const gid_t *groups, size_t n_groups,
                           uint8_t *buf, size_t size) {
    const char *dir = pw->pw_dir ? pw->pw_dir : "";
    const char *shell = pw->pw_shell ? pw->pw_shell : "";
    size_t ln = strlen(pw->pw_name), ld = strlen(dir), ls = strlen(shell);

    if (n_groups > GROUPS_MAX || ln > UINT16_MAX || ld > UINT16_MAX || ls > UINT16_MAX) {
        return -E2BIG;
    }
    size_t total = RECORD_HEADER_SIZE + 4 * n_groups + ln + ld + ls;
    if (total > size || total > USER_RECORD_MAX) {
        return -E2BIG;
    }
    put_u32(buf, (uint32_t)pw->pw_uid);
    put_u32(buf + 4, (uint32_t)pw->pw_gid);
    put_u32(buf + 8, (uint32_t)n_groups);
    put_u16(buf + 12, (uint16_t)ln);
    put_u16(buf + 14, (uint16_t)ld);
    put_u16(buf + 16, (uint16_t)ls);
    put_u16(buf + 18, 0);
    uint8_t *p = buf + RECORD_HEADER_SIZE;
    for (size_t i = 0; i < n_groups; i++, p += 4) {
        put_u32(p, (uint32_t)groups[i]);
    }
    memcpy(p, pw->pw_name, ln);
    memcpy(p + ln, dir, ld);
    memcpy(p + ln + ld, shell, ls);
    return (ssize_t)total;
}

int user_record_parse(const uint8_t *untrusted, size_t n, UserRecord **ret) {
    if (n < RECORD_HEADER_SIZE || n > USER_RECORD_MAX) {
        return -EBADMSG;
    }
    uint32_t uid = get_u32(untrusted), gid = get_u32(untrusted + 4), n_groups = get_u32(untrusted + 8);
    size_t ln = get_u16(untrusted + 12), ld = get_u16(untrusted + 14), ls = get_u16(untrusted + 16);
    /* (uid_t)-1 and (gid_t)-1 mean "unchanged" to setres[ug]id(). */
    if (get_u16(untrusted + 18) != 0 || n_groups > GROUPS_MAX || uid == UINT32_MAX ||
        gid == UINT32_MAX || ln == 0) {
        return -EBADMSG;
    }
    if (RECORD_HEADER_SIZE + 4 * (size_t)n_groups + ln + ld + ls != n) {
        return -EBADMSG;
    }
    const uint8_t *g = untrusted + RECORD_HEADER_SIZE;
    const char *s = (const char *)g + 4 * (size_t)n_groups;
    if (memchr(s, 0, ln + ld + ls)) {
        return -EBADMSG;
    }
    /* One allocation: the record, the groups, then the strings with their
     * terminators. */
    size_t size = sizeof(UserRecord) + sizeof(gid_t) * n_groups + ln + ld + ls + 3;
    UserRecord *r = calloc(1, size);
    if (!r) {
        return -ENOMEM;
    }
    gid_t *groups = (gid_t *)(r + 1);
    for (uint32_t i = 0; i < n_groups; i++) {
        uint32_t v = get_u32(g + 4 * i);
        if (v == UINT32_MAX) {
            free(r);
            return -EBADMSG;
        }
        groups[i] = (gid_t)v;
    }
    char *str = (char *)(groups + n_groups);
    r->uid = (uid_t)uid;
    r->gid = (gid_t)gid;
    r->n_groups = n_groups;
    r->groups = groups;
    r->name = memcpy(str, s, ln);
    str[ln] = '\0';
    r->dir = memcpy(str + ln + 1, s + ln, ld);
    str[ln + 1 + ld] = '\0';
    r->shell = memcpy(str + ln + ld + 2, s + ln + ld, ls);
    str[ln + ld + 2 + ls] = '\0';
    *ret = r;
    return 0;
}

/* ---- the lookup child --------------------------------------------------- */

/* Runs in the forked child: NSS is loaded here, never in the agent. Exits
 * 0 after writing the record in one write, 1 otherwise. */
_noreturn_ static void lookup_child(const char *name, int wfd) {
    static gid_t groups[GROUPS_MAX];
    static uint8_t buf[USER_RECORD_MAX];
    struct sigaction sa = {.sa_handler = SIG_DFL};

    /* Only the pipe stays open: a lookup that hangs must not hold the
     * sessions' connections open. */
    (void)sigaction(SIGPIPE, &sa, NULL);
    if (wfd != 3 && dup2(wfd, 3) < 0) {
        _exit(1);
    }
    /* Closing them is tidiness, not safety: the agent kills a lookup
     * that takes too long. */
    (void)fd_close_from(4);
    struct passwd *pw = user_lookup(name);
    if (!pw || !pw->pw_name || !pw->pw_name[0]) {
        _exit(1);
    }
    int n = (int)GROUPS_MAX;
    if (getgrouplist(pw->pw_name, pw->pw_gid, groups, &n) < 0 || n < 0) {
        _exit(1); /* more groups than a record holds: no record */
    }
    ssize_t len = user_record_encode(pw, groups, (size_t)n, buf, sizeof(buf));
    if (len < 0 || write(3, buf, (size_t)len) != len) {
        _exit(1);
    }
    _exit(0);
}

/* ---- the cache ---------------------------------------------------------- */

static void sig_take(FilesSig *s) {
    *s = (FilesSig){0};
    for (size_t i = 0; i < ELEMENTSOF(watched_files); i++) {
        struct stat st;
        if (stat(watched_files[i], &st) == 0) {
            s->f[i].present = true;
            s->f[i].dev = st.st_dev;
            s->f[i].ino = st.st_ino;
            s->f[i].size = st.st_size;
            s->f[i].mtime = st.st_mtim;
            s->f[i].ctime = st.st_ctim;
        }
    }
}

static bool sig_equal(const FilesSig *a, const FilesSig *b) {
    for (size_t i = 0; i < ELEMENTSOF(watched_files); i++) {
        if (a->f[i].present != b->f[i].present || a->f[i].dev != b->f[i].dev ||
            a->f[i].ino != b->f[i].ino || a->f[i].size != b->f[i].size ||
            a->f[i].mtime.tv_sec != b->f[i].mtime.tv_sec ||
            a->f[i].mtime.tv_nsec != b->f[i].mtime.tv_nsec ||
            a->f[i].ctime.tv_sec != b->f[i].ctime.tv_sec ||
            a->f[i].ctime.tv_nsec != b->f[i].ctime.tv_nsec) {
            return false;
        }
    }
    return true;
}

static void entry_clear(Entry *e) {
    free(e->name);
    free(e->rec);
    *e = (Entry){0};
}

static void lookup_end(UserCache *c) {
    c->pid_src = sd_event_source_disable_unref(c->pid_src);
    c->timer = sd_event_source_disable_unref(c->timer);
    if (c->pid > 0) {
        /* Done, or given up on: either way it is reaped here. */
        (void)kill(c->pid, SIGKILL);
        (void)waitid(P_PIDFD, c->pidfd, &(siginfo_t){0}, WEXITED);
    }
    c->pid = 0;
    c->pidfd = safe_close(c->pidfd);
    c->pipe_fd = safe_close(c->pipe_fd);
    c->lookup_for = NULL;
}

static int on_lookup_exit(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
    UserCache *c = userdata;
    siginfo_t si = {0};
    uint8_t untrusted_buf[USER_RECORD_MAX + 1]; /* the lookup child's record */
    UserRecord *rec = NULL;

    if (waitid(P_PIDFD, c->pidfd, &si, WEXITED | WNOHANG) < 0 || si.si_pid == 0) {
        return 0;
    }
    c->pid = 0; /* reaped */
    if (si.si_code == CLD_EXITED && si.si_status == 0) {
        ssize_t k = read(c->pipe_fd, untrusted_buf, sizeof(untrusted_buf));
        if (k > 0 && user_record_parse(untrusted_buf, (size_t)k, &rec) < 0) {
            log_warning("User lookup: malformed record, ignored");
        }
    }
    Entry *e = c->lookup_for;
    if (log_get_max_level() >= LOG_DEBUG) {
        char name[64];
        const char *n = e->own ? "(own)" : str_sanitize(e->name, strlen(e->name), name, sizeof(name));
        if (rec) {
            log_debug("User %s: record kept, %zu group(s)", n, rec->n_groups);
        } else {
            log_debug("User %s: no record", n);
        }
    }
    free(e->rec);
    e->rec = rec; /* NULL: no such user, or not to be kept */
    e->sig = c->lookup_sig;
    e->at = c->lookup_at;
    lookup_end(c);
    return 0;
}

static int on_lookup_timeout(sd_event_source *src, uint64_t usec, void *userdata) {
    UserCache *c = userdata;
    log_warning("User lookup took longer than %llu s, killed",
                (unsigned long long)(USER_LOOKUP_TIMEOUT_USEC / 1000000ULL));
    Entry *e = c->lookup_for;
    /* Nothing kept: the next Exec tries again. */
    entry_clear(e);
    lookup_end(c);
    return 0;
}

static int lookup_start(UserCache *c, Entry *e, const FilesSig *sig, uint64_t now) {
    _cleanup_close_pair_ int p[2] = {-EBADF, -EBADF};
    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0) {
        return -errno;
    }
    pid_t pid = fork();
    if (pid < 0) {
        return -errno;
    }
    if (pid == 0) {
        lookup_child(e->own ? NULL : e->name, p[1]);
    }
    c->pid = pid;
    c->lookup_for = e;
    c->lookup_sig = *sig;
    c->lookup_at = now;
    c->pipe_fd = TAKE_FD(p[0]);
    long fd = syscall(SYS_pidfd_open, pid, 0);
    int r = fd < 0 ? -errno : 0;
    if (r >= 0) {
        c->pidfd = (int)fd;
        r = sd_event_add_io(c->event, &c->pid_src, c->pidfd, EPOLLIN, on_lookup_exit, c);
    }
    if (r >= 0) {
        r = sd_event_add_time_relative(c->event, &c->timer, CLOCK_MONOTONIC,
                                       USER_LOOKUP_TIMEOUT_USEC, 100000, on_lookup_timeout, c);
    }
    if (r < 0) {
        if (c->pidfd < 0) {
            (void)kill(pid, SIGKILL);
            (void)waitpid(pid, NULL, 0);
            c->pid = 0;
        }
        entry_clear(e);
        lookup_end(c);
    }
    return r;
}

static Entry *entry_find(UserCache *c, const char *name) {
    for (size_t i = 0; i < USER_CACHE_MAX; i++) {
        Entry *e = &c->entries[i];
        if (e->used && (name ? !e->own && streq(e->name, name) : e->own)) {
            return e;
        }
    }
    return NULL;
}

/* A free slot, else the least recently used one that no lookup is for. */
static Entry *entry_new(UserCache *c, const char *name) {
    Entry *victim = NULL;
    for (size_t i = 0; i < USER_CACHE_MAX; i++) {
        Entry *e = &c->entries[i];
        if (!e->used) {
            victim = e;
            break;
        }
        if (e != c->lookup_for && (!victim || e->last_used < victim->last_used)) {
            victim = e;
        }
    }
    if (!victim) {
        return NULL;
    }
    entry_clear(victim);
    if (name) {
        victim->name = strdup(name);
        if (!victim->name) {
            return NULL;
        }
    } else {
        victim->own = true;
    }
    victim->used = true;
    return victim;
}

const UserRecord *user_cache_get(UserCache *c, const char *name) {
    uint64_t now = now_usec(CLOCK_MONOTONIC);
    FilesSig sig;

    if (!c) {
        return NULL;
    }
    sig_take(&sig);
    Entry *e = entry_find(c, name);
    if (e) {
        e->last_used = now;
        if (e == c->lookup_for) {
            return NULL; /* being looked up */
        }
        if (e->at > 0 && now - e->at < USER_CACHE_TTL_USEC && sig_equal(&e->sig, &sig)) {
            return e->rec;
        }
    }
    if (c->lookup_for) {
        return NULL; /* one at a time; a later Exec starts this one */
    }
    if (!e) {
        e = entry_new(c, name);
        if (!e) {
            return NULL;
        }
        e->last_used = now;
    }
    int r = lookup_start(c, e, &sig, now);
    if (r < 0) {
        log_warning_errno(r, "Cannot start a user lookup: %m");
    }
    return NULL;
}

int user_cache_new(sd_event *e, UserCache **ret) {
    UserCache *c = calloc(1, sizeof(*c));
    if (!c) {
        return -ENOMEM;
    }
    c->event = sd_event_ref(e);
    c->pidfd = c->pipe_fd = -EBADF;
    *ret = c;
    return 0;
}

UserCache *user_cache_free(UserCache *c) {
    if (!c) {
        return NULL;
    }
    lookup_end(c);
    for (size_t i = 0; i < USER_CACHE_MAX; i++) {
        entry_clear(&c->entries[i]);
    }
    sd_event_unref(c->event);
    free(c);
    return NULL;
}
