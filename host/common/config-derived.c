/* Values derived from the configuration rather than written in it: the
 * switch's socket directory, vmNetwork MACs, a VM's host-link addresses,
 * and the vhost-user devices a VM gets. Pure functions of the loaded
 * configuration (and one environment variable). */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The VM's host link is a /31: <base>.<id-1> and <base>.<id>. */
#define HOST_LINK_PREFIX 31u
/* hostNetworking.network's default, CONFIG_DEFAULT_NETWORK. */
#define DEFAULT_NETWORK_ADDR (172u << 24 | 16u << 16 | 200u << 8)
#define DEFAULT_NETWORK_PREFIX 24u

/* The derived MAC's first octet: locally administered, unicast. */
#define DERIVED_MAC_FIRST 0x52
/* 64-bit FNV-1a. */
#define FNV_OFFSET_BASIS 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

const char *config_switch_dir(void) {
    const char *e = getenv("QUBES_LITE_SWITCH_DIR");
    return (e && *e) ? e : CONFIG_DEFAULT_SWITCH_DIR;
}

/* 52:xx:xx:xx:xx:xx, the other five octets the low 40 bits of the 64-bit
 * FNV-1a hash of "<network>/<vm>", most significant first. Stable across
 * releases: MACs are configuration other VMs and the switch rely on. */
void config_mac_derive(const char *network, const char *vm, uint8_t ret[6]) {
    uint64_t h = FNV_OFFSET_BASIS;
    const char *parts[] = {network, "/", vm};
    for (size_t i = 0; i < ELEMENTSOF(parts); i++) {
        for (const char *c = parts[i]; *c; c++) {
            h ^= (unsigned char)*c;
            h *= FNV_PRIME;
        }
    }
    ret[0] = DERIVED_MAC_FIRST;
    for (int i = 1; i < 6; i++) {
        ret[i] = (uint8_t)(h >> (8 * (5 - i)));
    }
}

/* The highest id whose /31 is in the network: its last address. */
static unsigned network_id_max(unsigned prefix) {
    return (unsigned)((UINT64_C(1) << (32 - prefix)) - 1);
}

int config_vm_host_link_check(const HostConfig *h, const VmConfig *vm, ErrorText *err) {
    unsigned prefix = h ? h->network_prefix : DEFAULT_NETWORK_PREFIX;
    if (vm->id <= network_id_max(prefix)) {
        return 0;
    }
    return error_set(err, -ERANGE,
                     "%.200s: key 'id': %u has no /31 in hostNetworking.network %.64s, which "
                     "holds ids up to %u",
                     vm->path, vm->id, h ? h->network : CONFIG_DEFAULT_NETWORK,
                     network_id_max(prefix));
}

static void format_ipv4(char buf[static 16], uint32_t a) {
    snprintf(buf, 16, "%u.%u.%u.%u", a >> 24, (a >> 16) & 0xff, (a >> 8) & 0xff, a & 0xff);
}

void config_vm_addresses(const HostConfig *h, const VmConfig *vm, ConfigAddresses *ret) {
    uint32_t base = h ? h->network_addr : DEFAULT_NETWORK_ADDR;
    format_ipv4(ret->vm_ip, base + vm->id);
    format_ipv4(ret->host_ip, base + vm->id - 1);
    ret->prefix = HOST_LINK_PREFIX;
}

static const char *kv_get(const ConfigKvList *l, const char *key) {
    for (size_t i = 0; i < l->n; i++) {
        if (streq(l->v[i].key, key)) {
            return l->v[i].value;
        }
    }
    return NULL;
}

/* Whether socket is already one of the VM's vmNetwork sockets. */
static bool vm_network_socket(const VmConfig *vm, const char *socket) {
    for (size_t j = 0; socket && j < vm->n_vm_networks; j++) {
        if (streq(socket, vm->vm_networks[j].socket)) {
            return true;
        }
    }
    return false;
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
        if (!vm_network_socket(vm, kv_get(&vm->vhost_user.v[i].opts, "socket"))) {
            v[n++] = vm->vhost_user.v[i];
        }
    }
    *ret = v;
    *ret_n = n;
    return 0;
}
