/* <vm>.conf: the format (vmconf.h). */
#include "vmconf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static bool is_blank(char c) {
    return c == ' ' || c == '\t' || c == '\r';
}

/* Trims blanks on both sides of [*s, *e). */
static void trim(const char **s, const char **e) {
    while (*s < *e && is_blank(**s)) {
        (*s)++;
    }
    while (*e > *s && is_blank((*e)[-1])) {
        (*e)--;
    }
}

int vm_conf_parse(const char *name, const char *untrusted_text, size_t len, VmConf *ret,
                  ErrorText *err) {
    VmConf c = {.role = VM_ROLE_CLIENT};
    unsigned mac_line = 0, role_line = 0;
    char shown[64];

    if (len > VM_CONF_MAX_SIZE) {
        return error_set(err, -EINVAL, "%s: larger than %d bytes", name, VM_CONF_MAX_SIZE);
    }
    if (memchr(untrusted_text, '\0', len)) {
        return error_set(err, -EINVAL, "%s: contains a NUL byte", name);
    }
    const char *p = untrusted_text, *end = untrusted_text + len;
    for (unsigned line = 1; p < end; line++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *s = p, *e = le;
        p = nl ? nl + 1 : end;
        if (le - s > VM_CONF_LINE_MAX) {
            return error_set(err, -EINVAL, "%s:%u: line longer than %d bytes", name, line,
                             VM_CONF_LINE_MAX);
        }
        trim(&s, &e);
        if (s == e || *s == '#') {
            continue;
        }
        const char *eq = memchr(s, '=', (size_t)(e - s));
        if (!eq) {
            return error_set(err, -EINVAL, "%s:%u: expected key=value, got \"%s\"", name, line,
                             str_sanitize(s, (size_t)(e - s), shown, sizeof(shown)));
        }
        const char *ks = s, *ke = eq, *vs = eq + 1, *ve = e;
        trim(&ks, &ke);
        trim(&vs, &ve);
        char key[16] = "", value[VM_CONF_LINE_MAX + 1];
        size_t klen = (size_t)(ke - ks), vlen = (size_t)(ve - vs);
        memcpy(value, vs, vlen);
        value[vlen] = '\0';
        if (klen < sizeof(key)) {
            memcpy(key, ks, klen);
            key[klen] = '\0';
        }
        if (klen < sizeof(key) && streq(key, "mac")) {
            if (mac_line) {
                return error_set(err, -EINVAL, "%s:%u: mac given twice (first on line %u)", name,
                                 line, mac_line);
            }
            if (vm_mac_parse(value, c.mac) < 0) {
                return error_set(
                    err, -EINVAL,
                    "%s:%u: mac \"%s\" is not a unicast address like 52:54:00:12:34:56", name, line,
                    str_sanitize(value, vlen, shown, sizeof(shown)));
            }
            mac_line = line;
        } else if (klen < sizeof(key) && streq(key, "role")) {
            if (role_line) {
                return error_set(err, -EINVAL, "%s:%u: role given twice (first on line %u)", name,
                                 line, role_line);
            }
            if (streq(value, "router")) {
                c.role = VM_ROLE_ROUTER;
            } else if (streq(value, "client")) {
                c.role = VM_ROLE_CLIENT;
            } else {
                return error_set(err, -EINVAL, "%s:%u: role \"%s\" is neither router nor client",
                                 name, line, str_sanitize(value, vlen, shown, sizeof(shown)));
            }
            role_line = line;
        } else {
            return error_set(err, -EINVAL, "%s:%u: unknown key \"%s\"", name, line,
                             str_sanitize(ks, klen, shown, sizeof(shown)));
        }
    }
    if (!mac_line) {
        return error_set(err, -EINVAL, "%s: no mac= line", name);
    }
    *ret = c;
    return 0;
}

int vm_conf_load_at(int dirfd, const char *path, VmConf *ret, ErrorText *err) {
    char buf[VM_CONF_MAX_SIZE + 1];
    struct stat st;
    const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    _cleanup_close_ int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) {
        int r = -errno;
        return error_set(err, r, "%s: cannot open: %s", name, strerror(-r));
    }
    if (fstat(fd, &st) < 0) {
        int r = -errno;
        return error_set(err, r, "%s: cannot stat: %s", name, strerror(-r));
    }
    if (!S_ISREG(st.st_mode)) {
        return error_set(err, -EINVAL, "%s: not a regular file", name);
    }
    /* Read one byte more than allowed to notice a larger file. */
    size_t got = 0;
    while (got < sizeof(buf)) {
        ssize_t k = read(fd, buf + got, sizeof(buf) - got);
        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            int r = -errno;
            return error_set(err, r, "%s: cannot read: %s", name, strerror(-r));
        }
        if (k == 0) {
            break;
        }
        got += (size_t)k;
    }
    return vm_conf_parse(name, buf, got, ret, err);
}

char *vm_conf_format(const VmConf *c, char buf[static VM_CONF_TEXT_MAX]) {
    char mac[MAC_STR_SIZE];
    snprintf(buf, VM_CONF_TEXT_MAX, "mac=%s\nrole=%s\n", mac_format(c->mac, mac),
             c->role == VM_ROLE_ROUTER ? "router" : "client");
    return buf;
}
