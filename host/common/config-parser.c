/* The configuration parsers' shared tools: see config-parser.h. */
#include "config-parser.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- problems and key names ---------------------------------------------------------------- */

int parser_problem(ConfigParser *p, int r, const char *key, const char *fmt, ...) {
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

int parser_oom(ConfigParser *p) {
    return parser_problem(p, -ENOMEM, NULL, "out of memory");
}

char *parser_strdup(ConfigParser *p, const char *s) {
    char *d = strdup(s);
    if (!d) {
        parser_oom(p);
    }
    return d;
}

const char *parser_key(char buf[static CONFIG_KEY_MAX], const char *prefix, const char *name) {
    if (prefix && *prefix) {
        snprintf(buf, CONFIG_KEY_MAX, "%.100s.%.50s", prefix, name);
    } else {
        snprintf(buf, CONFIG_KEY_MAX, "%.150s", name);
    }
    return buf;
}

const char *parser_key_index(char buf[static CONFIG_KEY_MAX], const char *prefix, size_t i) {
    snprintf(buf, CONFIG_KEY_MAX, "%.130s[%zu]", prefix, i);
    return buf;
}

/* ---- the file -------------------------------------------------------------------------------- */

int parser_load_object(ConfigParser *p, json_t **ret) {
    json_error_t jerr;
    _cleanup_(json_decrefp) json_t *root = NULL;
    FILE *f = fopen(p->path, "re");

    if (!f) {
        int r = -errno;
        return parser_problem(p, r, NULL, "cannot open: %s", strerror(-r));
    }
    root = json_loadf(f, JSON_REJECT_DUPLICATES, &jerr);
    fclose(f);
    if (!root) {
        /* "path:line:col: ..." like a compiler, for editors. */
        char where[64];
        snprintf(where, sizeof(where), "%d:%d", jerr.line, jerr.column);
        return parser_problem(p, -EINVAL, NULL, "%s: invalid JSON: %s", where, jerr.text);
    }
    if (!json_is_object(root)) {
        return parser_problem(p, -EINVAL, NULL, "must hold a JSON object");
    }
    *ret = TAKE_PTR(root);
    return 0;
}

/* ---- typed getters: absent or null keeps the default ------------------------------------- */

void parser_check_keys(ConfigParser *p, json_t *obj, const char *prefix,
                       const char *const *allowed) {
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
            char kb[CONFIG_KEY_MAX];
            parser_problem(p, -EINVAL, parser_key(kb, prefix, k), "unknown key");
        }
    }
}

json_t *parser_present(json_t *obj, const char *name) {
    json_t *v = obj ? json_object_get(obj, name) : NULL;
    return v && !json_is_null(v) ? v : NULL;
}

void parser_bool(ConfigParser *p, json_t *obj, const char *prefix, const char *name, bool *out) {
    char kb[CONFIG_KEY_MAX];
    json_t *v = parser_present(obj, name);
    if (!v) {
        return;
    }
    if (!json_is_boolean(v)) {
        parser_problem(p, -EINVAL, parser_key(kb, prefix, name), "must be true or false");
        return;
    }
    *out = json_is_true(v);
}

void parser_uint(ConfigParser *p, json_t *obj, const char *prefix, const char *name, unsigned min,
                 unsigned max, unsigned *out) {
    char kb[CONFIG_KEY_MAX];
    json_t *v = parser_present(obj, name);
    if (!v) {
        return;
    }
    if (!json_is_integer(v)) {
        parser_problem(p, -EINVAL, parser_key(kb, prefix, name), "must be an integer");
        return;
    }
    json_int_t i = json_integer_value(v);
    if (i < (json_int_t)min || i > (json_int_t)max) {
        parser_problem(p, -EINVAL, parser_key(kb, prefix, name),
                       "must be from %u to %u, not %" JSON_INTEGER_FORMAT, min, max, i);
        return;
    }
    *out = (unsigned)i;
}

void parser_string(ConfigParser *p, json_t *obj, const char *prefix, const char *name,
                   bool (*valid)(const char *), const char *what, char **out) {
    char kb[CONFIG_KEY_MAX];
    json_t *v = parser_present(obj, name);
    if (!v) {
        return;
    }
    if (!json_is_string(v)) {
        parser_problem(p, -EINVAL, parser_key(kb, prefix, name), "must be a string");
        return;
    }
    const char *s = json_string_value(v);
    if (valid && !valid(s)) {
        parser_problem(p, -EINVAL, parser_key(kb, prefix, name), "'%.64s' is not %s", s, what);
        return;
    }
    char *d = parser_strdup(p, s);
    if (d) {
        free(*out);
        *out = d;
    }
}

void *parser_list(ConfigParser *p, json_t *obj, const char *prefix, const char *name,
                  const char *what, size_t item_size, json_t **ret_array) {
    char kb[CONFIG_KEY_MAX];
    json_t *v = parser_present(obj, name);
    void *items;

    if (!v) {
        return NULL;
    }
    if (!json_is_array(v)) {
        parser_problem(p, -EINVAL, parser_key(kb, prefix, name), "must be a list of %s", what);
        return NULL;
    }
    items = calloc(json_array_size(v) + 1, item_size);
    if (!items) {
        parser_oom(p);
        return NULL;
    }
    *ret_array = v;
    return items;
}

void parser_strv(ConfigParser *p, json_t *obj, const char *prefix, const char *name,
                 bool (*valid)(const char *), const char *what, ConfigStrv *out) {
    char kb[CONFIG_KEY_MAX], ib[CONFIG_KEY_MAX];
    json_t *v = NULL;
    size_t i;
    json_t *item;

    out->v = parser_list(p, obj, prefix, name, "strings", sizeof(char *), &v);
    if (!out->v) {
        return;
    }
    parser_key(kb, prefix, name);
    json_array_foreach(v, i, item) {
        if (!json_is_string(item)) {
            parser_problem(p, -EINVAL, parser_key_index(ib, kb, i), "must be a string");
            continue;
        }
        const char *s = json_string_value(item);
        if (valid && !valid(s)) {
            parser_problem(p, -EINVAL, parser_key_index(ib, kb, i), "'%.64s' is not %s", s, what);
            continue;
        }
        if (!(out->v[out->n] = parser_strdup(p, s))) {
            return;
        }
        out->n++;
    }
}

json_t *parser_object(ConfigParser *p, json_t *obj, const char *prefix, const char *name) {
    char kb[CONFIG_KEY_MAX];
    json_t *v = parser_present(obj, name);
    if (v && !json_is_object(v)) {
        parser_problem(p, -EINVAL, parser_key(kb, prefix, name),
                       "must be an attribute set (object)");
        return NULL;
    }
    return v;
}

/* ---- small value checks -------------------------------------------------------------------- */

bool config_log_level_valid(const char *s) {
    static const char *const levels[] = {"error", "warn", "info", "debug", "trace"};
    for (size_t i = 0; i < ELEMENTSOF(levels); i++) {
        if (streq(s, levels[i])) {
            return true;
        }
    }
    return false;
}

bool config_ifname_valid(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > CONFIG_IFNAME_MAX || streq(s, ".") || streq(s, "..")) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '/' || s[i] == ':' || s[i] <= ' ' || s[i] == 0x7f) {
            return false;
        }
    }
    return true;
}

/* What crosvm's key=value syntax accepts as a key. */
bool config_opt_key_valid(const char *s) {
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

bool config_has_control(const char *s) {
    for (; *s; s++) {
        if ((unsigned char)*s < ' ' || *s == 0x7f) {
            return true;
        }
    }
    return false;
}

bool config_path_valid(const char *s) {
    return s[0] == '/' && !config_has_control(s);
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

bool config_pci_canonical(const char *s, char buf[static CONFIG_PCI_ADDR_SIZE]) {
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
    snprintf(buf, CONFIG_PCI_ADDR_SIZE, "%04x:%02x:%02x.%x", domain, bus, dev, fn);
    return true;
}

bool config_pci_valid(const char *s) {
    char buf[CONFIG_PCI_ADDR_SIZE];
    return config_pci_canonical(s, buf);
}

bool config_network_parse(const char *s, uint32_t *ret_addr, unsigned *ret_prefix) {
    unsigned a, b, c, d, prefix;
    char tail;
    if (sscanf(s, "%3u.%3u.%3u.%3u/%2u%c", &a, &b, &c, &d, &prefix, &tail) != 5) {
        return false;
    }
    if (a > 255 || b > 255 || c > 255 || d > 255 || prefix < CONFIG_NETWORK_PREFIX_MIN ||
        prefix > CONFIG_NETWORK_PREFIX_MAX) {
        return false;
    }
    /* Reject what sscanf tolerates: signs, spaces, leading zeros. */
    char canon[24];
    snprintf(canon, sizeof(canon), "%u.%u.%u.%u/%u", a, b, c, d, prefix);
    if (!streq(canon, s)) {
        return false;
    }
    uint32_t addr = (uint32_t)a << 24 | (uint32_t)b << 16 | (uint32_t)c << 8 | (uint32_t)d;
    if (addr & ~(UINT32_MAX << (32 - prefix))) {
        return false; /* a host part: an address, not a network */
    }
    *ret_addr = addr;
    *ret_prefix = prefix;
    return true;
}
