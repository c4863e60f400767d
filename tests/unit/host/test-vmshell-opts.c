/* host/vmshell-opts: vm-shell's command line, escape key and ssh command. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "host/cli/vmshell-opts.h"
#include "util.h"

#define ARGV(...) ((char *[]){"vm-shell", __VA_ARGS__, NULL})
#define ARGC(...) ((int)(sizeof((char *[]){"vm-shell", __VA_ARGS__}) / sizeof(char *)))
#define PARSE(o, err, ...) vmshell_parse_args(ARGC(__VA_ARGS__), ARGV(__VA_ARGS__), (o), &(err))

static void test_console(void **state) {
    VmShellOptions o;
    ErrorText err = {{0}};
    assert_int_equal(PARSE(&o, err, "work"), 0);
    assert_false(o.help);
    assert_false(o.ssh);
    assert_false(o.root);
    assert_string_equal(o.vm, "work");
    assert_int_equal(o.argc, 0);
    assert_null(o.argv);
}

static void test_ssh(void **state) {
    VmShellOptions o;
    ErrorText err = {{0}};
    assert_int_equal(PARSE(&o, err, "--ssh", "work"), 0);
    assert_true(o.ssh);
    assert_false(o.root);
    assert_string_equal(o.vm, "work");
    assert_int_equal(o.argc, 0);

    assert_int_equal(PARSE(&o, err, "--ssh", "--root", "vault"), 0);
    assert_true(o.ssh);
    assert_true(o.root);
    assert_string_equal(o.vm, "vault");

    assert_int_equal(PARSE(&o, err, "--root", "--ssh", "vault"), 0);
    assert_true(o.root);
    assert_null(o.user);

    /* The guest's user, when it is not the configured one. */
    assert_int_equal(PARSE(&o, err, "--ssh", "--user", "bob", "vault"), 0);
    assert_string_equal(o.user, "bob");
    assert_int_equal(PARSE(&o, err, "--ssh", "-u", "bob", "vault"), 0);
    assert_string_equal(o.user, "bob");
    assert_int_equal(PARSE(&o, err, "--ssh", "--root", "-u", "bob", "vault"), -EINVAL);
    assert_non_null(strstr(err.message, "--root and --user"));
    assert_int_equal(PARSE(&o, err, "-u", "bob", "vault"), -EINVAL);
    assert_non_null(strstr(err.message, "--user goes with --ssh"));
    assert_int_equal(PARSE(&o, err, "--ssh", "-u", "Bad/User", "vault"), -EINVAL);
    assert_non_null(strstr(err.message, "not a user name"));
}

static void test_ssh_command_keeps_its_options(void **state) {
    VmShellOptions o;
    ErrorText err = {{0}};
    assert_int_equal(PARSE(&o, err, "--ssh", "work", "ls", "-l", "--root"), 0);
    assert_false(o.root);
    assert_int_equal(o.argc, 3);
    assert_string_equal(o.argv[0], "ls");
    assert_string_equal(o.argv[1], "-l");
    assert_string_equal(o.argv[2], "--root");
    assert_null(o.argv[3]);
}

static void test_help(void **state) {
    VmShellOptions o;
    ErrorText err = {{0}};
    assert_int_equal(PARSE(&o, err, "--help"), 0);
    assert_true(o.help);
    assert_int_equal(PARSE(&o, err, "-h", "--bogus"), 0);
    assert_true(o.help);
    assert_non_null(strstr(vmshell_usage, "Ctrl-]"));
}

static void test_errors(void **state) {
    VmShellOptions o;
    ErrorText err;

    assert_int_equal(vmshell_parse_args(1, ARGV(NULL), &o, &err), -EINVAL);
    assert_string_equal(err.message, "no VM given (see --help)");
    assert_int_equal(PARSE(&o, err, "--ssh"), -EINVAL);
    assert_string_equal(err.message, "no VM given (see --help)");
    assert_int_equal(PARSE(&o, err, "--root", "vm"), -EINVAL);
    assert_non_null(strstr(err.message, "--root goes with --ssh"));
    assert_int_equal(PARSE(&o, err, "vm", "ls"), -EINVAL);
    assert_non_null(strstr(err.message, "needs --ssh"));
    assert_int_equal(PARSE(&o, err, "--ssh", "vm", ""), -EINVAL);
    assert_string_equal(err.message, "the command is empty");
    assert_int_equal(PARSE(&o, err, "--bogus", "vm"), -EINVAL);
    assert_string_equal(err.message, "unknown option '--bogus' (see --help)");
    assert_int_equal(PARSE(&o, err, "-x", "vm"), -EINVAL);
    assert_string_equal(err.message, "unknown option '-x' (see --help)");
    assert_int_equal(PARSE(&o, err, "--ssh=yes", "vm"), -EINVAL);
    assert_non_null(strstr(err.message, "--ssh=yes"));
}

static void test_reparse(void **state) {
    /* getopt state is reset on every call. */
    VmShellOptions o;
    ErrorText err;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(PARSE(&o, err, "--ssh", "vm", "true"), 0);
        assert_true(o.ssh);
        assert_string_equal(o.vm, "vm");
        assert_int_equal(o.argc, 1);
    }
}

static void test_escape(void **state) {
    const uint8_t none[] = "hello\r";
    const uint8_t first[] = {0x1d, 'a'};
    const uint8_t later[] = {'l', 's', '\r', 0x1b, '[', 'A', 0x1d, 0x1d};
    /* Ctrl-\ and Ctrl-^ are their neighbours: no escape. */
    const uint8_t near[] = {0x1c, 0x1e, 0x9d};

    assert_int_equal(vmshell_find_escape(none, sizeof(none) - 1), -1);
    assert_int_equal(vmshell_find_escape(first, sizeof(first)), 0);
    assert_int_equal(vmshell_find_escape(later, sizeof(later)), 6);
    assert_int_equal(vmshell_find_escape(near, sizeof(near)), -1);
    assert_int_equal(vmshell_find_escape(later, 6), -1);
    assert_int_equal(vmshell_find_escape(later, 0), -1);
}

static void test_ssh_argv(void **state) {
    char **v = NULL;
    char *cmd[] = {"uname", "-a", NULL};
    /* An option beside its value. */
    /* clang-format off */
    static const char *const want[] = {
        "ssh",
        "-o", "ProxyCommand='/usr/bin/qubes-lite-vsock-proxy' 5 22",
        "-o", "HostKeyAlias=qubes-lite-work",
        "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "CheckHostIP=no",
        "-o", "LogLevel=ERROR",
        "-o", "ForwardAgent=no",
        "-o", "ForwardX11=no",
        "-o", "ForwardX11Trusted=no",
        "-o", "ClearAllForwardings=yes",
        "-o", "Tunnel=no",
        "-o", "ControlMaster=no",
        "-o", "ControlPath=none",
        "-o", "ControlPersist=no",
        "-o", "PermitLocalCommand=no",
        "-o", "SendEnv=-*",
        "-l", "alice",
        "qubes-lite-work",
        "--", "uname", "-a",
    };
    /* clang-format on */
    size_t i;

    assert_int_equal(
        vmshell_ssh_argv("/usr/bin/qubes-lite-vsock-proxy", NULL, 5, "alice", "work", cmd, 2, &v),
        0);
    for (i = 0; i < ELEMENTSOF(want); i++) {
        assert_non_null(v[i]);
        assert_string_equal(v[i], want[i]);
    }
    assert_null(v[i]);
    strv_free(v);

    /* No command: an interactive login, no "--". */
    assert_int_equal(vmshell_ssh_argv("/p", NULL, 255, "root", "x", NULL, 0, &v), 0);
    for (i = 0; v[i]; i++) {
        assert_string_not_equal(v[i], "--");
    }
    assert_string_equal(v[i - 1], "qubes-lite-x");
    assert_string_equal(v[2], "ProxyCommand='/p' 255 22");
    strv_free(v);

    /* A qemu VM whose vsock is the qubes-lite-vsock device: its socket. */
    assert_int_equal(
        vmshell_ssh_argv("/p", "/run/qubes-lite/x.vsock.sock", 3, "root", "x", NULL, 0, &v), 0);
    assert_string_equal(v[2], "ProxyCommand='/p' 'hvsock:/run/qubes-lite/x.vsock.sock:22'");
    strv_free(v);
}

static void test_ssh_proxy_quoting(void **state) {
    char **v = NULL;
    /* A quote ends the shell's quoting for one escaped quote; a percent
     * sign is doubled so that ssh does not take it for a token. */
    assert_int_equal(vmshell_ssh_argv("/opt/it's 100%/proxy", NULL, 3, "u", "vm", NULL, 0, &v), 0);
    assert_string_equal(v[2], "ProxyCommand='/opt/it'\\''s 100%%/proxy' 3 22");
    strv_free(v);
    assert_int_equal(vmshell_ssh_argv("/p", "/r'un/1%/vm.vsock.sock", 3, "u", "vm", NULL, 0, &v),
                     0);
    assert_string_equal(v[2], "ProxyCommand='/p' 'hvsock:/r'\\''un/1%%/vm.vsock.sock:22'");
    strv_free(v);
    strv_free(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_console),
        cmocka_unit_test(test_ssh),
        cmocka_unit_test(test_ssh_command_keeps_its_options),
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_reparse),
        cmocka_unit_test(test_escape),
        cmocka_unit_test(test_ssh_argv),
        cmocka_unit_test(test_ssh_proxy_quoting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
