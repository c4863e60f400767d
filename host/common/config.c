/* Configuration files: loading, validation and derived values.
 *
 * One parser walks a file and records every problem it finds (the first
 * one goes to ErrorText, each one to the report stream when checking),
 * so that `--check` lists them all while loading stops at the first. */
#include "config.h"
#include "rules.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MEMORY_MIB_MAX (1u << 24) /* 16 TiB */
#define CPUS_MAX 1024u
#define IDLE_TIMEOUT_MAX (366u * 24 * 3600)
#define KEY_MAX 160

typedef struct Parser {
    const char *path;
    ErrorText *err;
    FILE *report;
    int first_r;
    unsigned problems;
} Parser;

_printf_(4, 5) static int problem(Parser *p, int r, const char *key, const char *fmt, ...) {
    char reason[256];
    char line[ERROR_TEXT_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    if (key) {
        snprintf(line, sizeof(line), "%.180s: key '%.60s': %s", p->path, key, reason);
    } else {
        snprintf(line, sizeof(line), "%.180s: %s", p->path, reason);
    }
    if (p->problems++ == 0) {
        p->first_r = r;
        if (p->err) {
            memcpy(p->err->message, line, sizeof(line));
        }
    }
    if (p->report) {
        fprintf(p->report, "%s\n", line);
    }
    return r;
}

static int oom(Parser *p) {
    return problem(p, -ENOMEM, NULL, "out of memory");
}

static char *xstrdup(Parser *p, const char *s) {
    char *d = strdup(s);
    if (!d) {
        oom(p);
    }
    return d;
}

/* "prefix.name", "prefix[i]" or "name" into buf. */
static const char *key_join(char buf[static KEY_MAX], const char *prefix, const char *name) {
    if (prefix && *prefix) {
        snprintf(buf, KEY_MAX, "%.100s.%.50s", prefix, name);
    } else {
        snprintf(buf, KEY_MAX, "%.150s", name);
    }
    return buf;
}

static const char *key_index(char buf[static KEY_MAX], const char *prefix, size_t i) {
    snprintf(buf, KEY_MAX, "%.130s[%zu]", prefix, i);
    return buf;
}

/* ---- small value checks -------------------------------------------------------------------- */

static bool log_level_valid(const char *s) {
    static const char *const levels[] = {"error", "warn", "info", "debug", "trace"};
    for (size_t i = 0; i < ELEMENTSOF(levels); i++) {
        if (streq(s, levels[i])) {
            return true;
        }
    }
    return false;
}

static bool vmm_valid(const char *s) {
    return streq(s, "crosvm") || streq(s, "qemu");
}

/* A network name becomes a unit name (vm-switch-<net>.service) and a
 * directory name: the VM name's alphabet, a little longer. */
static bool net_name_valid(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > CONFIG_NET_NAME_MAX || s[0] < 'a' || s[0] > 'z') {
        return false;
    }
    for (size_t i = 1; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
            return false;
        }
    }
    return true;
}

static bool ifname_valid(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 15 || streq(s, ".") || streq(s, "..")) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '/' || s[i] == ':' || s[i] <= ' ' || s[i] == 0x7f) {
            return false;
        }
    }
    return true;
}

/* Option keys of the free-form sets: what crosvm's key=value syntax
 * accepts as a key. */
static bool opt_key_valid(const char *s) {
    if (!*s) {
        return false;
    }
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_')) {
            return false;
        }
    }
    return true;
}

static bool has_control(const char *s) {
    for (; *s; s++) {
        if ((unsigned char)*s < ' ' || *s == 0x7f) {
            return true;
        }
    }
    return false;
}

/* n hex digits at s into *ret. */
static bool hexn(const char *s, size_t n, unsigned *ret) {
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        int h = unhexchar(s[i]);
        if (h < 0) {
            return false;
        }
        v = v * 16 + (unsigned)h;
    }
    *ret = v;
    return true;
}

bool config_pci_canonical(const char *s, char buf[static 13]) {
    unsigned domain = 0, bus, dev, fn;
    size_t n = s ? strlen(s) : 0;

    if (n == 12) {
        if (!hexn(s, 4, &domain) || s[4] != ':') {
            return false;
        }
        s += 5;
    } else if (n != 7) {
        return false;
    }
    /* BB:DD.F */
    if (!hexn(s, 2, &bus) || s[2] != ':' || !hexn(s + 3, 2, &dev) || s[5] != '.' ||
        !hexn(s + 6, 1, &fn) || dev > 0x1f || fn > 7) {
        return false;
    }
    snprintf(buf, 13, "%04x:%02x:%02x.%x", domain, bus, dev, fn);
    return true;
}

/* 52:xx:xx:xx:xx:xx (0x52: locally administered, unicast), the other five
 * octets the low 40 bits of the 64-bit FNV-1a hash of "<network>/<vm>",
 * most significant first. Stable across releases: MACs are configuration
 * other VMs and the switch rely on. */
static void mac_derive(const char *network, const char *vm, uint8_t mac[6]) {
    uint64_t h = 0xcbf29ce484222325ULL;
    const char *parts[] = {network, "/", vm};
    for (size_t i = 0; i < ELEMENTSOF(parts); i++) {
        for (const char *c = parts[i]; *c; c++) {
            h ^= (unsigned char)*c;
            h *= 0x100000001b3ULL;
        }
    }
    mac[0] = 0x52;
    for (int i = 1; i < 6; i++) {
        mac[i] = (uint8_t)(h >> (8 * (5 - i)));
    }
}

/* a.b.c.0/24 */
static bool network_parse(const char *s, uint8_t base[3]) {
    unsigned a, b, c, d, prefix;
    char tail;
    if (sscanf(s, "%3u.%3u.%3u.%3u/%2u%c", &a, &b, &c, &d, &prefix, &tail) != 5) {
        return false;
    }
    if (a > 255 || b > 255 || c > 255 || d != 0 || prefix != 24) {
        return false;
    }
    /* Reject what sscanf tolerates: signs, spaces, leading zeros. */
    char canon[20];
    snprintf(canon, sizeof(canon), "%u.%u.%u.0/24", a, b, c);
    if (!streq(canon, s)) {
        return false;
    }
    base[0] = (uint8_t)a;
    base[1] = (uint8_t)b;
    base[2] = (uint8_t)c;
    return true;
}

/* ---- typed getters: absent or null keeps the default ------------------------------------- */

/* Reports every key of `obj` not in `allowed`. */
static void check_keys(Parser *p, json_t *obj, const char *prefix, const char *const *allowed) {
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        bool known = false;
        for (size_t i = 0; allowed[i]; i++) {
            if (streq(k, allowed[i])) {
                known = true;
                break;
            }
        }
        if (!known) {
            char kb[KEY_MAX];
            problem(p, -EINVAL, key_join(kb, prefix, k), "unknown key");
        }
    }
}

static json_t *get_present(json_t *obj, const char *name) {
    json_t *v = obj ? json_object_get(obj, name) : NULL;
    return v && !json_is_null(v) ? v : NULL;
}

static void get_bool(Parser *p, json_t *obj, const char *prefix, const char *name, bool *out) {
    char kb[KEY_MAX];
    json_t *v = get_present(obj, name);
    if (!v) {
        return;
    }
    if (!json_is_boolean(v)) {
        problem(p, -EINVAL, key_join(kb, prefix, name), "must be true or false");
        return;
    }
    *out = json_is_true(v);
}

static void get_uint(Parser *p, json_t *obj, const char *prefix, const char *name, unsigned min,
                     unsigned max, unsigned *out) {
    char kb[KEY_MAX];
    json_t *v = get_present(obj, name);
    if (!v) {
        return;
    }
    if (!json_is_integer(v)) {
        problem(p, -EINVAL, key_join(kb, prefix, name), "must be an integer");
        return;
    }
    json_int_t i = json_integer_value(v);
    if (i < (json_int_t)min || i > (json_int_t)max) {
        problem(p, -EINVAL, key_join(kb, prefix, name),
                "must be from %u to %u, not %" JSON_INTEGER_FORMAT, min, max, i);
        return;
    }
    *out = (unsigned)i;
}

/* A string; `valid` (may be NULL) with `what` explaining it. Replaces *out. */
static void get_string(Parser *p, json_t *obj, const char *prefix, const char *name,
                       bool (*valid)(const char *), const char *what, char **out) {
    char kb[KEY_MAX];
    json_t *v = get_present(obj, name);
    if (!v) {
        return;
    }
    if (!json_is_string(v)) {
        problem(p, -EINVAL, key_join(kb, prefix, name), "must be a string");
        return;
    }
    const char *s = json_string_value(v);
    if (valid && !valid(s)) {
        problem(p, -EINVAL, key_join(kb, prefix, name), "'%.64s' is not %s", s, what);
        return;
    }
    char *d = xstrdup(p, s);
    if (d) {
        free(*out);
        *out = d;
    }
}

static bool path_valid(const char *s) {
    return s[0] == '/' && !has_control(s);
}

static void strv_done(ConfigStrv *s) {
    for (size_t i = 0; i < s->n; i++) {
        free(s->v[i]);
    }
    free(s->v);
    *s = (ConfigStrv){0};
}

/* A list of strings; `valid` per item (may be NULL). */
static void get_strv(Parser *p, json_t *obj, const char *prefix, const char *name,
                     bool (*valid)(const char *), const char *what, ConfigStrv *out) {
    char kb[KEY_MAX], ib[KEY_MAX];
    json_t *v = get_present(obj, name);
    size_t i;
    json_t *item;

    if (!v) {
        return;
    }
    key_join(kb, prefix, name);
    if (!json_is_array(v)) {
        problem(p, -EINVAL, kb, "must be a list of strings");
        return;
    }
    out->v = calloc(json_array_size(v) + 1, sizeof(char *));
    if (!out->v) {
        oom(p);
        return;
    }
    json_array_foreach(v, i, item) {
        if (!json_is_string(item)) {
            problem(p, -EINVAL, key_index(ib, kb, i), "must be a string");
            continue;
        }
        const char *s = json_string_value(item);
        if (valid && !valid(s)) {
            problem(p, -EINVAL, key_index(ib, kb, i), "'%.64s' is not %s", s, what);
            continue;
        }
        if (!(out->v[out->n] = xstrdup(p, s))) {
            return;
        }
        out->n++;
    }
}

/* An object or nothing; reports anything else. */
static json_t *get_object(Parser *p, json_t *obj, const char *prefix, const char *name) {
    char kb[KEY_MAX];
    json_t *v = get_present(obj, name);
    if (v && !json_is_object(v)) {
        problem(p, -EINVAL, key_join(kb, prefix, name), "must be an attribute set (object)");
        return NULL;
    }
    return v;
}

/* "vmm": "crosvm" or "qemu" (validated and stored; only crosvm runs yet). */
static void get_vmm(Parser *p, json_t *obj, ConfigVmm *out) {
    _cleanup_free_ char *s = NULL;
    get_string(p, obj, NULL, "vmm", vmm_valid, "a VMM (crosvm or qemu)", &s);
    if (s) {
        *out = streq(s, "qemu") ? CONFIG_VMM_QEMU : CONFIG_VMM_CROSVM;
    }
}

/* ---- free-form attribute sets ------------------------------------------------------------ */

/* Pairs keep the order of the file: jansson iterates objects in insertion
 * order (always, since 2.8). builtins.toJSON writes attribute sets sorted
 * by name, which crosvm does not mind. */

static void kv_list_done(ConfigKvList *l) {
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].key);
        free(l->v[i].value);
    }
    free(l->v);
    *l = (ConfigKvList){0};
}

static void device_done(ConfigDevice *d) {
    free(d->path);
    free(d->tag);
    kv_list_done(&d->opts);
}

static void device_list_done(ConfigDeviceList *l) {
    for (size_t i = 0; i < l->n; i++) {
        device_done(&l->v[i]);
    }
    free(l->v);
    *l = (ConfigDeviceList){0};
}

/* Renders a scalar as crosvm's key=value syntax wants it. NULL (and a
 * problem) for anything else. `forbid` lists characters that would split
 * the option (the separators of its syntax). */
static char *render_value(Parser *p, const char *key, json_t *v, const char *forbid) {
    char buf[32];
    const char *s;
    if (json_is_string(v)) {
        s = json_string_value(v);
    } else if (json_is_boolean(v)) {
        s = json_is_true(v) ? "true" : "false";
    } else if (json_is_integer(v)) {
        snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        s = buf;
    } else {
        problem(p, -EINVAL, key, "must be a string, an integer or a boolean");
        return NULL;
    }
    if (has_control(s)) {
        problem(p, -EINVAL, key, "holds a control character");
        return NULL;
    }
    if (strpbrk(s, forbid)) {
        problem(p, -EINVAL, key, "'%.64s' holds '%c', which would split the option", s,
                *strpbrk(s, forbid));
        return NULL;
    }
    return xstrdup(p, s);
}

static void kv_add(Parser *p, ConfigKvList *l, size_t cap, const char *key, char *value) {
    if (!value) {
        return;
    }
    if (l->n >= cap) { /* cannot happen: cap is the object's size */
        free(value);
        return;
    }
    l->v[l->n].key = xstrdup(p, key);
    if (!l->v[l->n].key) {
        free(value);
        return;
    }
    l->v[l->n++].value = value;
}

typedef enum DeviceKind {
    DEVICE_DISK,
    DEVICE_ROOT_DISK,
    DEVICE_SHARED_DIR,
    DEVICE_PCI,
    DEVICE_VHOST_USER,
} DeviceKind;

/* Fills `d` from one item. `key` names it ("additionalDisks[0]"). */
static void parse_device(Parser *p, json_t *item, const char *key, DeviceKind kind,
                         ConfigDevice *d) {
    /* crosvm splits --shared-dir at ':', everything else at ','. */
    const char *forbid = kind == DEVICE_SHARED_DIR ? ":" : ",";
    char kb[KEY_MAX];
    const char *k;
    json_t *v;

    if (!json_is_object(item)) {
        problem(p, -EINVAL, key, "must be an attribute set (object)");
        return;
    }
    d->opts.v = calloc(json_object_size(item) + 1, sizeof(ConfigKv));
    if (!d->opts.v) {
        oom(p);
        return;
    }
    json_object_foreach(item, k, v) {
        key_join(kb, key, k);
        if (json_is_null(v)) {
            continue;
        }
        if (kind != DEVICE_VHOST_USER && streq(k, "path")) {
            if (!json_is_string(v)) {
                problem(p, -EINVAL, kb, "must be a string");
            } else if (kind == DEVICE_PCI) {
                char bdf[13];
                if (!config_pci_canonical(json_string_value(v), bdf)) {
                    problem(p, -EINVAL, kb,
                            "'%.64s' is not a PCI address (BB:DD.F or DDDD:BB:DD.F)",
                            json_string_value(v));
                } else {
                    d->path = xstrdup(p, bdf);
                }
            } else if (!path_valid(json_string_value(v))) {
                problem(p, -EINVAL, kb, "'%.64s' is not an absolute path", json_string_value(v));
            } else {
                d->path = render_value(p, kb, v, forbid);
            }
            continue;
        }
        if (kind == DEVICE_SHARED_DIR && streq(k, "tag")) {
            if (!json_is_string(v) || !*json_string_value(v)) {
                problem(p, -EINVAL, kb, "must be a non-empty string");
            } else {
                d->tag = render_value(p, kb, v, forbid);
            }
            continue;
        }
        if (kind == DEVICE_DISK && streq(k, "root")) {
            /* crosvm takes one root block device: the rootDisk. */
            problem(p, -EINVAL, kb, "only rootDisk is the root device");
            continue;
        }
        if (kind == DEVICE_ROOT_DISK && (streq(k, "ro") || streq(k, "root"))) {
            problem(p, -EINVAL, kb, "%s",
                    streq(k, "ro") ? "set by rootDiskReadonly, not here"
                                   : "always set for the root disk, not here");
            continue;
        }
        if (!opt_key_valid(k)) {
            problem(p, -EINVAL, kb, "not a valid option name ([A-Za-z0-9_-])");
            continue;
        }
        kv_add(p, &d->opts, json_object_size(item), k, render_value(p, kb, v, forbid));
    }
    if (kind != DEVICE_VHOST_USER && !get_present(item, "path")) {
        problem(p, -EINVAL, key_join(kb, key, "path"), "missing (%s)",
                kind == DEVICE_PCI ? "a PCI address such as 01:00.0" : "an absolute path");
    }
    if (kind == DEVICE_SHARED_DIR && !get_present(item, "tag")) {
        problem(p, -EINVAL, key_join(kb, key, "tag"), "missing (the tag the guest mounts)");
    }
    if (kind == DEVICE_VHOST_USER) {
        static const char *const required[] = {"type", "socket"};
        for (size_t i = 0; i < ELEMENTSOF(required); i++) {
            if (!get_present(item, required[i])) {
                problem(p, -EINVAL, key_join(kb, key, required[i]), "missing");
            }
        }
    }
}

static void get_devices(Parser *p, json_t *obj, const char *name, DeviceKind kind,
                        ConfigDeviceList *out) {
    char ib[KEY_MAX];
    json_t *v = get_present(obj, name);
    size_t i;
    json_t *item;

    if (!v) {
        return;
    }
    if (!json_is_array(v)) {
        problem(p, -EINVAL, name, "must be a list of attribute sets");
        return;
    }
    out->v = calloc(json_array_size(v) + 1, sizeof(ConfigDevice));
    if (!out->v) {
        oom(p);
        return;
    }
    json_array_foreach(v, i, item) {
        parse_device(p, item, key_index(ib, name, i), kind, &out->v[out->n++]);
    }
}

/* gpu, sound: a boolean or an attribute set of crosvm options. */
static void get_feature(Parser *p, json_t *obj, const char *name, ConfigFeature *out) {
    json_t *v = get_present(obj, name);
    char kb[KEY_MAX];
    const char *k;
    json_t *val;

    if (!v) {
        return;
    }
    if (json_is_boolean(v)) {
        out->mode = json_is_true(v) ? CONFIG_FEATURE_DEFAULT : CONFIG_FEATURE_OFF;
        return;
    }
    if (!json_is_object(v)) {
        problem(p, -EINVAL, name, "must be true, false or an attribute set (object)");
        return;
    }
    if (json_object_size(v) == 0) {
        problem(p, -EINVAL, name, "an empty attribute set: use true for the default");
        return;
    }
    out->mode = CONFIG_FEATURE_CUSTOM;
    out->opts.v = calloc(json_object_size(v) + 1, sizeof(ConfigKv));
    if (!out->opts.v) {
        oom(p);
        return;
    }
    json_object_foreach(v, k, val) {
        key_join(kb, name, k);
        if (json_is_null(val)) {
            continue;
        }
        if (!opt_key_valid(k)) {
            problem(p, -EINVAL, kb, "not a valid option name ([A-Za-z0-9_-])");
            continue;
        }
        kv_add(p, &out->opts, json_object_size(v), k, render_value(p, kb, val, ","));
    }
}

/* ---- files --------------------------------------------------------------------------------- */

/* Parses a file that must hold one JSON object. */
static int load_object(Parser *p, json_t **ret) {
    json_error_t jerr;
    _cleanup_(json_decrefp) json_t *root = NULL;
    FILE *f = fopen(p->path, "re");

    if (!f) {
        int r = -errno;
        return problem(p, r, NULL, "cannot open: %s", strerror(-r));
    }
    root = json_loadf(f, JSON_REJECT_DUPLICATES, &jerr);
    fclose(f);
    if (!root) {
        /* "path:line:col: ..." like a compiler, for editors. */
        char where[64];
        snprintf(where, sizeof(where), "%d:%d", jerr.line, jerr.column);
        return problem(p, -EINVAL, NULL, "%s: invalid JSON: %s", where, jerr.text);
    }
    if (!json_is_object(root)) {
        return problem(p, -EINVAL, NULL, "must hold a JSON object");
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

const char *config_switch_dir(void) {
    const char *e = getenv("QUBES_LITE_SWITCH_DIR");
    return (e && *e) ? e : CONFIG_DEFAULT_SWITCH_DIR;
}

void host_config_free(HostConfig *c) {
    if (!c) {
        return;
    }
    free(c->path);
    free(c->user);
    free(c->network);
    free(c->nat_interface);
    free(c->crosvm_log_level);
    strv_done(&c->crosvm_extra_args);
    strv_done(&c->crosvm_extra_run_args);
    free(c->switch_log_level);
    strv_done(&c->switch_extra_args);
    strv_done(&c->isolated_pci_devices);
    strv_done(&c->qemu_extra_args);
    free(c);
}

void vm_config_free(VmConfig *c) {
    if (!c) {
        return;
    }
    free(c->path);
    free(c->name);
    device_list_done(&c->additional_disks);
    if (c->root_disk) {
        device_done(c->root_disk);
        free(c->root_disk);
    }
    free(c->kernel);
    free(c->initramfs);
    strv_done(&c->kernel_params);
    kv_list_done(&c->gpu.opts);
    kv_list_done(&c->sound.opts);
    device_list_done(&c->shared_directories);
    device_list_done(&c->pci_devices);
    device_list_done(&c->vhost_user);
    for (size_t i = 0; i < c->n_vm_networks; i++) {
        free(c->vm_networks[i].network);
        free(c->vm_networks[i].socket);
    }
    free(c->vm_networks);
    free(c->crosvm_log_level);
    strv_done(&c->crosvm_extra_args);
    strv_done(&c->crosvm_extra_run_args);
    strv_done(&c->qemu_extra_args);
    free(c);
}

static int host_defaults(HostConfig *c) {
    uint8_t base[3];
    c->network = strdup(CONFIG_DEFAULT_NETWORK);
    c->nat_interface = strdup("");
    c->crosvm_log_level = strdup(CONFIG_DEFAULT_LOG_LEVEL);
    c->switch_log_level = strdup(CONFIG_DEFAULT_LOG_LEVEL);
    c->enable_bash_integration = true;
    c->vmm = CONFIG_VMM_CROSVM;
    if (!c->network || !c->nat_interface || !c->crosvm_log_level || !c->switch_log_level) {
        return -ENOMEM;
    }
    network_parse(CONFIG_DEFAULT_NETWORK, base);
    memcpy(c->network_base, base, sizeof(base));
    return 0;
}

int config_host_defaults(HostConfig **ret) {
    _cleanup_(host_config_freep) HostConfig *c = calloc(1, sizeof(HostConfig));
    if (!c || !(c->path = strdup("(defaults)")) || host_defaults(c) < 0) {
        return -ENOMEM;
    }
    *ret = TAKE_PTR(c);
    return 0;
}

static void resolve_user(Parser *p, const char *name, HostConfig *c) {
    struct passwd pw, *found = NULL;
    char buf[4096];
    int e = getpwnam_r(name, &pw, buf, sizeof(buf), &found);

    if (e != 0) {
        problem(p, -e, "user", "cannot look up user '%s': %s", name, strerror(e));
    } else if (!found) {
        problem(p, -ESRCH, "user", "no such user '%s'", name);
    } else {
        c->user_uid = pw.pw_uid;
        c->user_gid = pw.pw_gid;
    }
}

static bool pci_valid(const char *s) {
    char buf[13];
    return config_pci_canonical(s, buf);
}

static void parse_host(Parser *p, json_t *root, HostConfig *c) {
    static const char *const top[] = {"user",   "hostNetworking", "enableBashIntegration",
                                      "crosvm", "vm-switch",      "isolatedPciDevices",
                                      "vmm",    "qemu",           NULL};
    static const char *const hn_keys[] = {"network", "nat", NULL};
    static const char *const nat_keys[] = {"enable", "interface", NULL};
    static const char *const crosvm_keys[] = {"logLevel", "extraArgs", "extraRunArgs", NULL};
    static const char *const switch_keys[] = {"logLevel", "extraArgs", NULL};
    static const char *const qemu_keys[] = {"extraArgs", NULL};
    json_t *o;

    check_keys(p, root, NULL, top);

    get_string(p, root, NULL, "user", user_name_valid, "a valid user name", &c->user);
    if (c->user) {
        resolve_user(p, c->user, c);
    }

    if ((o = get_object(p, root, NULL, "hostNetworking"))) {
        check_keys(p, o, "hostNetworking", hn_keys);
        get_string(p, o, "hostNetworking", "network", NULL, NULL, &c->network);
        json_t *nat = get_object(p, o, "hostNetworking", "nat");
        if (nat) {
            check_keys(p, nat, "hostNetworking.nat", nat_keys);
            get_bool(p, nat, "hostNetworking.nat", "enable", &c->nat_enable);
            json_t *ifv = get_present(nat, "interface");
            if (ifv && json_is_string(ifv) && !*json_string_value(ifv)) {
                /* "" is the option's default: no interface. */
            } else {
                get_string(p, nat, "hostNetworking.nat", "interface", ifname_valid,
                           "a network interface name", &c->nat_interface);
            }
        }
    }
    if (!network_parse(c->network, c->network_base)) {
        problem(p, -EINVAL, "hostNetworking.network",
                "'%.64s' is not an IPv4 /24 network such as " CONFIG_DEFAULT_NETWORK, c->network);
    }
    if (c->nat_enable && !*c->nat_interface) {
        problem(p, -EINVAL, "hostNetworking.nat.interface",
                "missing (required when hostNetworking.nat.enable is true)");
    }

    get_bool(p, root, NULL, "enableBashIntegration", &c->enable_bash_integration);

    if ((o = get_object(p, root, NULL, "crosvm"))) {
        check_keys(p, o, "crosvm", crosvm_keys);
        get_string(p, o, "crosvm", "logLevel", log_level_valid,
                   "a log level (error, warn, info, debug, trace)", &c->crosvm_log_level);
        get_strv(p, o, "crosvm", "extraArgs", NULL, NULL, &c->crosvm_extra_args);
        get_strv(p, o, "crosvm", "extraRunArgs", NULL, NULL, &c->crosvm_extra_run_args);
    }
    if ((o = get_object(p, root, NULL, "vm-switch"))) {
        check_keys(p, o, "vm-switch", switch_keys);
        get_string(p, o, "vm-switch", "logLevel", log_level_valid,
                   "a log level (error, warn, info, debug, trace)", &c->switch_log_level);
        get_strv(p, o, "vm-switch", "extraArgs", NULL, NULL, &c->switch_extra_args);
    }
    get_vmm(p, root, &c->vmm);
    if ((o = get_object(p, root, NULL, "qemu"))) {
        check_keys(p, o, "qemu", qemu_keys);
        get_strv(p, o, "qemu", "extraArgs", NULL, NULL, &c->qemu_extra_args);
    }

    get_strv(p, root, NULL, "isolatedPciDevices", pci_valid,
             "a PCI address (BB:DD.F or DDDD:BB:DD.F)", &c->isolated_pci_devices);
    for (size_t i = 0; i < c->isolated_pci_devices.n; i++) {
        char bdf[13];
        config_pci_canonical(c->isolated_pci_devices.v[i], bdf);
        char *d = xstrdup(p, bdf);
        if (d) {
            free(c->isolated_pci_devices.v[i]);
            c->isolated_pci_devices.v[i] = d;
        }
    }
}

static int load_host(const char *dir, FILE *report, HostConfig **ret, ErrorText *err,
                     unsigned *ret_problems) {
    _cleanup_free_ char *path = path_join(dir, "host.json", NULL);
    _cleanup_(json_decrefp) json_t *root = NULL;
    _cleanup_(host_config_freep) HostConfig *c = NULL;
    Parser p = {.err = err, .report = report};
    int r;

    *ret_problems = 0;
    if (!path) {
        return -ENOMEM;
    }
    p.path = path;
    /* A missing host.json is the caller's call, not a reported problem. */
    ErrorText local;
    if (!p.err) {
        p.err = &local;
    }
    p.report = NULL;
    r = load_object(&p, &root);
    p.report = report;
    if (r == -ENOENT) {
        return r;
    }
    if (r < 0) {
        if (report) {
            fprintf(report, "%s\n", p.err->message);
        }
        *ret_problems = p.problems;
        return r;
    }
    c = calloc(1, sizeof(*c));
    if (!c || !(c->path = strdup(path)) || host_defaults(c) < 0) {
        return problem(&p, -ENOMEM, NULL, "out of memory");
    }
    parse_host(&p, root, c);
    *ret_problems = p.problems;
    if (p.problems) {
        return p.first_r;
    }
    *ret = TAKE_PTR(c);
    return 0;
}

int config_load_host(const char *dir, HostConfig **ret, ErrorText *err) {
    unsigned n;
    return load_host(dir, NULL, ret, err, &n);
}

static void parse_vm_networks(Parser *p, json_t *root, VmConfig *c) {
    static const char *const net_keys[] = {"router", "macAddress", NULL};
    json_t *o = get_object(p, root, NULL, "vmNetwork");
    char kb[KEY_MAX];
    const char *net;
    json_t *v;

    if (!o) {
        return;
    }
    c->vm_networks = calloc(json_object_size(o) + 1, sizeof(ConfigVmNet));
    if (!c->vm_networks) {
        oom(p);
        return;
    }
    json_object_foreach(o, net, v) {
        key_join(kb, "vmNetwork", net);
        if (!net_name_valid(net)) {
            problem(p, -EINVAL, kb,
                    "'%.64s' is not a valid network name ([a-z][a-z0-9-], at most %u)", net,
                    CONFIG_NET_NAME_MAX);
            continue;
        }
        if (!json_is_null(v) && !json_is_object(v)) {
            problem(p, -EINVAL, kb, "must be an attribute set (object)");
            continue;
        }
        ConfigVmNet *n = &c->vm_networks[c->n_vm_networks++];
        if (!(n->network = xstrdup(p, net))) {
            return;
        }
        if (json_is_object(v)) {
            check_keys(p, v, kb, net_keys);
            get_bool(p, v, kb, "router", &n->router);
            _cleanup_free_ char *mac = NULL;
            get_string(p, v, kb, "macAddress", NULL, NULL, &mac);
            if (mac) {
                char mk[KEY_MAX];
                if (vm_mac_parse(mac, n->mac) < 0) {
                    problem(p, -EINVAL, key_join(mk, kb, "macAddress"),
                            "'%.64s' is not a VM's MAC address (52:ab:cd:ef:12:34: unicast, "
                            "not all zero)",
                            mac);
                } else {
                    n->mac_given = true;
                }
            }
        }
        if (!n->mac_given) {
            mac_derive(net, c->name, n->mac);
        }
        if (asprintf(&n->socket, "%s/%s/%s.sock", config_switch_dir(), net, c->name) < 0) {
            n->socket = NULL;
            oom(p);
            return;
        }
    }
}

static void parse_vm(Parser *p, json_t *root, const char *name, VmConfig *c) {
    static const char *const top[] = {"id",
                                      "name",
                                      "memory",
                                      "cpus",
                                      "hostNetworking",
                                      "disposable",
                                      "idleTimeout",
                                      "additionalDisks",
                                      "rootDisk",
                                      "kernel",
                                      "initramfs",
                                      "rootDiskReadonly",
                                      "kernelParams",
                                      "gpu",
                                      "sound",
                                      "sharedDirectories",
                                      "pciDevices",
                                      "vmNetwork",
                                      "vhostUser",
                                      "crosvm",
                                      "vmm",
                                      "qemu",
                                      NULL};
    static const char *const crosvm_keys[] = {"logLevel", "extraArgs", "extraRunArgs", NULL};
    static const char *const qemu_keys[] = {"extraArgs", NULL};
    json_t *o;

    check_keys(p, root, NULL, top);

    json_t *id = json_object_get(root, "id");
    if (!id || json_is_null(id)) {
        problem(p, -EINVAL, "id", "missing (an odd number from %u to %u)", CONFIG_VM_ID_MIN,
                CONFIG_VM_ID_MAX);
    } else if (!json_is_integer(id)) {
        problem(p, -EINVAL, "id", "must be an integer");
    } else {
        json_int_t v = json_integer_value(id);
        if (v < CONFIG_VM_ID_MIN || v > CONFIG_VM_ID_MAX || v % 2 == 0) {
            problem(p, -EINVAL, "id", "must be odd and from %u to %u, not %" JSON_INTEGER_FORMAT,
                    CONFIG_VM_ID_MIN, CONFIG_VM_ID_MAX, v);
        } else {
            c->id = (unsigned)v;
        }
    }

    json_t *jname = get_present(root, "name");
    if (jname) {
        if (!json_is_string(jname)) {
            problem(p, -EINVAL, "name", "must be a string");
        } else if (!vm_name_valid(json_string_value(jname))) {
            problem(p, -EINVAL, "name",
                    "'%.64s' is not a valid VM name ([a-z][a-z0-9-], at most %u: the TAP is "
                    "vm-<name>)",
                    json_string_value(jname), VM_NAME_MAX);
        } else if (!streq(json_string_value(jname), name)) {
            problem(p, -EINVAL, "name", "'%s' does not match the file name '%s.json'",
                    json_string_value(jname), name);
        }
    }
    if (!(c->name = xstrdup(p, name))) {
        return;
    }
    snprintf(c->tap_name, sizeof(c->tap_name), "vm-%s", name);

    get_uint(p, root, NULL, "memory", 1, MEMORY_MIB_MAX, &c->memory_mib);
    get_uint(p, root, NULL, "cpus", 1, CPUS_MAX, &c->cpus);
    get_bool(p, root, NULL, "hostNetworking", &c->host_networking);
    get_bool(p, root, NULL, "disposable", &c->disposable);
    get_uint(p, root, NULL, "idleTimeout", 1, IDLE_TIMEOUT_MAX, &c->idle_timeout);

    get_devices(p, root, "additionalDisks", DEVICE_DISK, &c->additional_disks);
    json_t *rd = get_present(root, "rootDisk");
    if (rd) {
        c->root_disk = calloc(1, sizeof(ConfigDevice));
        if (!c->root_disk) {
            oom(p);
            return;
        }
        if (json_is_string(rd)) {
            /* A plain path is accepted as {path = ...;}. */
            if (!path_valid(json_string_value(rd))) {
                problem(p, -EINVAL, "rootDisk", "'%.64s' is not an absolute path",
                        json_string_value(rd));
            } else {
                c->root_disk->path = render_value(p, "rootDisk", rd, ",");
            }
        } else {
            parse_device(p, rd, "rootDisk", DEVICE_ROOT_DISK, c->root_disk);
        }
    }
    get_string(p, root, NULL, "kernel", path_valid, "an absolute path", &c->kernel);
    get_string(p, root, NULL, "initramfs", path_valid, "an absolute path", &c->initramfs);
    get_bool(p, root, NULL, "rootDiskReadonly", &c->root_disk_readonly);
    get_strv(p, root, NULL, "kernelParams", NULL, NULL, &c->kernel_params);
    get_feature(p, root, "gpu", &c->gpu);
    get_feature(p, root, "sound", &c->sound);
    get_devices(p, root, "sharedDirectories", DEVICE_SHARED_DIR, &c->shared_directories);
    get_devices(p, root, "pciDevices", DEVICE_PCI, &c->pci_devices);
    parse_vm_networks(p, root, c);
    get_devices(p, root, "vhostUser", DEVICE_VHOST_USER, &c->vhost_user);

    if ((o = get_object(p, root, NULL, "crosvm"))) {
        check_keys(p, o, "crosvm", crosvm_keys);
        get_string(p, o, "crosvm", "logLevel", log_level_valid,
                   "a log level (error, warn, info, debug, trace)", &c->crosvm_log_level);
        get_strv(p, o, "crosvm", "extraArgs", NULL, NULL, &c->crosvm_extra_args);
        get_strv(p, o, "crosvm", "extraRunArgs", NULL, NULL, &c->crosvm_extra_run_args);
    }
    get_vmm(p, root, &c->vmm);
    if ((o = get_object(p, root, NULL, "qemu"))) {
        check_keys(p, o, "qemu", qemu_keys);
        get_strv(p, o, "qemu", "extraArgs", NULL, NULL, &c->qemu_extra_args);
    }
}

static int load_vm(const char *dir, const char *name, FILE *report, VmConfig **ret,
                   ErrorText *err, unsigned *ret_problems) {
    _cleanup_free_ char *vms = path_join(dir, "vms", NULL);
    _cleanup_free_ char *path = NULL;
    _cleanup_(json_decrefp) json_t *root = NULL;
    _cleanup_(vm_config_freep) VmConfig *c = NULL;
    Parser p = {.err = err, .report = report};
    int r;

    *ret_problems = 0;
    if (!vms || !(path = path_join(vms, name, ".json"))) {
        return -ENOMEM;
    }
    p.path = path;
    if (!vm_name_valid(name)) {
        /* The name comes from the caller (a command line): say so plainly. */
        p.path = name;
        r = problem(&p, -EINVAL, NULL,
                    "not a valid VM name ([a-z][a-z0-9-], at most %u: the TAP is vm-<name>)",
                    VM_NAME_MAX);
        *ret_problems = p.problems;
        return r;
    }
    r = load_object(&p, &root);
    if (r < 0) {
        *ret_problems = p.problems;
        return r;
    }
    c = calloc(1, sizeof(*c));
    if (!c || !(c->path = strdup(path))) {
        return problem(&p, -ENOMEM, NULL, "out of memory");
    }
    c->memory_mib = CONFIG_DEFAULT_MEMORY_MIB;
    c->cpus = CONFIG_DEFAULT_CPUS;
    c->idle_timeout = CONFIG_DEFAULT_IDLE_TIMEOUT;
    c->root_disk_readonly = true;
    c->gpu.mode = CONFIG_FEATURE_DEFAULT;
    c->sound.mode = CONFIG_FEATURE_OFF;
    parse_vm(&p, root, name, c);
    *ret_problems = p.problems;
    if (p.problems) {
        return p.first_r;
    }
    *ret = TAKE_PTR(c);
    return 0;
}

int config_load_vm(const char *dir, const char *name, VmConfig **ret, ErrorText *err) {
    unsigned n;
    return load_vm(dir, name, NULL, ret, err, &n);
}

/* ---- derived values ----------------------------------------------------------------------- */

void config_vm_addresses(const HostConfig *h, const VmConfig *vm, ConfigAddresses *ret) {
    uint8_t def[3] = {172, 16, 200};
    const uint8_t *b = h ? h->network_base : def;
    snprintf(ret->vm_ip, sizeof(ret->vm_ip), "%u.%u.%u.%u", b[0], b[1], b[2], vm->id);
    snprintf(ret->host_ip, sizeof(ret->host_ip), "%u.%u.%u.%u", b[0], b[1], b[2], vm->id - 1);
    ret->prefix = 31;
}

static const char *kv_get(const ConfigKvList *l, const char *key) {
    for (size_t i = 0; i < l->n; i++) {
        if (streq(l->v[i].key, key)) {
            return l->v[i].value;
        }
    }
    return NULL;
}

int config_vm_vhost_user(const VmConfig *vm, ConfigDevice **ret, size_t *ret_n) {
    size_t n = 0, cap = vm->n_vm_networks + vm->vhost_user.n;
    ConfigDevice *v = calloc(cap + 1, sizeof(ConfigDevice));
    if (!v) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < vm->n_vm_networks; i++) {
        v[n++] = (ConfigDevice){.path = vm->vm_networks[i].socket};
    }
    for (size_t i = 0; i < vm->vhost_user.n; i++) {
        const char *sock = kv_get(&vm->vhost_user.v[i].opts, "socket");
        bool dup = false;
        for (size_t j = 0; j < vm->n_vm_networks; j++) {
            if (sock && streq(sock, vm->vm_networks[j].socket)) {
                dup = true;
            }
        }
        if (!dup) {
            v[n++] = vm->vhost_user.v[i];
        }
    }
    *ret = v;
    *ret_n = n;
    return 0;
}

/* ---- all files at once -------------------------------------------------------------------- */

static int json_filter(const struct dirent *d) {
    size_t n = strlen(d->d_name);
    return d->d_name[0] != '.' && n > 5 && streq(d->d_name + n - 5, ".json");
}

int config_check_all(const char *dir, FILE *errors) {
    _cleanup_free_ char *vms_dir = path_join(dir, "vms", NULL);
    _cleanup_(host_config_freep) HostConfig *host = NULL;
    struct dirent **ents = NULL;
    VmConfig **vms = NULL;
    unsigned total = 0, n_problems = 0;
    ErrorText err;
    int n, r;

    if (!vms_dir) {
        return -ENOMEM;
    }
    r = load_host(dir, errors, &host, &err, &n_problems);
    total += n_problems;
    if (r == -ENOMEM) {
        return r;
    }
    n = scandir(vms_dir, &ents, json_filter, alphasort);
    if (n < 0) {
        int e = -errno;
        if (e != -ENOENT) {
            return e;
        }
        n = 0;
    }
    vms = calloc((size_t)n + 1, sizeof(VmConfig *));
    if (!vms) {
        for (int i = 0; i < n; i++) {
            free(ents[i]);
        }
        free(ents);
        return -ENOMEM;
    }
    for (int i = 0; i < n; i++) {
        char name[256];
        size_t len = strlen(ents[i]->d_name) - 5;
        snprintf(name, sizeof(name), "%.*s", (int)len, ents[i]->d_name);
        if (!vm_name_valid(name)) {
            if (errors) {
                fprintf(errors,
                        "%s/%s: the file name is not a valid VM name ([a-z][a-z0-9-], at most "
                        "%u) followed by .json\n",
                        vms_dir, ents[i]->d_name, VM_NAME_MAX);
            }
            total++;
            continue;
        }
        r = load_vm(dir, name, errors, &vms[i], &err, &n_problems);
        total += n_problems;
        if (r == -ENOMEM) {
            break;
        }
    }

    /* What only the whole set can show. */
    for (int i = 0; i < n; i++) {
        VmConfig *a = vms[i];
        if (!a) {
            continue;
        }
        if (!a->kernel) {
            if (errors) {
                fprintf(errors, "%s: key 'kernel': missing (required to start the VM)\n", a->path);
            }
            total++;
        }
        for (int j = 0; j < i; j++) {
            VmConfig *b = vms[j];
            if (!b) {
                continue;
            }
            if (a->id == b->id) {
                if (errors) {
                    fprintf(errors, "%s: key 'id': %u is already the id of VM '%s' (%s)\n", a->path,
                            a->id, b->name, b->path);
                }
                total++;
            }
            for (size_t x = 0; x < a->pci_devices.n; x++) {
                for (size_t y = 0; y < b->pci_devices.n; y++) {
                    if (streq(a->pci_devices.v[x].path, b->pci_devices.v[y].path)) {
                        if (errors) {
                            fprintf(errors,
                                    "%s: key 'pciDevices[%zu].path': %s is already given to VM "
                                    "'%s'\n",
                                    a->path, x, a->pci_devices.v[x].path, b->name);
                        }
                        total++;
                    }
                }
            }
            for (size_t x = 0; x < a->n_vm_networks; x++) {
                for (size_t y = 0; y < b->n_vm_networks; y++) {
                    const ConfigVmNet *na = &a->vm_networks[x], *nb = &b->vm_networks[y];
                    if (!streq(na->network, nb->network) || memcmp(na->mac, nb->mac, 6) != 0) {
                        continue;
                    }
                    char mac[18];
                    mac_format(na->mac, mac);
                    if (errors) {
                        fprintf(errors,
                                "%s: key 'vmNetwork.%s.macAddress': %s is already the MAC of VM "
                                "'%s' on that network\n",
                                a->path, na->network, mac, b->name);
                    }
                    total++;
                }
            }
        }
    }
    /* Exactly one router per network: count per network, report at its
     * first member (in file order). */
    for (int i = 0; i < n; i++) {
        if (!vms[i]) {
            continue;
        }
        for (size_t x = 0; x < vms[i]->n_vm_networks; x++) {
            const char *net = vms[i]->vm_networks[x].network;
            bool first = true;
            unsigned routers = 0;
            for (int j = 0; j < n; j++) {
                if (!vms[j]) {
                    continue;
                }
                for (size_t y = 0; y < vms[j]->n_vm_networks; y++) {
                    if (!streq(vms[j]->vm_networks[y].network, net)) {
                        continue;
                    }
                    if (j < i || (j == i && y < x)) {
                        first = false;
                    }
                    routers += vms[j]->vm_networks[y].router;
                }
            }
            if (first && routers != 1) {
                if (errors) {
                    fprintf(errors,
                            "%s: key 'vmNetwork.%s': network '%s' has %u routers; it needs "
                            "exactly one (router = true)\n",
                            vms[i]->path, net, net, routers);
                }
                total++;
            }
        }
    }

    for (int i = 0; i < n; i++) {
        vm_config_free(vms[i]);
        free(ents[i]);
    }
    free(vms);
    free(ents);
    return (int)MIN(total, (unsigned)INT32_MAX);
}
