/* The two kinds of configuration file, host.json and vms/<name>.json:
 * their keys, defaults and loading, and freeing what they load. The
 * parser's tools are config-parser.c's, the free-form attribute sets
 * config-sets.c's, derived values config-derived.c's and the check of all
 * files at once config-check.c's. */
#include "config.h"

#include <errno.h>
#include <jansson.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config-parser.h"
#include "config-sets.h"
#include "rules.h"

/* getpwnam_r()'s buffer: the user's passwd entry. */
#define PASSWD_BUF_SIZE 4096

/* ---- freeing -------------------------------------------------------------------------------- */

static void strv_done(ConfigStrv *s) {
    for (size_t i = 0; i < s->n; i++) {
        free(s->v[i]);
    }
    free(s->v);
    *s = (ConfigStrv){0};
}

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

/* ---- what both files hold -------------------------------------------------------------------- */

/* crosvm = {logLevel; extraArgs; extraRunArgs;}, in host.json and in a
 * VM's file alike. */
static void parse_crosvm(ConfigParser *p, json_t *root, char **log_level, ConfigStrv *extra_args,
                         ConfigStrv *extra_run_args) {
    static const char *const keys[] = {"logLevel", "extraArgs", "extraRunArgs", NULL};
    json_t *o = parser_object(p, root, NULL, "crosvm");

    if (!o) {
        return;
    }
    parser_check_keys(p, o, "crosvm", keys);
    parser_string(p, o, "crosvm", "logLevel", config_log_level_valid, CONFIG_LOG_LEVEL_WHAT,
                  log_level);
    parser_strv(p, o, "crosvm", "extraArgs", NULL, NULL, extra_args);
    parser_strv(p, o, "crosvm", "extraRunArgs", NULL, NULL, extra_run_args);
}

static bool vmm_valid(const char *s) {
    return streq(s, "crosvm") || streq(s, "qemu");
}

/* vmm = "crosvm" | "qemu" and qemu = {extraArgs;}, in host.json and in a
 * VM's file alike (validated and stored; only crosvm runs yet). */
static void parse_vmm(ConfigParser *p, json_t *root, ConfigVmm *vmm, ConfigStrv *qemu_extra_args) {
    static const char *const keys[] = {"extraArgs", NULL};
    _cleanup_free_ char *s = NULL;
    json_t *o;

    parser_string(p, root, NULL, "vmm", vmm_valid, "a VMM (crosvm or qemu)", &s);
    if (s) {
        *vmm = streq(s, "qemu") ? CONFIG_VMM_QEMU : CONFIG_VMM_CROSVM;
    }
    if ((o = parser_object(p, root, NULL, "qemu"))) {
        parser_check_keys(p, o, "qemu", keys);
        parser_strv(p, o, "qemu", "extraArgs", NULL, NULL, qemu_extra_args);
    }
}

/* ---- host.json ------------------------------------------------------------------------------- */

static int host_defaults(HostConfig *c) {
    c->network = strdup(CONFIG_DEFAULT_NETWORK);
    c->nat_interface = strdup("");
    c->crosvm_log_level = strdup(CONFIG_DEFAULT_LOG_LEVEL);
    c->switch_log_level = strdup(CONFIG_DEFAULT_LOG_LEVEL);
    c->enable_bash_integration = true;
    c->vmm = CONFIG_VMM_CROSVM;
    if (!c->network || !c->nat_interface || !c->crosvm_log_level || !c->switch_log_level) {
        return -ENOMEM;
    }
    config_network_parse(CONFIG_DEFAULT_NETWORK, &c->network_addr, &c->network_prefix);
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

static void resolve_user(ConfigParser *p, const char *name, HostConfig *c) {
    struct passwd pw, *found = NULL;
    char buf[PASSWD_BUF_SIZE];
    int e = getpwnam_r(name, &pw, buf, sizeof(buf), &found);

    if (e != 0) {
        parser_problem(p, -e, "user", "cannot look up user '%s': %s", name, strerror(e));
    } else if (!found) {
        parser_problem(p, -ESRCH, "user", "no such user '%s'", name);
    } else {
        c->user_uid = pw.pw_uid;
        c->user_gid = pw.pw_gid;
    }
}

/* hostNetworking = {network; nat = {enable; interface;};}. */
static void parse_host_networking(ConfigParser *p, json_t *root, HostConfig *c) {
    static const char *const hn_keys[] = {"network", "nat", NULL};
    static const char *const nat_keys[] = {"enable", "interface", NULL};
    json_t *o = parser_object(p, root, NULL, "hostNetworking");

    if (o) {
        parser_check_keys(p, o, "hostNetworking", hn_keys);
        parser_string(p, o, "hostNetworking", "network", NULL, NULL, &c->network);
        json_t *nat = parser_object(p, o, "hostNetworking", "nat");
        if (nat) {
            parser_check_keys(p, nat, "hostNetworking.nat", nat_keys);
            parser_bool(p, nat, "hostNetworking.nat", "enable", &c->nat_enable);
            json_t *ifv = parser_present(nat, "interface");
            if (ifv && json_is_string(ifv) && !*json_string_value(ifv)) {
                /* "" is the option's default: no interface. */
            } else {
                parser_string(p, nat, "hostNetworking.nat", "interface", config_ifname_valid,
                              "a network interface name", &c->nat_interface);
            }
        }
    }
    if (!config_network_parse(c->network, &c->network_addr, &c->network_prefix)) {
        parser_problem(p, -EINVAL, "hostNetworking.network",
                       "'%.64s' is not an IPv4 network a.b.c.d/N (N from %u to %u, host part "
                       "0) such as " CONFIG_DEFAULT_NETWORK,
                       c->network, CONFIG_NETWORK_PREFIX_MIN, CONFIG_NETWORK_PREFIX_MAX);
    }
    if (c->nat_enable && !*c->nat_interface) {
        parser_problem(p, -EINVAL, "hostNetworking.nat.interface",
                       "missing (required when hostNetworking.nat.enable is true)");
    }
}

/* isolatedPciDevices, each kept in its canonical form. */
static void parse_isolated_pci(ConfigParser *p, json_t *root, HostConfig *c) {
    parser_strv(p, root, NULL, "isolatedPciDevices", config_pci_valid,
                "a PCI address (BB:DD.F or DDDD:BB:DD.F)", &c->isolated_pci_devices);
    for (size_t i = 0; i < c->isolated_pci_devices.n; i++) {
        char bdf[CONFIG_PCI_ADDR_SIZE];
        config_pci_canonical(c->isolated_pci_devices.v[i], bdf);
        char *d = parser_strdup(p, bdf);
        if (d) {
            free(c->isolated_pci_devices.v[i]);
            c->isolated_pci_devices.v[i] = d;
        }
    }
}

static void parse_host(ConfigParser *p, json_t *root, HostConfig *c) {
    static const char *const top[] = {"user",   "hostNetworking", "enableBashIntegration",
                                      "crosvm", "vm-switch",      "isolatedPciDevices",
                                      "vmm",    "qemu",           NULL};
    static const char *const switch_keys[] = {"logLevel", "extraArgs", NULL};
    json_t *o;

    parser_check_keys(p, root, NULL, top);

    parser_string(p, root, NULL, "user", user_name_valid, "a valid user name", &c->user);
    if (c->user) {
        resolve_user(p, c->user, c);
    }
    parse_host_networking(p, root, c);
    parser_bool(p, root, NULL, "enableBashIntegration", &c->enable_bash_integration);
    parse_crosvm(p, root, &c->crosvm_log_level, &c->crosvm_extra_args, &c->crosvm_extra_run_args);
    if ((o = parser_object(p, root, NULL, "vm-switch"))) {
        parser_check_keys(p, o, "vm-switch", switch_keys);
        parser_string(p, o, "vm-switch", "logLevel", config_log_level_valid, CONFIG_LOG_LEVEL_WHAT,
                      &c->switch_log_level);
        parser_strv(p, o, "vm-switch", "extraArgs", NULL, NULL, &c->switch_extra_args);
    }
    parse_vmm(p, root, &c->vmm, &c->qemu_extra_args);
    parse_isolated_pci(p, root, c);
}

int config_load_host_report(const char *dir, FILE *report, HostConfig **ret, ErrorText *err,
                            unsigned *ret_problems) {
    _cleanup_free_ char *path = config_host_file(dir);
    _cleanup_(json_decrefp) json_t *root = NULL;
    _cleanup_(host_config_freep) HostConfig *c = NULL;
    ConfigParser p = {.err = err, .report = report};
    ErrorText local;
    int r;

    *ret_problems = 0;
    if (!path) {
        return -ENOMEM;
    }
    p.path = path;
    /* A missing host.json is the caller's call, not a reported problem. */
    if (!p.err) {
        p.err = &local;
    }
    p.report = NULL;
    r = parser_load_object(&p, &root);
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
        return parser_oom(&p);
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
    return config_load_host_report(dir, NULL, ret, err, &n);
}

int config_load_host_or_defaults(const char *dir, HostConfig **ret, ErrorText *err) {
    int r = config_load_host(dir, ret, err);
    if (r == -ENOENT) {
        r = config_host_defaults(ret);
        if (r < 0) {
            error_set(err, r, "out of memory");
        }
    }
    return r;
}

/* ---- vms/<name>.json ------------------------------------------------------------------------- */

/* One vmNetwork entry (`net`, named kb in messages) into n: router,
 * macAddress (else derived), and the VM's socket on that network. */
static int parse_vm_network(ConfigParser *p, const char *net, json_t *v, const char *kb,
                            const char *vm, ConfigVmNet *n) {
    static const char *const net_keys[] = {"router", "macAddress", NULL};

    if (!(n->network = parser_strdup(p, net))) {
        return -ENOMEM;
    }
    if (json_is_object(v)) {
        parser_check_keys(p, v, kb, net_keys);
        parser_bool(p, v, kb, "router", &n->router);
        _cleanup_free_ char *mac = NULL;
        parser_string(p, v, kb, "macAddress", NULL, NULL, &mac);
        if (mac) {
            char mk[CONFIG_KEY_MAX];
            if (vm_mac_parse(mac, n->mac) < 0) {
                parser_problem(p, -EINVAL, parser_key(mk, kb, "macAddress"),
                               "'%.64s' is not a VM's MAC address (52:ab:cd:ef:12:34: unicast, "
                               "not all zero)",
                               mac);
            } else {
                n->mac_given = true;
            }
        }
    }
    if (!n->mac_given) {
        config_mac_derive(net, vm, n->mac);
    }
    if (asprintf(&n->socket, "%s/%s/%s.sock", config_switch_dir(), net, vm) < 0) {
        n->socket = NULL;
        return parser_oom(p);
    }
    return 0;
}

static void parse_vm_networks(ConfigParser *p, json_t *root, VmConfig *c) {
    json_t *o = parser_object(p, root, NULL, "vmNetwork");
    char kb[CONFIG_KEY_MAX];
    const char *net;
    json_t *v;

    if (!o) {
        return;
    }
    c->vm_networks = calloc(json_object_size(o) + 1, sizeof(ConfigVmNet));
    if (!c->vm_networks) {
        parser_oom(p);
        return;
    }
    json_object_foreach(o, net, v) {
        parser_key(kb, "vmNetwork", net);
        if (!net_name_valid(net)) {
            parser_problem(p, -EINVAL, kb,
                           "'%.64s' is not a valid network name ([a-z][a-z0-9-], at most %u)", net,
                           NET_NAME_MAX);
            continue;
        }
        if (!json_is_null(v) && !json_is_object(v)) {
            parser_problem(p, -EINVAL, kb, "must be an attribute set (object)");
            continue;
        }
        ConfigVmNet *n = &c->vm_networks[c->n_vm_networks++];
        if (parse_vm_network(p, net, v, kb, c->name, n) < 0) {
            return;
        }
    }
}

/* id: required, odd, CONFIG_VM_ID_MIN to CONFIG_VM_ID_MAX. */
static void parse_vm_id(ConfigParser *p, json_t *root, VmConfig *c) {
    json_t *id = json_object_get(root, "id");

    if (!id || json_is_null(id)) {
        parser_problem(p, -EINVAL, "id", "missing (an odd number from %u to %u)", CONFIG_VM_ID_MIN,
                       CONFIG_VM_ID_MAX);
    } else if (!json_is_integer(id)) {
        parser_problem(p, -EINVAL, "id", "must be an integer");
    } else {
        json_int_t v = json_integer_value(id);
        if (v < CONFIG_VM_ID_MIN || v > CONFIG_VM_ID_MAX || v % 2 == 0) {
            parser_problem(p, -EINVAL, "id",
                           "must be odd and from %u to %u, not %" JSON_INTEGER_FORMAT,
                           CONFIG_VM_ID_MIN, CONFIG_VM_ID_MAX, v);
        } else {
            c->id = (unsigned)v;
        }
    }
}

/* name: optional, and then the file's own name. */
static void parse_vm_name(ConfigParser *p, json_t *root, const char *name) {
    json_t *jname = parser_present(root, "name");

    if (!jname) {
        return;
    }
    if (!json_is_string(jname)) {
        parser_problem(p, -EINVAL, "name", "must be a string");
    } else if (!vm_name_valid(json_string_value(jname))) {
        parser_problem(p, -EINVAL, "name",
                       "'%.64s' is not a valid VM name ([a-z][a-z0-9-], at most %u: the TAP is "
                       "vm-<name>)",
                       json_string_value(jname), VM_NAME_MAX);
    } else if (!streq(json_string_value(jname), name)) {
        parser_problem(p, -EINVAL, "name", "'%s' does not match the file name '%s.json'",
                       json_string_value(jname), name);
    }
}

static void parse_vm(ConfigParser *p, json_t *root, const char *name, VmConfig *c) {
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

    parser_check_keys(p, root, NULL, top);
    parse_vm_id(p, root, c);
    parse_vm_name(p, root, name);
    if (!(c->name = parser_strdup(p, name))) {
        return;
    }
    snprintf(c->tap_name, sizeof(c->tap_name), "vm-%s", name);

    parser_uint(p, root, NULL, "memory", 1, CONFIG_MEMORY_MIB_MAX, &c->memory_mib);
    parser_uint(p, root, NULL, "cpus", 1, CONFIG_CPUS_MAX, &c->cpus);
    parser_bool(p, root, NULL, "hostNetworking", &c->host_networking);
    parser_bool(p, root, NULL, "disposable", &c->disposable);
    parser_uint(p, root, NULL, "idleTimeout", 1, CONFIG_IDLE_TIMEOUT_MAX, &c->idle_timeout);

    sets_devices(p, root, "additionalDisks", CONFIG_DEVICE_DISK, &c->additional_disks);
    sets_root_disk(p, root, &c->root_disk);
    parser_string(p, root, NULL, "kernel", config_path_valid, "an absolute path", &c->kernel);
    parser_string(p, root, NULL, "initramfs", config_path_valid, "an absolute path", &c->initramfs);
    parser_bool(p, root, NULL, "rootDiskReadonly", &c->root_disk_readonly);
    parser_strv(p, root, NULL, "kernelParams", NULL, NULL, &c->kernel_params);
    sets_feature(p, root, "gpu", &c->gpu);
    sets_feature(p, root, "sound", &c->sound);
    sets_devices(p, root, "sharedDirectories", CONFIG_DEVICE_SHARED_DIR, &c->shared_directories);
    sets_devices(p, root, "pciDevices", CONFIG_DEVICE_PCI, &c->pci_devices);
    parse_vm_networks(p, root, c);
    sets_devices(p, root, "vhostUser", CONFIG_DEVICE_VHOST_USER, &c->vhost_user);
    parse_crosvm(p, root, &c->crosvm_log_level, &c->crosvm_extra_args, &c->crosvm_extra_run_args);
    parse_vmm(p, root, &c->vmm, &c->qemu_extra_args);
}

/* A VM's configuration before its file is read: the original's defaults. */
static VmConfig *vm_defaults(const char *path) {
    _cleanup_(vm_config_freep) VmConfig *c = calloc(1, sizeof(*c));

    if (!c || !(c->path = strdup(path))) {
        return NULL;
    }
    c->memory_mib = CONFIG_DEFAULT_MEMORY_MIB;
    c->cpus = CONFIG_DEFAULT_CPUS;
    c->idle_timeout = CONFIG_DEFAULT_IDLE_TIMEOUT;
    c->root_disk_readonly = true;
    c->gpu.mode = CONFIG_FEATURE_DEFAULT;
    c->sound.mode = CONFIG_FEATURE_OFF;
    return TAKE_PTR(c);
}

int config_load_vm_report(const char *dir, const char *name, FILE *report, VmConfig **ret,
                          ErrorText *err, unsigned *ret_problems) {
    _cleanup_free_ char *path = config_vm_file(dir, name);
    _cleanup_(json_decrefp) json_t *root = NULL;
    _cleanup_(vm_config_freep) VmConfig *c = NULL;
    ConfigParser p = {.err = err, .report = report};
    int r;

    *ret_problems = 0;
    if (!path) {
        return -ENOMEM;
    }
    p.path = path;
    if (!vm_name_valid(name)) {
        /* The name comes from the caller (a command line): say so plainly. */
        p.path = name;
        r = parser_problem(&p, -EINVAL, NULL,
                           "not a valid VM name ([a-z][a-z0-9-], at most %u: the TAP is "
                           "vm-<name>)",
                           VM_NAME_MAX);
        *ret_problems = p.problems;
        return r;
    }
    r = parser_load_object(&p, &root);
    if (r < 0) {
        *ret_problems = p.problems;
        return r;
    }
    if (!(c = vm_defaults(path))) {
        return parser_oom(&p);
    }
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
    return config_load_vm_report(dir, name, NULL, ret, err, &n);
}
