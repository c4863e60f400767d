/* proto/vmconf and proto/rules: <vm>.conf parsing and writing, VM MACs,
 * VM names of file names, terminal and user names, and errors that name
 * the file, the line and the reason. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rules.h"
#include "util.h"
#include "vmconf.h"

static ErrorText error;
static const char *err = error.message;

static int parse(const char *text, VmConf *c) {
    memset(&error, 0, sizeof(error));
    return vm_conf_parse("vm.conf", text, strlen(text), c, &error);
}

static void expect_error(const char *text, const char *want) {
    VmConf c = {.mac = {9, 9, 9, 9, 9, 9}, .role = VM_ROLE_ROUTER};
    if (parse(text, &c) != -EINVAL) {
        fail_msg("accepted: \"%s\"", text);
    }
    if (!streq(err, want)) {
        fail_msg("\"%s\": error \"%s\", wanted \"%s\"", text, err, want);
    }
    /* Nothing written on failure. */
    assert_int_equal(c.mac[0], 9);
    assert_int_equal(c.role, VM_ROLE_ROUTER);
}

static void test_minimal(void **state) {
    VmConf c;
    static const uint8_t want[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
    assert_int_equal(parse("mac=52:54:00:12:34:56\n", &c), 0);
    assert_memory_equal(c.mac, want, 6);
    assert_int_equal(c.role, VM_ROLE_CLIENT);
    /* No final newline. */
    assert_int_equal(parse("mac=52:54:00:12:34:56", &c), 0);
    assert_memory_equal(c.mac, want, 6);
}

static void test_full(void **state) {
    VmConf c;
    static const uint8_t want[6] = {0x02, 0xab, 0xcd, 0xef, 0x00, 0xff};
    const char *text = "# the router\r\n"
                       "\n"
                       "  role = router  \n"
                       "\t# indented comment\n"
                       "mac\t=\t02:AB:cd:Ef:00:ff\r\n"
                       "   \n";
    assert_int_equal(parse(text, &c), 0);
    assert_memory_equal(c.mac, want, 6);
    assert_int_equal(c.role, VM_ROLE_ROUTER);
    assert_int_equal(parse("role=client\nmac=02:00:00:00:00:01\n", &c), 0);
    assert_int_equal(c.role, VM_ROLE_CLIENT);
}

static void test_errors(void **state) {
    expect_error("", "vm.conf: no mac= line");
    expect_error("# nothing\nrole=router\n", "vm.conf: no mac= line");
    expect_error("mac=52:54:00:12:34:56\nmtu=1500\n", "vm.conf:2: unknown key \"mtu\"");
    expect_error("MAC=52:54:00:12:34:56\n", "vm.conf:1: unknown key \"MAC\"");
    expect_error("\n\nmac\n", "vm.conf:3: expected key=value, got \"mac\"");
    expect_error("=52:54:00:12:34:56\n", "vm.conf:1: unknown key \"\"");
    expect_error("mac=52:54:00:12:34:56\nmac=52:54:00:12:34:57\n",
                 "vm.conf:2: mac given twice (first on line 1)");
    expect_error("role=client\nmac=52:54:00:12:34:56\nrole=router\n",
                 "vm.conf:3: role given twice (first on line 1)");
    expect_error("mac=52:54:00:12:34:56\nrole=Router\n",
                 "vm.conf:2: role \"Router\" is neither router nor client");
    expect_error("mac=52:54:00:12:34:56\nrole=\n",
                 "vm.conf:2: role \"\" is neither router nor client");
    expect_error("mac=01:00:5e:00:00:01\n",
                 "vm.conf:1: mac \"01:00:5e:00:00:01\" is not a unicast address like "
                 "52:54:00:12:34:56");
    expect_error("mac=\x1b[31m\n", "vm.conf:1: mac \"\\x1b[31m\" is not a unicast address like "
                                   "52:54:00:12:34:56");
    expect_error("a very long key that goes on=1\n",
                 "vm.conf:1: unknown key \"a very long key that goes on\"");
}

static void test_limits(void **state) {
    VmConf c;
    char text[VM_CONF_MAX_SIZE + 2];
    /* NUL inside. */
    assert_int_equal(vm_conf_parse("x.conf", "mac=52:54:00:12:34:56\0", 22, &c, &error), -EINVAL);
    assert_string_equal(err, "x.conf: contains a NUL byte");
    /* A line of 257 bytes. */
    memset(text, '#', 257);
    strcpy(text + 257, "\nmac=52:54:00:12:34:56\n");
    assert_int_equal(parse(text, &c), -EINVAL);
    assert_string_equal(err, "vm.conf:1: line longer than 256 bytes");
    text[1] = '\n'; /* now two short lines */
    assert_int_equal(parse(text, &c), 0);
    /* Too large a file. */
    memset(text, '\n', sizeof(text));
    assert_int_equal(vm_conf_parse("x.conf", text, VM_CONF_MAX_SIZE + 1, &c, &error), -EINVAL);
    assert_string_equal(err, "x.conf: larger than 4096 bytes");
    /* No ErrorText at all is fine. */
    assert_int_equal(vm_conf_parse("x.conf", "bad", 3, &c, NULL), -EINVAL);
}

static void test_mac(void **state) {
    uint8_t m[6] = {0};
    static const uint8_t want[6] = {0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54};
    assert_int_equal(vm_mac_parse("fe:dc:ba:98:76:54", m), 0);
    assert_memory_equal(m, want, 6);
    const char *bad[] = {
        "",
        "52:54:00:12:34",
        "52:54:00:12:34:5",
        "52:54:00:12:34:567",
        "52-54-00-12-34-56",
        "52:54:00:12:34:5g",
        " 52:54:00:12:34:5",
        "52:54:00:12:34:56 ",
        "00:00:00:00:00:00",
        "ff:ff:ff:ff:ff:ff",
        "33:33:00:00:00:01",
        "525400123456aaaaa",
    };
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        if (vm_mac_parse(bad[i], m) != -EINVAL) {
            fail_msg("accepted \"%s\"", bad[i]);
        }
    }
    assert_memory_equal(m, want, 6);
}

static void test_name_from_filename(void **state) {
    char name[VM_NAME_MAX + 1];
    assert_int_equal(vm_name_from_filename("banking.conf", ".conf", name), 0);
    assert_string_equal(name, "banking");
    assert_int_equal(vm_name_from_filename("a.conf", ".conf", name), 0);
    assert_int_equal(vm_name_from_filename("abcdefghijkl.conf", ".conf", name), 0);
    assert_string_equal(name, "abcdefghijkl");
    assert_int_equal(vm_name_from_filename("vm-2.conf", ".conf", name), 0);
    const char *bad[] = {".conf",    "banking",   "banking.conf~",      "Banking.conf", "1vm.conf",
                         "-vm.conf", "vm_1.conf", "abcdefghijklm.conf", "vm.conf.conf", ".vm.conf",
                         "vm.cong",  "vm/x.conf", "vm .conf",           "..conf"};
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        if (vm_name_from_filename(bad[i], ".conf", name) != -EINVAL) {
            fail_msg("accepted \"%s\"", bad[i]);
        }
    }
}

static void test_vm_name(void **state) {
    assert_true(vm_name_valid("a"));
    assert_true(vm_name_valid("banking"));
    assert_true(vm_name_valid("sys-net-2"));
    assert_true(vm_name_valid("abcdefghijkl"));   /* 12 */
    assert_false(vm_name_valid("abcdefghijklm")); /* 13 */
    assert_false(vm_name_valid(""));
    assert_false(vm_name_valid(NULL));
    assert_false(vm_name_valid("1abc"));
    assert_false(vm_name_valid("-abc"));
    assert_false(vm_name_valid("Abc"));
    assert_false(vm_name_valid("a_b"));
    assert_false(vm_name_valid("a/b"));
    assert_false(vm_name_valid("../x"));
    /* Another suffix: the host's vms/<name>.json. */
    char name[VM_NAME_MAX + 1];
    assert_int_equal(vm_name_from_filename("vault.json", ".json", name), 0);
    assert_string_equal(name, "vault");
    assert_int_equal(vm_name_from_filename("vault.conf", ".json", name), -EINVAL);
}

static void test_net_name(void **state) {
    assert_true(net_name_valid("lan"));
    assert_true(net_name_valid("averyveryverylongnetwork-name-32")); /* 32 */
    assert_false(net_name_valid("averyveryverylongnetwork-name-33x"));
    assert_false(net_name_valid(""));
    assert_false(net_name_valid(NULL));
    assert_false(net_name_valid("Lan"));
    assert_false(net_name_valid("1lan"));
    assert_false(net_name_valid("l_an"));
    assert_false(net_name_valid("l/an"));
}

static void test_mac_format(void **state) {
    char buf[MAC_STR_SIZE];
    uint8_t m[6];
    static const uint8_t mac[6] = {0x52, 0xAB, 0x00, 0x01, 0xfe, 0x10};
    assert_string_equal(mac_format(mac, buf), "52:ab:00:01:fe:10");
    assert_int_equal(vm_mac_parse(buf, m), 0);
    assert_memory_equal(m, mac, 6);
    assert_true(vm_mac_valid(mac));
    static const uint8_t zero[6], group[6] = {0x01, 0, 0x5e, 0, 0, 1};
    assert_false(vm_mac_valid(zero));
    assert_false(vm_mac_valid(group));
}

static void test_format_round_trip(void **state) {
    char text[VM_CONF_TEXT_MAX];
    VmConf back, c = {.mac = {0x52, 0x54, 0, 0xab, 0xcd, 0xef}, .role = VM_ROLE_ROUTER};
    assert_string_equal(vm_conf_format(&c, text), "mac=52:54:00:ab:cd:ef\nrole=router\n");
    assert_int_equal(parse(text, &back), 0);
    assert_memory_equal(back.mac, c.mac, 6);
    assert_int_equal(back.role, VM_ROLE_ROUTER);
    c.role = VM_ROLE_CLIENT;
    assert_string_equal(vm_conf_format(&c, text), "mac=52:54:00:ab:cd:ef\nrole=client\n");
    assert_int_equal(parse(text, &back), 0);
    assert_int_equal(back.role, VM_ROLE_CLIENT);
}

static void test_term_and_user(void **state) {
    assert_true(term_name_valid("xterm-256color"));
    assert_true(term_name_valid("screen.xterm+x_y"));
    assert_false(term_name_valid(""));
    assert_false(term_name_valid("xterm 256"));
    assert_false(term_name_valid("../../x"));
    assert_false(term_name_valid("x\x1b"));
    char long_term[TERM_NAME_MAX + 2];
    memset(long_term, 'x', sizeof(long_term) - 1);
    long_term[TERM_NAME_MAX + 1] = '\0';
    assert_false(term_name_valid(long_term));
    long_term[TERM_NAME_MAX] = '\0';
    assert_true(term_name_valid(long_term));
    assert_true(user_name_valid("alice"));
    assert_true(user_name_valid("a.b_c-d"));
    assert_false(user_name_valid("-alice"));
    assert_false(user_name_valid(""));
    assert_false(user_name_valid("a b"));
    assert_false(user_name_valid("abcdefghijklmnopqrstuvwxyzabcdefg")); /* 33 */
}

static void write_file(const char *path, const char *text, size_t len) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
}

static void test_load(void **state) {
    char dir[] = "/tmp/test-vmconf.XXXXXX";
    char path[128], link[128];
    VmConf c;
    assert_non_null(mkdtemp(dir));

    snprintf(path, sizeof(path), "%s/router.conf", dir);
    write_file(path, "mac=52:54:00:00:00:01\nrole=router\n", 34);
    assert_int_equal(vm_conf_load_at(AT_FDCWD, path, &c, &error), 0);
    assert_int_equal(c.role, VM_ROLE_ROUTER);

    /* Errors carry the file's name, not the whole path. */
    write_file(path, "mac=52:54:00:00:00:01\nrole=gateway\n", 35);
    assert_int_equal(vm_conf_load_at(AT_FDCWD, path, &c, &error), -EINVAL);
    assert_string_equal(err, "router.conf:2: role \"gateway\" is neither router nor client");

    /* Larger than allowed, even if only by a byte. */
    char big[VM_CONF_MAX_SIZE + 1];
    memset(big, '\n', sizeof(big));
    memcpy(big, "mac=52:54:00:00:00:01", 21);
    write_file(path, big, VM_CONF_MAX_SIZE);
    assert_int_equal(vm_conf_load_at(AT_FDCWD, path, &c, &error), 0);
    write_file(path, big, sizeof(big));
    assert_int_equal(vm_conf_load_at(AT_FDCWD, path, &c, &error), -EINVAL);
    assert_string_equal(err, "router.conf: larger than 4096 bytes");

    /* Missing, a symlink, a directory. */
    snprintf(link, sizeof(link), "%s/missing.conf", dir);
    assert_int_equal(vm_conf_load_at(AT_FDCWD, link, &c, &error), -ENOENT);
    assert_true(startswith(err, "missing.conf: cannot open: "));
    snprintf(link, sizeof(link), "%s/link.conf", dir);
    assert_int_equal(symlink(path, link), 0);
    assert_int_equal(vm_conf_load_at(AT_FDCWD, link, &c, &error), -ELOOP);
    assert_int_equal(vm_conf_load_at(AT_FDCWD, dir, &c, &error), -EINVAL);
    assert_true(strstr(err, "not a regular file") != NULL);

    /* Relative to a directory fd, as vm-switch reads its directory. */
    write_file(path, "mac=52:54:00:00:00:01\nrole=router\n", 34);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(dfd >= 0);
    assert_int_equal(vm_conf_load_at(dfd, "router.conf", &c, &error), 0);
    assert_int_equal(c.role, VM_ROLE_ROUTER);
    assert_int_equal(vm_conf_load_at(dfd, "link.conf", &c, &error), -ELOOP);
    assert_int_equal(vm_conf_load_at(dfd, "missing.conf", &c, &error), -ENOENT);
    assert_true(startswith(err, "missing.conf: cannot open: "));
    close(dfd);

    unlink(link);
    unlink(path);
    rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minimal),       cmocka_unit_test(test_full),
        cmocka_unit_test(test_errors),        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_mac),           cmocka_unit_test(test_name_from_filename),
        cmocka_unit_test(test_load),          cmocka_unit_test(test_vm_name), cmocka_unit_test(test_net_name),
        cmocka_unit_test(test_mac_format),    cmocka_unit_test(test_format_round_trip),
        cmocka_unit_test(test_term_and_user),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
