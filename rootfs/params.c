/* The qubes_lite.* kernel parameters: see params.h. */
#include "params.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>

#include "util.h"

#define WORD_MAX 256 /* longer words are reported, not parsed */
#define SHOWN_MAX 64 /* how much of a bad value a report shows */

typedef struct Parser {
    InitParams *p;
    ParamsReport report;
    void *userdata;
    unsigned reported;
} Parser;

_printf_(2, 3) static void reject(Parser *ps, const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    ps->reported++;
    if (ps->report) {
        ps->report(line, ps->userdata);
    }
}

/* A hostname label: letters, digits and hyphens, not at either end. */
static bool valid_name(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > PARAMS_NAME_MAX || s[0] == '-' || s[n - 1] == '-') {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!isalnum((unsigned char)s[i]) && s[i] != '-') {
            return false;
        }
    }
    return true;
}

/* A user name as Debian's adduser takes it: [a-z_][a-z0-9_-]*. */
static bool valid_user(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > PARAMS_USER_MAX || !(islower((unsigned char)s[0]) || s[0] == '_')) {
        return false;
    }
    for (size_t i = 1; i < n; i++) {
        if (!islower((unsigned char)s[i]) && !isdigit((unsigned char)s[i]) && s[i] != '_' &&
            s[i] != '-') {
            return false;
        }
    }
    return true;
}

/* A dotted quad, nothing else (inet_pton refuses the short forms). */
static bool parse_ipv4(const char *s, struct in_addr *ret) {
    struct in_addr a;
    if (inet_pton(AF_INET, s, &a) != 1) {
        return false;
    }
    *ret = a;
    return true;
}

static bool parse_ip_prefix(const char *s, struct in_addr *ret_ip, unsigned *ret_prefix) {
    char addr[INET_ADDRSTRLEN];
    struct in_addr ip;
    unsigned long long prefix;
    const char *slash = strchr(s, '/');
    if (!slash || (size_t)(slash - s) >= sizeof(addr)) {
        return false;
    }
    memcpy(addr, s, (size_t)(slash - s));
    addr[slash - s] = '\0';
    if (!parse_ipv4(addr, &ip) || parse_uint(slash + 1, 1, 32, &prefix) < 0) {
        return false;
    }
    *ret_ip = ip;
    *ret_prefix = (unsigned)prefix;
    return true;
}

static bool parse_mac(const char *s, uint8_t ret[6]) {
    uint8_t mac[6];
    if (strlen(s) != 17) {
        return false;
    }
    for (int i = 0; i < 6; i++) {
        int hi = unhexchar(s[3 * i]), lo = unhexchar(s[3 * i + 1]);
        if (hi < 0 || lo < 0 || (i < 5 && s[3 * i + 2] != ':')) {
            return false;
        }
        mac[i] = (uint8_t)(hi << 4 | lo);
    }
    memcpy(ret, mac, 6);
    return true;
}

static bool parse_dns(const char *s, struct in_addr ret[PARAMS_DNS_MAX], unsigned *ret_n) {
    struct in_addr dns[PARAMS_DNS_MAX];
    char addr[INET_ADDRSTRLEN];
    unsigned n = 0;
    for (const char *p = s;; p++) {
        const char *end = strchrnul(p, ',');
        if (n == PARAMS_DNS_MAX || (size_t)(end - p) >= sizeof(addr)) {
            return false;
        }
        memcpy(addr, p, (size_t)(end - p));
        addr[end - p] = '\0';
        if (!parse_ipv4(addr, &dns[n++])) {
            return false;
        }
        if (*end == '\0') {
            break;
        }
        p = end;
    }
    memcpy(ret, dns, n * sizeof(dns[0]));
    *ret_n = n;
    return true;
}

static void parse_param(Parser *ps, const char *key, const char *value) {
    InitParams *p = ps->p;
    char shown[SHOWN_MAX + 8];
    unsigned long long v;

    str_sanitize(value, strlen(value), shown, sizeof(shown));
    if (streq(key, "name")) {
        if (!valid_name(value)) {
            reject(ps,
                   PARAMS_PREFIX "name=%s: not a host name (letters, digits and '-', "
                                 "at most %d); ignored",
                   shown, PARAMS_NAME_MAX);
            return;
        }
        snprintf(p->name, sizeof(p->name), "%s", value);
    } else if (streq(key, "idle")) {
        if (parse_uint(value, 0, PARAMS_IDLE_MAX, &v) < 0) {
            reject(ps, PARAMS_PREFIX "idle=%s: not a number of seconds (0 to %u); ignored", shown,
                   PARAMS_IDLE_MAX);
            return;
        }
        p->idle_s = (unsigned)v;
    } else if (streq(key, "user")) {
        if (!valid_user(value)) {
            reject(ps,
                   PARAMS_PREFIX "user=%s: not a user name ([a-z_][a-z0-9_-]*, at most %d); "
                                 "ignored",
                   shown, PARAMS_USER_MAX);
            return;
        }
        snprintf(p->user, sizeof(p->user), "%s", value);
    } else if (streq(key, "ip")) {
        if (!parse_ip_prefix(value, &p->ip, &p->prefix)) {
            reject(ps,
                   PARAMS_PREFIX "ip=%s: not an IPv4 address with a prefix length "
                                 "(A.B.C.D/N, N 1 to 32); ignored",
                   shown);
            return;
        }
        p->has_ip = true;
    } else if (streq(key, "gw")) {
        if (!parse_ipv4(value, &p->gw)) {
            reject(ps, PARAMS_PREFIX "gw=%s: not an IPv4 address; ignored", shown);
            return;
        }
        p->has_gw = true;
    } else if (streq(key, "mac")) {
        if (!parse_mac(value, p->mac)) {
            reject(ps, PARAMS_PREFIX "mac=%s: not a MAC address (xx:xx:xx:xx:xx:xx); ignored",
                   shown);
            return;
        }
        p->has_mac = true;
    } else if (streq(key, "dns")) {
        if (!parse_dns(value, p->dns, &p->n_dns)) {
            reject(ps,
                   PARAMS_PREFIX "dns=%s: not a list of at most %d IPv4 addresses "
                                 "(A.B.C.D,...); ignored",
                   shown, PARAMS_DNS_MAX);
            return;
        }
    } else {
        char k[SHOWN_MAX + 8];
        str_sanitize(key, strlen(key), k, sizeof(k));
        reject(ps, PARAMS_PREFIX "%s: unknown parameter; ignored", k);
    }
}

static void parse_word(Parser *ps, const char *word, size_t len, bool truncated) {
    const size_t plen = strlen(PARAMS_PREFIX);
    char shown[SHOWN_MAX + 8];

    if (len < plen || strncmp(word, PARAMS_PREFIX, plen) != 0) {
        return;
    }
    if (truncated) {
        str_sanitize(word, len, shown, sizeof(shown));
        reject(ps, "%s...: longer than %d characters; ignored", shown, WORD_MAX - 1);
        return;
    }
    char *eq = strchr(word, '=');
    if (!eq) {
        str_sanitize(word, len, shown, sizeof(shown));
        reject(ps, "%s: needs a value (%s=VALUE); ignored", shown, shown);
        return;
    }
    *eq = '\0';
    parse_param(ps, word + plen, eq + 1);
}

/* The words the kernel sees: separated by white space, double quotes
 * grouping and dropped. A word's text is copied into a bounded buffer;
 * what does not fit marks it truncated. */
unsigned params_parse(const char *cmdline, InitParams *ret, ParamsReport report, void *userdata) {
    Parser ps = {.p = ret, .report = report, .userdata = userdata};
    char word[WORD_MAX];
    const char *s = cmdline;

    *ret = (InitParams){0};
    while (*s) {
        size_t len = 0;
        bool quoted = false, truncated = false;
        while (isspace((unsigned char)*s)) {
            s++;
        }
        if (!*s) {
            break;
        }
        for (; *s && (quoted || !isspace((unsigned char)*s)); s++) {
            if (*s == '"') {
                quoted = !quoted;
            } else if (len < sizeof(word) - 1) {
                word[len++] = *s;
            } else {
                truncated = true;
            }
        }
        word[len] = '\0';
        parse_word(&ps, word, len, truncated);
    }
    if (ret->has_gw && !ret->has_ip) {
        reject(&ps, PARAMS_PREFIX "gw needs " PARAMS_PREFIX "ip; ignored");
        ret->has_gw = false;
    }
    if (ret->has_gw) {
        uint32_t mask = params_netmask(ret->prefix);
        if ((ret->gw.s_addr & mask) != (ret->ip.s_addr & mask) ||
            ret->gw.s_addr == ret->ip.s_addr) {
            char gw[INET_ADDRSTRLEN], ip[INET_ADDRSTRLEN];
            inet_ntop(AF_INET, &ret->gw, gw, sizeof(gw));
            inet_ntop(AF_INET, &ret->ip, ip, sizeof(ip));
            reject(&ps, PARAMS_PREFIX "gw=%s: not another address of %s/%u's network; ignored", gw,
                   ip, ret->prefix);
            ret->has_gw = false;
        }
    }
    return ps.reported;
}

uint32_t params_netmask(unsigned prefix) {
    return htonl(prefix >= 32 ? 0xffffffffu : ~(0xffffffffu >> prefix));
}
