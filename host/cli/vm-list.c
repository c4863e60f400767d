/* vm-list: every configured VM with its state, uptime, leases, live
 * sessions and, for disposable VMs, the idle countdown. A VM whose host
 * agent does not listen is stopped; one whose file does not load is
 * invalid (unless its host agent still runs it), with the reason on
 * stderr and exit status 1. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "hostctl.h"
#include "host/common/config.h"
#include "host/common/paths.h"
#include "util.h"

typedef struct Row {
    const char *name;
    const char *state; /* stopped, starting, running, stopping, no answer, invalid */
    bool invalid;      /* its file does not load */
    bool have_status;
    MsgHostStatus st; /* with have_status; st.vm is not kept */
} Row;

static void help(void) {
    printf("Usage: vm-list [--json]\n"
           "List every configured VM: state, uptime, leases (vm-run and vm-shell\n"
           "clients), live sessions in the guest, and for disposable VMs the time\n"
           "left before the guest powers off when unused.\n"
           "\n"
           "  --json       one JSON array of objects instead of the table\n"
           "  -h, --help   show this help\n"
           "\n"
           "Exit status: 0, or 1 with one line on stderr for each problem (a bad\n"
           "argument, a configuration directory that cannot be read, a VM whose\n"
           "file does not load, listed as invalid, output that could not be written).\n");
}

/* Whether the VM's file loads, as its host agent would load it; the
 * reason on stderr when it does not. */
static void load(Row *row) {
    _cleanup_(vm_config_freep) VmConfig *vm = NULL;
    ErrorText err = {{0}};

    if (config_load_vm(config_dir(), row->name, &vm, &err) < 0) {
        row->invalid = true;
        client_warn("%s", err.message[0] ? err.message : "cannot load the VM's file");
    }
}

static void query(Row *row) {
    ErrorText err;
    int fd, r;
    Msg untrusted_reply;

    row->state = row->invalid ? "invalid" : "stopped";
    r = hostctl_connect(row->name, HOSTCTL_STATUS_TIMEOUT_MS, &fd, &err);
    if (r == -ENOENT || r == -ECONNREFUSED) {
        return;
    }
    if (r < 0) {
        row->state = "no answer";
        client_warn("%s", err.message);
        return;
    }
    Msg req = {.type = MSG_HOST_STATUS_REQUEST};
    r = hostctl_request(fd, &req, HOSTCTL_STATUS_TIMEOUT_MS, NULL, 0, &untrusted_reply);
    close(fd);
    if (r < 0 || untrusted_reply.type != MSG_HOST_STATUS) {
        row->state = "no answer";
        client_warn("the host agent of VM '%s' %s", row->name,
                    r < 0 ? "did not answer" : "sent something else than its status");
        if (r >= 0) {
            msg_done(&untrusted_reply);
        }
        return;
    }
    row->have_status = true;
    /* Checked: a HostStatus; the decoder bounded its state. */
    row->st = untrusted_reply.host_status;
    row->st.vm = NULL;
    /* A host agent that still runs the VM from its file as it was. */
    if (!row->invalid || row->st.state != VM_STOPPED) {
        row->state = hostctl_state_name(row->st.state);
    }
    msg_done(&untrusted_reply);
}

static bool up(const Row *row) {
    return row->have_status && row->st.state != VM_STOPPED;
}

static void format_duration(uint64_t s, char *buf, size_t size) {
    if (s < 60) {
        snprintf(buf, size, "%" PRIu64 "s", s);
    } else if (s < 3600) {
        snprintf(buf, size, "%" PRIu64 "m%02" PRIu64 "s", s / 60, s % 60);
    } else if (s < 86400) {
        snprintf(buf, size, "%" PRIu64 "h%02" PRIu64 "m", s / 3600, s % 3600 / 60);
    } else {
        snprintf(buf, size, "%" PRIu64 "d%02" PRIu64 "h", s / 86400, s % 86400 / 3600);
    }
}

/* Seconds until the guest's idle poweroff, -1 when no countdown runs
 * (not disposable, not up, or in use). */
static int64_t idle_left(const Row *row) {
    if (!up(row) || row->st.idle_timeout_s == 0 || row->st.leases > 0 ||
        row->st.live_sessions > 0) {
        return -1;
    }
    int64_t left = (int64_t)row->st.idle_timeout_s - (int64_t)(row->st.idle_ms / 1000);
    return left > 0 ? left : 0;
}

static void print_table(const Row *rows, size_t n) {
    printf("%-12s  %-9s  %8s  %6s  %8s  %s\n", "NAME", "STATE", "UPTIME", "LEASES", "SESSIONS",
           "IDLE");
    for (size_t i = 0; i < n; i++) {
        const Row *row = &rows[i];
        char uptime[32] = "-", leases[16] = "-", sessions[16] = "-", idle[48] = "-";
        if (up(row)) {
            format_duration(row->st.uptime_ms / 1000, uptime, sizeof(uptime));
            snprintf(leases, sizeof(leases), "%" PRIu32, row->st.leases);
            snprintf(sessions, sizeof(sessions), "%" PRIu32, row->st.live_sessions);
            int64_t left = idle_left(row);
            if (left >= 0) {
                char d[16];
                format_duration((uint64_t)left, d, sizeof(d));
                snprintf(idle, sizeof(idle), "off in %s", d);
            } else if (row->st.idle_timeout_s > 0) {
                snprintf(idle, sizeof(idle), "in use (%" PRIu32 "s)", row->st.idle_timeout_s);
            }
        }
        printf("%-12s  %-9s  %8s  %6s  %8s  %s\n", row->name, row->state, uptime, leases, sessions,
               idle);
    }
}

/* Names are [a-z][a-z0-9-]* and states fixed words: nothing to escape. */
static void print_json(const Row *rows, size_t n) {
    printf("[");
    for (size_t i = 0; i < n; i++) {
        const Row *row = &rows[i];
        printf("%s\n  {\"name\": \"%s\", \"state\": \"%s\"", i ? "," : "", row->name, row->state);
        if (row->have_status) {
            printf(", \"uptime_s\": %" PRIu64 ", \"leases\": %" PRIu32
                   ", \"live_sessions\": %" PRIu32 ", \"idle_s\": %" PRIu64
                   ", \"idle_timeout_s\": %" PRIu32,
                   up(row) ? row->st.uptime_ms / 1000 : 0, row->st.leases, row->st.live_sessions,
                   row->st.idle_ms / 1000, row->st.idle_timeout_s);
            int64_t left = idle_left(row);
            if (left >= 0) {
                printf(", \"idle_left_s\": %" PRId64, left);
            } else {
                printf(", \"idle_left_s\": null");
            }
        }
        printf("}");
    }
    printf("%s]\n", n ? "\n" : "");
}

int main(int argc, char **argv) {
    enum { ARG_JSON = 0x100 };
    static const struct option longopts[] = {
        {"json", no_argument, NULL, ARG_JSON},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    bool json = false;
    char **names;
    size_t n;
    int c, r;

    client_setup("vm-list", EXIT_FAILURE);
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) >= 0) {
        switch (c) {
        case ARG_JSON:
            json = true;
            break;
        case 'h':
            help();
            return EXIT_SUCCESS;
        default:
            client_bad_option(c, argv);
        }
    }
    if (optind < argc) {
        client_fail("unexpected argument '%s' (see --help)", argv[optind]);
    }
    ErrorText err;
    if (config_dir_check(&err) < 0) {
        client_fail("%s", err.message);
    }
    r = hostctl_list_vms(&names, &n);
    if (r == -ENOENT) {
        names = NULL;
        n = 0;
    } else if (r < 0) {
        errno = -r;
        client_fail("cannot read %s/vms: %m", config_dir());
    }
    Row *rows = calloc(n ? n : 1, sizeof(Row));
    if (!rows) {
        client_fail("out of memory");
    }
    bool any_invalid = false;
    for (size_t i = 0; i < n; i++) {
        rows[i].name = names[i];
        load(&rows[i]);
        query(&rows[i]);
        any_invalid = any_invalid || rows[i].invalid;
    }
    if (json) {
        print_json(rows, n);
    } else {
        print_table(rows, n);
    }
    free(rows);
    hostctl_names_free(names, n);
    return fflush(stdout) == 0 && !any_invalid ? EXIT_SUCCESS : EXIT_FAILURE;
}
