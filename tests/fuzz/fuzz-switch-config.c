/* <vm>.conf parsing: whatever the file holds, the parser either accepts a
 * unicast, non-zero MAC and a known role (and the same values, written
 * back out, parse to the same thing), or fails with an error naming the
 * file. The input is also tried as a config file name. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "switch/net/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[VM_CONF_ERROR_MAX];
    VmConf c, again;

    int r = vm_conf_parse("fuzz.conf", (const char *)data, size, &c, err, sizeof(err));
    if (r == 0) {
        if ((c.mac[0] & 1) || !(c.mac[0] | c.mac[1] | c.mac[2] | c.mac[3] | c.mac[4] | c.mac[5])) {
            abort();
        }
        if (c.role != VM_ROLE_CLIENT && c.role != VM_ROLE_ROUTER) {
            abort();
        }
        char text[64];
        int n = snprintf(text, sizeof(text), "mac=%02x:%02x:%02x:%02x:%02x:%02x\nrole=%s\n",
                         c.mac[0], c.mac[1], c.mac[2], c.mac[3], c.mac[4], c.mac[5],
                         c.role == VM_ROLE_ROUTER ? "router" : "client");
        if (vm_conf_parse("again.conf", text, (size_t)n, &again, err, sizeof(err)) != 0 ||
            memcmp(&again.mac, &c.mac, 6) != 0 || again.role != c.role) {
            abort();
        }
    } else if (r != -EINVAL || strncmp(err, "fuzz.conf", 9) != 0 || strlen(err) >= sizeof(err)) {
        abort();
    }

    if (size < 64) {
        char name[64], vm[VM_NAME_MAX + 1];
        memcpy(name, data, size);
        name[size] = '\0';
        if (vm_conf_name_from_filename(name, vm) == 0 &&
            (strlen(vm) + 5 != strlen(name) || strncmp(vm, name, strlen(vm)) != 0)) {
            abort();
        }
    }
    return 0;
}
