/* rootfs/fwcfg: looking a file up in a fw_cfg file directory. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "rootfs/fwcfg.h"
#include "util.h"

#define SECRET "opt/qubes-lite/secret"

typedef struct Dir {
    uint8_t bytes[4 + 8 * FWCFG_ENTRY_SIZE];
    size_t len;
} Dir;

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* A directory as the device gives it: the count, then the entries. */
static void dir_init(Dir *d) {
    memset(d, 0, sizeof(*d));
    d->len = 4;
}

static uint8_t *dir_add(Dir *d, const char *name, uint16_t select, uint32_t size) {
    uint8_t *e = d->bytes + d->len;
    assert_true(d->len + FWCFG_ENTRY_SIZE <= sizeof(d->bytes));
    put_be32(e, size);
    e[4] = (uint8_t)(select >> 8);
    e[5] = (uint8_t)select;
    strncpy((char *)e + 8, name, FWCFG_NAME_SIZE);
    d->len += FWCFG_ENTRY_SIZE;
    put_be32(d->bytes, (uint32_t)((d->len - 4) / FWCFG_ENTRY_SIZE));
    return e;
}

/* What qemu's pc machine gives, with our file among its own. */
static void qemu_like(Dir *d) {
    dir_init(d);
    dir_add(d, "bootorder", 0x20, 0);
    dir_add(d, "etc/acpi/rsdp", 0x21, 36);
    dir_add(d, "etc/e820", 0x22, 40);
    dir_add(d, SECRET, 0x23, 32);
    dir_add(d, "opt/qubes-lite/secret2", 0x24, 7);
}

static void test_finds_among_others(void **state) {
    Dir d;
    FwCfgFile f = {0};
    qemu_like(&d);
    assert_int_equal(fwcfg_dir_find(d.bytes, d.len, SECRET, &f), 0);
    assert_int_equal(f.select, 0x23);
    assert_int_equal(f.size, 32);
    assert_int_equal(fwcfg_dir_find(d.bytes, d.len, "etc/e820", &f), 0);
    assert_int_equal(f.select, 0x22);
    assert_int_equal(f.size, 40);
}

/* crosvm gives only the files of its --fw-cfg options. */
static void test_only_entry_high_select(void **state) {
    Dir d;
    FwCfgFile f = {0};
    dir_init(&d);
    dir_add(&d, SECRET, 0xbeef, 0x01020304);
    assert_int_equal(fwcfg_dir_find(d.bytes, d.len, SECRET, &f), 0);
    assert_int_equal(f.select, 0xbeef);
    assert_int_equal(f.size, 0x01020304);
}

static void test_absent(void **state) {
    Dir d;
    FwCfgFile f = {.select = 7, .size = 9};
    qemu_like(&d);
    /* A prefix or an extension of a name is another name. */
    assert_int_equal(fwcfg_dir_find(d.bytes, d.len, "opt/qubes-lite/secre", &f), -ENOENT);
    assert_int_equal(fwcfg_dir_find(d.bytes, d.len, "opt/qubes-lite/secret22", &f), -ENOENT);
    dir_init(&d);
    assert_int_equal(fwcfg_dir_find(d.bytes, d.len, SECRET, &f), -ENOENT);
    /* Nothing written on failure. */
    assert_int_equal(f.select, 7);
    assert_int_equal(f.size, 9);
}

static void test_bad_count(void **state) {
    Dir d;
    FwCfgFile f;
    qemu_like(&d);
    /* One entry more than the bytes hold. */
    put_be32(d.bytes, 6);
    assert_int_equal(fwcfg_dir_find(d.bytes, d.len, SECRET, &f), -EBADMSG);
    /* A count whose size would wrap. */
    put_be32(d.bytes, 0xffffffff);
    assert_int_equal(fwcfg_dir_find(d.bytes, d.len, SECRET, &f), -EBADMSG);
    put_be32(d.bytes, FWCFG_FILES_MAX + 1);
    assert_int_equal(fwcfg_dir_find(d.bytes, d.len, SECRET, &f), -EBADMSG);
    /* The last entry cut short. */
    put_be32(d.bytes, 5);
    assert_int_equal(fwcfg_dir_find(d.bytes, d.len - 1, SECRET, &f), -EBADMSG);
    /* Not even a count. */
    assert_int_equal(fwcfg_dir_find(d.bytes, 3, SECRET, &f), -EBADMSG);
    assert_int_equal(fwcfg_dir_find(d.bytes, 0, SECRET, &f), -EBADMSG);
    /* Fewer entries than the bytes hold: the rest is ignored. */
    put_be32(d.bytes, 3);
    assert_int_equal(fwcfg_dir_find(d.bytes, d.len, SECRET, &f), -ENOENT);
    put_be32(d.bytes, 4);
    assert_int_equal(fwcfg_dir_find(d.bytes, d.len, SECRET, &f), 0);
}

static void test_unterminated_name(void **state) {
    Dir d;
    FwCfgFile f;
    qemu_like(&d);
    /* A later entry fills its 56 bytes: the directory is refused, even
     * though our name came before it. */
    uint8_t *e = dir_add(&d, "x", 0x25, 1);
    memset(e + 8, 'a', FWCFG_NAME_SIZE);
    assert_int_equal(fwcfg_dir_find(d.bytes, d.len, SECRET, &f), -EBADMSG);
    /* 55 characters and the NUL are fine. */
    e[8 + FWCFG_NAME_SIZE - 1] = '\0';
    assert_int_equal(fwcfg_dir_find(d.bytes, d.len, SECRET, &f), 0);
}

static void test_bytes_after_the_nul(void **state) {
    Dir d;
    FwCfgFile f;
    dir_init(&d);
    uint8_t *e = dir_add(&d, SECRET, 0x20, 32);
    /* What follows the name's NUL is not part of it. */
    memset(e + 8 + strlen(SECRET) + 1, 'z', FWCFG_NAME_SIZE - strlen(SECRET) - 1);
    assert_int_equal(fwcfg_dir_find(d.bytes, d.len, SECRET, &f), 0);
    assert_int_equal(f.select, 0x20);
}

static void test_bad_names_asked(void **state) {
    Dir d;
    FwCfgFile f;
    char longname[FWCFG_NAME_SIZE + 1];
    qemu_like(&d);
    memset(longname, 'a', FWCFG_NAME_SIZE);
    longname[FWCFG_NAME_SIZE] = '\0';
    assert_int_equal(fwcfg_dir_find(d.bytes, d.len, "", &f), -EINVAL);
    assert_int_equal(fwcfg_dir_find(d.bytes, d.len, longname, &f), -EINVAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_finds_among_others),
        cmocka_unit_test(test_only_entry_high_select),
        cmocka_unit_test(test_absent),
        cmocka_unit_test(test_bad_count),
        cmocka_unit_test(test_unterminated_name),
        cmocka_unit_test(test_bytes_after_the_nul),
        cmocka_unit_test(test_bad_names_asked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
