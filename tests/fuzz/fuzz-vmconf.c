/* <vm>.conf (proto/vmconf.c) and the rules it leans on (proto/rules.c):
 * whatever the file holds, the parser either accepts a MAC that
 * vm_mac_valid() holds for and a known role, and vm_conf_format() of what
 * it accepted parses back to the same, or it fails with an error naming
 * the file. The input is also tried as a file name, a MAC, a terminal type
 * and a user name. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules.h"
#include "vmconf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ErrorText err = {{0}};
    VmConf c, again;

    int r = vm_conf_parse("fuzz.conf", (const char *)data, size, &c, &err);
    if (r == 0) {
        if (!vm_mac_valid(c.mac)) {
            abort();
        }
        if (c.role != VM_ROLE_CLIENT && c.role != VM_ROLE_ROUTER) {
            abort();
        }
        char text[VM_CONF_TEXT_MAX];
        vm_conf_format(&c, text);
        if (vm_conf_parse("again.conf", text, strlen(text), &again, &err) != 0 ||
            memcmp(&again.mac, &c.mac, 6) != 0 || again.role != c.role) {
            abort();
        }
    } else if (r != -EINVAL || strncmp(err.message, "fuzz.conf", 9) != 0) {
        abort();
    }

    if (size < 64) {
        char s[64], vm[VM_NAME_MAX + 1], shown[MAC_STR_SIZE];
        uint8_t mac[6];
        memcpy(s, data, size);
        s[size] = '\0';
        if (vm_name_from_filename(s, ".conf", vm) == 0 &&
            (strlen(vm) + 5 != strlen(s) || strncmp(vm, s, strlen(vm)) != 0 ||
             !vm_name_valid(vm))) {
            abort();
        }
        /* A MAC accepted is one the formatter writes back in lower case. */
        if (vm_mac_parse(s, mac) == 0 &&
            (!vm_mac_valid(mac) || strcasecmp(mac_format(mac, shown), s) != 0)) {
            abort();
        }
        if (term_name_valid(s) && (strlen(s) > TERM_NAME_MAX || strpbrk(s, "/ =\\\"'$"))) {
            abort();
        }
        if (user_name_valid(s) && (s[0] == '-' || strlen(s) > USER_NAME_MAX || strchr(s, '/'))) {
            abort();
        }
    }
    return 0;
}
