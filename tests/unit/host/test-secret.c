/* The VM's secret file (host/agent/secret.c) and reading it back
 * (proto/secret-file.c): its creation rules, and the checks a reader
 * makes. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "host/agent/secret.h"
#include "secret-file.h"
#include "util.h"

static char dir[64];

static int setup(void **state) {
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/ql-secret-XXXXXX");
    assert_non_null(mkdtemp(dir));
    setenv("QUBES_LITE_RUNTIME_DIR", dir, 1);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static void test_path(void **state) {
    (void)state;
    _cleanup_free_ char *p = vm_secret_path("banking");
    char want[PATH_MAX];
    snprintf(want, sizeof(want), "%s/banking.secret", dir);
    assert_string_equal(p, want);
}

static void test_create_read_remove(void **state) {
    (void)state;
    uint8_t a[WIRE_SECRET_SIZE], b[WIRE_SECRET_SIZE], back[WIRE_SECRET_SIZE];
    _cleanup_free_ char *p = vm_secret_path("vm");
    struct stat st;

    /* Even under a lax umask: 0600, ours, exactly the secret. */
    mode_t old = umask(0);
    assert_int_equal(vm_secret_create(p, a), 0);
    umask(old);
    assert_int_equal(lstat(p, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(st.st_uid, geteuid());
    assert_int_equal(st.st_size, WIRE_SECRET_SIZE);
    assert_int_equal(secret_read_file(p, back), 0);
    assert_memory_equal(a, back, WIRE_SECRET_SIZE);
    assert_true(secret_equal(a, back));

    /* Every start makes a fresh one, over what was left. */
    assert_int_equal(vm_secret_create(p, b), 0);
    assert_memory_not_equal(a, b, WIRE_SECRET_SIZE);
    assert_int_equal(vm_secret_load(p, back), 0);
    assert_memory_equal(b, back, WIRE_SECRET_SIZE);

    vm_secret_remove(p);
    assert_int_equal(access(p, F_OK), -1);
    assert_int_equal(vm_secret_load(p, back), -ENOENT);
    vm_secret_remove(p); /* gone already: fine */
}

static void test_symlink_is_replaced_not_followed(void **state) {
    (void)state;
    uint8_t s[WIRE_SECRET_SIZE];
    char target[PATH_MAX];
    _cleanup_free_ char *p = vm_secret_path("vm");
    struct stat st;

    snprintf(target, sizeof(target), "%s/elsewhere", dir);
    FILE *f = fopen(target, "w");
    assert_non_null(f);
    fputs("keep", f);
    fclose(f);
    assert_int_equal(symlink(target, p), 0);
    /* A reader never follows it either. */
    assert_int_equal(secret_read_file(p, s), -ELOOP);
    assert_int_equal(vm_secret_create(p, s), 0);
    assert_int_equal(lstat(p, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(stat(target, &st), 0);
    assert_int_equal(st.st_size, 4);
}

static void write_file(const char *p, size_t size, mode_t mode) {
    uint8_t buf[WIRE_SECRET_SIZE * 2] = {1};
    unlink(p);
    int fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, buf, size), (ssize_t)size);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

static void test_reader_checks(void **state) {
    (void)state;
    uint8_t s[WIRE_SECRET_SIZE];
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/s", dir);

    write_file(p, WIRE_SECRET_SIZE, 0400);
    assert_int_equal(secret_read_file(p, s), 0);
    write_file(p, WIRE_SECRET_SIZE, 0640);
    assert_int_equal(secret_read_file(p, s), -EPERM);
    write_file(p, WIRE_SECRET_SIZE, 0602);
    assert_int_equal(secret_read_file(p, s), -EPERM);
    write_file(p, WIRE_SECRET_SIZE - 1, 0600);
    assert_int_equal(secret_read_file(p, s), -EBADMSG);
    write_file(p, WIRE_SECRET_SIZE + 1, 0600);
    assert_int_equal(secret_read_file(p, s), -EBADMSG);
    assert_int_equal(secret_read_file(dir, s), -EBADMSG);
}

static void test_equal(void **state) {
    (void)state;
    uint8_t a[WIRE_SECRET_SIZE], b[WIRE_SECRET_SIZE];
    memset(a, 0x5a, sizeof(a));
    memcpy(b, a, sizeof(b));
    assert_true(secret_equal(a, b));
    assert_false(secret_equal(a, NULL));
    for (size_t i = 0; i < WIRE_SECRET_SIZE; i += 31) {
        b[i] ^= 0x80;
        assert_false(secret_equal(a, b));
        b[i] ^= 0x80;
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_read_remove, setup, teardown),
        cmocka_unit_test_setup_teardown(test_symlink_is_replaced_not_followed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reader_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_equal, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
