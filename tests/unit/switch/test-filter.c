/* switch/sandbox/filter with vm-switch's tables (switch/net/confine): the
 * tables resolve and load in every mode, the names round-trip, and the
 * children's allowlist stays small (its count is printed for the
 * record). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "switch/net/confine.h"
#include "switch/sandbox/filter.h"
#include "switch/sandbox/sandbox.h"
#include "util.h"

/* The goal for what a serving child may call. */
#define CHILD_MAX_SYSCALLS 30

static const char *const roles[] = {"supervisor", "main", "child"};

static const FilterTable *role(const char *name) {
    const FilterTable *t = confine_role(name);
    assert_non_null(t);
    return t;
}

static void test_names(void **state) {
    for (int m = FILTER_KILL; m <= FILTER_DISABLED; m++) {
        assert_int_equal(filter_mode_from_string(filter_mode_to_string((FilterMode)m)), m);
    }
    for (size_t r = 0; r < ELEMENTSOF(roles); r++) {
        assert_string_equal(role(roles[r])->role, roles[r]);
    }
    assert_ptr_equal(role("supervisor"), sandbox_supervisor_filter());
    assert_ptr_equal(role("main"), &vm_switch_main_filter);
    assert_ptr_equal(role("child"), &vm_switch_child_filter);
    assert_int_equal(filter_mode_from_string("allow"), -EINVAL);
    assert_null(confine_role(""));
    assert_null(confine_role("mainx"));
    assert_null(filter_mode_to_string((FilterMode)99));
}

static void test_child_count(void **state) {
    size_t n = filter_count(role("child"));
    printf("seccomp allowlists: child %zu, main %zu, supervisor %zu system calls\n", n,
           filter_count(role("main")), filter_count(role("supervisor")));
    assert_true(n > 0);
    assert_true(n <= CHILD_MAX_SYSCALLS);
    /* Stricter than the main's, which it is stacked on. */
    assert_true(n < filter_count(role("main")));
}

/* Every table resolves and loads, in every mode, in a process of its own
 * (a filter cannot be taken off again). */
static void test_load_each(void **state) {
    for (size_t t = 0; t < ELEMENTSOF(roles); t++) {
        for (int m = FILTER_KILL; m <= FILTER_DISABLED; m++) {
            pid_t pid = fork();
            assert_true(pid >= 0);
            if (pid == 0) {
                if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
                    _exit(10);
                }
                int r = filter_apply(confine_role(roles[t]), (FilterMode)m);
                if (r < 0) {
                    _exit(11);
                }
                _exit(filter_applied() == (m != FILTER_DISABLED) ? 0 : 12);
            }
            int status;
            assert_int_equal(waitpid(pid, &status, 0), pid);
            assert_true(WIFEXITED(status));
            assert_int_equal(WEXITSTATUS(status), 0);
        }
    }
    assert_int_equal(filter_apply(NULL, FILTER_KILL), -EINVAL);
    assert_int_equal(filter_apply(role("child"), (FilterMode)99), -EINVAL);
}

static void test_print(void **state) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    filter_print(role("child"), f);
    fclose(f);
    assert_non_null(strstr(buf, "recvmsg"));
    assert_non_null(strstr(buf, "(arg2 & 0x4) == 0"));
    char want[64];
    snprintf(want, sizeof(want), "child: %zu system calls allowed", filter_count(role("child")));
    assert_non_null(strstr(buf, want));
    free(buf);
}

/* The names a role's table lets through, from filter_print(). */
static char *table_names(const FilterTable *t) {
    char *buf = NULL, *names = calloc(1, 8192);
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_non_null(names);
    filter_print(t, f);
    fclose(f);
    for (char *save = NULL, *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        char name[64];
        if (sscanf(l, "%63s", name) == 1 && !strstr(l, "fails with") &&
            !strstr(l, "system calls allowed")) {
            strcat(names, " ");
            strcat(names, name);
            strcat(names, " ");
        }
    }
    free(buf);
    return names;
}

/* A child's filter is stacked on the main's, which it runs under from
 * its exec: a call the main's table lacks stays refused in the child. */
static void test_child_subset_of_main(void **state) {
    char *child = table_names(role("child"));
    char *main_names = table_names(role("main"));
    for (char *save = NULL, *n = strtok_r(child, " ", &save); n; n = strtok_r(NULL, " ", &save)) {
        char key[80];
        snprintf(key, sizeof(key), " %s ", n);
        if (!strstr(main_names, key)) {
            fail_msg("the child allows %s, the main's filter does not", n);
        }
    }
    free(child);
    free(main_names);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_child_count),
        cmocka_unit_test(test_load_each),
        cmocka_unit_test(test_print),
        cmocka_unit_test(test_child_subset_of_main),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
