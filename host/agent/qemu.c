/* qemu's command line (qemu.h).
 *
 * Option forms, checked against qemu 7.2's own documentation
 * (qemu-options.hx, docs/system/devices/vhost-user.rst, virtio-vsock,
 * vfio, docs/interop/qemu-qmp-ref) and tried on Debian's qemu-system-x86:
 *   -object memory-backend-memfd,id=ID,size=SIZE,share=on
 *   -machine pc,memory-backend=ID          (qemu >= 5; with -m of the same size)
 *   -chardev stdio,id=ID,signal=off        (Ctrl-C reaches the guest, not qemu)
 *   -qmp unix:PATH,server=on,wait=off
 *   -fw_cfg name=NAME,file=PATH
 *   -drive file=PATH,if=none,id=ID,format=raw|qcow2[,readonly=on][,discard=unmap]
 *          [,cache.direct=on]               a ',' in PATH is written ',,'
 *   -device virtio-blk-pci,drive=ID[,serial=S][,logical_block_size=N,physical_block_size=N]
 *   -netdev tap,id=ID,ifname=NAME,script=no,downscript=no
 *   -chardev socket,id=ID,path=PATH[,reconnect=SECONDS]
 *   -netdev vhost-user,id=ID,chardev=ID
 *   -device virtio-net-pci,netdev=ID[,mac=MAC][,vectors=0]
 *   -device vfio-pci,host=DDDD:BB:DD.F
 *   -device vhost-user-fs-pci,chardev=ID,tag=TAG
 *   -device vhost-vsock-pci,guest-cid=CID
 *   QMP device_add driver=vhost-user-vsock-pci,chardev=ID,id=ID (qemurun.c)
 * The machine is `pc`: its PCI bus takes devices added over QMP (q35's
 * root complex does not), which the vsock device needs. */
#include "qemu.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "addr.h"
#include "rules.h"
#include "secret.h"

#define QEMU_DEFAULT "qemu-system-x86_64"
#define QEMU_CMDLINE "console=ttyS0 panic=-1 quiet no_timer_check"
#define QCOW2_MAGIC "QFI\xfb"
/* How long the KVM probe may take: a vCPU that does not come back from
 * KVM_RUN (as on a host whose KVM runs only its own kind of guest). */
#define KVM_PROBE_TIMEOUT_MS 2000
/* The network name hostNetworking's MAC is derived under: not a valid
 * vmNetwork name, so never another NIC's. */
#define HOST_NET_MAC_NAME "hostNetworking"

/* ---- what this machine offers --------------------------------------------------- */

/* In a child: a VM with one page of real-mode code (out 0x42 to port
 * 0x10, hlt) run on one vCPU. Exit 0 when both exits come as they
 * should, else the step that failed. */
_noreturn_ static void kvm_probe_child(void) {
    static const uint8_t code[] = {0xb0, 0x42, 0xe6, 0x10,
                                   0xf4}; /* mov al,0x42; out 0x10,al; hlt */
    struct kvm_sregs sregs;
    struct kvm_regs regs = {.rip = 0x1000, .rflags = 0x2};

    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) {
        _exit(10);
    }
    if (ioctl(kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
        _exit(11);
    }
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    uint8_t *mem = mmap(NULL, 0x1000, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (vm < 0 || mem == MAP_FAILED) {
        _exit(12);
    }
    memcpy(mem, code, sizeof(code));
    struct kvm_userspace_memory_region region = {
        .guest_phys_addr = 0x1000, .memory_size = 0x1000, .userspace_addr = (uintptr_t)mem};
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) {
        _exit(13);
    }
    int cpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    int size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (cpu < 0 || size < (int)sizeof(struct kvm_run)) {
        _exit(14);
    }
    struct kvm_run *run = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, cpu, 0);
    if (run == MAP_FAILED || ioctl(cpu, KVM_GET_SREGS, &sregs) < 0) {
        _exit(15);
    }
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    if (ioctl(cpu, KVM_SET_SREGS, &sregs) < 0 || ioctl(cpu, KVM_SET_REGS, &regs) < 0) {
        _exit(16);
    }
    if (ioctl(cpu, KVM_RUN, 0) < 0 || run->exit_reason != KVM_EXIT_IO || run->io.port != 0x10 ||
        ((uint8_t *)run)[run->io.data_offset] != 0x42) {
        _exit(17);
    }
    if (ioctl(cpu, KVM_RUN, 0) < 0 || run->exit_reason != KVM_EXIT_HLT) {
        _exit(18);
    }
    _exit(0);
}

/* Whether /dev/kvm runs a guest; why not into why. A KVM that opens is
 * not enough: KVM_PVM (a host that is itself a PVM guest) opens and
 * creates VMs, but runs only guest kernels built for it. */
static bool kvm_works(char *why, size_t size) {
    if (access("/dev/kvm", R_OK | W_OK) < 0) {
        snprintf(why, size, "/dev/kvm: %s", strerror(errno));
        return false;
    }
    if (access("/sys/module/kvm_pvm", F_OK) == 0) {
        snprintf(why, size, "/dev/kvm is KVM_PVM, which runs only guests built for it");
        return false;
    }
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(why, size, "cannot probe /dev/kvm: fork: %s", strerror(errno));
        return false;
    }
    if (pid == 0) {
        kvm_probe_child();
    }
    int status = 0;
    for (int waited = 0;; waited += 10) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            break;
        }
        if (r < 0 && errno != EINTR) {
            snprintf(why, size, "cannot probe /dev/kvm: waitpid: %s", strerror(errno));
            return false;
        }
        if (waited >= KVM_PROBE_TIMEOUT_MS) {
            (void)kill(pid, SIGKILL);
            (void)waitpid(pid, &status, 0);
            snprintf(why, size, "a minimal vCPU did not come back from KVM_RUN within %d ms",
                     KVM_PROBE_TIMEOUT_MS);
            return false;
        }
        (void)poll(NULL, 0, 10);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        snprintf(why, size, "/dev/kvm does not run a minimal vCPU (step %d failed)",
                 WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        return false;
    }
    return true;
}

const QemuHost *qemu_host_probe(void) {
    static QemuHost host;
    static bool probed;

    if (!probed) {
        host.kvm = kvm_works(host.kvm_why, sizeof(host.kvm_why));
        int fd = open("/dev/vhost-vsock", O_RDWR | O_CLOEXEC);
        host.vhost_vsock = fd >= 0;
        safe_close(fd);
        probed = true;
    }
    return &host;
}

/* ---- paths ------------------------------------------------------------------- */

/* <vm>.<what>.sock: the '.' no VM name holds keeps every VM's companion
 * sockets apart from every other VM's files (paths.h). */
char *vmm_qemu_socket(const VmConfig *vm, const char *what) {
    char *s;
    if (!vm_name_valid(vm->name) ||
        asprintf(&s, "%s/%s.%s.sock", config_runtime_dir(), vm->name, what) < 0) {
        return NULL;
    }
    return s;
}

/* A value inside a qemu option list: every ',' doubled. */
static char *qemu_escape(const char *s) {
    size_t n = strlen(s), commas = 0;
    for (size_t i = 0; i < n; i++) {
        commas += s[i] == ',';
    }
    char *out = malloc(n + commas + 1), *p = out;
    if (!out) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        *p++ = s[i];
        if (s[i] == ',') {
            *p++ = ',';
        }
    }
    *p = '\0';
    return out;
}

/* ---- disks ------------------------------------------------------------------- */

/* raw or qcow2, from the file's first bytes. */
static int disk_format(const char *path, const char **ret, char *why, size_t size) {
    char magic[4];
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        snprintf(why, size, "cannot open it to tell its format: %s", strerror(errno));
        return -errno;
    }
    ssize_t n = pread(fd, magic, sizeof(magic), 0);
    if (n < 0) {
        snprintf(why, size, "cannot read it to tell its format: %s", strerror(errno));
        return -errno;
    }
    *ret = n == (ssize_t)sizeof(magic) && memcmp(magic, QCOW2_MAGIC, 4) == 0 ? "qcow2" : "raw";
    return 0;
}

/* One virtio-blk disk: crosvm's block options as qemu's drive and device
 * properties. `key` names the disk in errors ("rootDisk",
 * "additionalDisks[1]"). */
static int add_disk(VmmArgv *a, const VmConfig *vm, const ConfigDevice *d, const char *id,
                    bool readonly, const char *key, ErrorText *err) {
    _cleanup_free_ char *file = qemu_escape(d->path);
    const char *format = "raw";
    char why[160];
    char drive[256] = "", device[256] = "";

    if (disk_format(d->path, &format, why, sizeof(why)) < 0) {
        return error_set(err, -EINVAL, "%.200s: key '%s.path': %.200s: %s", vm->path, key, d->path,
                         why);
    }
    for (size_t i = 0; i < d->opts.n; i++) {
        const char *k = d->opts.v[i].key, *v = d->opts.v[i].value;
        size_t dl = strlen(drive), vl = strlen(device);
        if (streq(k, "ro")) {
            readonly = streq(v, "true");
        } else if (streq(k, "sparse")) {
            snprintf(drive + dl, sizeof(drive) - dl, ",discard=%s",
                     streq(v, "true") ? "unmap" : "ignore");
        } else if (streq(k, "direct")) {
            snprintf(drive + dl, sizeof(drive) - dl, ",cache.direct=%s",
                     streq(v, "true") ? "on" : "off");
        } else if (streq(k, "block-size")) {
            snprintf(device + vl, sizeof(device) - vl,
                     ",logical_block_size=%.20s,physical_block_size=%.20s", v, v);
        } else if (streq(k, "id")) {
            snprintf(device + vl, sizeof(device) - vl, ",serial=%.40s", v);
        } else {
            /* config_vm_qemu_check() refused it already. */
            return error_set(err, -EINVAL, "%.200s: key '%s.%.40s': unexpected", vm->path, key, k);
        }
    }
    vmm_argv_add(a, "-drive");
    vmm_argv_addf(a, "file=%s,if=none,id=%s,format=%s%s%s", file ? file : "", id, format,
                  readonly ? ",readonly=on" : "", drive);
    vmm_argv_add(a, "-device");
    vmm_argv_addf(a, "virtio-blk-pci,drive=%s%s", id, device);
    if (!file) {
        a->oom = true;
    }
    return 0;
}

static int add_disks(VmmArgv *a, const VmConfig *vm, ErrorText *err) {
    if (vm->root_disk) {
        int r = add_disk(a, vm, vm->root_disk, "root", vm->root_disk_readonly, "rootDisk", err);
        if (r < 0) {
            return r;
        }
    }
    for (size_t i = 0; i < vm->additional_disks.n; i++) {
        char id[32], key[48];
        snprintf(id, sizeof(id), "disk%zu", i);
        snprintf(key, sizeof(key), "additionalDisks[%zu]", i);
        int r = add_disk(a, vm, &vm->additional_disks.v[i], id, false, key, err);
        if (r < 0) {
            return r;
        }
    }
    return 0;
}

/* ---- the kernel command line --------------------------------------------------- */

static void host_net_mac(const VmConfig *vm, char buf[static MAC_STR_SIZE]) {
    uint8_t mac[6];
    config_mac_derive(HOST_NET_MAC_NAME, vm->name, mac);
    mac_format(mac, buf);
}

static char *kernel_cmdline(const HostConfig *h, const VmConfig *vm) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        return NULL;
    }
    fputs(QEMU_CMDLINE, f);
    if (vm->root_disk) {
        fprintf(f, " root=/dev/vda %s", vm->root_disk_readonly ? "ro" : "rw");
    }
    fprintf(f, " qubes_lite.name=%s", vm->name);
    if (vm->disposable) {
        fprintf(f, " qubes_lite.idle=%u", vm->idle_timeout);
    }
    if (h->user) {
        fprintf(f, " qubes_lite.user=%s", h->user);
    }
    if (vm->host_networking) {
        ConfigAddresses ad;
        char mac[MAC_STR_SIZE];
        config_vm_addresses(h, vm, &ad);
        host_net_mac(vm, mac);
        fprintf(f, " qubes_lite.ip=%s/%u qubes_lite.gw=%s qubes_lite.mac=%s", ad.vm_ip, ad.prefix,
                ad.host_ip, mac);
    }
    for (size_t i = 0; i < vm->kernel_params.n; i++) {
        fprintf(f, " %s", vm->kernel_params.v[i]);
    }
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* ---- devices ------------------------------------------------------------------- */

static int add_nics(VmmArgv *a, const QemuHost *qh, const VmConfig *vm) {
    _cleanup_free_ ConfigDevice *vhost = NULL;
    size_t n_vhost = 0;

    if (vm->host_networking) {
        char mac[MAC_STR_SIZE];
        host_net_mac(vm, mac);
        vmm_argv_add(a, "-netdev");
        vmm_argv_addf(a, "tap,id=tap0,ifname=%s,script=no,downscript=no", vm->tap_name);
        vmm_argv_add(a, "-device");
        vmm_argv_addf(a, "virtio-net-pci,netdev=tap0,mac=%s", mac);
    }
    if (config_vm_vhost_user(vm, &vhost, &n_vhost) < 0) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < n_vhost; i++) {
        const char *sock = vhost[i].path;
        char mac[MAC_STR_SIZE + 8] = "";
        if (i < vm->n_vm_networks) {
            char m[MAC_STR_SIZE];
            snprintf(mac, sizeof(mac), ",mac=%s", mac_format(vm->vm_networks[i].mac, m));
        }
        for (size_t k = 0; !sock && k < vhost[i].opts.n; k++) {
            if (streq(vhost[i].opts.v[k].key, "socket")) {
                sock = vhost[i].opts.v[k].value;
            }
        }
        _cleanup_free_ char *path = qemu_escape(sock ? sock : "");
        vmm_argv_add(a, "-chardev");
        vmm_argv_addf(a, "socket,id=vu%zu,path=%s,reconnect=1", i, path ? path : "");
        vmm_argv_add(a, "-netdev");
        vmm_argv_addf(a, "vhost-user,id=vn%zu,chardev=vu%zu", i, i);
        vmm_argv_add(a, "-device");
        vmm_argv_addf(a, "virtio-net-pci,netdev=vn%zu%s%s", i, mac, qh->kvm ? "" : ",vectors=0");
        if (!path) {
            a->oom = true;
        }
    }
    return 0;
}

static void add_shared_dirs(VmmArgv *a, const VmConfig *vm) {
    for (size_t i = 0; i < vm->shared_directories.n; i++) {
        char what[32];
        snprintf(what, sizeof(what), "fs-%zu", i);
        _cleanup_free_ char *sock = vmm_qemu_socket(vm, what);
        _cleanup_free_ char *tag = qemu_escape(vm->shared_directories.v[i].tag);
        if (!sock || !tag) {
            a->oom = true;
            continue;
        }
        vmm_argv_add(a, "-chardev");
        vmm_argv_addf(a, "socket,id=fs%zu,path=%s", i, sock);
        vmm_argv_add(a, "-device");
        vmm_argv_addf(a, "vhost-user-fs-pci,chardev=fs%zu,tag=%s", i, tag);
    }
}

static void add_vsock(VmmArgv *a, const QemuHost *qh, const VmConfig *vm) {
    if (qh->vhost_vsock) {
        vmm_argv_add(a, "-device");
        vmm_argv_addf(a, "vhost-vsock-pci,guest-cid=%u", vm->id);
        return;
    }
    _cleanup_free_ char *sock = vmm_qemu_socket(vm, "vsock-vhost");
    if (!sock) {
        a->oom = true;
        return;
    }
    vmm_argv_add(a, "-chardev");
    vmm_argv_addf(a, "socket,id=vsock,path=%s,reconnect=1", sock);
    /* Paused until the device is added over QMP (qemurun.c). */
    vmm_argv_add(a, "-S");
}

int vmm_qemu_argv_on(const QemuHost *qh, const HostConfig *h, const VmConfig *vm, char ***ret_argv,
                     ErrorText *err) {
    _cleanup_(host_config_freep) HostConfig *defaults = NULL;
    VmmArgv a = {0};
    int r;

    if (!vm->kernel) {
        return error_set(err, -EINVAL, "%.200s: key 'kernel': missing (required to start the VM)",
                         vm->path);
    }
    r = config_vm_qemu_check(vm, err);
    if (r < 0) {
        return r;
    }
    if (vm->host_networking) {
        r = config_vm_host_link_check(h, vm, err);
        if (r < 0) {
            return r;
        }
    }
    for (size_t i = 0; i < vm->shared_directories.n; i++) {
        _cleanup_strv_free_ char **fs = NULL;
        r = vmm_qemu_virtiofsd_argv(vm, i, &fs, err);
        if (r < 0) {
            return r;
        }
    }
    if (!h) {
        r = config_host_defaults(&defaults);
        if (r < 0) {
            return error_set(err, -ENOMEM, "out of memory");
        }
        h = defaults;
    }

    vmm_argv_add(&a, vmm_env_or("QUBES_LITE_QEMU", QEMU_DEFAULT));
    vmm_argv_add(&a, "-name");
    vmm_argv_add(&a, vm->name);
    vmm_argv_add(&a, "-machine");
    vmm_argv_add(&a, "pc,memory-backend=mem");
    vmm_argv_add(&a, "-accel");
    vmm_argv_add(&a, qh->kvm ? "kvm" : "tcg");
    vmm_argv_add(&a, "-cpu");
    vmm_argv_add(&a, qh->kvm ? "host" : "max");
    vmm_argv_add(&a, "-m");
    vmm_argv_addf(&a, "%u", vm->memory_mib);
    vmm_argv_add(&a, "-smp");
    vmm_argv_addf(&a, "%u", vm->cpus);
    vmm_argv_add(&a, "-object");
    vmm_argv_addf(&a, "memory-backend-memfd,id=mem,size=%uM,share=on", vm->memory_mib);
    vmm_argv_add(&a, "-nodefaults");
    vmm_argv_add(&a, "-no-user-config");
    vmm_argv_add(&a, "-display");
    vmm_argv_add(&a, "none");
    vmm_argv_add(&a, "-no-reboot");
    vmm_argv_add(&a, "-chardev");
    vmm_argv_add(&a, "stdio,id=console,signal=off");
    vmm_argv_add(&a, "-serial");
    vmm_argv_add(&a, "chardev:console");
    vmm_argv_add(&a, "-qmp");
    _cleanup_free_ char *qmp = vmm_qemu_socket(vm, "qmp");
    vmm_argv_addf(&a, "unix:%s,server=on,wait=off", qmp ? qmp : "");
    /* The VM's secret (secret.h): only its path is on the command line;
     * the guest reads it from fw_cfg (I/O port 0x510 on the pc machine). */
    _cleanup_free_ char *secret_path = vm_secret_path(vm->name);
    _cleanup_free_ char *secret = secret_path ? qemu_escape(secret_path) : NULL;
    vmm_argv_add(&a, "-fw_cfg");
    vmm_argv_addf(&a, "name=" VM_SECRET_FW_CFG_NAME ",file=%s", secret ? secret : "");
    vmm_argv_add(&a, "-kernel");
    vmm_argv_add(&a, vm->kernel);
    if (vm->initramfs) {
        vmm_argv_add(&a, "-initrd");
        vmm_argv_add(&a, vm->initramfs);
    }
    vmm_argv_add(&a, "-append");
    vmm_argv_add_owned(&a, kernel_cmdline(h, vm));

    r = add_disks(&a, vm, err);
    if (r >= 0) {
        r = add_nics(&a, qh, vm);
    }
    if (r == -ENOMEM || !qmp || !secret) {
        a.oom = true;
    } else if (r < 0) {
        strv_free(a.v);
        return r;
    }
    for (size_t i = 0; i < vm->pci_devices.n; i++) {
        vmm_argv_add(&a, "-device");
        vmm_argv_addf(&a, "vfio-pci,host=%s", vm->pci_devices.v[i].path);
    }
    add_shared_dirs(&a, vm);
    add_vsock(&a, qh, vm);
    vmm_argv_add_strv(&a, &h->qemu_extra_args);
    vmm_argv_add_strv(&a, &vm->qemu_extra_args);

    if (a.oom) {
        if (a.v) {
            strv_free(a.v);
        }
        return error_set(err, -ENOMEM, "out of memory");
    }
    *ret_argv = a.v;
    return 0;
}

int vmm_qemu_argv(const HostConfig *h, const VmConfig *vm, char ***ret_argv, ErrorText *err) {
    return vmm_qemu_argv_on(qemu_host_probe(), h, vm, ret_argv, err);
}

/* ---- what runs beside it --------------------------------------------------------- */

static const char *virtiofsd_path(void) {
    static const char *const known[] = {"/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"};
    const char *e = getenv("QUBES_LITE_VIRTIOFSD");
    if (e && *e) {
        return e;
    }
    for (size_t i = 0; i < ELEMENTSOF(known); i++) {
        if (access(known[i], X_OK) == 0) {
            return known[i];
        }
    }
    return "virtiofsd";
}

int vmm_qemu_virtiofsd_argv(const VmConfig *vm, size_t i, char ***ret_argv, ErrorText *err) {
    const ConfigDevice *d = &vm->shared_directories.v[i];
    char what[32];
    VmmArgv a = {0};

    snprintf(what, sizeof(what), "fs-%zu", i);
    _cleanup_free_ char *sock = vmm_qemu_socket(vm, what);
    _cleanup_free_ char *source = qemu_escape(d->path);
    vmm_argv_add(&a, virtiofsd_path());
    vmm_argv_addf(&a, "--socket-path=%s", sock ? sock : "");
    vmm_argv_add(&a, "-o");
    vmm_argv_addf(&a, "source=%s", source ? source : "");
    /* Its own sandbox: mount, pid and net namespaces, pivot_root into the
     * shared directory, seccomp. */
    vmm_argv_add(&a, "-o");
    vmm_argv_add(&a, "sandbox=namespace");
    for (size_t k = 0; k < d->opts.n; k++) {
        const char *key = d->opts.v[k].key, *v = d->opts.v[k].value;
        if (streq(key, "type") && streq(v, "fs")) {
            continue;
        }
        if (streq(key, "cache") && (streq(v, "auto") || streq(v, "always") || streq(v, "never"))) {
            vmm_argv_add(&a, "-o");
            vmm_argv_addf(&a, "cache=%s", streq(v, "never") ? "none" : v);
            continue;
        }
        if (streq(key, "writeback")) {
            vmm_argv_add(&a, "-o");
            vmm_argv_add(&a, streq(v, "true") ? "writeback" : "no_writeback");
            continue;
        }
        /* config_vm_qemu_check() refused it already. */
        strv_free(a.v);
        return error_set(err, -EINVAL, "%.200s: key 'sharedDirectories[%zu].%.40s': unexpected",
                         vm->path, i, key);
    }
    if (a.oom || !sock || !source) {
        if (a.v) {
            strv_free(a.v);
        }
        return error_set(err, -ENOMEM, "out of memory");
    }
    *ret_argv = a.v;
    return 0;
}

int vmm_qemu_vsock_argv(const HostConfig *h, const VmConfig *vm, char ***ret_argv) {
    _cleanup_free_ char *vhost = vmm_qemu_socket(vm, "vsock-vhost");
    _cleanup_free_ char *path = config_vm_runtime_file(vm->name, CONFIG_RUNTIME_VSOCK);
    VmmArgv a = {0};

    /* $QUBES_LITE_VSOCK, else the one beside the host agent (a package's
     * bin directory, which a service's PATH need not hold), else PATH. */
    const char *env = vmm_env_or("QUBES_LITE_VSOCK", NULL);
    vmm_argv_add_owned(&a, env ? strdup(env) : config_program_or_path("qubes-lite-vsock"));
    vmm_argv_add(&a, "--socket");
    vmm_argv_add(&a, vhost ? vhost : "");
    vmm_argv_add(&a, "--uds-path");
    vmm_argv_add(&a, path ? path : "");
    vmm_argv_add(&a, "--guest-cid");
    vmm_argv_addf(&a, "%u", vm->id);
    /* The configured user reaches the VM's vsock ports as a vhost-vsock
     * host lets any user (vm-shell --ssh); the guest agent's port asks
     * for the VM's secret, which only root holds. */
    if (h && h->user) {
        vmm_argv_add(&a, "--uds-group");
        vmm_argv_addf(&a, "%u", (unsigned)h->user_gid);
    }
    if (a.oom || !vhost || !path) {
        if (a.v) {
            strv_free(a.v);
        }
        return -ENOMEM;
    }
    *ret_argv = a.v;
    return 0;
}

int vmm_qemu_guest_address(const HostConfig *h, const VmConfig *vm, char *buf, size_t size) {
    if (qemu_host_probe()->vhost_vsock) {
        return -ENOENT;
    }
    _cleanup_free_ char *path = config_vm_runtime_file(vm->name, CONFIG_RUNTIME_VSOCK);
    if (!path) {
        return -ENOMEM;
    }
    int n = snprintf(buf, size, "hvsock:%s:%u", path, GUEST_AGENT_VSOCK_PORT);
    return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}
