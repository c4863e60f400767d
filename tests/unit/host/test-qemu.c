/* host/qemu: qemu's command line. Whole VMs argument by argument under TCG
 * with qubes-lite-vsock and under KVM with the kernel's vhost-vsock, then
 * each mapping rule: the kernel command line, disks (their format read
 * from their bytes), NICs, vfio, virtiofsd, and what qemu refuses. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "host/agent/qemu.h"

#include "vmm-argv.h"

#define QCOW2_MAGIC "QFI\xfb\0\0\0\3"

static const QemuHost tcg = {.kvm = false, .vhost_vsock = false};
static const QemuHost kvm = {.kvm = true, .vhost_vsock = true};

static void clean_env(void) {
    unsetenv("QUBES_LITE_QEMU");
    unsetenv("QUBES_LITE_VIRTIOFSD");
    unsetenv("QUBES_LITE_VSOCK");
    unsetenv("QUBES_LITE_SWITCH_DIR");
    setenv("QUBES_LITE_RUNTIME_DIR", "/run/ql", 1);
}

static char **build_on(const QemuHost *qh, const HostConfig *h, const VmConfig *vm) {
    char **argv = NULL;
    ErrorText err = {{0}};
    if (vmm_qemu_argv_on(qh, h, vm, &argv, &err) < 0) {
        fail_msg("vmm_qemu_argv_on: %s", err.message);
    }
    return argv;
}

static char **build_vm(const QemuHost *qh, const char *json) {
    VmConfig *vm = load_vm("t", json);
    char **argv = build_on(qh, NULL, vm);
    vm_config_free(vm);
    return argv;
}

/* The error a VM's argv fails with. */
static void expect_refused(const char *json, const char *message) {
    VmConfig *vm = load_vm("t", json);
    char **argv = NULL;
    ErrorText err = {{0}};
    assert_int_equal(vmm_qemu_argv_on(&tcg, NULL, vm, &argv, &err), -EINVAL);
    assert_null(argv);
    if (!strstr(err.message, message)) {
        fail_msg("'%s' lacks '%s'", err.message, message);
    }
    vm_config_free(vm);
}

/* A file of the test's directory holding `data`; its path in buf. */
static const char *file_with(char buf[static 256], const char *name, const void *data, size_t n) {
    snprintf(buf, 256, "%s/%s", dir, name);
    FILE *f = fopen(buf, "we");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
    return buf;
}

static const char *append_of(char **argv) {
    const char *append = NULL;
    assert_int_equal(find_flag(argv, "-append", &append), 1);
    return append;
}

#define BASE(mem, cpus) "qemu-system-x86_64", "-name", "t", "-machine", "pc,memory-backend=mem"
#define MEMORY_ETC(mem, cpus)                                                                      \
    "-m", mem, "-smp", cpus, "-object", "memory-backend-memfd,id=mem,size=" mem "M,share=on",      \
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-chardev",            \
        "stdio,id=console,signal=off", "-serial", "chardev:console", "-qmp",                       \
        "unix:/run/ql/t.qmp.sock,server=on,wait=off", "-fw_cfg",                                   \
        "name=opt/qubes-lite/secret,file=/run/ql/t.secret"

static void test_whole_vm_under_tcg(void **state) {
    char **argv = build_vm(&tcg, "{'id': 5, 'kernel': '/k/vmlinux', 'initramfs': '/k/initrd.img', "
                                 "'memory': 256, 'cpus': 1, 'gpu': false}");
    static const char *const expected[] = {
        BASE("256", "1"),
        "-accel",
        "tcg",
        "-cpu",
        "max",
        MEMORY_ETC("256", "1"),
        "-kernel",
        "/k/vmlinux",
        "-initrd",
        "/k/initrd.img",
        "-append",
        "console=ttyS0 panic=-1 quiet no_timer_check qubes_lite.name=t",
        "-chardev",
        "socket,id=vsock,path=/run/ql/t.vsock-vhost.sock,reconnect=1",
        "-S",
        NULL,
    };
    expect_argv(argv, expected);
    strv_free(argv);
}

static void test_whole_vm_under_kvm(void **state) {
    setenv("QUBES_LITE_QEMU", "/opt/qemu/bin/qemu-system-x86_64", 1);
    char **argv = build_vm(&kvm, "{'id': 5, 'kernel': '/k/vmlinux', 'gpu': false, "
                                 "'vmNetwork': {'lan': {}}}");
    static const char *const expected[] = {
        "/opt/qemu/bin/qemu-system-x86_64", "-name", "t", "-machine", "pc,memory-backend=mem",
        "-accel", "kvm", "-cpu", "host", MEMORY_ETC("1024", "2"), "-kernel", "/k/vmlinux",
        "-append", "console=ttyS0 panic=-1 quiet no_timer_check qubes_lite.name=t",
        /* vmNetwork: the switch's socket, the derived MAC; MSI-X stays on. */
        "-chardev", "socket,id=vu0,path=/run/vm-switch/lan/t.sock,reconnect=1", "-netdev",
        "vhost-user,id=vn0,chardev=vu0", "-device",
        "virtio-net-pci,netdev=vn0,mac=52:ec:55:1e:fe:5b", "-device", "vhost-vsock-pci,guest-cid=5",
        NULL};
    expect_argv(argv, expected);
    strv_free(argv);
    unsetenv("QUBES_LITE_QEMU");
}

static void test_kernel_command_line(void **state) {
    HostConfig *h = load_host("{'user': 'daemon', 'hostNetworking': {'network': '10.9.8.0/24'}}");
    VmConfig *vm = load_vm("t", "{'id': 7, 'kernel': '/k', 'gpu': false, 'disposable': true, "
                                "'idleTimeout': 90, 'hostNetworking': true, "
                                "'kernelParams': ['loglevel=7', 'init=/init']}");
    char **argv = build_on(&tcg, h, vm);
    const char *mac;
    expect_option(argv, "-append",
                  "console=ttyS0 panic=-1 quiet no_timer_check qubes_lite.name=t "
                  "qubes_lite.idle=90 qubes_lite.user=daemon qubes_lite.ip=10.9.8.7/31 "
                  "qubes_lite.gw=10.9.8.6 qubes_lite.mac=52:2b:b6:fe:32:8a loglevel=7 init=/init");
    /* The TAP's NIC has the MAC the guest looks for. */
    expect_option(argv, "-netdev", "tap,id=tap0,ifname=vm-t,script=no,downscript=no");
    assert_int_equal(find_flag(argv, "-device", &mac), 1);
    assert_string_equal(mac, "virtio-net-pci,netdev=tap0,mac=52:2b:b6:fe:32:8a");
    strv_free(argv);
    vm_config_free(vm);
    host_config_free(h);

    /* A network that is not a /24: its address plus the id; a VM whose /31
     * is outside it is refused before anything starts. */
    h = load_host("{'hostNetworking': {'network': '192.168.0.0/26'}}");
    vm = load_vm("t", "{'id': 61, 'kernel': '/k', 'gpu': false, 'hostNetworking': true}");
    argv = build_on(&tcg, h, vm);
    assert_non_null(
        strstr(append_of(argv), " qubes_lite.ip=192.168.0.61/31 qubes_lite.gw=192.168.0.60 "));
    strv_free(argv);
    vm_config_free(vm);
    vm = load_vm("t", "{'id': 65, 'kernel': '/k', 'gpu': false, 'hostNetworking': true}");
    ErrorText err = {{0}};
    argv = NULL;
    assert_int_equal(vmm_qemu_argv_on(&tcg, h, vm, &argv, &err), -ERANGE);
    assert_null(argv);
    assert_non_null(strstr(err.message, "key 'id': 65 has no /31 in hostNetworking.network "
                                        "192.168.0.0/26, which holds ids up to 63"));
    vm_config_free(vm);
    host_config_free(h);

    /* Not disposable, no user, no host link: the name only. */
    argv = build_vm(&tcg, "{'id': 7, 'kernel': '/k', 'gpu': false, 'idleTimeout': 90}");
    assert_string_equal(append_of(argv),
                        "console=ttyS0 panic=-1 quiet no_timer_check qubes_lite.name=t");
    strv_free(argv);
}

static void test_disks_format_from_content(void **state) {
    char raw[256], qcow[256], json[1024];
    static const char zeros[512];
    /* Names that say the opposite of what the files are. */
    file_with(raw, "disk.qcow2", zeros, sizeof(zeros));
    file_with(qcow, "root.img", QCOW2_MAGIC, 8);
    snprintf(json, sizeof(json),
             "{'id': 3, 'kernel': '/k', 'gpu': false, 'rootDisk': '%s', "
             "'additionalDisks': [{'path': '%s', 'ro': true, 'sparse': true, 'direct': true, "
             "'block-size': 4096, 'id': 'data'}, {'path': '%s'}]}",
             qcow, raw, raw);
    char **argv = build_vm(&tcg, json);
    char drives[3][512], devices[3][256];
    snprintf(drives[0], 512, "file=%s,if=none,id=root,format=qcow2,readonly=on", qcow);
    snprintf(drives[1], 512,
             "file=%s,if=none,id=disk0,format=raw,readonly=on,discard=unmap,cache.direct=on", raw);
    snprintf(drives[2], 512, "file=%s,if=none,id=disk1,format=raw", raw);
    snprintf(devices[0], 256, "virtio-blk-pci,drive=root");
    snprintf(devices[1], 256,
             "virtio-blk-pci,drive=disk0,logical_block_size=4096,physical_block_size=4096,"
             "serial=data");
    snprintf(devices[2], 256, "virtio-blk-pci,drive=disk1");
    size_t k = 0;
    for (size_t i = 0; argv[i]; i++) {
        if (streq(argv[i], "-drive")) {
            assert_true(k < 3);
            assert_string_equal(argv[i + 1], drives[k]);
            assert_string_equal(argv[i + 2], "-device");
            assert_string_equal(argv[i + 3], devices[k]);
            k++;
        }
    }
    assert_int_equal(k, 3);
    /* The root disk is /dev/vda, read-only. */
    assert_non_null(strstr(append_of(argv), " root=/dev/vda ro "));
    strv_free(argv);

    snprintf(json, sizeof(json),
             "{'id': 3, 'kernel': '/k', 'gpu': false, 'rootDisk': '%s', 'rootDiskReadonly': false}",
             qcow);
    argv = build_vm(&tcg, json);
    assert_non_null(strstr(append_of(argv), " root=/dev/vda rw "));
    snprintf(drives[0], 512, "file=%s,if=none,id=root,format=qcow2", qcow);
    expect_option(argv, "-drive", drives[0]);
    strv_free(argv);
}

static void test_disk_refusals(void **state) {
    char raw[256], json[1024];
    static const char zeros[16];
    file_with(raw, "d.img", zeros, sizeof(zeros));
    snprintf(json, sizeof(json),
             "{'id': 3, 'kernel': '/k', 'gpu': false, 'additionalDisks': [{'path': '%s', "
             "'o_direct': true}]}",
             raw);
    expect_refused(json, "key 'additionalDisks[0].o_direct': a crosvm block option that qemu");
    expect_refused("{'id': 3, 'kernel': '/k', 'gpu': false, 'rootDisk': '/no/such/disk'}",
                   "key 'rootDisk.path': /no/such/disk: cannot open it to tell its format");
}

static void test_vhost_user_nics(void **state) {
    char **argv = build_vm(&tcg, "{'id': 3, 'kernel': '/k', 'gpu': false, "
                                 "'vmNetwork': {'lan': {'macAddress': '52:54:00:00:00:07'}}, "
                                 "'vhostUser': [{'type': 'net', 'socket': '/run/other.sock'}]}");
    static const char *const nics[] = {
        "-chardev", "socket,id=vu0,path=/run/vm-switch/lan/t.sock,reconnect=1", "-netdev",
        "vhost-user,id=vn0,chardev=vu0", "-device",
        /* TCG: legacy interrupts, or qemu 7.2 crashes. */
        "virtio-net-pci,netdev=vn0,mac=52:54:00:00:00:07,vectors=0", "-chardev",
        "socket,id=vu1,path=/run/other.sock,reconnect=1", "-netdev",
        "vhost-user,id=vn1,chardev=vu1", "-device", "virtio-net-pci,netdev=vn1,vectors=0"};
    size_t i = 0;
    while (argv[i] && !streq(argv[i], nics[0])) {
        i++;
    }
    while (argv[i] && !(streq(argv[i], "-chardev") && startswith(argv[i + 1], "socket,id=vu0"))) {
        i++;
    }
    for (size_t k = 0; k < ELEMENTSOF(nics); k++) {
        assert_non_null(argv[i + k]);
        assert_string_equal(argv[i + k], nics[k]);
    }
    strv_free(argv);
    expect_refused("{'id': 3, 'kernel': '/k', 'gpu': false, "
                   "'vhostUser': [{'type': 'fs', 'socket': '/run/fs.sock'}]}",
                   "key 'vhostUser[0].type': 'fs' under qemu: only net devices");
}

static void test_vfio(void **state) {
    char **argv = build_vm(&tcg, "{'id': 3, 'kernel': '/k', 'gpu': false, "
                                 "'pciDevices': [{'path': '01:00.0'}]}");
    const char *dev = NULL;
    size_t n = find_flag(argv, "-device", &dev);
    assert_int_equal(n, 1);
    assert_string_equal(dev, "vfio-pci,host=0000:01:00.0");
    strv_free(argv);
    expect_refused("{'id': 3, 'kernel': '/k', 'gpu': false, "
                   "'pciDevices': [{'path': '01:00.0', 'iommu': 'on'}]}",
                   "key 'pciDevices[0].iommu': a crosvm vfio option, which qemu does not take");
}

static void test_shared_directories(void **state) {
    setenv("QUBES_LITE_VIRTIOFSD", "/usr/lib/qemu/virtiofsd", 1);
    VmConfig *vm = load_vm("t", "{'id': 3, 'kernel': '/k', 'gpu': false, 'sharedDirectories': ["
                                "{'path': '/srv/a', 'tag': 'a', 'type': 'fs'}, "
                                "{'path': '/srv/b,c', 'tag': 'b', 'cache': 'never', "
                                "'writeback': true}]}");
    char **argv = build_on(&tcg, NULL, vm);
    static const char *const expected[] = {"-chardev", "socket,id=fs0,path=/run/ql/t.fs-0.sock",
                                           "-device",  "vhost-user-fs-pci,chardev=fs0,tag=a",
                                           "-chardev", "socket,id=fs1,path=/run/ql/t.fs-1.sock",
                                           "-device",  "vhost-user-fs-pci,chardev=fs1,tag=b"};
    size_t i = 0;
    while (argv[i] && !(streq(argv[i], "-chardev") && startswith(argv[i + 1], "socket,id=fs0"))) {
        i++;
    }
    for (size_t k = 0; k < ELEMENTSOF(expected); k++) {
        assert_non_null(argv[i + k]);
        assert_string_equal(argv[i + k], expected[k]);
    }
    strv_free(argv);

    ErrorText err = {{0}};
    char **fs = NULL;
    assert_int_equal(vmm_qemu_virtiofsd_argv(vm, 1, &fs, &err), 0);
    static const char *const fs_expected[] = {"/usr/lib/qemu/virtiofsd",
                                              "--socket-path=/run/ql/t.fs-1.sock",
                                              "-o",
                                              "source=/srv/b,,c",
                                              "-o",
                                              "sandbox=namespace",
                                              "-o",
                                              "cache=none",
                                              "-o",
                                              "writeback",
                                              NULL};
    expect_argv(fs, fs_expected);
    strv_free(fs);
    vm_config_free(vm);
    unsetenv("QUBES_LITE_VIRTIOFSD");

    expect_refused("{'id': 3, 'kernel': '/k', 'gpu': false, 'sharedDirectories': ["
                   "{'path': '/srv/a', 'tag': 'a', 'type': 'fs', 'uid': 1000}]}",
                   "key 'sharedDirectories[0].uid': '1000' has no equivalent for qemu's "
                   "virtiofsd");
    expect_refused("{'id': 3, 'kernel': '/k', 'gpu': false, 'sharedDirectories': ["
                   "{'path': '/srv/a', 'tag': 'a', 'type': 'p9'}]}",
                   "key 'sharedDirectories[0].type': 'p9'");
}

static void test_vsock_device_command(void **state) {
    VmConfig *vm = load_vm("t", "{'id': 9, 'kernel': '/k', 'gpu': false}");
    char **argv = NULL;
    assert_int_equal(vmm_qemu_vsock_argv(NULL, vm, &argv), 0);
    static const char *const expected[] = {"qubes-lite-vsock",
                                           "--socket",
                                           "/run/ql/t.vsock-vhost.sock",
                                           "--uds-path",
                                           "/run/ql/t.vsock.sock",
                                           "--guest-cid",
                                           "9",
                                           NULL};
    expect_argv(argv, expected);
    strv_free(argv);
    /* With a user, its group may connect too (vm-shell --ssh). */
    HostConfig *h = load_host("{'user': 'daemon'}");
    assert_int_equal(vmm_qemu_vsock_argv(h, vm, &argv), 0);
    char gid[16];
    snprintf(gid, sizeof(gid), "%u", (unsigned)h->user_gid);
    size_t n = ELEMENTSOF(expected) - 1;
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(argv[i], expected[i]);
    }
    assert_string_equal(argv[n], "--uds-group");
    assert_string_equal(argv[n + 1], gid);
    assert_null(argv[n + 2]);
    strv_free(argv);
    host_config_free(h);
    vm_config_free(vm);
}

static void test_gpu_and_sound_are_refused(void **state) {
    /* gpu is true unless said otherwise. */
    expect_refused("{'id': 3, 'kernel': '/k'}",
                   "key 'gpu': qemu cannot show the guest's windows as crosvm does");
    expect_refused("{'id': 3, 'kernel': '/k', 'gpu': {'context-types': 'virgl2'}}", "key 'gpu'");
    expect_refused("{'id': 3, 'kernel': '/k', 'gpu': false, 'sound': true}",
                   "key 'sound': qemu 7.2 has no virtio-snd device");
    VmConfig *vm = load_vm("t", "{'id': 3, 'kernel': '/k', 'gpu': false, 'sound': true}");
    ErrorText err = {{0}};
    assert_int_equal(config_vm_qemu_check(vm, &err), -EINVAL);
    assert_non_null(strstr(err.message, "t.json: key 'sound'"));
    vm_config_free(vm);
}

static void test_missing_kernel(void **state) {
    expect_refused("{'id': 3, 'gpu': false}", "key 'kernel': missing");
}

static void test_extra_args_come_last(void **state) {
    HostConfig *h = load_host("{'qemu': {'extraArgs': ['-d', 'guest_errors']}}");
    VmConfig *vm = load_vm("t", "{'id': 3, 'kernel': '/k', 'gpu': false, "
                                "'qemu': {'extraArgs': ['-device', 'virtio-rng-pci']}}");
    char **argv = build_on(&tcg, h, vm);
    size_t n = 0;
    while (argv[n]) {
        n++;
    }
    assert_true(n > 5);
    assert_string_equal(argv[n - 5], "-S");
    assert_string_equal(argv[n - 4], "-d");
    assert_string_equal(argv[n - 3], "guest_errors");
    assert_string_equal(argv[n - 2], "-device");
    assert_string_equal(argv[n - 1], "virtio-rng-pci");
    strv_free(argv);
    vm_config_free(vm);
    host_config_free(h);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_vm_under_tcg),
        cmocka_unit_test(test_whole_vm_under_kvm),
        cmocka_unit_test(test_kernel_command_line),
        cmocka_unit_test(test_disks_format_from_content),
        cmocka_unit_test(test_disk_refusals),
        cmocka_unit_test(test_vhost_user_nics),
        cmocka_unit_test(test_vfio),
        cmocka_unit_test(test_shared_directories),
        cmocka_unit_test(test_vsock_device_command),
        cmocka_unit_test(test_gpu_and_sound_are_refused),
        cmocka_unit_test(test_missing_kernel),
        cmocka_unit_test(test_extra_args_come_last),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
