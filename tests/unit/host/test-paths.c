/* host/common/paths: a VM's files in the runtime directory. No valid VM
 * name may give a file of another VM (or another file of its own),
 * however the names are chosen: every pair of (name, kind) over a set of
 * adversarial names and every short name is told apart. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "host/common/paths.h"
#include "util.h"

#define DIR "/run/qubes-lite"

static void test_names_of_each_kind(void **state) {
    static const struct {
        ConfigRuntimeFile kind;
        const char *want;
    } cases[] = {
        {CONFIG_RUNTIME_COMMAND, DIR "/work.sock"},
        {CONFIG_RUNTIME_CONSOLE, DIR "/work.console"},
        {CONFIG_RUNTIME_CROSVM, DIR "/work.crosvm.sock"},
        {CONFIG_RUNTIME_SECRET, DIR "/work.secret"},
        {CONFIG_RUNTIME_VSOCK, DIR "/work.vsock.sock"},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        _cleanup_free_ char *p = config_runtime_file(DIR, "work", cases[i].kind);
        assert_non_null(p);
        assert_string_equal(p, cases[i].want);
    }
}

static void test_refused_names_and_kinds(void **state) {
    static const char *const bad[] = {
        "", "A", "a.crosvm", "a.", ".a", "../x", "a/b", "1a", "-a", "abcdefghijklm", "a b",
    };
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        assert_null(config_runtime_file(DIR, bad[i], CONFIG_RUNTIME_COMMAND));
    }
    assert_null(config_runtime_file(DIR, NULL, CONFIG_RUNTIME_COMMAND));
    assert_null(config_runtime_file(DIR, "a", _CONFIG_RUNTIME_MAX));
    assert_null(config_runtime_file(DIR, "a", (ConfigRuntimeFile)-1));
}

/* Names built to collide under a '-' separator (a, a-crosvm, ...), the
 * kinds' own words as names, and every name of up to three characters
 * over a small alphabet that holds '-'. */
static char **adversarial_names(size_t *ret_n) {
    static const char *const words[] = {
        "a", "a-crosvm", "a-console", "a-sock", "a-crosvm-so", "a-console-s", "sock",
        "crosvm", "console", "crosvm-sock", "a-vm", "vm", "a-b", "a-b-c", "switch", "vfio",
        "abcdefghijkl", "abcdefghijk-", "z-crosvm-s",
    };
    static const char alphabet[] = "ac-0";
    size_t cap = ELEMENTSOF(words) + 4 + 16 + 64, n = 0;
    char **v = calloc(cap, sizeof(char *));
    assert_non_null(v);
    for (size_t i = 0; i < ELEMENTSOF(words); i++) {
        v[n++] = strdup(words[i]);
    }
    for (size_t len = 1; len <= 3; len++) {
        size_t combos = 1;
        for (size_t k = 0; k < len; k++) {
            combos *= 4;
        }
        for (size_t c = 0; c < combos; c++) {
            char s[4] = {0};
            size_t x = c;
            for (size_t k = 0; k < len; k++, x /= 4) {
                s[k] = alphabet[x % 4];
            }
            bool seen = false;
            for (size_t i = 0; i < n; i++) {
                seen = seen || streq(v[i], s);
            }
            if (vm_name_valid(s) && !seen) {
                assert_true(n < cap);
                v[n++] = strdup(s);
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        assert_non_null(v[i]);
        assert_true(vm_name_valid(v[i]));
    }
    *ret_n = n;
    return v;
}

static void test_no_two_files_collide(void **state) {
    size_t n;
    char **names = adversarial_names(&n);
    size_t total = n * _CONFIG_RUNTIME_MAX;
    char **paths = calloc(total, sizeof(char *));
    assert_non_null(paths);

    for (size_t i = 0; i < n; i++) {
        for (unsigned k = 0; k < _CONFIG_RUNTIME_MAX; k++) {
            paths[i * _CONFIG_RUNTIME_MAX + k] = config_runtime_file(DIR, names[i], k);
            assert_non_null(paths[i * _CONFIG_RUNTIME_MAX + k]);
        }
    }
    for (size_t a = 0; a < total; a++) {
        for (size_t b = a + 1; b < total; b++) {
            if (streq(paths[a], paths[b])) {
                fail_msg("VM '%s' file %zu and VM '%s' file %zu are both %s",
                         names[a / _CONFIG_RUNTIME_MAX], a % _CONFIG_RUNTIME_MAX,
                         names[b / _CONFIG_RUNTIME_MAX], b % _CONFIG_RUNTIME_MAX, paths[a]);
            }
        }
    }
    /* And the name is what comes before the first '.': a reader of the
     * directory can tell whose a file is. */
    for (size_t a = 0; a < total; a++) {
        const char *base = paths[a] + strlen(DIR) + 1;
        const char *name = names[a / _CONFIG_RUNTIME_MAX];
        assert_int_equal(strcspn(base, "."), strlen(name));
        assert_memory_equal(base, name, strlen(name));
    }
    for (size_t a = 0; a < total; a++) {
        free(paths[a]);
    }
    free(paths);
    for (size_t i = 0; i < n; i++) {
        free(names[i]);
    }
    free(names);
}

static void test_runtime_dir_override(void **state) {
    setenv("QUBES_LITE_RUNTIME_DIR", "/tmp/rt", 1);
    _cleanup_free_ char *p = config_vm_runtime_file("work", CONFIG_RUNTIME_CONSOLE);
    assert_string_equal(p, "/tmp/rt/work.console");
    unsetenv("QUBES_LITE_RUNTIME_DIR");
    _cleanup_free_ char *q = config_vm_runtime_file("work", CONFIG_RUNTIME_COMMAND);
    assert_string_equal(q, DEFAULT_RUNTIME_DIR "/work.sock");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_of_each_kind),
        cmocka_unit_test(test_refused_names_and_kinds),
        cmocka_unit_test(test_no_two_files_collide),
        cmocka_unit_test(test_runtime_dir_override),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
