/* crosvm's command line.
 *
 * Flag forms, checked against crosvm's own argument definitions
 * (src/crosvm/cmdline.rs: CrosvmCmdlineArgs, RunCommand, StopCommand;
 * src/crosvm/config.rs: CpuOptions, MemOptions, VhostUserFrontendOption)
 * and its book (docs/book/src/running_crosvm/options.md,
 * advanced_usage.md, devices/vsock.md):
 *   crosvm --log-level LEVEL <subcommand>   top-level option, before `run`
 *   run ... KERNEL                          the kernel is the positional
 *   --cpus num-cores=N                      (-c; key=value set)
 *   --mem size=MIB                          (-m; key=value set)
 *   --vsock cid=CID                         (--cid is deprecated)
 *   --net tap-name=NAME                     (persistent TAP; --tap-name is deprecated)
 *   --block PATH[,ro=BOOL,root=BOOL,sparse=,block-size=,id=,direct=…]
 *                                           (-b; the first key, path, may be left out)
 *   --vfio SYSFS_PATH[,guest-address=,iommu=…]
 *   --shared-dir PATH:TAG[:type=fs|p9:uid=…:…]   (':'-separated)
 *   --vhost-user [type=]TYPE,socket=PATH[,…]
 *   --gpu KEY=VALUE,… (context-types=LIST among them)
 *   --wayland-sock PATH[,name=NAME]         (the unnamed one: the display's)
 *   --virtio-snd KEY=VALUE,… (backend=, capture=; needs the audio feature)
 *   --serial type=stdout,hardware=serial,num=1,console,stdin
 *                                           (bare keys are booleans set to true)
 *   --socket PATH                           (-s; the control socket)
 *   --fw-cfg name=NAME,path=PATH            (a fw_cfg file from PATH, read at start;
 *                                            FwCfgParameters, crosvm since mid-2023)
 *   --initrd PATH                           (-i)
 *   --params STRING                         (-p; repeatable, appended to the kernel
 *                                            command line)
 *   crosvm stop SOCKET                      (StopCommand: positional VM_SOCKET)
 * Upstream's virtio-snd backends are null, file and cras; `sound = true`
 * asks for backend=pulse as the original does, which needs a crosvm built
 * with a PulseAudio backend. */
#include "crosvm.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "secret.h"

#define CROSVM_GPU_DEFAULT "context-types=cross-domain:virgl2"
#define CROSVM_SOUND_DEFAULT "backend=pulse"
#define CROSVM_SERIAL "type=stdout,hardware=serial,num=1,console,stdin"

char *vmm_crosvm_control_socket(const VmConfig *vm) {
    return config_vm_runtime_file(vm->name, CONFIG_RUNTIME_CROSVM);
}

static void add_feature(VmmArgv *a, const char *flag, const ConfigFeature *f, const char *def) {
    if (f->mode == CONFIG_FEATURE_OFF) {
        return;
    }
    vmm_argv_add(a, flag);
    if (f->mode == CONFIG_FEATURE_DEFAULT) {
        vmm_argv_add(a, def);
    } else {
        vmm_argv_add_owned(a, vmm_join_opts(NULL, &f->opts, ','));
    }
}

int vmm_crosvm_argv(const HostConfig *h, const VmConfig *vm, char ***ret_argv, ErrorText *err) {
    _cleanup_(host_config_freep) HostConfig *defaults = NULL;
    _cleanup_free_ ConfigDevice *vhost = NULL;
    size_t n_vhost = 0;
    VmmArgv a = {0};
    int r;

    if (!vm->kernel) {
        return error_set(err, -EINVAL, "%.200s: key 'kernel': missing (required to start the VM)",
                         vm->path);
    }
    if (!h) {
        r = config_host_defaults(&defaults);
        if (r < 0) {
            goto oom;
        }
        h = defaults;
    }

    vmm_argv_add(&a, vmm_env_or("QUBES_LITE_CROSVM", "crosvm"));
    vmm_argv_add(&a, "--log-level");
    vmm_argv_add(&a, vm->crosvm_log_level ? vm->crosvm_log_level : h->crosvm_log_level);
    vmm_argv_add_strv(&a, &h->crosvm_extra_args);
    vmm_argv_add_strv(&a, &vm->crosvm_extra_args);
    vmm_argv_add(&a, "run");

    vmm_argv_add(&a, "--cpus");
    vmm_argv_addf(&a, "num-cores=%u", vm->cpus);
    vmm_argv_add(&a, "--mem");
    vmm_argv_addf(&a, "size=%u", vm->memory_mib);
    vmm_argv_add(&a, "--vsock");
    vmm_argv_addf(&a, "cid=%u", vm->id);
    vmm_argv_add(&a, "--socket");
    vmm_argv_add_owned(&a, vmm_crosvm_control_socket(vm));
    vmm_argv_add(&a, "--serial");
    vmm_argv_add(&a, CROSVM_SERIAL);
    /* The VM's secret (secret.h): only its path is on the command line.
     * crosvm's fw_cfg is at I/O port 0x510 with no ACPI entry; the guest
     * reads it there itself (rootfs/fwcfg.h), no kernel driver needed. */
    vmm_argv_add(&a, "--fw-cfg");
    {
        _cleanup_free_ char *secret = vm_secret_path(vm->name);
        if (secret) {
            vmm_argv_addf(&a, "name=" VM_SECRET_FW_CFG_NAME ",path=%s", secret);
        } else {
            a.oom = true;
        }
    }

    if (vm->root_disk) {
        /* First block device, so /dev/vda; root= makes crosvm say so on
         * the kernel command line. */
        _cleanup_free_ char *head = vmm_join_opts(vm->root_disk->path, &vm->root_disk->opts, ',');
        vmm_argv_add(&a, "--block");
        if (head) {
            vmm_argv_addf(&a, "%s,ro=%s,root=true", head,
                          vm->root_disk_readonly ? "true" : "false");
        } else {
            a.oom = true;
        }
    }
    if (vm->initramfs) {
        vmm_argv_add(&a, "--initrd");
        vmm_argv_add(&a, vm->initramfs);
    }
    for (size_t i = 0; i < vm->kernel_params.n; i++) {
        vmm_argv_add(&a, "--params");
        vmm_argv_add(&a, vm->kernel_params.v[i]);
    }
    if (vm->host_networking) {
        vmm_argv_add(&a, "--net");
        vmm_argv_addf(&a, "tap-name=%s", vm->tap_name);
    }

    for (size_t i = 0; i < vm->additional_disks.n; i++) {
        const ConfigDevice *d = &vm->additional_disks.v[i];
        vmm_argv_add(&a, "--block");
        vmm_argv_add_owned(&a, vmm_join_opts(d->path, &d->opts, ','));
    }
    for (size_t i = 0; i < vm->shared_directories.n; i++) {
        const ConfigDevice *d = &vm->shared_directories.v[i];
        _cleanup_free_ char *head = NULL;
        if (asprintf(&head, "%s:%s", d->path, d->tag) < 0) {
            head = NULL;
            a.oom = true;
            continue;
        }
        vmm_argv_add(&a, "--shared-dir");
        vmm_argv_add_owned(&a, vmm_join_opts(head, &d->opts, ':'));
    }
    for (size_t i = 0; i < vm->pci_devices.n; i++) {
        const ConfigDevice *d = &vm->pci_devices.v[i];
        _cleanup_free_ char *head = NULL;
        if (asprintf(&head, "%s/bus/pci/devices/%s/", vmm_env_or("QUBES_LITE_SYSFS_ROOT", "/sys"),
                     d->path) < 0) {
            head = NULL;
            a.oom = true;
            continue;
        }
        vmm_argv_add(&a, "--vfio");
        vmm_argv_add_owned(&a, vmm_join_opts(head, &d->opts, ','));
    }
    if (config_vm_vhost_user(vm, &vhost, &n_vhost) < 0) {
        goto oom;
    }
    for (size_t i = 0; i < n_vhost; i++) {
        vmm_argv_add(&a, "--vhost-user");
        if (vhost[i].path) {
            vmm_argv_addf(&a, "type=net,socket=%s", vhost[i].path);
        } else {
            vmm_argv_add_owned(&a, vmm_join_opts(NULL, &vhost[i].opts, ','));
        }
    }
    add_feature(&a, "--gpu", &vm->gpu, CROSVM_GPU_DEFAULT);
    if (vm->gpu.mode != CONFIG_FEATURE_OFF && h->user) {
        /* The cross-domain context shows the guest's windows through the
         * configured user's compositor: crosvm runs as root and would
         * otherwise look for a socket in its own (absent) session. */
        vmm_argv_add(&a, "--wayland-sock");
        vmm_argv_addf(&a, CONFIG_USER_RUNTIME_DIR_FMT "/" CONFIG_WAYLAND_DISPLAY,
                      (unsigned)h->user_uid);
    }
    add_feature(&a, "--virtio-snd", &vm->sound, CROSVM_SOUND_DEFAULT);

    vmm_argv_add_strv(&a, &h->crosvm_extra_run_args);
    vmm_argv_add_strv(&a, &vm->crosvm_extra_run_args);
    vmm_argv_add(&a, vm->kernel);

    if (a.oom) {
        goto oom;
    }
    *ret_argv = a.v;
    return 0;

oom:
    if (a.v) {
        strv_free(a.v);
    }
    return error_set(err, -ENOMEM, "out of memory");
}

int vmm_crosvm_stop_argv(const VmConfig *vm, char ***ret_argv) {
    VmmArgv a = {0};
    vmm_argv_add(&a, vmm_env_or("QUBES_LITE_CROSVM", "crosvm"));
    vmm_argv_add(&a, "stop");
    vmm_argv_add_owned(&a, vmm_crosvm_control_socket(vm));
    if (a.oom) {
        strv_free(a.v);
        return -ENOMEM;
    }
    *ret_argv = a.v;
    return 0;
}

const VmmOps vmm_crosvm = {
    .name = "crosvm",
    .argv = vmm_crosvm_argv,
    .stop_argv = vmm_crosvm_stop_argv,
    .control_socket = vmm_crosvm_control_socket,
};
