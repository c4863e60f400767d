/* What the VMM command line tests share (test-crosvm.c, test-qemu.c): a
 * configuration directory of the test's own, VMs and host.json written as
 * JSON (single quotes for readability), and argv comparisons that print
 * both lists when they differ. */
#pragma once

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "host/common/config.h"
#include "util.h"

static char dir[] = "/tmp/test-vmm-XXXXXX";

/* Each test file's: the variables that would change its argv unset. */
static void clean_env(void);

/* JSON written with single quotes for readability. */
_unused_ static void write_json(const char *rel, const char *text) {
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    FILE *f = fopen(path, "we");
    assert_non_null(f);
    for (const char *c = text; *c; c++) {
        fputc(*c == '\'' ? '"' : *c, f);
    }
    fclose(f);
}

_unused_ static int setup(void **state) {
    char path[256];
    if (!mkdtemp(dir)) {
        return -1;
    }
    snprintf(path, sizeof(path), "%s/vms", dir);
    clean_env();
    return mkdir(path, 0755);
}

_unused_ static int teardown(void **state) {
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

_unused_ static VmConfig *load_vm(const char *name, const char *json) {
    char rel[64];
    VmConfig *vm = NULL;
    ErrorText err = {{0}};
    snprintf(rel, sizeof(rel), "vms/%s.json", name);
    write_json(rel, json);
    if (config_load_vm(dir, name, &vm, &err) < 0) {
        fail_msg("%s: %s", json, err.message);
    }
    return vm;
}

_unused_ static HostConfig *load_host(const char *json) {
    HostConfig *h = NULL;
    ErrorText err = {{0}};
    write_json("host.json", json);
    if (config_load_host(dir, &h, &err) < 0) {
        fail_msg("%s: %s", json, err.message);
    }
    return h;
}

_unused_ static void print_argv(const char *what, char *const *v) {
    fprintf(stderr, "%s:\n", what);
    for (; *v; v++) {
        fprintf(stderr, "  %s\n", *v);
    }
}

_unused_ static void expect_argv(char **argv, const char *const *expected) {
    size_t i;
    for (i = 0; argv[i] && expected[i]; i++) {
        if (!streq(argv[i], expected[i])) {
            break;
        }
    }
    if (argv[i] || expected[i]) {
        print_argv("got", argv);
        print_argv("expected", (char *const *)expected);
        fail_msg("argument %zu differs: '%s' != '%s'", i, argv[i] ? argv[i] : "(end)",
                 expected[i] ? expected[i] : "(end)");
    }
}

/* How many times `flag` appears; *ret_value gets the argument after the
 * first. */
_unused_ static size_t find_flag(char **argv, const char *flag, const char **ret_value) {
    size_t n = 0;
    for (size_t i = 0; argv[i]; i++) {
        if (streq(argv[i], flag)) {
            if (n++ == 0 && ret_value) {
                *ret_value = argv[i + 1];
            }
        }
    }
    return n;
}

/* `flag value` exactly once. */
_unused_ static void expect_option(char **argv, const char *flag, const char *value) {
    const char *got = NULL;
    size_t n = find_flag(argv, flag, &got);
    if (n != 1 || !got || !streq(got, value)) {
        print_argv("got", argv);
        fail_msg("expected '%s %s' once; found %zu, first '%s'", flag, value, n,
                 got ? got : "(none)");
    }
}

_unused_ static void expect_no_flag(char **argv, const char *flag) {
    if (find_flag(argv, flag, NULL) != 0) {
        print_argv("got", argv);
        fail_msg("'%s' should not be there", flag);
    }
}
