/* host/vmrun-opts: vm-run's command line. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "host/cli/vmrun-opts.h"
#include "util.h"

#define ARGV(...) ((char *[]){"vm-run", __VA_ARGS__, NULL})
#define ARGC(...) ((int)(sizeof((char *[]){"vm-run", __VA_ARGS__}) / sizeof(char *)))
#define PARSE(o, err, ...) vmrun_parse_args(ARGC(__VA_ARGS__), ARGV(__VA_ARGS__), (o), &(err))

static void test_minimal(void **state) {
    VmRunOptions o;
    ErrorText err = {{0}};
    assert_int_equal(PARSE(&o, err, "work", "ls"), 0);
    assert_false(o.help);
    assert_false(o.tty);
    assert_false(o.timing);
    assert_false(o.wait_wayland);
    assert_null(o.user);
    assert_null(o.cwd);
    assert_int_equal(o.envc, 0);
    assert_string_equal(o.vm, "work");
    assert_int_equal(o.argc, 1);
    assert_string_equal(o.argv[0], "ls");
    assert_null(o.argv[1]);
    vmrun_options_done(&o);
}

static void test_all_options(void **state) {
    VmRunOptions o;
    ErrorText err = {{0}};
    assert_int_equal(PARSE(&o, err, "-t", "-u", "alice", "-e", "A=1", "--env", "B=", "-w", "/tmp",
                           "--timing", "--wait-wayland", "vault", "sh", "-c", "echo hi"),
                     0);
    assert_true(o.tty);
    assert_true(o.timing);
    assert_true(o.wait_wayland);
    assert_string_equal(o.user, "alice");
    assert_string_equal(o.cwd, "/tmp");
    assert_int_equal(o.envc, 2);
    assert_string_equal(o.env[0], "A=1");
    assert_string_equal(o.env[1], "B=");
    assert_null(o.env[2]);
    assert_string_equal(o.vm, "vault");
    assert_int_equal(o.argc, 3);
    assert_string_equal(o.argv[2], "echo hi");
    vmrun_options_done(&o);
}

static void test_long_forms(void **state) {
    VmRunOptions o;
    ErrorText err = {{0}};
    assert_int_equal(PARSE(&o, err, "--tty", "--user=bob", "--workdir", "/", "x", "y"), 0);
    assert_true(o.tty);
    assert_string_equal(o.user, "bob");
    assert_string_equal(o.cwd, "/");
    vmrun_options_done(&o);
}

static void test_options_after_the_command_are_its_own(void **state) {
    VmRunOptions o;
    ErrorText err = {{0}};
    assert_int_equal(PARSE(&o, err, "vm", "ls", "-t", "-e", "X", "--help"), 0);
    assert_false(o.tty);
    assert_false(o.help);
    assert_int_equal(o.envc, 0);
    assert_int_equal(o.argc, 5);
    assert_string_equal(o.argv[1], "-t");
    assert_string_equal(o.argv[4], "--help");
    vmrun_options_done(&o);

    /* After the VM name too, even when the command looks like an option. */
    assert_int_equal(PARSE(&o, err, "vm", "-t"), 0);
    assert_string_equal(o.argv[0], "-t");
    vmrun_options_done(&o);

    /* "--" ends vm-run's options. */
    assert_int_equal(PARSE(&o, err, "--", "vm", "cmd"), 0);
    assert_string_equal(o.vm, "vm");
    vmrun_options_done(&o);
}

static void test_help(void **state) {
    VmRunOptions o;
    ErrorText err = {{0}};
    assert_int_equal(PARSE(&o, err, "--help"), 0);
    assert_true(o.help);
    vmrun_options_done(&o);
    assert_int_equal(PARSE(&o, err, "-h", "vm"), 0);
    assert_true(o.help);
    vmrun_options_done(&o);
    assert_non_null(strstr(vmrun_usage, "Usage: vm-run"));
}

static void test_errors(void **state) {
    VmRunOptions o;
    ErrorText err;

    assert_int_equal(vmrun_parse_args(1, ARGV(NULL), &o, &err), -EINVAL);
    assert_non_null(strstr(err.message, "no VM"));
    assert_int_equal(PARSE(&o, err, "vm"), -EINVAL);
    assert_non_null(strstr(err.message, "no command"));
    assert_int_equal(PARSE(&o, err, "vm", ""), -EINVAL);
    assert_int_equal(PARSE(&o, err, "-x", "vm", "ls"), -EINVAL);
    assert_non_null(strstr(err.message, "-x"));
    assert_int_equal(PARSE(&o, err, "--bogus", "vm", "ls"), -EINVAL);
    assert_non_null(strstr(err.message, "--bogus"));
    assert_int_equal(PARSE(&o, err, "-u"), -EINVAL);
    assert_non_null(strstr(err.message, "needs an argument"));
    assert_int_equal(PARSE(&o, err, "-u", "", "vm", "ls"), -EINVAL);
    assert_int_equal(PARSE(&o, err, "-e", "NOEQUALS", "vm", "ls"), -EINVAL);
    assert_non_null(strstr(err.message, "KEY=VALUE"));
    assert_int_equal(PARSE(&o, err, "-e", "=v", "vm", "ls"), -EINVAL);
    assert_int_equal(PARSE(&o, err, "-e", "A=1", "-e", "=v", "vm", "ls"), -EINVAL);
    assert_int_equal(PARSE(&o, err, "-w", "relative", "vm", "ls"), -EINVAL);
    assert_non_null(strstr(err.message, "absolute"));
    assert_int_equal(PARSE(&o, err, "--timing=yes", "vm", "ls"), -EINVAL);
}

static void test_reparse(void **state) {
    /* getopt state is reset on every call. */
    VmRunOptions o;
    ErrorText err;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(PARSE(&o, err, "-t", "vm", "ls"), 0);
        assert_true(o.tty);
        assert_string_equal(o.vm, "vm");
        vmrun_options_done(&o);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minimal),
        cmocka_unit_test(test_all_options),
        cmocka_unit_test(test_long_forms),
        cmocka_unit_test(test_options_after_the_command_are_its_own),
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_reparse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
