/* The free-form attribute sets: see config-sets.h. */
#include "config-sets.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* crosvm splits --shared-dir at ':', every other option at ','. */
#define SEPARATORS_SHARED_DIR ":"
#define SEPARATORS_OTHER ","

/* Renders a scalar as crosvm's key=value syntax wants it. NULL (and a
 * problem) for anything else. `forbid` lists characters that would split
 * the option (the separators of its syntax). */
static char *render_value(ConfigParser *p, const char *key, json_t *v, const char *forbid) {
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
        parser_problem(p, -EINVAL, key, "must be a string, an integer or a boolean");
        return NULL;
    }
    if (config_has_control(s)) {
        parser_problem(p, -EINVAL, key, "holds a control character");
        return NULL;
    }
    if (strpbrk(s, forbid)) {
        parser_problem(p, -EINVAL, key, "'%.64s' holds '%c', which would split the option", s,
                       *strpbrk(s, forbid));
        return NULL;
    }
    return parser_strdup(p, s);
}

/* One pair k = v of a set into l (room for cap), named kb in messages:
 * a valid option key and a value that renders. */
static void add_option(ConfigParser *p, ConfigKvList *l, size_t cap, const char *kb, const char *k,
                       json_t *v, const char *forbid) {
    if (!config_opt_key_valid(k)) {
        parser_problem(p, -EINVAL, kb, "not a valid option name ([A-Za-z0-9_-])");
        return;
    }
    char *value = render_value(p, kb, v, forbid);
    if (!value) {
        return;
    }
    if (l->n >= cap) { /* cannot happen: cap is the object's size */
        free(value);
        return;
    }
    l->v[l->n].key = parser_strdup(p, k);
    if (!l->v[l->n].key) {
        free(value);
        return;
    }
    l->v[l->n++].value = value;
}

/* The "path" of a disk, shared directory or PCI device; kb names it. */
static void device_path(ConfigParser *p, json_t *v, const char *kb, ConfigDeviceKind kind,
                        const char *forbid, ConfigDevice *d) {
    if (!json_is_string(v)) {
        parser_problem(p, -EINVAL, kb, "must be a string");
    } else if (kind == CONFIG_DEVICE_PCI) {
        char bdf[CONFIG_PCI_ADDR_SIZE];
        if (!config_pci_canonical(json_string_value(v), bdf)) {
            parser_problem(p, -EINVAL, kb, "'%.64s' is not a PCI address (BB:DD.F or DDDD:BB:DD.F)",
                           json_string_value(v));
        } else {
            d->path = parser_strdup(p, bdf);
        }
    } else if (!config_path_valid(json_string_value(v))) {
        parser_problem(p, -EINVAL, kb, "'%.64s' is not an absolute path", json_string_value(v));
    } else {
        d->path = render_value(p, kb, v, forbid);
    }
}

/* A key the kind gives a meaning of its own, or refuses: true when
 * handled (a problem reported, or the value taken). */
static bool device_special_key(ConfigParser *p, const char *k, json_t *v, const char *kb,
                               ConfigDeviceKind kind, const char *forbid, ConfigDevice *d) {
    if (kind != CONFIG_DEVICE_VHOST_USER && streq(k, "path")) {
        device_path(p, v, kb, kind, forbid, d);
        return true;
    }
    if (kind == CONFIG_DEVICE_SHARED_DIR && streq(k, "tag")) {
        if (!json_is_string(v) || !*json_string_value(v)) {
            parser_problem(p, -EINVAL, kb, "must be a non-empty string");
        } else {
            d->tag = render_value(p, kb, v, forbid);
        }
        return true;
    }
    if (kind == CONFIG_DEVICE_DISK && streq(k, "root")) {
        /* crosvm takes one root block device: the rootDisk. */
        parser_problem(p, -EINVAL, kb, "only rootDisk is the root device");
        return true;
    }
    if (kind == CONFIG_DEVICE_ROOT_DISK && (streq(k, "ro") || streq(k, "root"))) {
        parser_problem(p, -EINVAL, kb, "%s",
                       streq(k, "ro") ? "set by rootDiskReadonly, not here"
                                      : "always set for the root disk, not here");
        return true;
    }
    return false;
}

/* The keys an item of the kind must have. */
static void device_required_keys(ConfigParser *p, json_t *item, const char *key,
                                 ConfigDeviceKind kind) {
    char kb[CONFIG_KEY_MAX];

    if (kind != CONFIG_DEVICE_VHOST_USER && !parser_present(item, "path")) {
        parser_problem(p, -EINVAL, parser_key(kb, key, "path"), "missing (%s)",
                       kind == CONFIG_DEVICE_PCI ? "a PCI address such as 01:00.0"
                                                 : "an absolute path");
    }
    if (kind == CONFIG_DEVICE_SHARED_DIR && !parser_present(item, "tag")) {
        parser_problem(p, -EINVAL, parser_key(kb, key, "tag"),
                       "missing (the tag the guest mounts)");
    }
    if (kind == CONFIG_DEVICE_VHOST_USER) {
        static const char *const required[] = {"type", "socket"};
        for (size_t i = 0; i < ELEMENTSOF(required); i++) {
            if (!parser_present(item, required[i])) {
                parser_problem(p, -EINVAL, parser_key(kb, key, required[i]), "missing");
            }
        }
    }
}

/* Fills `d` from one item. `key` names it ("additionalDisks[0]"). */
static void parse_device(ConfigParser *p, json_t *item, const char *key, ConfigDeviceKind kind,
                         ConfigDevice *d) {
    const char *forbid =
        kind == CONFIG_DEVICE_SHARED_DIR ? SEPARATORS_SHARED_DIR : SEPARATORS_OTHER;
    char kb[CONFIG_KEY_MAX];
    const char *k;
    json_t *v;

    if (!json_is_object(item)) {
        parser_problem(p, -EINVAL, key, "must be an attribute set (object)");
        return;
    }
    d->opts.v = calloc(json_object_size(item) + 1, sizeof(ConfigKv));
    if (!d->opts.v) {
        parser_oom(p);
        return;
    }
    json_object_foreach(item, k, v) {
        parser_key(kb, key, k);
        if (json_is_null(v) || device_special_key(p, k, v, kb, kind, forbid, d)) {
            continue;
        }
        add_option(p, &d->opts, json_object_size(item), kb, k, v, forbid);
    }
    device_required_keys(p, item, key, kind);
}

void sets_devices(ConfigParser *p, json_t *obj, const char *name, ConfigDeviceKind kind,
                  ConfigDeviceList *out) {
    char ib[CONFIG_KEY_MAX];
    json_t *v = NULL;
    size_t i;
    json_t *item;

    out->v = parser_list(p, obj, NULL, name, "attribute sets", sizeof(ConfigDevice), &v);
    if (!out->v) {
        return;
    }
    json_array_foreach(v, i, item) {
        parse_device(p, item, parser_key_index(ib, name, i), kind, &out->v[out->n++]);
    }
}

void sets_root_disk(ConfigParser *p, json_t *obj, ConfigDevice **out) {
    json_t *rd = parser_present(obj, "rootDisk");

    if (!rd) {
        return;
    }
    *out = calloc(1, sizeof(ConfigDevice));
    if (!*out) {
        parser_oom(p);
        return;
    }
    if (!json_is_string(rd)) {
        parse_device(p, rd, "rootDisk", CONFIG_DEVICE_ROOT_DISK, *out);
    } else if (!config_path_valid(json_string_value(rd))) {
        parser_problem(p, -EINVAL, "rootDisk", "'%.64s' is not an absolute path",
                       json_string_value(rd));
    } else {
        (*out)->path = render_value(p, "rootDisk", rd, SEPARATORS_OTHER);
    }
}

void sets_feature(ConfigParser *p, json_t *obj, const char *name, ConfigFeature *out) {
    json_t *v = parser_present(obj, name);
    char kb[CONFIG_KEY_MAX];
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
        parser_problem(p, -EINVAL, name, "must be true, false or an attribute set (object)");
        return;
    }
    if (json_object_size(v) == 0) {
        parser_problem(p, -EINVAL, name, "an empty attribute set: use true for the default");
        return;
    }
    out->mode = CONFIG_FEATURE_CUSTOM;
    out->opts.v = calloc(json_object_size(v) + 1, sizeof(ConfigKv));
    if (!out->opts.v) {
        parser_oom(p);
        return;
    }
    json_object_foreach(v, k, val) {
        parser_key(kb, name, k);
        if (!json_is_null(val)) {
            add_option(p, &out->opts, json_object_size(v), kb, k, val, SEPARATORS_OTHER);
        }
    }
}
