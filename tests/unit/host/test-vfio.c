/* host/vfio: PCI addresses, the IOMMU group check before a VM starts and
 * binding to vfio-pci, on a sysfs-shaped tree in a temporary directory
 * (regular files for attributes, symlinks for driver and iommu_group).
 * The tree has no kernel behind it: the writes are read back from
 * $QUBES_LITE_SYSFS_LOG, and a test sets the driver link to what the
 * kernel would have done. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "host/common/config.h"
#include "host/agent/vfio.h"
#include "util.h"

static char root[256];
static char log_path[256];

static void mkdirs(const char *rel) {
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", root, rel);
    for (char *p = path + strlen(root) + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            assert_true(mkdir(path, 0755) == 0 || errno == EEXIST);
            *p = '/';
        }
    }
    assert_true(mkdir(path, 0755) == 0 || errno == EEXIST);
}

static void put(const char *rel, const char *text) {
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", root, rel);
    FILE *f = fopen(path, "we");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static void link_to(const char *target, const char *rel) {
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", root, rel);
    (void)unlink(path);
    assert_int_equal(symlink(target, path), 0);
}

static void set_driver(const char *bdf, const char *driver) {
    char rel[128], target[128];
    snprintf(rel, sizeof(rel), "bus/pci/devices/%s/driver", bdf);
    if (!driver) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", root, rel);
        (void)unlink(path);
        return;
    }
    snprintf(target, sizeof(target), "bus/pci/drivers/%s", driver);
    mkdirs(target);
    snprintf(target, sizeof(target), "bus/pci/drivers/%s/unbind", driver);
    put(target, "");
    snprintf(target, sizeof(target), "../../drivers/%s", driver);
    link_to(target, rel);
}

/* A PCI device as the kernel shows it. group NULL: no IOMMU group;
 * driver NULL: no driver. */
static void add_device(const char *bdf, const char *class, const char *driver, const char *group) {
    char rel[128], target[128];

    snprintf(rel, sizeof(rel), "bus/pci/devices/%s", bdf);
    mkdirs(rel);
    snprintf(rel, sizeof(rel), "bus/pci/devices/%s/class", bdf);
    put(rel, class);
    snprintf(rel, sizeof(rel), "bus/pci/devices/%s/driver_override", bdf);
    put(rel, "(null)\n");
    set_driver(bdf, driver);
    if (group) {
        snprintf(rel, sizeof(rel), "kernel/iommu_groups/%s/devices", group);
        mkdirs(rel);
        snprintf(rel, sizeof(rel), "kernel/iommu_groups/%s/devices/%s", group, bdf);
        snprintf(target, sizeof(target), "../../../../bus/pci/devices/%s", bdf);
        link_to(target, rel);
        snprintf(rel, sizeof(rel), "bus/pci/devices/%s/iommu_group", bdf);
        snprintf(target, sizeof(target), "../../../../kernel/iommu_groups/%s", group);
        link_to(target, rel);
    }
}

#define CLASS_USB "0x0c0330\n"
#define CLASS_AUDIO "0x040300\n"
#define CLASS_BRIDGE "0x060400\n"

static int setup(void **state) {
    char dir[] = "/tmp/test-vfio-XXXXXX";
    if (!mkdtemp(dir)) {
        return -1;
    }
    /* The sysfs root is a subdirectory, so that the log lies outside it. */
    snprintf(root, sizeof(root), "%s/sys", dir);
    snprintf(log_path, sizeof(log_path), "%s/writes.log", dir);
    if (mkdir(root, 0755) < 0) {
        return -1;
    }
    setenv("QUBES_LITE_SYSFS_ROOT", root, 1);
    setenv("QUBES_LITE_SYSFS_LOG", log_path, 1);
    mkdirs("bus/pci/drivers/vfio-pci");
    put("bus/pci/drivers/vfio-pci/unbind", "");
    put("bus/pci/drivers_probe", "");
    mkdirs("kernel/iommu_groups");
    return 0;
}

static int teardown(void **state) {
    char cmd[PATH_MAX + 32];
    /* root is <tmp dir>/sys: remove the temporary directory. */
    char *slash = strrchr(root, '/');
    *slash = '\0';
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    unsetenv("QUBES_LITE_SYSFS_ROOT");
    unsetenv("QUBES_LITE_SYSFS_LOG");
    return system(cmd) == 0 ? 0 : -1;
}

/* The writes made so far ("" for none), as logged. */
static const char *writes(void) {
    static char buf[4096];
    FILE *f = fopen(log_path, "re");
    buf[0] = '\0';
    if (f) {
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = '\0';
        fclose(f);
    }
    return buf;
}

static void check_vm(const char *name, const char *const *bdfs, size_t n, int expect_r,
                     const char *expect_msg) {
    ConfigDevice devs[8] = {{0}};
    VmConfig vm = {0};
    ErrorText err = {{0}};

    assert_true(n <= ELEMENTSOF(devs));
    for (size_t i = 0; i < n; i++) {
        devs[i].path = (char *)bdfs[i];
    }
    vm.name = (char *)name;
    vm.pci_devices.v = devs;
    vm.pci_devices.n = n;
    int r = vfio_check_vm(&vm, &err);
    if (r != expect_r) {
        fail_msg("expected %d, got %d (%s)", expect_r, r, err.message);
    }
    if (expect_msg) {
        assert_string_equal(err.message, expect_msg);
    }
}

static void test_canonical(void **state) {
    static const struct {
        const char *in, *out;
    } table[] = {
        {"01:00.0", "0000:01:00.0"},
        {"0000:01:00.0", "0000:01:00.0"},
        {"00AB:Fe:1F.7", "00ab:fe:1f.7"},
        {"ffff:ff:1f.7", "ffff:ff:1f.7"},
        {"00:00.0", "0000:00:00.0"},
        {"01:20.0", NULL}, /* device > 0x1f */
        {"01:00.8", NULL}, /* function > 7 */
        {"1:00.0", NULL},  /* bus: two digits */
        {"001:00.0", NULL},
        {"000:01:00.0", NULL}, /* domain: four digits */
        {"00000:01:00.0", NULL},
        {"0000:01:00", NULL},
        {"0000-01:00.0", NULL},
        {"01:00:0", NULL},
        {"0g:00.0", NULL},
        {"01:00.0 ", NULL},
        {" 01:00.0", NULL},
        {"../../../x", NULL},
        {"", NULL},
    };
    for (size_t i = 0; i < ELEMENTSOF(table); i++) {
        char buf[13] = "";
        bool ok = config_pci_canonical(table[i].in, buf);
        if (ok != (table[i].out != NULL)) {
            fail_msg("'%s': %s", table[i].in, ok ? "accepted" : "refused");
        }
        if (ok) {
            assert_string_equal(buf, table[i].out);
        }
    }
    assert_false(config_pci_canonical(NULL, (char[13]){0}));

    /* The module canonicalises what it is given. */
    ErrorText err = {{0}};
    assert_int_equal(vfio_bind("01:20.0", &err), -EINVAL);
    assert_string_equal(err.message, "'01:20.0' is not a PCI address (BB:DD.F or DDDD:BB:DD.F)");
    add_device("0000:05:00.0", CLASS_USB, "vfio-pci", "20");
    check_vm("sys-usb", (const char *[]){"05:00.0"}, 1, 0, NULL);
    check_vm("sys-usb", (const char *[]){"05:00.0", "5:00.0"}, 2, -EINVAL,
             "VM sys-usb: '5:00.0' is not a PCI address");
}

static void test_sysfs_root(void **state) {
    assert_string_equal(vfio_sysfs_root(), root);
    unsetenv("QUBES_LITE_SYSFS_ROOT");
    assert_string_equal(vfio_sysfs_root(), "/sys");
    setenv("QUBES_LITE_SYSFS_ROOT", "", 1);
    assert_string_equal(vfio_sysfs_root(), "/sys");
    setenv("QUBES_LITE_SYSFS_ROOT", root, 1);
}

static void test_check_whole_group(void **state) {
    add_device("0000:01:00.0", CLASS_USB, "vfio-pci", "13");
    add_device("0000:01:00.1", CLASS_AUDIO, "vfio-pci", "13");
    check_vm("banking", (const char *[]){"0000:01:00.0", "0000:01:00.1"}, 2, 0, NULL);
    /* No PCI devices: nothing to check, nothing read. */
    check_vm("banking", NULL, 0, 0, NULL);
}

static void test_check_foreign_driver(void **state) {
    add_device("0000:02:00.0", CLASS_USB, "vfio-pci", "14");
    add_device("0000:02:00.1", CLASS_AUDIO, "snd_hda_intel", "14");
    check_vm("banking", (const char *[]){"0000:02:00.0", "0000:02:00.1"}, 2, -EBUSY,
             "0000:02:00.1 in IOMMU group 14 (with 0000:02:00.0) is bound to snd_hda_intel, "
             "not vfio-pci");
    /* Not given to the VM either: both are said. */
    check_vm("banking", (const char *[]){"0000:02:00.0"}, 1, -EBUSY,
             "0000:02:00.1 in IOMMU group 14 (with 0000:02:00.0) is bound to snd_hda_intel, "
             "not vfio-pci, and is not given to VM banking");
    /* No driver at all is not vfio-pci either. */
    set_driver("0000:02:00.1", NULL);
    check_vm("banking", (const char *[]){"0000:02:00.1", "0000:02:00.0"}, 2, -EBUSY,
             "0000:02:00.1 in IOMMU group 14 is not bound to a driver, not vfio-pci");
}

static void test_check_device_itself(void **state) {
    add_device("0000:03:00.0", CLASS_USB, "xhci_hcd", "15");
    check_vm("sys-usb", (const char *[]){"0000:03:00.0"}, 1, -EBUSY,
             "0000:03:00.0 in IOMMU group 15 is bound to xhci_hcd, not vfio-pci");
}

static void test_check_member_of_other_vm(void **state) {
    /* Both functions are ready for vfio, but the VM only has one: the
     * other one is some other VM's (or nobody's). */
    add_device("0000:04:00.0", CLASS_USB, "vfio-pci", "16");
    add_device("0000:04:00.1", CLASS_AUDIO, "vfio-pci", "16");
    check_vm("banking", (const char *[]){"0000:04:00.0"}, 1, -EBUSY,
             "0000:04:00.1 in IOMMU group 16 (with 0000:04:00.0) is not given to VM banking");
    check_vm("work", (const char *[]){"0000:04:00.1"}, 1, -EBUSY,
             "0000:04:00.0 in IOMMU group 16 (with 0000:04:00.1) is not given to VM work");
}

static void test_check_bridge_excepted(void **state) {
    add_device("0000:00:1c.0", CLASS_BRIDGE, "pcieport", "17");
    add_device("0000:06:00.0", CLASS_USB, "vfio-pci", "17");
    check_vm("sys-usb", (const char *[]){"0000:06:00.0"}, 1, 0, NULL);
    /* A bridge is excepted as a group mate, not as the device given. */
    check_vm("sys-usb", (const char *[]){"0000:00:1c.0", "0000:06:00.0"}, 2, -EBUSY,
             "0000:00:1c.0 in IOMMU group 17 is bound to pcieport, not vfio-pci");
    /* Any subclass of 0x0604 is a PCI-to-PCI bridge; other bridges
     * (0x0600 host bridge) are not excepted. */
    add_device("0000:00:00.0", "0x060000\n", "vfio-pci", "17");
    check_vm("sys-usb", (const char *[]){"0000:06:00.0"}, 1, -EBUSY,
             "0000:00:00.0 in IOMMU group 17 (with 0000:06:00.0) is not given to VM sys-usb");
}

static void test_check_no_iommu(void **state) {
    add_device("0000:07:00.0", CLASS_USB, "vfio-pci", NULL);
    check_vm("sys-usb", (const char *[]){"0000:07:00.0"}, 1, -EOPNOTSUPP,
             "0000:07:00.0 has no IOMMU group: the IOMMU is missing or disabled "
             "(firmware VT-d/AMD-Vi, kernel intel_iommu=on), so it cannot be passed through");
}

static void test_check_no_device(void **state) {
    char msg[PATH_MAX + 64];
    snprintf(msg, sizeof(msg),
             "0000:08:00.0: no such PCI device (no %s/bus/pci/devices/0000:08:00.0)", root);
    check_vm("sys-usb", (const char *[]){"08:00.0"}, 1, -ENODEV, msg);
}

static void test_check_non_pci_member(void **state) {
    add_device("0000:09:00.0", CLASS_USB, "vfio-pci", "18");
    mkdirs("kernel/iommu_groups/18/devices/platform-thing");
    check_vm("sys-usb", (const char *[]){"0000:09:00.0"}, 1, -EBUSY,
             "0000:09:00.0 in IOMMU group 18: the group also holds 'platform-thing', which is "
             "not a PCI device");
}

/* What sysfs says is checked before it is used: a class is 24 bits of
 * hex, a group is a number (it goes into a path), a group has at most
 * VFIO_GROUP_MAX members. */
static void test_check_hostile_sysfs(void **state) {
    char msg[PATH_MAX + 128], rel[128];

    add_device("0000:30:00.0", "0x1000000\n", "vfio-pci", "40");
    snprintf(msg, sizeof(msg),
             "0000:30:00.0: %s/bus/pci/devices/0000:30:00.0/class holds '0x1000000', not a PCI "
             "class",
             root);
    check_vm("sys-usb", (const char *[]){"0000:30:00.0"}, 1, -EINVAL, msg);

    add_device("0000:31:00.0", "bridge\n", "vfio-pci", "41");
    snprintf(msg, sizeof(msg),
             "0000:31:00.0: %s/bus/pci/devices/0000:31:00.0/class holds 'bridge', not a PCI class",
             root);
    check_vm("sys-usb", (const char *[]){"0000:31:00.0"}, 1, -EINVAL, msg);

    add_device("0000:32:00.0", CLASS_USB, "vfio-pci", NULL);
    mkdirs("kernel/iommu_groups/..x/devices");
    link_to("../../../../kernel/iommu_groups/..x", "bus/pci/devices/0000:32:00.0/iommu_group");
    snprintf(msg, sizeof(msg),
             "0000:32:00.0: %s/bus/pci/devices/0000:32:00.0/iommu_group does not point at a "
             "numbered IOMMU group",
             root);
    check_vm("sys-usb", (const char *[]){"0000:32:00.0"}, 1, -EINVAL, msg);

    add_device("0000:33:00.0", CLASS_USB, "vfio-pci", "42");
    for (unsigned i = 0; i < VFIO_GROUP_MAX; i++) {
        snprintf(rel, sizeof(rel), "kernel/iommu_groups/42/devices/0000:%02x:%02x.%u",
                 0x40 + i / 256, (i / 8) % 32, i % 8);
        put(rel, "");
    }
    snprintf(msg, sizeof(msg), "0000:33:00.0: IOMMU group 42 has more than %u devices",
             VFIO_GROUP_MAX);
    check_vm("sys-usb", (const char *[]){"0000:33:00.0"}, 1, -E2BIG, msg);
}

static void test_bind_writes_in_order(void **state) {
    char msg[PATH_MAX + 128];
    ErrorText err = {{0}};

    add_device("0000:0a:00.0", CLASS_USB, "xhci_hcd", "19");
    unlink(log_path);
    /* No kernel here: the driver link stays at xhci_hcd, which is the
     * verification failing, after the three writes. */
    assert_int_equal(vfio_bind("0a:00.0", &err), -EIO);
    assert_string_equal(writes(), "bus/pci/devices/0000:0a:00.0/driver_override=vfio-pci\n"
                                  "bus/pci/devices/0000:0a:00.0/driver/unbind=0000:0a:00.0\n"
                                  "bus/pci/drivers_probe=0000:0a:00.0\n");
    snprintf(msg, sizeof(msg),
             "0000:0a:00.0: %s/bus/pci/devices/0000:0a:00.0/driver points at "
             "xhci_hcd after drivers_probe, not vfio-pci",
             root);
    assert_string_equal(err.message, msg);

    /* The writes landed where the paths say (unbind through the driver
     * link). */
    char path[PATH_MAX], buf[64] = "";
    snprintf(path, sizeof(path), "%s/bus/pci/drivers/xhci_hcd/unbind", root);
    FILE *f = fopen(path, "re");
    assert_non_null(f);
    assert_non_null(fgets(buf, sizeof(buf), f));
    fclose(f);
    assert_string_equal(buf, "0000:0a:00.0");

    /* No driver to unbind from: driver_override, then drivers_probe. */
    add_device("0000:0b:00.0", CLASS_USB, NULL, "21");
    unlink(log_path);
    assert_int_equal(vfio_bind("0000:0b:00.0", &err), -EIO);
    assert_string_equal(writes(), "bus/pci/devices/0000:0b:00.0/driver_override=vfio-pci\n"
                                  "bus/pci/drivers_probe=0000:0b:00.0\n");
    snprintf(msg, sizeof(msg),
             "0000:0b:00.0: no driver took it after drivers_probe (%s/bus/pci/"
             "devices/0000:0b:00.0/driver is missing), not vfio-pci",
             root);
    assert_string_equal(err.message, msg);
}

static void test_bind_already_bound(void **state) {
    ErrorText err = {{0}};

    /* Bound by vfio-pci early at boot, without an override: only the
     * override is written, and the driver link says vfio-pci. */
    add_device("0000:0c:00.0", CLASS_USB, "vfio-pci", "22");
    unlink(log_path);
    assert_int_equal(vfio_bind("0c:00.0", &err), 1);
    assert_string_equal(writes(), "bus/pci/devices/0000:0c:00.0/driver_override=vfio-pci\n");

    /* Bound and claimed: nothing written at all. */
    put("bus/pci/devices/0000:0c:00.0/driver_override", "vfio-pci\n");
    unlink(log_path);
    assert_int_equal(vfio_bind("0000:0c:00.0", &err), 0);
    assert_string_equal(writes(), "");
}

static void test_bind_failures(void **state) {
    char msg[PATH_MAX + 128];
    ErrorText err = {{0}};

    unlink(log_path);
    assert_int_equal(vfio_bind("0000:0d:00.0", &err), -ENODEV);
    snprintf(msg, sizeof(msg),
             "0000:0d:00.0: no such PCI device (no %s/bus/pci/devices/"
             "0000:0d:00.0)",
             root);
    assert_string_equal(err.message, msg);

    /* drivers_probe missing: the error names the device and the file. */
    add_device("0000:0e:00.0", CLASS_USB, NULL, "23");
    snprintf(msg, sizeof(msg), "%s/bus/pci/drivers_probe", root);
    assert_int_equal(unlink(msg), 0);
    assert_int_equal(vfio_bind("0000:0e:00.0", &err), -ENOENT);
    snprintf(msg, sizeof(msg),
             "0000:0e:00.0: cannot open %s/bus/pci/drivers_probe: No such file "
             "or directory",
             root);
    assert_string_equal(err.message, msg);
    put("bus/pci/drivers_probe", "");

    /* vfio-pci not loaded: nothing is taken from the host. */
    add_device("0000:0f:00.0", CLASS_USB, "xhci_hcd", "24");
    snprintf(msg, sizeof(msg), "%s/bus/pci/drivers/vfio-pci/unbind", root);
    assert_int_equal(unlink(msg), 0);
    snprintf(msg, sizeof(msg), "%s/bus/pci/drivers/vfio-pci", root);
    assert_int_equal(rmdir(msg), 0);
    unlink(log_path);
    assert_int_equal(vfio_bind("0000:0f:00.0", &err), -ENODEV);
    snprintf(msg, sizeof(msg),
             "0000:0f:00.0: the vfio-pci driver is not loaded (no %s/bus/pci/"
             "drivers/vfio-pci)",
             root);
    assert_string_equal(err.message, msg);
    assert_string_equal(writes(), "");
    mkdirs("bus/pci/drivers/vfio-pci");
    put("bus/pci/drivers/vfio-pci/unbind", "");
}

static void test_bind_all(void **state) {
    char *list[] = {"10:00.0", "11:00.0", "bogus"};
    ConfigStrv v = {.v = list, .n = ELEMENTSOF(list)};
    char *out = NULL;
    size_t len = 0;

    add_device("0000:10:00.0", CLASS_USB, "vfio-pci", "25");
    put("bus/pci/devices/0000:10:00.0/driver_override", "vfio-pci\n");
    FILE *f = open_memstream(&out, &len);
    assert_non_null(f);
    /* One line per failure, and the others are still bound. */
    assert_int_equal(vfio_bind_all(&v, f), 2);
    fclose(f);
    assert_non_null(strstr(out, "0000:11:00.0: no such PCI device"));
    assert_non_null(strstr(out, "'bogus' is not a PCI address"));
    size_t lines = 0;
    for (const char *c = out; *c; c++) {
        lines += *c == '\n';
    }
    assert_int_equal(lines, 2);
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_canonical),
        cmocka_unit_test(test_sysfs_root),
        cmocka_unit_test(test_check_whole_group),
        cmocka_unit_test(test_check_foreign_driver),
        cmocka_unit_test(test_check_device_itself),
        cmocka_unit_test(test_check_member_of_other_vm),
        cmocka_unit_test(test_check_bridge_excepted),
        cmocka_unit_test(test_check_no_iommu),
        cmocka_unit_test(test_check_no_device),
        cmocka_unit_test(test_check_non_pci_member),
        cmocka_unit_test(test_check_hostile_sysfs),
        cmocka_unit_test(test_bind_writes_in_order),
        cmocka_unit_test(test_bind_already_bound),
        cmocka_unit_test(test_bind_failures),
        cmocka_unit_test(test_bind_all),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
