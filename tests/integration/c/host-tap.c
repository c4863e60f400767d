/* host/agent/tap.c against the kernel: the TAP a hostNetworking VM gets.
 *
 * Runs as root in a network and mount namespace of its own (made at start,
 * gone when the program exits: nothing it makes can outlive it), with a
 * sysfs mounted there so that /sys/class/net shows that namespace. What
 * tap.c made is read back through other paths than its own: sysfs (kind,
 * owner, persistence, flags, alias), getifaddrs() (the addresses),
 * TUNSETIFF as the VMMs do it (may the owner open it?), and `ip` (iproute2)
 * makes the interfaces that are not ours. Without root every test is
 * skipped, saying why.
 *
 *   host-tap                                  the tests
 *   host-tap ensure NAME UID GID ADDRESS PREFIX
 *   host-tap remove NAME
 * The last two make the same calls in the caller's namespaces (the VM
 * test: tests/vm/test_host_tap.py) and print "created"/"existing" or
 * "removed"/"left"; "none" as UID or GID means no owner. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <ifaddrs.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include "host/agent/tap.h"
#include "util.h"

#define OWNER 65534u
#define GROUP 65534u
#define STRANGER 65533u
#define HOST_IP "172.16.200.2"
#define PREFIX 31u

static const char *skip_reason;

/* ---- reading the kernel's view, not tap.c's ---- */

static bool link_exists(const char *name) {
    char path[128];
    snprintf(path, sizeof(path), "/sys/class/net/%s", name);
    return access(path, F_OK) == 0;
}

/* One sysfs attribute of the interface, without its newline; "" when it
 * cannot be read. */
static const char *attr(const char *name, const char *a, char *buf, size_t size) {
    char path[128];
    snprintf(path, sizeof(path), "/sys/class/net/%s/%s", name, a);
    buf[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return buf;
    }
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
    return buf;
}

static long attr_long(const char *name, const char *a) {
    char buf[64];
    attr(name, a, buf, sizeof(buf));
    assert_true(buf[0] != '\0');
    return strtol(buf, NULL, 0);
}

/* The IPv4 addresses of `name`: how many, and the first one as A/PREFIX. */
static unsigned ipv4_addrs(const char *name, char *first, size_t size) {
    struct ifaddrs *list;
    unsigned n = 0;
    first[0] = '\0';
    assert_int_equal(getifaddrs(&list), 0);
    for (struct ifaddrs *i = list; i; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || !streq(i->ifa_name, name)) {
            continue;
        }
        if (n++ == 0) {
            char a[INET_ADDRSTRLEN];
            const struct sockaddr_in *sa = (const struct sockaddr_in *)i->ifa_addr;
            const struct sockaddr_in *mask = (const struct sockaddr_in *)i->ifa_netmask;
            inet_ntop(AF_INET, &sa->sin_addr, a, sizeof(a));
            snprintf(first, size, "%s/%d", a, __builtin_popcount(mask->sin_addr.s_addr));
        }
    }
    freeifaddrs(list);
    return n;
}

static void sh(const char *cmd) {
    int status = system(cmd);
    if (status != 0) {
        fail_msg("`%s` failed (status %d)", cmd, status);
    }
}

/* In a child as uid/gid (no capabilities left): attaches to the TAP `name`
 * with TUNSETIFF `flags`, as a VMM opening it by name does. 0 or the
 * negative errno. */
static int attach_as(uid_t uid, gid_t gid, const char *name, short flags) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0 ||
            setresuid(uid, uid, uid) < 0) {
            _exit(100);
        }
        int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
        if (fd < 0) {
            _exit(101);
        }
        struct ifreq ifr = {.ifr_flags = flags};
        snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
        _exit(ioctl(fd, TUNSETIFF, &ifr) < 0 ? (errno & 0x7f) : 0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_true(WEXITSTATUS(status) < 100);
    return -WEXITSTATUS(status);
}

/* ---- the tests ---- */

#define NEED_ROOT()                                                                                \
    do {                                                                                           \
        if (skip_reason) {                                                                         \
            print_message("skipped: %s\n", skip_reason);                                           \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

static void ensure_ok(const char *name, bool expect_created) {
    ErrorText err = {{0}};
    bool created = !expect_created;
    int r = tap_ensure(name, OWNER, GROUP, HOST_IP, PREFIX, &created, &err);
    if (r < 0) {
        fail_msg("tap_ensure(%s): %d: %s", name, r, err.message);
    }
    assert_int_equal(r, 0);
    assert_int_equal(created, expect_created);
}

/* Made: a persistent single-queue TAP, owned by OWNER:GROUP, up, with
 * exactly the host's /31 and our alias; the owner opens it as crosvm and
 * qemu do, a stranger cannot; removed, it is gone. */
static void test_create_and_remove(void **state) {
    NEED_ROOT();
    char buf[128];
    ensure_ok("vm-new", true);
    assert_true(link_exists("vm-new"));

    long tun_flags = attr_long("vm-new", "tun_flags");
    assert_true(tun_flags & IFF_TAP);
    assert_false(tun_flags & IFF_TUN);
    assert_true(tun_flags & IFF_PERSIST);
    assert_false(tun_flags & IFF_MULTI_QUEUE);
    assert_int_equal(attr_long("vm-new", "owner"), OWNER);
    assert_int_equal(attr_long("vm-new", "group"), GROUP);
    assert_true(attr_long("vm-new", "flags") & IFF_UP);
    assert_string_equal(attr("vm-new", "ifalias", buf, sizeof(buf)), TAP_ALIAS);
    assert_int_equal(ipv4_addrs("vm-new", buf, sizeof(buf)), 1);
    assert_string_equal(buf, HOST_IP "/31");

    /* crosvm --net tap-name=, and qemu -netdev tap,ifname= (vnet_hdr on);
     * multi-queue must match the device's, which is single queue. */
    assert_int_equal(attach_as(OWNER, GROUP, "vm-new", IFF_TAP | IFF_NO_PI | IFF_VNET_HDR), 0);
    assert_int_equal(attach_as(OWNER, GROUP, "vm-new", IFF_TAP | IFF_NO_PI), 0);
    assert_int_equal(attach_as(OWNER, GROUP, "vm-new", IFF_TAP | IFF_NO_PI | IFF_MULTI_QUEUE),
                     -EINVAL);
    assert_int_equal(attach_as(STRANGER, STRANGER, "vm-new", IFF_TAP | IFF_NO_PI), -EPERM);
    /* Still there after the owner's descriptors closed: persistent. */
    assert_true(link_exists("vm-new"));

    ErrorText err = {{0}};
    assert_int_equal(tap_remove("vm-new", &err), 1);
    assert_false(link_exists("vm-new"));
    assert_int_equal(tap_remove("vm-new", &err), 0);
}

/* A second ensure changes nothing and still says the TAP is ours. */
static void test_second_ensure_is_a_noop(void **state) {
    NEED_ROOT();
    char buf[128];
    ensure_ok("vm-twice", true);
    long index = attr_long("vm-twice", "ifindex");
    ensure_ok("vm-twice", true);
    assert_int_equal(attr_long("vm-twice", "ifindex"), index);
    assert_int_equal(ipv4_addrs("vm-twice", buf, sizeof(buf)), 1);
    assert_string_equal(buf, HOST_IP "/31");
    ErrorText err = {{0}};
    assert_int_equal(tap_remove("vm-twice", &err), 1);
    assert_false(link_exists("vm-twice"));
}

/* A TAP made by someone else (as the NixOS module does): reported as
 * existing, not addressed, not brought up, not removed. */
static void test_existing_tap_left_alone(void **state) {
    NEED_ROOT();
    char buf[128];
    sh("ip tuntap add dev vm-x mode tap && ip addr add 10.9.8.7/24 dev vm-x");
    long index = attr_long("vm-x", "ifindex");

    ensure_ok("vm-x", false);
    assert_int_equal(attr_long("vm-x", "ifindex"), index);
    assert_false(attr_long("vm-x", "flags") & IFF_UP);
    assert_int_equal(attr_long("vm-x", "owner"), -1);
    assert_string_equal(attr("vm-x", "ifalias", buf, sizeof(buf)), "");
    assert_int_equal(ipv4_addrs("vm-x", buf, sizeof(buf)), 1);
    assert_string_equal(buf, "10.9.8.7/24");

    ErrorText err = {{0}};
    assert_int_equal(tap_remove("vm-x", &err), 0);
    assert_true(link_exists("vm-x"));
    assert_int_equal(attr_long("vm-x", "ifindex"), index);
    sh("ip link del vm-x");
}

/* Another kind of interface with the name: one clear error, untouched. */
static void test_other_kinds_refused(void **state) {
    NEED_ROOT();
    static const struct {
        const char *make;
        const char *name;
        const char *says;
    } cases[] = {
        {"ip link add vm-bridge type bridge", "vm-bridge", "is not a TAP device (bridge)"},
        {"ip tuntap add dev vm-tun mode tun", "vm-tun", "is a TUN device, not a TAP"},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        char cmd[128];
        sh(cases[i].make);
        ErrorText err = {{0}};
        bool created = false;
        int r = tap_ensure(cases[i].name, OWNER, GROUP, HOST_IP, PREFIX, &created, &err);
        print_message("%s: %s\n", cases[i].name, err.message);
        assert_int_equal(r, -EEXIST);
        assert_non_null(strstr(err.message, cases[i].says));
        assert_int_equal(tap_remove(cases[i].name, &err), 0);
        assert_true(link_exists(cases[i].name));
        assert_false(attr_long(cases[i].name, "flags") & IFF_UP);
        snprintf(cmd, sizeof(cmd), "ip link del %s", cases[i].name);
        sh(cmd);
    }
}

/* Bad names and addresses: -EINVAL with one line saying what is wrong,
 * and nothing made. */
static void test_bad_input(void **state) {
    NEED_ROOT();
    static const struct {
        const char *name;
        const char *address;
        unsigned prefix;
        const char *says;
    } cases[] = {
        {"vm-abcdefghijklm", HOST_IP, 31, "longer than 15 bytes"}, /* 16 bytes */
        {"", HOST_IP, 31, "empty"},
        {"vm/x", HOST_IP, 31, "character"},
        {"vm x", HOST_IP, 31, "character"},
        {"vm-%d", HOST_IP, 31, "character"},
        {"..", HOST_IP, 31, "not a valid interface name"},
        {"vm-addr", "172.16.200.256", 31, "not an IPv4 address"},
        {"vm-addr", "fe80::1", 31, "not an IPv4 address"},
        {"vm-addr", HOST_IP, 0, "prefix length 0"},
        {"vm-addr", HOST_IP, 33, "prefix length 33"},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        ErrorText err = {{0}};
        bool created = false;
        int r = tap_ensure(cases[i].name, OWNER, GROUP, cases[i].address, cases[i].prefix, &created,
                           &err);
        print_message("\"%s\" %s/%u: %s\n", cases[i].name, cases[i].address, cases[i].prefix,
                      err.message);
        assert_int_equal(r, -EINVAL);
        assert_non_null(strstr(err.message, cases[i].says));
        assert_null(strchr(err.message, '\n'));
    }
    assert_false(link_exists("vm-addr"));
    assert_false(link_exists("vm-abcdefghijkl")); /* not made under a cut name either */
    ErrorText err = {{0}};
    assert_int_equal(tap_remove("vm-abcdefghijklm", &err), -EINVAL);
    assert_non_null(strstr(err.message, "longer than 15 bytes"));
}

/* No /dev/net/tun, or something else in its place: the error names it,
 * nothing is made. The namespace's own mounts hide it. */
static void test_no_tun_device(void **state) {
    NEED_ROOT();
    ErrorText err = {{0}};
    bool created = false;
    assert_int_equal(mount("tmpfs", "/dev/net", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755"), 0);
    int r = tap_ensure("vm-notun", OWNER, GROUP, HOST_IP, PREFIX, &created, &err);
    print_message("missing: %s\n", err.message);
    assert_int_equal(r, -ENOENT);
    assert_non_null(strstr(err.message, "cannot open /dev/net/tun"));
    assert_non_null(strstr(err.message, strerror(ENOENT)));
    assert_int_equal(umount("/dev/net"), 0);
    assert_false(link_exists("vm-notun"));

    /* A file that is not the tun device: TUNSETIFF fails. */
    assert_int_equal(mount("/dev/null", "/dev/net/tun", NULL, MS_BIND, NULL), 0);
    err.message[0] = '\0';
    r = tap_ensure("vm-notun", OWNER, GROUP, HOST_IP, PREFIX, &created, &err);
    print_message("not tun: %s\n", err.message);
    assert_true(r < 0);
    assert_non_null(strstr(err.message, "TUNSETIFF on /dev/net/tun"));
    assert_int_equal(umount("/dev/net/tun"), 0);
    assert_false(link_exists("vm-notun"));
}

/* Without CAP_NET_ADMIN: -EPERM, nothing made; our TAP cannot be removed
 * by such a caller either. */
static void test_not_permitted(void **state) {
    NEED_ROOT();
    ensure_ok("vm-perm", true);
    int pipefd[2];
    assert_int_equal(pipe2(pipefd, O_CLOEXEC), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        ErrorText err = {{0}};
        bool created = false;
        if (setgroups(0, NULL) < 0 || setresgid(OWNER, OWNER, OWNER) < 0 ||
            setresuid(OWNER, OWNER, OWNER) < 0) {
            _exit(100);
        }
        int r1 = tap_ensure("vm-unpriv", OWNER, GROUP, HOST_IP, PREFIX, &created, &err);
        dprintf(pipefd[1], "%s\n", err.message);
        int r2 = tap_remove("vm-perm", &err);
        dprintf(pipefd[1], "%s\n", err.message);
        _exit(r1 == -EPERM && r2 == -EPERM ? 0 : 1);
    }
    close(pipefd[1]);
    char out[2 * ERROR_TEXT_MAX + 2] = "";
    size_t len = 0;
    for (ssize_t n; len < sizeof(out) - 1; len += (size_t)n) {
        n = read(pipefd[0], out + len, sizeof(out) - 1 - len);
        if (n <= 0) {
            break;
        }
    }
    close(pipefd[0]);
    out[len] = '\0';
    print_message("unprivileged:\n%s", out);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_non_null(strstr(out, "cannot make the TAP vm-unpriv"));
    assert_non_null(strstr(out, "cannot remove the TAP vm-perm"));
    assert_false(link_exists("vm-unpriv"));
    assert_true(link_exists("vm-perm"));
    ErrorText err = {{0}};
    assert_int_equal(tap_remove("vm-perm", &err), 1);
}

/* A network and mount namespace of our own, with its own sysfs. */
static const char *enter_namespaces(void) {
    if (geteuid() != 0) {
        return "needs root (CAP_NET_ADMIN) to make TAPs in a network namespace of its own";
    }
    if (access("/dev/net/tun", F_OK) < 0) {
        return "no /dev/net/tun on this machine (kernel without TUN)";
    }
    if (unshare(CLONE_NEWNET | CLONE_NEWNS) < 0) {
        fprintf(stderr, "host-tap: unshare: %s\n", strerror(errno));
        exit(1);
    }
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
        mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) {
        fprintf(stderr, "host-tap: mounting a private sysfs: %s\n", strerror(errno));
        exit(1);
    }
    return NULL;
}

static int id_arg(const char *s, unsigned long long *ret) {
    if (streq(s, "none")) {
        *ret = (unsigned)-1;
        return 0;
    }
    return parse_uint(s, 0, (unsigned)-2, ret);
}

/* The calls alone, for the VM test. */
static int drive(int argc, char **argv) {
    ErrorText err = {{0}};
    unsigned long long uid, gid, prefix;
    if (argc == 7 && streq(argv[1], "ensure") && id_arg(argv[3], &uid) >= 0 &&
        id_arg(argv[4], &gid) >= 0 && parse_uint(argv[6], 0, 255, &prefix) >= 0) {
        bool created;
        int r =
            tap_ensure(argv[2], (uid_t)uid, (gid_t)gid, argv[5], (unsigned)prefix, &created, &err);
        if (r < 0) {
            fprintf(stderr, "host-tap: %s\n", err.message);
            return 1;
        }
        puts(created ? "created" : "existing");
        return 0;
    }
    if (argc == 3 && streq(argv[1], "remove")) {
        int r = tap_remove(argv[2], &err);
        if (r < 0) {
            fprintf(stderr, "host-tap: %s\n", err.message);
            return 1;
        }
        puts(r > 0 ? "removed" : "left");
        return 0;
    }
    fprintf(stderr, "usage: host-tap [ensure NAME UID GID ADDRESS PREFIX | remove NAME]\n");
    return 2;
}

int main(int argc, char **argv) {
    if (argc > 1) {
        return drive(argc, argv);
    }
    skip_reason = enter_namespaces();
    if (skip_reason) {
        printf("host-tap: every test skipped: %s\n", skip_reason);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_and_remove),
        cmocka_unit_test(test_second_ensure_is_a_noop),
        cmocka_unit_test(test_existing_tap_left_alone),
        cmocka_unit_test(test_other_kinds_refused),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_no_tun_device),
        cmocka_unit_test(test_not_permitted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
