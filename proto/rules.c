/* The facts several programs must agree on (rules.h). */
#include "rules.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

/* n bytes of [a-z][a-z0-9-], at most max of them. */
static bool name_valid_n(const char *s, size_t n, size_t max) {
    if (n == 0 || n > max || s[0] < 'a' || s[0] > 'z') {
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

bool vm_name_valid(const char *s) {
    return s && name_valid_n(s, strlen(s), VM_NAME_MAX);
}

bool net_name_valid(const char *s) {
    return s && name_valid_n(s, strlen(s), NET_NAME_MAX);
}

int vm_name_from_filename(const char *filename, const char *suffix, char ret[VM_NAME_MAX + 1]) {
    size_t n = strlen(filename), sl = strlen(suffix);
    if (n <= sl || !streq(filename + n - sl, suffix) || !name_valid_n(filename, n - sl, VM_NAME_MAX)) {
        return -EINVAL;
    }
    memcpy(ret, filename, n - sl);
    ret[n - sl] = '\0';
    return 0;
}

bool vm_mac_valid(const uint8_t mac[6]) {
    /* A VM's own address: never a group address, never zero. */
    if (mac[0] & 1) {
        return false;
    }
    return (mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5]) != 0;
}

int vm_mac_parse(const char *s, uint8_t ret[6]) {
    uint8_t mac[6];
    if (strlen(s) != MAC_STR_SIZE - 1) {
        return -EINVAL;
    }
    for (int i = 0; i < 6; i++) {
        int hi = unhexchar(s[3 * i]), lo = unhexchar(s[3 * i + 1]);
        if (hi < 0 || lo < 0 || (i < 5 && s[3 * i + 2] != ':')) {
            return -EINVAL;
        }
        mac[i] = (uint8_t)(hi << 4 | lo);
    }
    if (!vm_mac_valid(mac)) {
        return -EINVAL;
    }
    memcpy(ret, mac, 6);
    return 0;
}

char *mac_format(const uint8_t mac[6], char buf[static MAC_STR_SIZE]) {
    snprintf(buf, MAC_STR_SIZE, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3],
             mac[4], mac[5]);
    return buf;
}

/* Whether s is 1 to max bytes of [A-Za-z0-9] and the characters in extra. */
static bool word_valid(const char *s, size_t max, const char *extra) {
    size_t n = strlen(s);
    if (n == 0 || n > max) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr(extra, c))) {
            return false;
        }
    }
    return true;
}

bool user_name_valid(const char *s) {
    return s[0] != '-' && word_valid(s, USER_NAME_MAX, "_.-");
}

bool term_name_valid(const char *s) {
    return word_valid(s, TERM_NAME_MAX, ".+_-");
}
