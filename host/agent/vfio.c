/* vfio: checking a VM's PCI devices before it starts, and binding the
 * isolated devices to vfio-pci at activation.
 *
 * The sysfs interfaces used (Documentation/ABI/testing/sysfs-bus-pci and
 * the driver-model ABI):
 *   devices/<BDF>/driver_override   only the driver named here may probe the
 *                                   device; writing it neither unbinds nor
 *                                   loads anything
 *   devices/<BDF>/driver/unbind     write the address: detach the driver
 *   drivers_probe                   write the address: probe the device again
 *                                   (with the override, only vfio-pci may
 *                                   take it)
 *   devices/<BDF>/iommu_group       link to kernel/iommu_groups/<N>; absent
 *                                   without an IOMMU
 *   devices/<BDF>/class             "0xCCSSPP"; 0x0604xx is a PCI-to-PCI
 *                                   bridge, which stays with the host (vfio
 *                                   does not take bridges; their group
 *                                   mates can still be assigned)
 * The group, not the device, is the unit of isolation: a device shares DMA
 * visibility with every other member of its group, so a VM gets a device
 * only when it gets the whole group. */
#include "vfio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef char Bdf[PCI_ADDR_SIZE];

/* What sysfs says about one PCI device. */
typedef struct PciInfo {
    char driver[NAME_MAX + 1]; /* "" when no driver is bound */
    char group[NAME_MAX + 1];  /* "" without an IOMMU group */
    bool bridge;
} PciInfo;

const char *vfio_sysfs_root(void) {
    const char *e = getenv("QUBES_LITE_SYSFS_ROOT");
    return (e && *e) ? e : VFIO_DEFAULT_SYSFS_ROOT;
}

/* Every path we build is the root plus at most a few hundred bytes (an
 * address, a group number, a driver name: each at most NAME_MAX): checked
 * once here, so that the sysfs_path() calls after it cannot fail. */
static int root_check(ErrorText *err) {
    const char *root = vfio_sysfs_root();
    if (strlen(root) > PATH_MAX - 2 * NAME_MAX - 64) {
        return error_set(err, -ENAMETOOLONG, "the sysfs root is too long: %.64s...", root);
    }
    return 0;
}

/* <root>/<rel...> into buf[PATH_MAX]. */
_printf_(2, 3) static int sysfs_path(char *buf, const char *fmt, ...) {
    char rel[PATH_MAX];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(rel, sizeof(rel), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(rel)) {
        return -ENAMETOOLONG;
    }
    n = snprintf(buf, PATH_MAX, "%s/%s", vfio_sysfs_root(), rel);
    if (n < 0 || n >= PATH_MAX) {
        return -ENAMETOOLONG;
    }
    return 0;
}

/* The last component of the target of the symlink `path`, into
 * buf[NAME_MAX + 1]; -ENOENT when there is no such link. */
static int link_name(const char *path, char *buf) {
    char target[PATH_MAX];
    ssize_t n = readlink(path, target, sizeof(target) - 1);

    if (n < 0) {
        return -errno;
    }
    target[n] = '\0';
    while (n > 1 && target[n - 1] == '/') {
        target[--n] = '\0';
    }
    const char *slash = strrchr(target, '/');
    const char *name = slash ? slash + 1 : target;
    if (!*name || strlen(name) > NAME_MAX) {
        return -EINVAL;
    }
    strcpy(buf, name);
    return 0;
}

/* A small attribute, without its trailing newline. */
static int read_attr(const char *path, char *buf, size_t size) {
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0) {
        return -errno;
    }
    do {
        n = read(fd, buf, size - 1);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        return -errno;
    }
    buf[n] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
    return 0;
}

static int log_write(const char *rel, const char *value) {
    const char *log = getenv("QUBES_LITE_SYSFS_LOG");
    if (!log || !*log) {
        return 0;
    }
    _cleanup_close_ int fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        return -errno;
    }
    _cleanup_free_ char *line = NULL;
    int n = asprintf(&line, "%s=%s\n", rel, value);
    if (n < 0) {
        return -ENOMEM;
    }
    return loop_write(fd, line, (size_t)n);
}

/* The one place that writes to sysfs: `value` to <root>/<rel>, in a
 * single write() as sysfs attributes want. The file must exist. */
static int sysfs_write(const char *bdf, const char *rel, const char *value, ErrorText *err) {
    char path[PATH_MAX];
    size_t len = strlen(value);
    int r = sysfs_path(path, "%s", rel);

    if (r < 0) {
        return error_set(err, r, "%s: path too long: %s/%s", bdf, vfio_sysfs_root(), rel);
    }
    r = log_write(rel, value);
    if (r < 0) {
        return error_set(err, r, "%s: cannot log the write to %s in $QUBES_LITE_SYSFS_LOG: %s", bdf,
                         path, strerror(-r));
    }
    _cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        r = -errno;
        return error_set(err, r, "%s: cannot open %s: %s", bdf, path, strerror(-r));
    }
    ssize_t n;
    do {
        n = write(fd, value, len);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        r = -errno;
        return error_set(err, r, "%s: cannot write '%s' to %s: %s", bdf, value, path, strerror(-r));
    }
    if ((size_t)n != len) {
        return error_set(err, -EIO, "%s: short write of '%s' to %s", bdf, value, path);
    }
    return 0;
}

/* Reads a device's driver, IOMMU group and class. -ENODEV when the device
 * does not exist. */
static int pci_info(const char *bdf, PciInfo *ret, ErrorText *err) {
    char path[PATH_MAX], untrusted_class[PCI_CLASS_ATTR_MAX], untrusted_group[NAME_MAX + 1];
    PciInfo info = {0};
    struct stat st;
    int r;

    if (sysfs_path(path, "bus/pci/devices/%s", bdf) < 0) {
        return error_set(err, -ENAMETOOLONG, "%s: sysfs path too long", bdf);
    }
    if (stat(path, &st) < 0) {
        r = -errno;
        if (r == -ENOENT) {
            return error_set(err, -ENODEV, "%s: no such PCI device (no %s)", bdf, path);
        }
        return error_set(err, r, "%s: cannot stat %s: %s", bdf, path, strerror(-r));
    }

    (void)sysfs_path(path, "bus/pci/devices/%s/driver", bdf);
    r = link_name(path, info.driver);
    if (r < 0 && r != -ENOENT) {
        return error_set(err, r, "%s: cannot read the link %s: %s", bdf, path, strerror(-r));
    }

    (void)sysfs_path(path, "bus/pci/devices/%s/iommu_group", bdf);
    r = link_name(path, untrusted_group);
    if (r < 0 && r != -ENOENT) {
        return error_set(err, r, "%s: cannot read the link %s: %s", bdf, path, strerror(-r));
    }
    if (r == 0) {
        /* A group's name is its number: it goes into a path below. */
        if (untrusted_group[strspn(untrusted_group, "0123456789")] != '\0') {
            return error_set(err, -EINVAL, "%s: %s does not point at a numbered IOMMU group", bdf,
                             path);
        }
        memcpy(info.group, untrusted_group, sizeof(info.group));
    }

    (void)sysfs_path(path, "bus/pci/devices/%s/class", bdf);
    r = read_attr(path, untrusted_class, sizeof(untrusted_class));
    if (r < 0) {
        return error_set(err, r, "%s: cannot read %s: %s", bdf, path, strerror(-r));
    }
    char *end;
    errno = 0;
    unsigned long c = strtoul(untrusted_class, &end, 16);
    if (errno != 0 || end == untrusted_class || *end || c > PCI_CLASS_MAX) {
        return error_set(err, -EINVAL, "%s: %s holds '%.16s', not a PCI class", bdf, path,
                         untrusted_class);
    }
    info.bridge = (c >> 8) == PCI_CLASS_BRIDGE_PCI;
    *ret = info;
    return 0;
}

static int bdf_cmp(const void *a, const void *b) {
    return strcmp(*(const Bdf *)a, *(const Bdf *)b);
}

/* The members of IOMMU group `group`, sorted. */
static int group_members(const char *bdf, const char *group, Bdf **ret, size_t *ret_n,
                         ErrorText *err) {
    char path[PATH_MAX];
    _cleanup_closedir_ DIR *d = NULL;
    _cleanup_free_ Bdf *v = NULL;
    size_t n = 0;
    struct dirent *de;

    if (sysfs_path(path, "kernel/iommu_groups/%s/devices", group) < 0) {
        return error_set(err, -ENAMETOOLONG, "%s: sysfs path too long", bdf);
    }
    d = opendir(path);
    if (!d) {
        int r = -errno;
        return error_set(err, r, "%s: cannot list IOMMU group %s (%s): %s", bdf, group, path,
                         strerror(-r));
    }
    v = calloc(VFIO_GROUP_MAX, sizeof(Bdf));
    if (!v) {
        return error_set(err, -ENOMEM, "%s: out of memory", bdf);
    }
    while ((errno = 0, de = readdir(d))) {
        const char *untrusted_member = de->d_name;
        if (streq(untrusted_member, ".") || streq(untrusted_member, "..")) {
            continue;
        }
        if (n == VFIO_GROUP_MAX) {
            return error_set(err, -E2BIG, "%s: IOMMU group %s has more than %u devices", bdf, group,
                             VFIO_GROUP_MAX);
        }
        /* Members are named by their canonical address; anything else is
         * not a PCI device, which we cannot hand over with the group. */
        if (!config_pci_canonical(untrusted_member, v[n]) || !streq(untrusted_member, v[n])) {
            return error_set(err, -EBUSY,
                             "%s in IOMMU group %s: the group also holds '%.64s', "
                             "which is not a PCI device",
                             bdf, group, untrusted_member);
        }
        n++;
    }
    if (errno != 0) {
        int r = -errno;
        return error_set(err, r, "%s: cannot list IOMMU group %s (%s): %s", bdf, group, path,
                         strerror(-r));
    }
    qsort(v, n, sizeof(Bdf), bdf_cmp);
    *ret = TAKE_PTR(v);
    *ret_n = n;
    return 0;
}

static bool in_list(const Bdf *list, size_t n, const char *bdf) {
    for (size_t i = 0; i < n; i++) {
        if (streq(list[i], bdf)) {
            return true;
        }
    }
    return false;
}

static int check_device(const char *vm_name, const Bdf *given, size_t n_given, const char *bdf,
                        ErrorText *err) {
    PciInfo info, m;
    _cleanup_free_ Bdf *members = NULL;
    size_t n_members = 0;
    int r;

    r = pci_info(bdf, &info, err);
    if (r < 0) {
        return r;
    }
    if (!*info.group) {
        return error_set(err, -EOPNOTSUPP,
                         "%s has no IOMMU group: the IOMMU is missing or disabled "
                         "(firmware VT-d/AMD-Vi, kernel intel_iommu=on), so it cannot be passed "
                         "through",
                         bdf);
    }
    r = group_members(bdf, info.group, &members, &n_members, err);
    if (r < 0) {
        return r;
    }
    if (!in_list(members, n_members, bdf)) {
        return error_set(err, -EINVAL, "%s: IOMMU group %s does not list it", bdf, info.group);
    }
    for (size_t i = 0; i < n_members; i++) {
        const char *who = members[i];
        bool self = streq(who, bdf);
        char with[32] = "";

        r = pci_info(who, &m, err);
        if (r < 0) {
            return r;
        }
        if (!self) {
            if (m.bridge) {
                continue;
            }
            snprintf(with, sizeof(with), " (with %s)", bdf);
        }
        bool ours = in_list(given, n_given, who);
        bool bound = streq(m.driver, VFIO_DRIVER);
        if (bound && ours) {
            continue;
        }
        char driver[NAME_MAX + 64];
        if (!*m.driver) {
            snprintf(driver, sizeof(driver), "is not bound to a driver, not " VFIO_DRIVER);
        } else {
            snprintf(driver, sizeof(driver), "is bound to %s, not " VFIO_DRIVER, m.driver);
        }
        if (!bound && !ours) {
            return error_set(err, -EBUSY, "%s in IOMMU group %s%s %s, and is not given to VM %s",
                             who, info.group, with, driver, vm_name);
        }
        if (!bound) {
            return error_set(err, -EBUSY, "%s in IOMMU group %s%s %s", who, info.group, with,
                             driver);
        }
        return error_set(err, -EBUSY, "%s in IOMMU group %s%s is not given to VM %s", who,
                         info.group, with, vm_name);
    }
    return 0;
}

int vfio_check_vm(const VmConfig *vm, ErrorText *err) {
    _cleanup_free_ Bdf *given = NULL;
    size_t n = vm->pci_devices.n;

    if (n == 0) {
        return 0;
    }
    int r = root_check(err);
    if (r < 0) {
        return r;
    }
    given = calloc(n, sizeof(Bdf));
    if (!given) {
        return error_set(err, -ENOMEM, "VM %s: out of memory", vm->name);
    }
    for (size_t i = 0; i < n; i++) {
        const char *p = vm->pci_devices.v[i].path;
        if (!config_pci_canonical(p, given[i])) {
            return error_set(err, -EINVAL, "VM %s: '%.32s' is not a PCI address", vm->name,
                             p ? p : "");
        }
    }
    for (size_t i = 0; i < n; i++) {
        r = check_device(vm->name, given, n, given[i], err);
        if (r < 0) {
            return r;
        }
    }
    return 0;
}

int vfio_bind(const char *untrusted_bdf, ErrorText *err) {
    char path[PATH_MAX], rel[PATH_MAX], override[NAME_MAX + 2];
    Bdf bdf;
    PciInfo info;
    bool wrote = false;
    struct stat st;
    int r;

    r = root_check(err);
    if (r < 0) {
        return r;
    }
    if (!config_pci_canonical(untrusted_bdf, bdf)) {
        return error_set(err, -EINVAL, "'%.32s' is not a PCI address (BB:DD.F or DDDD:BB:DD.F)",
                         untrusted_bdf ? untrusted_bdf : "");
    }
    r = pci_info(bdf, &info, err);
    if (r < 0) {
        return r;
    }
    /* Without the driver the device would be left with none: fail before
     * taking it away from the host. */
    (void)sysfs_path(path, "bus/pci/drivers/" VFIO_DRIVER);
    if (stat(path, &st) < 0) {
        return error_set(err, -ENODEV, "%s: the " VFIO_DRIVER " driver is not loaded (no %s)", bdf,
                         path);
    }

    /* The override first: it makes the binding stick across later probes
     * and is what lets drivers_probe give the device to vfio-pci only. */
    (void)sysfs_path(path, "bus/pci/devices/%s/driver_override", bdf);
    r = read_attr(path, override, sizeof(override));
    if (r < 0) {
        return error_set(err, r, "%s: cannot read %s: %s", bdf, path, strerror(-r));
    }
    if (!streq(override, VFIO_DRIVER)) {
        snprintf(rel, sizeof(rel), "bus/pci/devices/%s/driver_override", bdf);
        r = sysfs_write(bdf, rel, VFIO_DRIVER, err);
        if (r < 0) {
            return r;
        }
        wrote = true;
    }
    if (streq(info.driver, VFIO_DRIVER)) {
        return wrote;
    }
    if (*info.driver) {
        snprintf(rel, sizeof(rel), "bus/pci/devices/%s/driver/unbind", bdf);
        r = sysfs_write(bdf, rel, bdf, err);
        if (r < 0) {
            return r;
        }
    }
    r = sysfs_write(bdf, "bus/pci/drivers_probe", bdf, err);
    if (r < 0) {
        return r;
    }

    r = pci_info(bdf, &info, err);
    if (r < 0) {
        return r;
    }
    if (!streq(info.driver, VFIO_DRIVER)) {
        (void)sysfs_path(path, "bus/pci/devices/%s/driver", bdf);
        if (!*info.driver) {
            return error_set(err, -EIO,
                             "%s: no driver took it after drivers_probe (%s is missing), "
                             "not " VFIO_DRIVER,
                             bdf, path);
        }
        return error_set(err, -EIO, "%s: %s points at %s after drivers_probe, not " VFIO_DRIVER,
                         bdf, path, info.driver);
    }
    return 1;
}

int vfio_bind_all(const ConfigStrv *bdfs, FILE *errors) {
    int failed = 0;

    for (size_t i = 0; i < bdfs->n; i++) {
        ErrorText err = {{0}};
        if (vfio_bind(bdfs->v[i], &err) < 0) {
            failed++;
            if (errors) {
                fprintf(errors, "%s\n", err.message);
            }
        }
    }
    return failed;
}
