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
/* hostNetworking.network's default, CONFIG_DEFAULT_NETWORK, as bytes. */
static const uint8_t default_network_base[3] = {172, 16, 200};

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

void config_vm_addresses(const HostConfig *h, const VmConfig *vm, ConfigAddresses *ret) {
    const uint8_t *b = h ? h->network_base : default_network_base;
    snprintf(ret->vm_ip, sizeof(ret->vm_ip), "%u.%u.%u.%u", b[0], b[1], b[2], vm->id);
    snprintf(ret->host_ip, sizeof(ret->host_ip), "%u.%u.%u.%u", b[0], b[1], b[2], vm->id - 1);
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
