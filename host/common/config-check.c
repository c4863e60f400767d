/* config_check_all(): every file of a configuration directory at once
 * (`qubes-lite-host-agent --check`, and the generator before it writes
 * units), then what only the set of VMs can show, one function per rule.
 *
 * A rule about two VMs is checked against every earlier file (in file
 * name order) and reported at the later one, so each clash is one line;
 * lines come file by file, the router count per network last. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct Report {
    FILE *errors; /* may be NULL: count only */
    unsigned problems;
} Report;

_printf_(2, 3) static void report(Report *rep, const char *fmt, ...) {
    va_list ap;

    rep->problems++;
    if (!rep->errors) {
        return;
    }
    va_start(ap, fmt);
    vfprintf(rep->errors, fmt, ap);
    va_end(ap);
    fputc('\n', rep->errors);
}

/* ---- the rules about the whole set --------------------------------------------------------- */

/* Every VM has a kernel: one can be started without it nowhere. */
static void check_kernel(Report *rep, const VmConfig *a) {
    if (!a->kernel) {
        report(rep, "%s: key 'kernel': missing (required to start the VM)", a->path);
    }
}

/* A VM with host networking has its /31 in hostNetworking.network. */
static void check_host_link(Report *rep, const HostConfig *h, const VmConfig *a) {
    ErrorText err;
    if (a->host_networking && config_vm_host_link_check(h, a, &err) < 0) {
        report(rep, "%s", err.message);
    }
}

/* Ids are unique: the id is the vsock CID and the host link's address. */
static void check_unique_id(Report *rep, const VmConfig *a, const VmConfig *b) {
    if (a->id == b->id) {
        report(rep, "%s: key 'id': %u is already the id of VM '%s' (%s)", a->path, a->id, b->name,
               b->path);
    }
}

/* A PCI device is given to one VM only. */
static void check_pci_once(Report *rep, const VmConfig *a, const VmConfig *b) {
    for (size_t x = 0; x < a->pci_devices.n; x++) {
        for (size_t y = 0; y < b->pci_devices.n; y++) {
            if (streq(a->pci_devices.v[x].path, b->pci_devices.v[y].path)) {
                report(rep, "%s: key 'pciDevices[%zu].path': %s is already given to VM '%s'",
                       a->path, x, a->pci_devices.v[x].path, b->name);
            }
        }
    }
}

/* MACs are unique on a network: the switch forwards by them. */
static void check_unique_macs(Report *rep, const VmConfig *a, const VmConfig *b) {
    for (size_t x = 0; x < a->n_vm_networks; x++) {
        for (size_t y = 0; y < b->n_vm_networks; y++) {
            const ConfigVmNet *na = &a->vm_networks[x], *nb = &b->vm_networks[y];
            if (!streq(na->network, nb->network) || memcmp(na->mac, nb->mac, 6) != 0) {
                continue;
            }
            char mac[MAC_STR_SIZE];
            report(rep,
                   "%s: key 'vmNetwork.%s.macAddress': %s is already the MAC of VM '%s' on "
                   "that network",
                   a->path, na->network, mac_format(na->mac, mac), b->name);
        }
    }
}

/* Whether entry x of vms[i] is the first mention of its network, and how
 * many routers the network has. */
static bool network_routers(VmConfig *const *vms, size_t n, size_t i, size_t x,
                            unsigned *ret_routers) {
    const char *net = vms[i]->vm_networks[x].network;
    bool first = true;
    unsigned routers = 0;

    for (size_t j = 0; j < n; j++) {
        if (!vms[j]) {
            continue;
        }
        for (size_t y = 0; y < vms[j]->n_vm_networks; y++) {
            if (!streq(vms[j]->vm_networks[y].network, net)) {
                continue;
            }
            if (j < i || (j == i && y < x)) {
                first = false;
            }
            routers += vms[j]->vm_networks[y].router;
        }
    }
    *ret_routers = routers;
    return first;
}

/* The network's first router in file order, or NULL. */
static const VmConfig *first_router(VmConfig *const *vms, size_t n, const char *net) {
    for (size_t j = 0; j < n; j++) {
        for (size_t y = 0; vms[j] && y < vms[j]->n_vm_networks; y++) {
            if (vms[j]->vm_networks[y].router && streq(vms[j]->vm_networks[y].network, net)) {
                return vms[j];
            }
        }
    }
    return NULL;
}

/* Exactly one router per network (the switch's policy has one hub): a
 * router after the first is reported at its own file, naming the first;
 * a network without one at its first member, in file order. */
static void check_one_router(Report *rep, VmConfig *const *vms, size_t n) {
    for (size_t i = 0; i < n; i++) {
        for (size_t x = 0; vms[i] && x < vms[i]->n_vm_networks; x++) {
            unsigned routers;
            const char *net = vms[i]->vm_networks[x].network;
            if (network_routers(vms, n, i, x, &routers) && routers == 0) {
                report(rep,
                       "%s: key 'vmNetwork.%s': network '%s' has 0 routers; it needs exactly "
                       "one (router = true)",
                       vms[i]->path, net, net);
            }
            const VmConfig *first = first_router(vms, n, net);
            if (vms[i]->vm_networks[x].router && first != vms[i]) {
                report(rep,
                       "%s: key 'vmNetwork.%s.router': network '%s' already has a router, VM "
                       "'%s' (%s)",
                       vms[i]->path, net, net, first->name, first->path);
            }
        }
    }
}

/* ---- the files a VM names ------------------------------------------------------------------ */

typedef enum FileKind {
    FILE_REGULAR,   /* kernel, initramfs */
    FILE_DISK,      /* a regular file or a block device */
    FILE_DIRECTORY, /* a shared directory */
} FileKind;

/* path is on this machine, of its kind: a mistyped path is one line here
 * rather than the VMM's error at the VM's start. */
static void check_file(Report *rep, const VmConfig *vm, const char *key, const char *path,
                       FileKind kind) {
    static const char *const wanted[] = {
        [FILE_REGULAR] = "a file",
        [FILE_DISK] = "a file or a block device",
        [FILE_DIRECTORY] = "a directory",
    };
    struct stat st;

    if (stat(path, &st) < 0) {
        if (errno == ENOENT) {
            report(rep, "%s: key '%s': %s does not exist", vm->path, key, path);
        } else {
            report(rep, "%s: key '%s': cannot look at %s: %s", vm->path, key, path,
                   strerror(errno));
        }
        return;
    }
    bool ok = kind == FILE_DIRECTORY ? S_ISDIR(st.st_mode)
              : kind == FILE_DISK    ? S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)
                                     : S_ISREG(st.st_mode);
    if (!ok) {
        report(rep, "%s: key '%s': %s is not %s", vm->path, key, path, wanted[kind]);
    }
}

static void check_files(Report *rep, const VmConfig *vm) {
    char key[48];

    if (vm->kernel) {
        check_file(rep, vm, "kernel", vm->kernel, FILE_REGULAR);
    }
    if (vm->initramfs) {
        check_file(rep, vm, "initramfs", vm->initramfs, FILE_REGULAR);
    }
    if (vm->root_disk) {
        check_file(rep, vm, "rootDisk", vm->root_disk->path, FILE_DISK);
    }
    for (size_t i = 0; i < vm->additional_disks.n; i++) {
        snprintf(key, sizeof(key), "additionalDisks[%zu].path", i);
        check_file(rep, vm, key, vm->additional_disks.v[i].path, FILE_DISK);
    }
    for (size_t i = 0; i < vm->shared_directories.n; i++) {
        snprintf(key, sizeof(key), "sharedDirectories[%zu].path", i);
        check_file(rep, vm, key, vm->shared_directories.v[i].path, FILE_DIRECTORY);
    }
}

/* ---- what qemu cannot do ------------------------------------------------------------------ */

static bool key_in(const char *key, const char *const *keys) {
    for (; *keys; keys++) {
        if (streq(key, *keys)) {
            return true;
        }
    }
    return false;
}

/* crosvm's block options that have a qemu equivalent. */
static int check_qemu_disk(const VmConfig *vm, const ConfigDevice *d, const char *key,
                           ErrorText *err) {
    static const char *const mapped[] = {"ro", "sparse", "direct", "block-size", "id", NULL};
    for (size_t k = 0; k < d->opts.n; k++) {
        if (!key_in(d->opts.v[k].key, mapped)) {
            return error_set(err, -EINVAL,
                             "%.200s: key '%s.%.40s': a crosvm block option that qemu does not "
                             "take (ro, sparse, direct, block-size and id do)",
                             vm->path, key, d->opts.v[k].key);
        }
    }
    return 0;
}

/* crosvm's shared-dir options that virtiofsd has an equivalent of. */
static int check_qemu_shared_dir(const VmConfig *vm, size_t i, ErrorText *err) {
    const ConfigDevice *d = &vm->shared_directories.v[i];
    for (size_t k = 0; k < d->opts.n; k++) {
        const char *key = d->opts.v[k].key, *v = d->opts.v[k].value;
        if ((streq(key, "type") && streq(v, "fs")) || streq(key, "writeback") ||
            (streq(key, "cache") &&
             (streq(v, "auto") || streq(v, "always") || streq(v, "never")))) {
            continue;
        }
        return error_set(err, -EINVAL,
                         "%.200s: key 'sharedDirectories[%zu].%.40s': '%.40s' has no equivalent "
                         "for qemu's virtiofsd (type=fs, cache and writeback do)",
                         vm->path, i, key, v);
    }
    return 0;
}

int config_vm_qemu_check(const VmConfig *vm, ErrorText *err) {
    char key[48];
    int r = 0;

    if (vm->gpu.mode != CONFIG_FEATURE_OFF) {
        return error_set(err, -EINVAL,
                         "%.200s: key 'gpu': qemu cannot show the guest's windows as crosvm does "
                         "(no cross-domain Wayland in qemu 7.2); set \"gpu\": false, or \"vmm\": "
                         "\"crosvm\"",
                         vm->path);
    }
    if (vm->sound.mode != CONFIG_FEATURE_OFF) {
        return error_set(err, -EINVAL,
                         "%.200s: key 'sound': qemu 7.2 has no virtio-snd device; set \"sound\": "
                         "false, or \"vmm\": \"crosvm\"",
                         vm->path);
    }
    for (size_t i = 0; i < vm->pci_devices.n; i++) {
        if (vm->pci_devices.v[i].opts.n > 0) {
            return error_set(err, -EINVAL,
                             "%.200s: key 'pciDevices[%zu].%s': a crosvm vfio option, which "
                             "qemu does not take",
                             vm->path, i, vm->pci_devices.v[i].opts.v[0].key);
        }
    }
    for (size_t i = 0; i < vm->vhost_user.n; i++) {
        for (size_t k = 0; k < vm->vhost_user.v[i].opts.n; k++) {
            const ConfigKv *kv = &vm->vhost_user.v[i].opts.v[k];
            if (streq(kv->key, "type") && !streq(kv->value, "net")) {
                return error_set(err, -EINVAL,
                                 "%.200s: key 'vhostUser[%zu].type': '%.40s' under qemu: only "
                                 "net devices are given to qemu",
                                 vm->path, i, kv->value);
            }
        }
    }
    if (vm->root_disk) {
        r = check_qemu_disk(vm, vm->root_disk, "rootDisk", err);
    }
    for (size_t i = 0; r >= 0 && i < vm->additional_disks.n; i++) {
        snprintf(key, sizeof(key), "additionalDisks[%zu]", i);
        r = check_qemu_disk(vm, &vm->additional_disks.v[i], key, err);
    }
    for (size_t i = 0; r >= 0 && i < vm->shared_directories.n; i++) {
        r = check_qemu_shared_dir(vm, i, err);
    }
    return r;
}

/* A VM that runs under qemu asks nothing of it that it cannot do. */
static void check_qemu(Report *rep, const HostConfig *h, const VmConfig *vm) {
    ErrorText err;
    ConfigVmm vmm = vm->vmm != CONFIG_VMM_UNSET ? vm->vmm : h ? h->vmm : CONFIG_VMM_CROSVM;
    if (vmm == CONFIG_VMM_QEMU && config_vm_qemu_check(vm, &err) < 0) {
        report(rep, "%s", err.message);
    }
}

typedef void (*PairCheck)(Report *rep, const VmConfig *a, const VmConfig *b);

/* The rules across files, over the VMs that loaded (NULL: did not). */
static void check_across(Report *rep, const HostConfig *h, VmConfig *const *vms, size_t n,
                         unsigned flags) {
    static const PairCheck pair_checks[] = {check_unique_id, check_pci_once, check_unique_macs};

    for (size_t i = 0; i < n; i++) {
        if (!vms[i]) {
            continue;
        }
        check_kernel(rep, vms[i]);
        if (flags & CONFIG_CHECK_FILES) {
            check_files(rep, vms[i]);
        }
        check_host_link(rep, h, vms[i]);
        check_qemu(rep, h, vms[i]);
        for (size_t j = 0; j < i; j++) {
            for (size_t k = 0; vms[j] && k < ELEMENTSOF(pair_checks); k++) {
                pair_checks[k](rep, vms[i], vms[j]);
            }
        }
    }
    check_one_router(rep, vms, n);
}

/* ---- every file ---------------------------------------------------------------------------- */

/* Loads every file of vms/ into vms[] (NULL where one does not load),
 * reporting each problem. -ENOMEM, else 0. */
static int load_vms(const char *dir, const ConfigVmFile *files, size_t n, Report *rep,
                    VmConfig **vms) {
    for (size_t i = 0; i < n; i++) {
        ErrorText err;
        unsigned problems;

        if (!files[i].name[0]) {
            report(rep,
                   "%s/vms/%s: the file name is not a valid VM name ([a-z][a-z0-9-], at most "
                   "%u) followed by .json",
                   dir, files[i].file, VM_NAME_MAX);
            continue;
        }
        int r = config_load_vm_report(dir, files[i].name, rep->errors, &vms[i], &err, &problems);
        rep->problems += problems;
        if (r == -ENOMEM) {
            return r;
        }
    }
    return 0;
}

/* ---- the report's stream ------------------------------------------------------------------ */

typedef struct ReportStream {
    FILE *to;
    const char *program;
    bool line_start;
} ReportStream;

static ssize_t report_write(void *cookie, const char *buf, size_t n) {
    ReportStream *s = cookie;
    for (size_t i = 0; i < n; i++) {
        if (s->line_start) {
            fprintf(s->to, "%s: ", s->program);
        }
        fputc(buf[i], s->to);
        s->line_start = buf[i] == '\n';
    }
    return (ssize_t)n;
}

static int report_close(void *cookie) {
    ReportStream *s = cookie;
    int r = fflush(s->to);
    free(s);
    return r;
}

FILE *config_report_open(FILE *to, const char *program) {
    static const cookie_io_functions_t io = {.write = report_write, .close = report_close};
    ReportStream *s = malloc(sizeof(*s));
    if (!s) {
        return NULL;
    }
    *s = (ReportStream){.to = to, .program = program, .line_start = true};
    FILE *f = fopencookie(s, "w", io);
    if (!f) {
        free(s);
    }
    return f;
}

/* ---- every file, then the set ---------------------------------------------------------------- */

int config_check_all(const char *dir, FILE *errors, unsigned flags) {
    _cleanup_(host_config_freep) HostConfig *host = NULL;
    Report rep = {.errors = errors};
    ConfigVmFile *files = NULL;
    VmConfig **vms;
    size_t n = 0;
    ErrorText err;
    unsigned problems;
    int r;

    r = config_load_host_report(dir, errors, &host, &err, &problems);
    rep.problems += problems;
    if (r == -ENOMEM) {
        return r;
    }
    r = config_vm_files(dir, &files, &n);
    if (r < 0 && r != -ENOENT) {
        return r;
    }
    vms = calloc(n + 1, sizeof(VmConfig *));
    if (!vms) {
        config_vm_files_free(files, n);
        return -ENOMEM;
    }
    /* Out of memory half way: what loaded is still checked, as before. */
    (void)load_vms(dir, files, n, &rep, vms);
    check_across(&rep, host, vms, n, flags);
    for (size_t i = 0; i < n; i++) {
        vm_config_free(vms[i]);
    }
    free(vms);
    config_vm_files_free(files, n);
    return (int)MIN(rep.problems, (unsigned)INT32_MAX);
}
