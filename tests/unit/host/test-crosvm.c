/* host/crosvm: the crosvm command line. One golden test per "Results in:"
 * example of the original's README, the other mapping rules, and whole
 * VMs argument by argument. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "host/common/config.h"
#include "host/agent/crosvm.h"
#include "util.h"

#include "vmm-argv.h"

static void clean_env(void) {
    unsetenv("QUBES_LITE_CROSVM");
    unsetenv("QUBES_LITE_RUNTIME_DIR");
    unsetenv("QUBES_LITE_SYSFS_ROOT");
    unsetenv("QUBES_LITE_SWITCH_DIR");
}

static char **build(const HostConfig *h, const VmConfig *vm) {
    char **argv = NULL;
    ErrorText err = {{0}};
    if (vmm_crosvm_argv(h, vm, &argv, &err) < 0) {
        fail_msg("vmm_crosvm_argv: %s", err.message);
    }
    return argv;
}

/* argv of a VM given by its JSON, with the default host configuration. */
static char **build_vm(const char *name, const char *json) {
    VmConfig *vm = load_vm(name, json);
    char **argv = build(NULL, vm);
    vm_config_free(vm);
    return argv;
}

/* ---- the original README's "Results in:" examples ---- */

static void test_readme_additional_disks(void **state) {
    char **argv = build_vm("data", "{'id': 3, 'kernel': '/k', 'additionalDisks': [{"
                                   "'path': '/tmp/data.qcow2', 'ro': false, 'sparse': true, "
                                   "'block-size': 4096, 'id': 'data', 'direct': false}]}");
    expect_option(argv, "--block",
                  "/tmp/data.qcow2,ro=false,sparse=true,block-size=4096,id=data,direct=false");
    strv_free(argv);
}

static void test_readme_shared_directories(void **state) {
    char **argv = build_vm("shared", "{'id': 3, 'kernel': '/k', 'sharedDirectories': [{"
                                     "'path': '/tmp/shared', 'tag': 'shared', 'type': 'fs', "
                                     "'uid': 1000}]}");
    expect_option(argv, "--shared-dir", "/tmp/shared:shared:type=fs:uid=1000");
    strv_free(argv);
}

static void test_readme_pci_devices(void **state) {
    char **argv = build_vm("usb", "{'id': 3, 'kernel': '/k', 'pciDevices': [{'path': '01:00.0', "
                                  "'iommu': 'on'}]}");
    expect_option(argv, "--vfio", "/sys/bus/pci/devices/0000:01:00.0/,iommu=on");
    strv_free(argv);
}

static void test_readme_vhost_user(void **state) {
    char **argv = build_vm("vu", "{'id': 3, 'kernel': '/k', 'vhostUser': [{'type': 'net', "
                                 "'socket': '/path/to/socket'}]}");
    expect_option(argv, "--vhost-user", "type=net,socket=/path/to/socket");
    strv_free(argv);
}

static void test_readme_gpu(void **state) {
    char **argv = build_vm("g", "{'id': 3, 'kernel': '/k', 'gpu': false}");
    expect_no_flag(argv, "--gpu");
    strv_free(argv);

    argv = build_vm("g", "{'id': 3, 'kernel': '/k', 'gpu': true}");
    expect_option(argv, "--gpu", "context-types=cross-domain:virgl2");
    strv_free(argv);

    /* The default is true. */
    argv = build_vm("g", "{'id': 3, 'kernel': '/k'}");
    expect_option(argv, "--gpu", "context-types=cross-domain:virgl2");
    strv_free(argv);

    argv = build_vm("g", "{'id': 3, 'kernel': '/k', 'gpu': {'context-types': "
                         "'cross-domain:virgl2', 'width': 1920, 'height': 1080}}");
    expect_option(argv, "--gpu", "context-types=cross-domain:virgl2,width=1920,height=1080");
    strv_free(argv);
}

static void test_readme_sound(void **state) {
    char **argv = build_vm("s", "{'id': 3, 'kernel': '/k', 'sound': false}");
    expect_no_flag(argv, "--virtio-snd");
    strv_free(argv);

    /* The default is false. */
    argv = build_vm("s", "{'id': 3, 'kernel': '/k'}");
    expect_no_flag(argv, "--virtio-snd");
    strv_free(argv);

    argv = build_vm("s", "{'id': 3, 'kernel': '/k', 'sound': true}");
    expect_option(argv, "--virtio-snd", "backend=pulse");
    strv_free(argv);

    argv = build_vm("s", "{'id': 3, 'kernel': '/k', 'sound': {'backend': 'pulse', "
                         "'capture': true}}");
    expect_option(argv, "--virtio-snd", "backend=pulse,capture=true");
    strv_free(argv);
}

/* The README's VM-to-VM example: router and clients on "internal". */
static void test_readme_vm_network(void **state) {
    char **argv = build_vm("router", "{'id': 3, 'name': 'router', 'kernel': '/k', "
                                     "'hostNetworking': true, "
                                     "'vmNetwork': {'internal': {'router': true}}}");
    expect_option(argv, "--vhost-user", "type=net,socket=/run/vm-switch/internal/router.sock");
    expect_option(argv, "--net", "tap-name=vm-router");
    strv_free(argv);

    argv = build_vm("banking", "{'id': 5, 'name': 'banking', 'kernel': '/k', "
                               "'vmNetwork': {'internal': {}}}");
    expect_option(argv, "--vhost-user", "type=net,socket=/run/vm-switch/internal/banking.sock");
    expect_no_flag(argv, "--net");
    strv_free(argv);

    /* A module that also lists the vmNetwork socket under vhostUser gets
     * it once. */
    argv = build_vm("banking", "{'id': 5, 'kernel': '/k', 'vmNetwork': {'internal': {}}, "
                               "'vhostUser': [{'type': 'net', "
                               "'socket': '/run/vm-switch/internal/banking.sock'}]}");
    expect_option(argv, "--vhost-user", "type=net,socket=/run/vm-switch/internal/banking.sock");
    strv_free(argv);

    /* The switch's socket directory has an override. */
    setenv("QUBES_LITE_SWITCH_DIR", "/tmp/switch", 1);
    argv = build_vm("banking", "{'id': 5, 'kernel': '/k', 'vmNetwork': {'internal': {}}}");
    expect_option(argv, "--vhost-user", "type=net,socket=/tmp/switch/internal/banking.sock");
    strv_free(argv);
    clean_env();
}

/* The README's "Shared VM Configuration": dev's home disk. */
static void test_readme_dev_home_disk(void **state) {
    char **argv = build_vm("dev", "{'id': 3, 'name': 'dev', 'kernel': '/k', "
                                  "'hostNetworking': true, 'additionalDisks': [{"
                                  "'path': '/dev/mapper/main-dev-home', 'ro': false}]}");
    expect_option(argv, "--block", "/dev/mapper/main-dev-home,ro=false");
    strv_free(argv);
}

/* ---- the other rules ---- */

static void test_pci_forms(void **state) {
    char **argv = build_vm("p", "{'id': 3, 'kernel': '/k', 'pciDevices': ["
                                "{'path': '0000:02:00.0'}, {'path': '00AB:0c:1F.3', "
                                "'guest-address': '00:05.0'}]}");
    const char *expected[] = {"/sys/bus/pci/devices/0000:02:00.0/",
                              "/sys/bus/pci/devices/00ab:0c:1f.3/,guest-address=00:05.0"};
    size_t k = 0;
    for (size_t i = 0; argv[i]; i++) {
        if (streq(argv[i], "--vfio")) {
            assert_true(k < 2);
            assert_string_equal(argv[i + 1], expected[k++]);
        }
    }
    assert_int_equal(k, 2);
    strv_free(argv);

    /* Under a test sysfs tree. */
    setenv("QUBES_LITE_SYSFS_ROOT", "/tmp/sysfs", 1);
    argv = build_vm("p", "{'id': 3, 'kernel': '/k', 'pciDevices': [{'path': '01:00.0'}]}");
    expect_option(argv, "--vfio", "/tmp/sysfs/bus/pci/devices/0000:01:00.0/");
    strv_free(argv);
    clean_env();
}

static void test_root_disk(void **state) {
    char **argv = build_vm("r", "{'id': 3, 'kernel': '/k', 'rootDisk': '/img/root.img'}");
    expect_option(argv, "--block", "/img/root.img,ro=true,root=true");
    strv_free(argv);

    argv = build_vm("r", "{'id': 3, 'kernel': '/k', 'rootDiskReadonly': false, "
                         "'rootDisk': {'path': '/img/root.qcow2', 'sparse': false}}");
    expect_option(argv, "--block", "/img/root.qcow2,sparse=false,ro=false,root=true");
    strv_free(argv);

    /* The root disk comes before the additional disks (it is /dev/vda). */
    argv = build_vm("r", "{'id': 3, 'kernel': '/k', 'rootDisk': '/root.img', "
                         "'additionalDisks': [{'path': '/a'}, {'path': '/b', 'ro': true}]}");
    const char *blocks[3];
    size_t k = 0;
    for (size_t i = 0; argv[i]; i++) {
        if (streq(argv[i], "--block")) {
            assert_true(k < 3);
            blocks[k++] = argv[i + 1];
        }
    }
    assert_int_equal(k, 3);
    assert_string_equal(blocks[0], "/root.img,ro=true,root=true");
    assert_string_equal(blocks[1], "/a");
    assert_string_equal(blocks[2], "/b,ro=true");
    strv_free(argv);

    /* No root disk: an initramfs-only VM. */
    argv = build_vm("r", "{'id': 3, 'kernel': '/k', 'initramfs': '/initrd'}");
    expect_no_flag(argv, "--block");
    expect_option(argv, "--initrd", "/initrd");
    strv_free(argv);
}

static void test_kernel_params_and_log_level(void **state) {
    char **argv = build_vm("kp", "{'id': 3, 'kernel': '/k', 'kernelParams': ['quiet', "
                                 "'systemd.unit=multi-user.target']}");
    /* The VM's own, in order, and nothing else. */
    const char *params[] = {"quiet", "systemd.unit=multi-user.target"};
    size_t n = 0;
    for (size_t i = 0; argv[i]; i++) {
        if (streq(argv[i], "--params")) {
            assert_true(n < ELEMENTSOF(params));
            assert_string_equal(argv[i + 1], params[n]);
            n++;
        }
    }
    assert_int_equal(n, ELEMENTSOF(params));
    /* The global default, before run. */
    assert_string_equal(argv[1], "--log-level");
    assert_string_equal(argv[2], "info");
    assert_string_equal(argv[3], "run");
    strv_free(argv);

    /* host.json's level, then the VM's own. */
    HostConfig *h = load_host("{'crosvm': {'logLevel': 'warn'}}");
    VmConfig *vm = load_vm("kp", "{'id': 3, 'kernel': '/k'}");
    argv = build(h, vm);
    assert_string_equal(argv[2], "warn");
    strv_free(argv);
    vm_config_free(vm);
    vm = load_vm("kp", "{'id': 3, 'kernel': '/k', 'crosvm': {'logLevel': 'trace'}}");
    argv = build(h, vm);
    assert_string_equal(argv[2], "trace");
    strv_free(argv);
    vm_config_free(vm);
    host_config_free(h);
}

static void test_missing_kernel(void **state) {
    VmConfig *vm = load_vm("nok", "{'id': 3}");
    char **argv = NULL;
    ErrorText err = {{0}};
    assert_int_equal(vmm_crosvm_argv(NULL, vm, &argv, &err), -EINVAL);
    assert_null(argv);
    assert_non_null(strstr(err.message, "vms/nok.json: key 'kernel': missing"));
    vm_config_free(vm);
}

static void test_overrides(void **state) {
    setenv("QUBES_LITE_CROSVM", "/opt/fake-crosvm", 1);
    setenv("QUBES_LITE_RUNTIME_DIR", "/tmp/rt", 1);
    char **argv = build_vm("o", "{'id': 9, 'kernel': '/k'}");
    assert_string_equal(argv[0], "/opt/fake-crosvm");
    expect_option(argv, "--socket", "/tmp/rt/o.crosvm.sock");
    /* The secret's path follows the runtime directory; only its path. */
    expect_option(argv, "--fw-cfg", "name=opt/qubes-lite/secret,path=/tmp/rt/o.secret");
    strv_free(argv);

    VmConfig *vm = load_vm("o", "{'id': 9}");
    assert_int_equal(vmm_crosvm_stop_argv(vm, &argv), 0);
    const char *stop[] = {"/opt/fake-crosvm", "stop", "/tmp/rt/o.crosvm.sock", NULL};
    expect_argv(argv, stop);
    strv_free(argv);
    clean_env();

    assert_int_equal(vmm_crosvm.stop_argv(vm, &argv), 0);
    const char *stop2[] = {"crosvm", "stop", "/run/qubes-lite/o.crosvm.sock", NULL};
    expect_argv(argv, stop2);
    strv_free(argv);
    vm_config_free(vm);
}

/* ---- whole VMs ---- */

/* The Quick Start's banking VM, with the defaults for everything else. */
static void test_whole_banking(void **state) {
    char **argv = build_vm("banking", "{'id': 3, 'name': 'banking', 'memory': 4096, 'cpus': 4, "
                                      "'hostNetworking': true, 'disposable': true, "
                                      "'idleTimeout': 120, 'kernel': '/boot/bzImage', "
                                      "'rootDisk': '/var/lib/qubes-lite/banking.img'}");
    const char *expected[] = {
        "crosvm",        "--log-level",
        "info",          "run",
        "--cpus",        "num-cores=4",
        "--mem",         "size=4096",
        "--vsock",       "cid=3",
        "--socket",      "/run/qubes-lite/banking.crosvm.sock",
        "--serial",      "type=stdout,hardware=serial,num=1,console,stdin",
        "--fw-cfg",      "name=opt/qubes-lite/secret,path=/run/qubes-lite/banking.secret",
        "--block",       "/var/lib/qubes-lite/banking.img,ro=true,root=true",
        "--net",         "tap-name=vm-banking",
        "--gpu",         "context-types=cross-domain:virgl2",
        "/boot/bzImage", NULL,
    };
    expect_argv(argv, expected);
    strv_free(argv);
}

/* The Offline VMs example: vault, memory 2048, defaults otherwise. */
static void test_whole_vault(void **state) {
    char **argv = build_vm("vault", "{'id': 13, 'name': 'vault', 'memory': 2048, "
                                    "'kernel': '/boot/bzImage', 'initramfs': '/boot/initrd'}");
    const char *expected[] = {
        "crosvm",        "--log-level",
        "info",          "run",
        "--cpus",        "num-cores=2",
        "--mem",         "size=2048",
        "--vsock",       "cid=13",
        "--socket",      "/run/qubes-lite/vault.crosvm.sock",
        "--serial",      "type=stdout,hardware=serial,num=1,console,stdin",
        "--fw-cfg",      "name=opt/qubes-lite/secret,path=/run/qubes-lite/vault.secret",
        "--initrd",      "/boot/initrd",
        "--gpu",         "context-types=cross-domain:virgl2",
        "/boot/bzImage", NULL,
    };
    expect_argv(argv, expected);
    strv_free(argv);
}

/* Everything at once: every device kind, the extra arguments of host.json
 * then of the VM in their places. */
static void test_whole_everything(void **state) {
    HostConfig *h = load_host("{'user': 'root', 'crosvm': {'logLevel': 'debug', "
                              "'extraArgs': ['--no-syslog'], 'extraRunArgs': ['--no-balloon']}}");
    VmConfig *vm =
        load_vm("sys-usb",
                "{'id': 21, 'name': 'sys-usb', 'memory': 512, 'cpus': 1, 'hostNetworking': true, "
                "'kernel': '/boot/vmlinuz', 'initramfs': '/boot/initrd.img', "
                "'rootDisk': {'path': '/img/sys-usb.qcow2'}, 'rootDiskReadonly': false, "
                "'kernelParams': ['quiet', 'console=ttyS0'], "
                "'additionalDisks': [{'path': '/img/home.qcow2', 'ro': false, 'id': 'home'}], "
                "'sharedDirectories': [{'path': '/srv/share', 'tag': 'share', 'type': 'fs'}], "
                "'pciDevices': [{'path': '03:00.0'}], "
                "'vmNetwork': {'lan': {'router': true}}, "
                "'vhostUser': [{'type': 'block', 'socket': '/run/blk.sock'}], "
                "'gpu': {'context-types': 'cross-domain'}, 'sound': true, "
                "'crosvm': {'logLevel': null, 'extraArgs': ['--extended-status'], "
                "'extraRunArgs': ['--no-rng', '--hugepages']}}");
    char **argv = build(h, vm);
    const char *expected[] = {
        "crosvm",
        "--log-level",
        "debug",
        "--no-syslog",
        "--extended-status",
        "run",
        "--cpus",
        "num-cores=1",
        "--mem",
        "size=512",
        "--vsock",
        "cid=21",
        "--socket",
        "/run/qubes-lite/sys-usb.crosvm.sock",
        "--serial",
        "type=stdout,hardware=serial,num=1,console,stdin",
        "--fw-cfg",
        "name=opt/qubes-lite/secret,path=/run/qubes-lite/sys-usb.secret",
        "--block",
        "/img/sys-usb.qcow2,ro=false,root=true",
        "--initrd",
        "/boot/initrd.img",
        "--params",
        "quiet",
        "--params",
        "console=ttyS0",
        "--net",
        "tap-name=vm-sys-usb",
        "--block",
        "/img/home.qcow2,ro=false,id=home",
        "--shared-dir",
        "/srv/share:share:type=fs",
        "--vfio",
        "/sys/bus/pci/devices/0000:03:00.0/",
        "--vhost-user",
        "type=net,socket=/run/vm-switch/lan/sys-usb.sock",
        "--vhost-user",
        "type=block,socket=/run/blk.sock",
        "--gpu",
        "context-types=cross-domain",
        "--wayland-sock",
        "/run/user/0/wayland-0",
        "--virtio-snd",
        "backend=pulse",
        "--no-balloon",
        "--no-rng",
        "--hugepages",
        "/boot/vmlinuz",
        NULL,
    };
    expect_argv(argv, expected);
    strv_free(argv);

    /* --print-command: the same, one argument per line. */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ErrorText err = {{0}};
    assert_int_equal(vmm_print_command(&vmm_crosvm, h, vm, f, &err), 0);
    fclose(f);
    char *line = buf;
    for (size_t i = 0; expected[i]; i++) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = '\0';
        assert_string_equal(line, expected[i]);
        line = nl + 1;
    }
    assert_string_equal(line, "");
    free(buf);

    vm_config_free(vm);
    host_config_free(h);
}

/* The Quick Start's other two VMs: only what differs from banking. */
static void test_whole_shopping_personal(void **state) {
    char **argv = build_vm("shopping", "{'id': 5, 'name': 'shopping', 'memory': 2048, "
                                       "'cpus': 2, 'hostNetworking': true, 'disposable': true, "
                                       "'kernel': '/boot/bzImage'}");
    const char *shopping[] = {
        "crosvm",        "--log-level",
        "info",          "run",
        "--cpus",        "num-cores=2",
        "--mem",         "size=2048",
        "--vsock",       "cid=5",
        "--socket",      "/run/qubes-lite/shopping.crosvm.sock",
        "--serial",      "type=stdout,hardware=serial,num=1,console,stdin",
        "--fw-cfg",      "name=opt/qubes-lite/secret,path=/run/qubes-lite/shopping.secret",
        "--net",         "tap-name=vm-shopping",
        "--gpu",         "context-types=cross-domain:virgl2",
        "/boot/bzImage", NULL,
    };
    expect_argv(argv, shopping);
    strv_free(argv);

    /* hostNetworking defaults to false: an offline VM has no --net. */
    argv = build_vm("personal", "{'id': 7, 'name': 'personal', 'memory': 4096, 'cpus': 4, "
                                "'kernel': '/boot/bzImage'}");
    const char *personal[] = {
        "crosvm",        "--log-level",
        "info",          "run",
        "--cpus",        "num-cores=4",
        "--mem",         "size=4096",
        "--vsock",       "cid=7",
        "--socket",      "/run/qubes-lite/personal.crosvm.sock",
        "--serial",      "type=stdout,hardware=serial,num=1,console,stdin",
        "--fw-cfg",      "name=opt/qubes-lite/secret,path=/run/qubes-lite/personal.secret",
        "--gpu",         "context-types=cross-domain:virgl2",
        "/boot/bzImage", NULL,
    };
    expect_argv(argv, personal);
    strv_free(argv);
}

/* The README's PCI passthrough configuration: sys-usb and sys-net. */
static void test_whole_pci_passthrough(void **state) {
    HostConfig *h = load_host("{'isolatedPciDevices': ['01:00.0', '02:00.0']}");
    VmConfig *vm = load_vm("sys-net", "{'id': 5, 'name': 'sys-net', 'memory': 1024, "
                                      "'kernel': '/boot/bzImage', "
                                      "'pciDevices': [{'path': '02:00.0'}]}");
    char **argv = build(h, vm);
    const char *expected[] = {
        "crosvm",        "--log-level",
        "info",          "run",
        "--cpus",        "num-cores=2",
        "--mem",         "size=1024",
        "--vsock",       "cid=5",
        "--socket",      "/run/qubes-lite/sys-net.crosvm.sock",
        "--serial",      "type=stdout,hardware=serial,num=1,console,stdin",
        "--fw-cfg",      "name=opt/qubes-lite/secret,path=/run/qubes-lite/sys-net.secret",
        "--vfio",        "/sys/bus/pci/devices/0000:02:00.0/",
        "--gpu",         "context-types=cross-domain:virgl2",
        "/boot/bzImage", NULL,
    };
    expect_argv(argv, expected);
    strv_free(argv);
    vm_config_free(vm);
    host_config_free(h);
}

/* gpu with a configured user: crosvm gets that user's Wayland socket,
 * right after --gpu; without gpu or without a user, nothing. */
static void test_wayland_sock(void **state) {
    HostConfig *h = load_host("{'user': 'root'}");
    VmConfig *vm = load_vm("w", "{'id': 3, 'kernel': '/k'}");
    char **argv = build(h, vm);
    expect_option(argv, "--wayland-sock", "/run/user/0/wayland-0");
    for (size_t i = 0; argv[i]; i++) {
        if (streq(argv[i], "--wayland-sock")) {
            assert_true(i >= 2);
            assert_string_equal(argv[i - 2], "--gpu");
        }
    }
    strv_free(argv);
    vm_config_free(vm);

    vm = load_vm("w", "{'id': 3, 'kernel': '/k', 'gpu': {'context-types': 'cross-domain'}}");
    argv = build(h, vm);
    expect_option(argv, "--wayland-sock", "/run/user/0/wayland-0");
    strv_free(argv);
    vm_config_free(vm);

    vm = load_vm("w", "{'id': 3, 'kernel': '/k', 'gpu': false, 'sound': true}");
    argv = build(h, vm);
    expect_no_flag(argv, "--wayland-sock");
    strv_free(argv);
    vm_config_free(vm);
    host_config_free(h);

    /* No user: whose session would it be? */
    argv = build_vm("w", "{'id': 3, 'kernel': '/k', 'gpu': true}");
    expect_no_flag(argv, "--wayland-sock");
    strv_free(argv);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_readme_additional_disks),
        cmocka_unit_test(test_readme_shared_directories),
        cmocka_unit_test(test_readme_pci_devices),
        cmocka_unit_test(test_readme_vhost_user),
        cmocka_unit_test(test_readme_gpu),
        cmocka_unit_test(test_readme_sound),
        cmocka_unit_test(test_readme_vm_network),
        cmocka_unit_test(test_readme_dev_home_disk),
        cmocka_unit_test(test_pci_forms),
        cmocka_unit_test(test_root_disk),
        cmocka_unit_test(test_kernel_params_and_log_level),
        cmocka_unit_test(test_missing_kernel),
        cmocka_unit_test(test_overrides),
        cmocka_unit_test(test_whole_banking),
        cmocka_unit_test(test_whole_vault),
        cmocka_unit_test(test_whole_everything),
        cmocka_unit_test(test_whole_shopping_personal),
        cmocka_unit_test(test_whole_pci_passthrough),
        cmocka_unit_test(test_wayland_sock),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
