/* Configuration files: host.json and vms/<name>.json in the configuration
 * directory ($QUBES_LITE_CONFIG_DIR, else /etc/qubes-lite).
 *
 * Keys are exactly the NixOS option names (camelCase, nested objects for
 * dotted names: {"crosvm": {"logLevel": "debug"}}); absent keys and JSON
 * null take the original's defaults. Unknown keys, wrong types, missing
 * required values and bad values are errors, and every error names the
 * file, the key (dotted, with list indexes: "additionalDisks[1].path") and
 * the reason. The free-form attribute sets that are passed to the VMM
 * (disks, shared directories, PCI devices, vhost-user, gpu, sound) keep
 * their pairs in the order given, values rendered as text. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "paths.h"
#include "rules.h"
#include "util.h"

#define CONFIG_VM_ID_MIN 3u
#define CONFIG_VM_ID_MAX 255u
#define CONFIG_MEMORY_MIB_MAX (1u << 24) /* 16 TiB */
#define CONFIG_CPUS_MAX 1024u
#define CONFIG_IDLE_TIMEOUT_MAX (366u * 24 * 3600)
/* A canonical PCI address, "0000:01:00.0", and its NUL. */
#define CONFIG_PCI_ADDR_SIZE 13
#define CONFIG_DEFAULT_MEMORY_MIB 1024u
#define CONFIG_DEFAULT_CPUS 2u
#define CONFIG_DEFAULT_IDLE_TIMEOUT 60u
#define CONFIG_DEFAULT_NETWORK "172.16.200.0/24"
/* hostNetworking.network's prefix: a /30 holds one VM's /31 (id 3),
 * anything wider more; /0 would have no network part at all. */
#define CONFIG_NETWORK_PREFIX_MIN 1u
#define CONFIG_NETWORK_PREFIX_MAX 30u
#define CONFIG_DEFAULT_LOG_LEVEL "info"
/* The configured user's runtime directory and Wayland display there: a VM
 * with gpu gets crosvm's --wayland-sock on that socket, and its unit the
 * directory as XDG_RUNTIME_DIR. */
#define CONFIG_USER_RUNTIME_DIR_FMT "/run/user/%u"
#define CONFIG_WAYLAND_DISPLAY "wayland-0"
/* vm-switch's socket directory: one subdirectory per network, one
 * vhost-user socket per VM in it (<dir>/<net>/<vm>.sock). */
#define CONFIG_DEFAULT_SWITCH_DIR "/run/vm-switch"

/* One key=value pair of a free-form attribute set; booleans are "true" or
 * "false", integers in decimal. */
typedef struct ConfigKv {
    char *key;
    char *value;
} ConfigKv;

typedef struct ConfigKvList {
    ConfigKv *v;
    size_t n;
} ConfigKvList;

typedef struct ConfigStrv {
    char **v;
    size_t n;
} ConfigStrv;

/* An item of additionalDisks, rootDisk, sharedDirectories, pciDevices or
 * vhostUser. `path` is the disk image, the shared host directory or the
 * canonical PCI address (0000:01:00.0); NULL for vhostUser, whose pairs
 * (type and socket included) are all in `opts`. `tag` is for shared
 * directories only. `opts` holds the remaining pairs in the order given. */
typedef struct ConfigDevice {
    char *path;
    char *tag;
    ConfigKvList opts;
} ConfigDevice;

typedef struct ConfigDeviceList {
    ConfigDevice *v;
    size_t n;
} ConfigDeviceList;

typedef enum ConfigFeatureMode {
    CONFIG_FEATURE_OFF,     /* false */
    CONFIG_FEATURE_DEFAULT, /* true: the VMM's default for it */
    CONFIG_FEATURE_CUSTOM,  /* an attribute set: `opts` */
} ConfigFeatureMode;

typedef struct ConfigFeature {
    ConfigFeatureMode mode;
    ConfigKvList opts;
} ConfigFeature;

/* One vmNetwork entry with its derived values. */
typedef struct ConfigVmNet {
    char *network;
    bool router;
    bool mac_given; /* macAddress was set; else derived from network and VM name */
    uint8_t mac[6];
    char *socket; /* <switch dir>/<network>/<vm>.sock */
} ConfigVmNet;

/* Which VMM runs a VM ("vmm"). */
typedef enum ConfigVmm {
    CONFIG_VMM_UNSET, /* a VM without "vmm": host.json's */
    CONFIG_VMM_CROSVM,
    CONFIG_VMM_QEMU,
} ConfigVmm;

typedef struct HostConfig {
    char *path; /* the file this came from ("(defaults)" without one) */
    char *user; /* NULL: no user besides root */
    uid_t user_uid;
    gid_t user_gid;
    char *network;           /* hostNetworking.network, "a.b.c.d/N" */
    uint32_t network_addr;   /* its address, host order, host part 0 */
    unsigned network_prefix; /* N, CONFIG_NETWORK_PREFIX_MIN to _MAX */
    bool nat_enable;
    char *nat_interface; /* "" unless set */
    bool enable_bash_integration;
    char *crosvm_log_level;
    ConfigStrv crosvm_extra_args;
    ConfigStrv crosvm_extra_run_args;
    char *switch_log_level;
    ConfigStrv switch_extra_args;
    ConfigStrv isolated_pci_devices; /* canonical PCI addresses */
    ConfigVmm vmm;                   /* crosvm unless "vmm" says qemu */
    ConfigStrv qemu_extra_args;      /* qemu.extraArgs */
} HostConfig;

typedef struct VmConfig {
    char *path; /* the file this came from */
    char *name;
    unsigned id; /* odd, 3..255; also the vsock CID */
    unsigned memory_mib;
    unsigned cpus;
    bool host_networking;
    bool disposable;
    unsigned idle_timeout;
    ConfigDeviceList additional_disks;
    ConfigDevice *root_disk; /* NULL: none */
    char *kernel;            /* NULL: none (required to start the VM) */
    char *initramfs;         /* NULL: none */
    bool root_disk_readonly;
    ConfigStrv kernel_params;
    ConfigFeature gpu;
    ConfigFeature sound;
    ConfigDeviceList shared_directories;
    ConfigDeviceList pci_devices;
    ConfigDeviceList vhost_user; /* as given; see config_vm_vhost_user() */
    ConfigVmNet *vm_networks;    /* in the order given */
    size_t n_vm_networks;
    char *crosvm_log_level; /* NULL: the global one */
    ConfigStrv crosvm_extra_args;
    ConfigStrv crosvm_extra_run_args;
    ConfigVmm vmm;              /* CONFIG_VMM_UNSET: host.json's */
    ConfigStrv qemu_extra_args; /* qemu.extraArgs, after host.json's */
    char tap_name[16];          /* vm-<name> */
} VmConfig;

/* Derived addresses of a VM's host link: a /31 per VM. */
typedef struct ConfigAddresses {
    char vm_ip[16];   /* <base>.<id> */
    char host_ip[16]; /* <base>.<id-1>, the VM's gateway */
    unsigned prefix;  /* 31 */
} ConfigAddresses;

/* Loads <dir>/host.json. -ENOENT when the file does not exist (callers
 * decide whether that is fine; config_host_defaults() gives the defaults);
 * -EINVAL, -ESRCH (no such user), -ENOMEM, ... otherwise, with
 * err->message set to the first problem. */
int config_load_host(const char *dir, HostConfig **ret, ErrorText *err);
/* The configuration an empty host.json gives. */
int config_host_defaults(HostConfig **ret);
/* host.json is optional: config_load_host(), or the defaults when the
 * file does not exist. */
int config_load_host_or_defaults(const char *dir, HostConfig **ret, ErrorText *err);
/* Loads <dir>/vms/<name>.json. -ENOENT when there is no such VM. */
int config_load_vm(const char *dir, const char *name, VmConfig **ret, ErrorText *err);

/* As config_load_host() and config_load_vm(), also printing every problem
 * of the file (not only the first), a line each, to `report` when it is
 * not NULL, and counting them in *ret_problems. A missing host.json is
 * -ENOENT and no problem. */
int config_load_host_report(const char *dir, FILE *report, HostConfig **ret, ErrorText *err,
                            unsigned *ret_problems);
int config_load_vm_report(const char *dir, const char *name, FILE *report, VmConfig **ret,
                          ErrorText *err, unsigned *ret_problems);

/* Validates host.json (a missing one is fine) and every vms/NAME.json at
 * once, then what only the set of files can show: unique ids, exactly one
 * router per vmNetwork, unique MACs on a network, a PCI device given to
 * one VM only, a kernel for every VM, and nothing asked of qemu that it
 * cannot do (config-check.c); with CONFIG_CHECK_FILES also that the
 * kernel, initramfs, disks and shared directories each VM names are here,
 * of the right type. Prints one line per problem to `errors` (when not
 * NULL) and returns how many there were, or a negative errno when the
 * directory cannot be read. */
#define CONFIG_CHECK_FILES (1u << 0)
int config_check_all(const char *dir, FILE *errors, unsigned flags);
/* A stream for such a report: each line written to it goes to `to` with
 * "<program>: " in front, as every message of ours has. Close it with
 * fclose(); NULL when out of memory. */
FILE *config_report_open(FILE *to, const char *program);

/* What a VM asks of qemu that qemu cannot do as crosvm does (gpu, sound,
 * crosvm options without a qemu equivalent): 0, or -EINVAL with err
 * naming the file, the key and why. --check reports it for every VM that
 * runs under qemu (config-check.c). */
int config_vm_qemu_check(const VmConfig *vm, ErrorText *err);

/* ---- derived values (config-derived.c) ---- */

/* $QUBES_LITE_SWITCH_DIR when set and non-empty, else
 * CONFIG_DEFAULT_SWITCH_DIR. Read when a VM's file is loaded. */
const char *config_switch_dir(void);
/* A vmNetwork MAC not given as macAddress: 52:xx:xx:xx:xx:xx. */
void config_mac_derive(const char *network, const char *vm, uint8_t ret[6]);
/* Whether the VM's /31 lies in hostNetworking.network (h NULL: the
 * default); -ERANGE with err naming the VM when it does not. */
int config_vm_host_link_check(const HostConfig *h, const VmConfig *vm, ErrorText *err);
/* The VM's addresses on hostNetworking.network: base + id and base + id - 1
 * (config_vm_host_link_check() says whether they are in it). */
void config_vm_addresses(const HostConfig *h, const VmConfig *vm, ConfigAddresses *ret);
/* The vhost-user devices to give the VM: one per vmNetwork entry, then
 * the vhostUser items whose socket is not already among them (the NixOS
 * module may list the vmNetwork ones there too). An item with `path` set
 * is a vmNetwork one: a net device on the socket `path`; the others hold
 * all their pairs in `opts`. The items borrow from `vm`: free only the
 * array. */
int config_vm_vhost_user(const VmConfig *vm, ConfigDevice **ret, size_t *ret_n);

/* Canonical PCI address (DDDD:BB:DD.F, lower case) of "01:00.0" or
 * "0000:01:00.0"; false when `s` is neither (config-parser.c). */
bool config_pci_canonical(const char *s, char buf[static CONFIG_PCI_ADDR_SIZE]);

void host_config_free(HostConfig *c);
void vm_config_free(VmConfig *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(HostConfig *, host_config_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(VmConfig *, vm_config_free)
