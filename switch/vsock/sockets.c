/* qubes-lite-vsock's listening sockets (sockets.h). */
#include "sockets.h"

#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "addr.h"
#include "util.h"

/* path's directory, canonical, and the path in it: what the sandbox binds
 * (at its canonical path), and where the socket is inside and out. */
static int canonical_path(const char *path, char **ret_path, char **ret_dir) {
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    if (!*base || streq(base, ".") || streq(base, "..")) {
        return -EINVAL;
    }
    _cleanup_free_ char *parent = slash ? strndup(path, (size_t)(slash - path)) : strdup(".");
    if (!parent) {
        return -ENOMEM;
    }
    /* "/x": the root itself. */
    _cleanup_free_ char *dir = realpath(*parent ? parent : "/", NULL);
    if (!dir) {
        return -errno;
    }
    char *full;
    if (asprintf(&full, "%s/%s", streq(dir, "/") ? "" : dir, base) < 0) {
        return -ENOMEM;
    }
    *ret_path = full;
    *ret_dir = TAKE_PTR(dir);
    return 0;
}

int vsock_socket_listen(const char *path, VsockSocket *ret) {
    _cleanup_free_ char *full = NULL, *dir = NULL;
    char spec[ADDR_STR_MAX];
    Addr a;
    int r = canonical_path(path, &full, &dir);
    if (r < 0) {
        return r;
    }
    if ((size_t)snprintf(spec, sizeof(spec), "unix:%s", full) >= sizeof(spec) ||
        addr_parse(spec, &a) < 0) {
        return -ENAMETOOLONG;
    }
    int fd;
    mode_t old = umask(0177);
    r = addr_listen(&a, &fd);
    umask(old);
    if (r < 0) {
        return r;
    }
    struct stat st;
    if (lstat(full, &st) < 0) {
        r = -errno;
        safe_close(fd);
        return r;
    }
    *ret = (VsockSocket){.path = TAKE_PTR(full), .dir = TAKE_PTR(dir), .fd = fd, .bound = st};
    return 0;
}

/* A group by name, else by number. */
static int resolve_group(const char *group, gid_t *ret) {
    unsigned long long v;
    errno = 0;
    struct group *g = getgrnam(group);
    if (g) {
        *ret = g->gr_gid;
        return 0;
    }
    if (parse_uint(group, 0, (gid_t)-2, &v) == 0) {
        *ret = (gid_t)v;
        return 0;
    }
    return errno > 0 ? -errno : -ENOENT;
}

int vsock_socket_open_to_group(const VsockSocket *s, const char *group) {
    gid_t gid;
    int r = resolve_group(group, &gid);
    if (r < 0) {
        return r;
    }
    /* Group first, then the mode: never open to the wrong group. */
    if (lchown(s->path, (uid_t)-1, gid) < 0 || chmod(s->path, 0660) < 0) {
        return -errno;
    }
    return 0;
}

void vsock_socket_remove(VsockSocket *s) {
    if (s->path) {
        (void)addr_unix_unlink_bound(s->path, &s->bound);
    }
    free(s->path);
    free(s->dir);
    s->path = s->dir = NULL;
}
