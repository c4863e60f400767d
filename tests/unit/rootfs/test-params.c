/* rootfs/params: the guest image's qubes_lite.* kernel parameters. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "rootfs/params.h"
#include "util.h"

typedef struct Reports {
    unsigned n;
    char lines[8][512];
} Reports;

static void collect(const char *message, void *userdata) {
    Reports *r = userdata;
    if (r->n < ELEMENTSOF(r->lines)) {
        snprintf(r->lines[r->n], sizeof(r->lines[0]), "%s", message);
    }
    r->n++;
}

static unsigned parse(const char *cmdline, InitParams *p, Reports *r) {
    *r = (Reports){0};
    unsigned n = params_parse(cmdline, p, collect, r);
    assert_int_equal(n, r->n);
    return n;
}

static const char *ntoa(struct in_addr a) {
    static char buf[4][INET_ADDRSTRLEN];
    static int i;
    i = (i + 1) % 4;
    return inet_ntop(AF_INET, &a, buf[i], sizeof(buf[i]));
}

static void test_full_line(void **state) {
    InitParams p;
    Reports r;
    assert_int_equal(parse("BOOT_IMAGE=/vmlinux console=ttyS0 panic=-1 quiet "
                           "qubes_lite.name=banking qubes_lite.idle=120 qubes_lite.user=alice "
                           "qubes_lite.ip=172.16.200.3/31 qubes_lite.gw=172.16.200.2 "
                           "qubes_lite.mac=52:54:00:AB:cd:01 qubes_lite.dns=9.9.9.9,1.1.1.1\n",
                           &p, &r),
                     0);
    assert_string_equal(p.name, "banking");
    assert_int_equal(p.idle_s, 120);
    assert_string_equal(p.user, "alice");
    assert_true(p.has_ip);
    assert_string_equal(ntoa(p.ip), "172.16.200.3");
    assert_int_equal(p.prefix, 31);
    assert_true(p.has_gw);
    assert_string_equal(ntoa(p.gw), "172.16.200.2");
    assert_true(p.has_mac);
    assert_memory_equal(p.mac, ((uint8_t[]){0x52, 0x54, 0x00, 0xab, 0xcd, 0x01}), 6);
    assert_int_equal(p.n_dns, 2);
    assert_string_equal(ntoa(p.dns[0]), "9.9.9.9");
    assert_string_equal(ntoa(p.dns[1]), "1.1.1.1");
}

static void test_defaults(void **state) {
    InitParams p;
    Reports r;
    assert_int_equal(parse("console=ttyS0 quiet qubes_lite_name=x qubes.lite.name=y", &p, &r), 0);
    assert_string_equal(p.name, "");
    assert_int_equal(p.idle_s, 0);
    assert_string_equal(p.user, "");
    assert_false(p.has_ip);
    assert_false(p.has_gw);
    assert_false(p.has_mac);
    assert_int_equal(p.n_dns, 0);
    assert_int_equal(parse("", &p, &r), 0);
    assert_int_equal(parse("   \t\n", &p, &r), 0);
}

static void test_last_one_wins_and_quotes(void **state) {
    InitParams p;
    Reports r;
    assert_int_equal(parse("qubes_lite.idle=5 qubes_lite.idle=0 \"qubes_lite.name=a\" "
                           "qubes_lite.user=\"bob\" qubes_lite.name=web-1",
                           &p, &r),
                     0);
    assert_int_equal(p.idle_s, 0);
    assert_string_equal(p.name, "web-1");
    assert_string_equal(p.user, "bob");
    /* A quoted blank does not end a word: the value has a blank, so it is bad. */
    assert_int_equal(parse("qubes_lite.name=\"a b\" quiet", &p, &r), 1);
    assert_non_null(strstr(r.lines[0], "qubes_lite.name=a b: not a host name"));
}

/* A bad word is reported once and ignored: the earlier good value stays. */
static void test_bad_values(void **state) {
    static const struct {
        const char *word, *report;
    } cases[] = {
        {"qubes_lite.idle=abc",
         "qubes_lite.idle=abc: not a number of seconds (0 to 31536000); ignored"},
        {"qubes_lite.idle=-1", "qubes_lite.idle=-1: not a number"},
        {"qubes_lite.idle=31536001", "qubes_lite.idle=31536001: not a number"},
        {"qubes_lite.name=-web", "qubes_lite.name=-web: not a host name"},
        {"qubes_lite.name=web_1", "qubes_lite.name=web_1: not a host name"},
        {"qubes_lite.name=", "qubes_lite.name=: not a host name"},
        {"qubes_lite.user=Alice", "qubes_lite.user=Alice: not a user name"},
        {"qubes_lite.user=1x", "qubes_lite.user=1x: not a user name"},
        {"qubes_lite.user=a;b", "qubes_lite.user=a;b: not a user name"},
        {"qubes_lite.ip=172.16.200.3", "qubes_lite.ip=172.16.200.3: not an IPv4 address with a "
                                       "prefix length"},
        {"qubes_lite.ip=300.1.2.3/31", "qubes_lite.ip=300.1.2.3/31: not an IPv4"},
        {"qubes_lite.ip=10.0.0.1/33", "qubes_lite.ip=10.0.0.1/33: not an IPv4"},
        {"qubes_lite.ip=10.0.0.1/0", "qubes_lite.ip=10.0.0.1/0: not an IPv4"},
        {"qubes_lite.ip=10.1/8", "qubes_lite.ip=10.1/8: not an IPv4"},
        {"qubes_lite.gw=10.0.0", "qubes_lite.gw=10.0.0: not an IPv4 address; ignored"},
        {"qubes_lite.mac=52:54:00:ab:cd", "qubes_lite.mac=52:54:00:ab:cd: not a MAC address"},
        {"qubes_lite.mac=52-54-00-ab-cd-01", "qubes_lite.mac=52-54-00-ab-cd-01: not a MAC"},
        {"qubes_lite.dns=1.1.1.1,", "qubes_lite.dns=1.1.1.1,: not a list"},
        {"qubes_lite.dns=1.1.1.1,2.2.2.2,3.3.3.3,4.4.4.4", "not a list of at most 3"},
        {"qubes_lite.bogus=1", "qubes_lite.bogus: unknown parameter; ignored"},
        {"qubes_lite.name", "qubes_lite.name: needs a value"},
        {"qubes_lite.idle=\x1b[2J", "qubes_lite.idle=\\x1b[2J: not a number"},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        char line[600];
        InitParams p;
        Reports r;
        snprintf(
            line, sizeof(line),
            "qubes_lite.idle=7 qubes_lite.name=good qubes_lite.user=good "
            "qubes_lite.ip=10.0.0.1/24 qubes_lite.gw=10.0.0.254 qubes_lite.mac=02:00:00:00:00:01 "
            "qubes_lite.dns=10.0.0.53 %s quiet",
            cases[i].word);
        if (parse(line, &p, &r) != 1 || !strstr(r.lines[0], cases[i].report)) {
            fail_msg("%s: %u reports, first \"%s\"", cases[i].word, r.n, r.n ? r.lines[0] : "");
        }
        assert_int_equal(p.idle_s, 7);
        assert_string_equal(p.name, "good");
        assert_string_equal(p.user, "good");
        assert_true(p.has_ip && p.has_gw && p.has_mac && p.n_dns == 1);
        assert_string_equal(ntoa(p.ip), "10.0.0.1");
        assert_int_equal(p.prefix, 24);
    }
}

static void test_gateway_needs_its_network(void **state) {
    InitParams p;
    Reports r;
    assert_int_equal(parse("qubes_lite.gw=10.0.0.1", &p, &r), 1);
    assert_string_equal(r.lines[0], "qubes_lite.gw needs qubes_lite.ip; ignored");
    assert_false(p.has_gw);

    assert_int_equal(parse("qubes_lite.ip=172.16.200.3/31 qubes_lite.gw=172.16.200.4", &p, &r), 1);
    assert_string_equal(r.lines[0], "qubes_lite.gw=172.16.200.4: not another address of "
                                    "172.16.200.3/31's network; ignored");
    assert_false(p.has_gw);
    assert_true(p.has_ip);

    assert_int_equal(parse("qubes_lite.ip=172.16.200.3/31 qubes_lite.gw=172.16.200.3", &p, &r), 1);
    assert_false(p.has_gw);

    /* A bad ip leaves the gateway without a network. */
    assert_int_equal(parse("qubes_lite.ip=x qubes_lite.gw=172.16.200.2", &p, &r), 2);
    assert_false(p.has_ip);
    assert_false(p.has_gw);

    assert_int_equal(parse("qubes_lite.ip=10.1.2.3/8 qubes_lite.gw=10.200.0.1", &p, &r), 0);
    assert_true(p.has_gw);
    assert_int_equal(parse("qubes_lite.ip=10.1.2.3/32 qubes_lite.gw=10.1.2.4", &p, &r), 1);
}

static void test_long_words(void **state) {
    char line[2048], value[1000];
    InitParams p;
    Reports r;
    memset(value, 'a', sizeof(value) - 1);
    value[sizeof(value) - 1] = '\0';
    snprintf(line, sizeof(line), "qubes_lite.name=%s qubes_lite.idle=3", value);
    assert_int_equal(parse(line, &p, &r), 1);
    assert_non_null(strstr(r.lines[0], "longer than 255 characters; ignored"));
    assert_true(strlen(r.lines[0]) < 128); /* the value is shown truncated */
    assert_int_equal(p.idle_s, 3);
    assert_string_equal(p.name, "");

    /* 63 characters is a label, 64 is not. */
    snprintf(line, sizeof(line), "qubes_lite.name=%.63s", value);
    assert_int_equal(parse(line, &p, &r), 0);
    assert_int_equal(strlen(p.name), 63);
    snprintf(line, sizeof(line), "qubes_lite.name=%.64s", value);
    assert_int_equal(parse(line, &p, &r), 1);

    /* Someone else's long word is not ours to judge. */
    snprintf(line, sizeof(line), "other=%s qubes_lite.idle=4", value);
    assert_int_equal(parse(line, &p, &r), 0);
    assert_int_equal(p.idle_s, 4);
}

static void test_netmask(void **state) {
    assert_int_equal(ntohl(params_netmask(1)), 0x80000000u);
    assert_int_equal(ntohl(params_netmask(24)), 0xffffff00u);
    assert_int_equal(ntohl(params_netmask(31)), 0xfffffffeu);
    assert_int_equal(ntohl(params_netmask(32)), 0xffffffffu);
}

static void test_no_report_callback(void **state) {
    InitParams p;
    assert_int_equal(params_parse("qubes_lite.idle=x qubes_lite.y=1", &p, NULL, NULL), 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_line),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_last_one_wins_and_quotes),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_gateway_needs_its_network),
        cmocka_unit_test(test_long_words),
        cmocka_unit_test(test_netmask),
        cmocka_unit_test(test_no_report_callback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
