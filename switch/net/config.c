/* <vm>.conf parsing. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

#define LINE_MAX_LEN 256

_printf_(3, 4) static int fail(char *err, size_t err_size, const char *fmt, ...) {
    if (err_size > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_size, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

int vm_conf_parse_mac(const char *s, uint8_t ret[6]) {
    uint8_t mac[6];
    if (strlen(s) != 17) {
        return -EINVAL;
    }
    for (int i = 0; i < 6; i++) {
        int hi = unhexchar(s[3 * i]), lo = unhexchar(s[3 * i + 1]);
        if (hi < 0 || lo < 0 || (i < 5 && s[3 * i + 2] != ':')) {
            return -EINVAL;
        }
        mac[i] = (uint8_t)(hi << 4 | lo);
    }
    /* A VM's own address: never a group address, never zero. */
    if (mac[0] & 1) {
        return -EINVAL;
    }
    if (!(mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5])) {
        return -EINVAL;
    }
    memcpy(ret, mac, 6);
    return 0;
}

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

int vm_conf_parse(const char *name, const char *text, size_t len, VmConf *ret, char *err,
                  size_t err_size) {
    VmConf c = {.role = VM_ROLE_CLIENT};
    unsigned mac_line = 0, role_line = 0;
    char shown[64];

    if (len > VM_CONF_MAX_SIZE) {
        return fail(err, err_size, "%s: larger than %d bytes", name, VM_CONF_MAX_SIZE);
    }
    if (memchr(text, '\0', len)) {
        return fail(err, err_size, "%s: contains a NUL byte", name);
    }
    const char *p = text, *end = text + len;
    for (unsigned line = 1; p < end; line++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *s = p, *e = le;
        p = nl ? nl + 1 : end;
        if (le - s > LINE_MAX_LEN) {
            return fail(err, err_size, "%s:%u: line longer than %d bytes", name, line,
                        LINE_MAX_LEN);
        }
        trim(&s, &e);
        if (s == e || *s == '#') {
            continue;
        }
        const char *eq = memchr(s, '=', (size_t)(e - s));
        if (!eq) {
            return fail(err, err_size, "%s:%u: expected key=value, got \"%s\"", name, line,
                        str_sanitize(s, (size_t)(e - s), shown, sizeof(shown)));
        }
        const char *ks = s, *ke = eq, *vs = eq + 1, *ve = e;
        trim(&ks, &ke);
        trim(&vs, &ve);
        char key[16] = "", value[LINE_MAX_LEN + 1];
        size_t klen = (size_t)(ke - ks), vlen = (size_t)(ve - vs);
        memcpy(value, vs, vlen);
        value[vlen] = '\0';
        if (klen < sizeof(key)) {
            memcpy(key, ks, klen);
            key[klen] = '\0';
        }
        if (klen < sizeof(key) && streq(key, "mac")) {
            if (mac_line) {
                return fail(err, err_size, "%s:%u: mac given twice (first on line %u)", name, line,
                            mac_line);
            }
            if (vm_conf_parse_mac(value, c.mac) < 0) {
                return fail(err, err_size,
                            "%s:%u: mac \"%s\" is not a unicast address like 52:54:00:12:34:56",
                            name, line, str_sanitize(value, vlen, shown, sizeof(shown)));
            }
            mac_line = line;
        } else if (klen < sizeof(key) && streq(key, "role")) {
            if (role_line) {
                return fail(err, err_size, "%s:%u: role given twice (first on line %u)", name, line,
                            role_line);
            }
            if (streq(value, "router")) {
                c.role = VM_ROLE_ROUTER;
            } else if (streq(value, "client")) {
                c.role = VM_ROLE_CLIENT;
            } else {
                return fail(err, err_size, "%s:%u: role \"%s\" is neither router nor client", name,
                            line, str_sanitize(value, vlen, shown, sizeof(shown)));
            }
            role_line = line;
        } else {
            return fail(err, err_size, "%s:%u: unknown key \"%s\"", name, line,
                        str_sanitize(ks, klen, shown, sizeof(shown)));
        }
    }
    if (!mac_line) {
        return fail(err, err_size, "%s: no mac= line", name);
    }
    *ret = c;
    return 0;
}

int vm_conf_load(const char *path, VmConf *ret, char *err, size_t err_size) {
    return vm_conf_load_at(AT_FDCWD, path, ret, err, err_size);
}

int vm_conf_load_at(int dirfd, const char *path, VmConf *ret, char *err, size_t err_size) {
    char buf[VM_CONF_MAX_SIZE + 1];
    struct stat st;
    const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    _cleanup_close_ int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) {
        int r = -errno;
        fail(err, err_size, "%s: cannot open: %s", name, strerror(-r));
        return r;
    }
    if (fstat(fd, &st) < 0) {
        int r = -errno;
        fail(err, err_size, "%s: cannot stat: %s", name, strerror(-r));
        return r;
    }
    if (!S_ISREG(st.st_mode)) {
        return fail(err, err_size, "%s: not a regular file", name);
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
            fail(err, err_size, "%s: cannot read: %s", name, strerror(-r));
            return r;
        }
        if (k == 0) {
            break;
        }
        got += (size_t)k;
    }
    return vm_conf_parse(name, buf, got, ret, err, err_size);
}

int vm_conf_name_from_filename(const char *filename, char ret[VM_NAME_MAX + 1]) {
    size_t n = strlen(filename);
    const char *suffix = ".conf";
    size_t sl = strlen(suffix);
    if (n <= sl || !streq(filename + n - sl, suffix)) {
        return -EINVAL;
    }
    n -= sl;
    if (n > VM_NAME_MAX || !(filename[0] >= 'a' && filename[0] <= 'z')) {
        return -EINVAL;
    }
    for (size_t i = 1; i < n; i++) {
        char c = filename[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
            return -EINVAL;
        }
    }
    memcpy(ret, filename, n);
    ret[n] = '\0';
    return 0;
}
