/* host/config: host.json and vms/<name>.json. */
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

#include "host/config.h"
#include "util.h"

static char dir[] = "/tmp/test-config-XXXXXX";

static void write_file(const char *rel, const char *text) {
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    FILE *f = fopen(path, "we");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **state) {
    char path[256];
    if (!mkdtemp(dir)) {
        return -1;
    }
    snprintf(path, sizeof(path), "%s/vms", dir);
    return mkdir(path, 0755);
}

static int teardown(void **state) {
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_vm_name_valid(void **state) {
    assert_true(config_vm_name_valid("a"));
    assert_true(config_vm_name_valid("banking"));
    assert_true(config_vm_name_valid("sys-net-2"));
    assert_true(config_vm_name_valid("abcdefghijkl"));   /* 12 */
    assert_false(config_vm_name_valid("abcdefghijklm")); /* 13 */
    assert_false(config_vm_name_valid(""));
    assert_false(config_vm_name_valid(NULL));
    assert_false(config_vm_name_valid("1abc"));
    assert_false(config_vm_name_valid("-abc"));
    assert_false(config_vm_name_valid("Abc"));
    assert_false(config_vm_name_valid("a_b"));
    assert_false(config_vm_name_valid("a/b"));
    assert_false(config_vm_name_valid("../x"));
}

static void test_dirs_from_environment(void **state) {
    setenv("QUBES_LITE_CONFIG_DIR", "/x/etc", 1);
    setenv("QUBES_LITE_RUNTIME_DIR", "/x/run", 1);
    assert_string_equal(config_dir(), "/x/etc");
    assert_string_equal(config_runtime_dir(), "/x/run");
    setenv("QUBES_LITE_CONFIG_DIR", "", 1);
    unsetenv("QUBES_LITE_RUNTIME_DIR");
    assert_string_equal(config_dir(), "/etc/qubes-lite");
    assert_string_equal(config_runtime_dir(), "/run/qubes-lite");
    unsetenv("QUBES_LITE_CONFIG_DIR");
}

static void test_host_ok(void **state) {
    HostConfig *c = NULL;
    ConfigError err;
    write_file("host.json", "{\"user\": \"root\", \"someFutureKey\": [1, 2]}");
    assert_int_equal(config_load_host(dir, &c, &err), 0);
    assert_string_equal(c->user, "root");
    assert_int_equal(c->user_uid, 0);
    host_config_free(c);

    write_file("host.json", "{}");
    assert_int_equal(config_load_host(dir, &c, &err), 0);
    assert_null(c->user);
    host_config_free(c);
}

static void expect_host_error(const char *text, int error, const char *needle) {
    HostConfig *c = NULL;
    ConfigError err = {{0}};
    write_file("host.json", text);
    assert_int_equal(config_load_host(dir, &c, &err), error);
    assert_null(c);
    if (!strstr(err.message, needle) || !strstr(err.message, "host.json")) {
        fail_msg("'%s' lacks '%s' or the file name", err.message, needle);
    }
}

static void test_host_errors(void **state) {
    expect_host_error("{\"user\": 1000}", -EINVAL, "key 'user': must be a string");
    expect_host_error("{\"user\": \"no such user here\"}", -EINVAL, "not a valid user name");
    expect_host_error("{\"user\": \"nosuchuserxyz\"}", -ESRCH, "no such user 'nosuchuserxyz'");
    expect_host_error("[1]", -EINVAL, "must hold a JSON object");
    expect_host_error("{\"user\": ", -EINVAL, "invalid JSON");
    expect_host_error("{\"user\": \"root\", \"user\": \"root\"}", -EINVAL, "invalid JSON");
}

static void test_host_missing(void **state) {
    HostConfig *c = NULL;
    ConfigError err;
    char path[256];
    snprintf(path, sizeof(path), "%s/host.json", dir);
    unlink(path);
    assert_int_equal(config_load_host(dir, &c, &err), -ENOENT);
    assert_non_null(strstr(err.message, "host.json"));
}

static void test_vm_ok(void **state) {
    VmConfig *c = NULL;
    ConfigError err;
    write_file("vms/work.json", "{\"id\": 3, \"name\": \"work\", \"memory\": 1024}");
    assert_int_equal(config_load_vm(dir, "work", &c, &err), 0);
    assert_string_equal(c->name, "work");
    assert_int_equal(c->id, 3);
    vm_config_free(c);

    /* name may be left out: the file name is the name. */
    write_file("vms/vault.json", "{\"id\": 255}");
    assert_int_equal(config_load_vm(dir, "vault", &c, &err), 0);
    assert_string_equal(c->name, "vault");
    assert_int_equal(c->id, 255);
    vm_config_free(c);
}

static void expect_vm_error(const char *text, int error, const char *needle) {
    VmConfig *c = NULL;
    ConfigError err = {{0}};
    write_file("vms/bad.json", text);
    assert_int_equal(config_load_vm(dir, "bad", &c, &err), error);
    assert_null(c);
    if (!strstr(err.message, needle) || !strstr(err.message, "vms/bad.json")) {
        fail_msg("'%s' lacks '%s' or the file name", err.message, needle);
    }
}

static void test_vm_errors(void **state) {
    expect_vm_error("{}", -EINVAL, "key 'id': missing");
    expect_vm_error("{\"id\": \"3\"}", -EINVAL, "key 'id': must be an integer");
    expect_vm_error("{\"id\": 3.0}", -EINVAL, "key 'id': must be an integer");
    expect_vm_error("{\"id\": 4}", -EINVAL, "key 'id': must be odd");
    expect_vm_error("{\"id\": 1}", -EINVAL, "not 1");
    expect_vm_error("{\"id\": 257}", -EINVAL, "not 257");
    expect_vm_error("{\"id\": -3}", -EINVAL, "key 'id'");
    expect_vm_error("{\"id\": 3, \"name\": 5}", -EINVAL, "key 'name': must be a string");
    expect_vm_error("{\"id\": 3, \"name\": \"Bad\"}", -EINVAL, "key 'name': 'Bad' is not");
    expect_vm_error("{\"id\": 3, \"name\": \"other\"}", -EINVAL, "does not match");
    expect_vm_error("{\"id\": 3,}", -EINVAL, "invalid JSON");
}

static void test_vm_missing_or_bad_name(void **state) {
    VmConfig *c = NULL;
    ConfigError err;
    assert_int_equal(config_load_vm(dir, "nosuch", &c, &err), -ENOENT);
    assert_non_null(strstr(err.message, "vms/nosuch.json"));
    assert_int_equal(config_load_vm(dir, "../host", &c, &err), -EINVAL);
    assert_non_null(strstr(err.message, "not a valid VM name"));
    assert_null(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vm_name_valid), cmocka_unit_test(test_dirs_from_environment),
        cmocka_unit_test(test_host_ok),       cmocka_unit_test(test_host_errors),
        cmocka_unit_test(test_host_missing),  cmocka_unit_test(test_vm_ok),
        cmocka_unit_test(test_vm_errors),     cmocka_unit_test(test_vm_missing_or_bad_name),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
