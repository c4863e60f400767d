/* Configuration files: loading and validation. */
#include "config.h"

#include <errno.h>
#include <jansson.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Same rule as the protocol's user field: a portable user name. */
static bool user_name_valid(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 32 || s[0] == '-') {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.')) {
            return false;
        }
    }
    return true;
}

_printf_(3, 4) static int config_fail(ConfigError *err, int r, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof(err->message), fmt, ap);
        va_end(ap);
    }
    return r;
}

/* Parses a file that must hold one JSON object. */
static int load_object(const char *path, json_t **ret, ConfigError *err) {
    json_error_t jerr;
    _cleanup_(json_decrefp) json_t *root = NULL;
    FILE *f = fopen(path, "re");

    if (!f) {
        int r = -errno;
        return config_fail(err, r, "%s: cannot open: %s", path, strerror(-r));
    }
    root = json_loadf(f, JSON_REJECT_DUPLICATES, &jerr);
    fclose(f);
    if (!root) {
        return config_fail(err, -EINVAL, "%s:%d:%d: invalid JSON: %s", path, jerr.line, jerr.column,
                           jerr.text);
    }
    if (!json_is_object(root)) {
        return config_fail(err, -EINVAL, "%s: must hold a JSON object", path);
    }
    *ret = TAKE_PTR(root);
    return 0;
}

static char *path_join(const char *a, const char *b, const char *c) {
    char *p;
    if (asprintf(&p, "%s/%s%s", a, b, c ? c : "") < 0) {
        return NULL;
    }
    return p;
}

void host_config_free(HostConfig *c) {
    if (!c) {
        return;
    }
    free(c->user);
    free(c);
}

void vm_config_free(VmConfig *c) {
    if (!c) {
        return;
    }
    free(c->name);
    free(c);
}

static int resolve_user(const char *path, const char *name, HostConfig *c, ConfigError *err) {
    struct passwd pw, *found = NULL;
    char buf[4096];
    int e = getpwnam_r(name, &pw, buf, sizeof(buf), &found);

    if (e != 0) {
        return config_fail(err, -e, "%s: key 'user': cannot look up user '%s': %s", path, name,
                           strerror(e));
    }
    if (!found) {
        return config_fail(err, -ESRCH, "%s: key 'user': no such user '%s'", path, name);
    }
    c->user_uid = pw.pw_uid;
    c->user_gid = pw.pw_gid;
    return 0;
}

int config_load_host(const char *dir, HostConfig **ret, ConfigError *err) {
    _cleanup_free_ char *path = path_join(dir, "host.json", NULL);
    _cleanup_(json_decrefp) json_t *root = NULL;
    _cleanup_(host_config_freep) HostConfig *c = NULL;
    int r;

    if (!path) {
        return config_fail(err, -ENOMEM, "out of memory");
    }
    r = load_object(path, &root, err);
    if (r < 0) {
        return r;
    }
    c = calloc(1, sizeof(*c));
    if (!c) {
        return config_fail(err, -ENOMEM, "out of memory");
    }
    json_t *user = json_object_get(root, "user");
    if (user && !json_is_null(user)) {
        if (!json_is_string(user)) {
            return config_fail(err, -EINVAL, "%s: key 'user': must be a string (a user name)",
                               path);
        }
        const char *name = json_string_value(user);
        if (!user_name_valid(name)) {
            return config_fail(err, -EINVAL, "%s: key 'user': '%.64s' is not a valid user name",
                               path, name);
        }
        r = resolve_user(path, name, c, err);
        if (r < 0) {
            return r;
        }
        c->user = strdup(name);
        if (!c->user) {
            return config_fail(err, -ENOMEM, "out of memory");
        }
    }
    *ret = TAKE_PTR(c);
    return 0;
}

int config_load_vm(const char *dir, const char *name, VmConfig **ret, ConfigError *err) {
    _cleanup_free_ char *vms = path_join(dir, "vms", NULL);
    _cleanup_free_ char *path = NULL;
    _cleanup_(json_decrefp) json_t *root = NULL;
    _cleanup_(vm_config_freep) VmConfig *c = NULL;
    int r;

    if (!config_vm_name_valid(name)) {
        return config_fail(err, -EINVAL,
                           "'%.64s' is not a valid VM name ([a-z][a-z0-9-], at most %u)", name,
                           CONFIG_VM_NAME_MAX);
    }
    if (!vms || !(path = path_join(vms, name, ".json"))) {
        return config_fail(err, -ENOMEM, "out of memory");
    }
    r = load_object(path, &root, err);
    if (r < 0) {
        return r;
    }
    c = calloc(1, sizeof(*c));
    if (!c) {
        return config_fail(err, -ENOMEM, "out of memory");
    }

    json_t *id = json_object_get(root, "id");
    if (!id) {
        return config_fail(err, -EINVAL, "%s: key 'id': missing (an odd number from %u to %u)",
                           path, CONFIG_VM_ID_MIN, CONFIG_VM_ID_MAX);
    }
    if (!json_is_integer(id)) {
        return config_fail(err, -EINVAL, "%s: key 'id': must be an integer", path);
    }
    json_int_t v = json_integer_value(id);
    if (v < CONFIG_VM_ID_MIN || v > CONFIG_VM_ID_MAX || v % 2 == 0) {
        return config_fail(err, -EINVAL,
                           "%s: key 'id': must be odd and from %u to %u, not %" JSON_INTEGER_FORMAT,
                           path, CONFIG_VM_ID_MIN, CONFIG_VM_ID_MAX, v);
    }
    c->id = (unsigned)v;

    json_t *jname = json_object_get(root, "name");
    if (jname) {
        if (!json_is_string(jname)) {
            return config_fail(err, -EINVAL, "%s: key 'name': must be a string", path);
        }
        const char *s = json_string_value(jname);
        if (!config_vm_name_valid(s)) {
            return config_fail(err, -EINVAL,
                               "%s: key 'name': '%.64s' is not a valid VM name "
                               "([a-z][a-z0-9-], at most %u)",
                               path, s, CONFIG_VM_NAME_MAX);
        }
        if (!streq(s, name)) {
            return config_fail(err, -EINVAL,
                               "%s: key 'name': '%s' does not match the file name '%s.json'", path,
                               s, name);
        }
    }
    c->name = strdup(name);
    if (!c->name) {
        return config_fail(err, -ENOMEM, "out of memory");
    }
    *ret = TAKE_PTR(c);
    return 0;
}
