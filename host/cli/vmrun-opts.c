/* vm-run's command line. */
#include "vmrun-opts.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/common/opts.h"
#include "util.h"

const char vmrun_usage[] =
    "Usage: vm-run [OPTION]... VM CMD [ARG]...\n"
    "Run CMD in the VM named VM, starting the VM first when needed.\n"
    "\n"
    "  -t, --tty            run CMD on a pseudo-terminal (interactive programs);\n"
    "                       ~. at the start of a line ends the session\n"
    "      --no-escape      with -t: ~. is sent as typed\n"
    "  -u, --user USER      run CMD as USER (default: the VM's user)\n"
    "  -e, --env KEY=VALUE  set an environment variable for CMD (repeatable)\n"
    "  -w, --workdir DIR    run CMD in DIR (absolute; default: the user's home)\n"
    "      --wait-wayland   start CMD once the VM's Wayland display answers\n"
    "                       (graphical programs right after the VM starts)\n"
    "      --raw-output     pass CMD's output to a terminal as it is, control\n"
    "                       sequences included (without -t they are filtered)\n"
    "      --timing         print afterwards where the time went\n"
    "  -h, --help           show this help\n"
    "\n"
    "Options after VM belong to CMD. The exit status is CMD's, 128+N when it\n"
    "was killed by signal N, 127 when CMD was not found, 126 when it could\n"
    "not be started, 255 for vm-run's own errors and after ~.\n";

static bool env_entry_valid(const char *s) {
    const char *eq = strchr(s, '=');
    return eq && eq != s;
}

void vmrun_options_done(VmRunOptions *o) {
    free(o->env);
    o->env = NULL;
    o->envc = 0;
}

int vmrun_parse_args(int argc, char **argv, VmRunOptions *ret, ErrorText *err) {
    static const struct option longopts[] = {
        {"tty", no_argument, NULL, 't'},        {"user", required_argument, NULL, 'u'},
        {"env", required_argument, NULL, 'e'},  {"workdir", required_argument, NULL, 'w'},
        {"timing", no_argument, NULL, 'T'},     {"wait-wayland", no_argument, NULL, 'W'},
        {"raw-output", no_argument, NULL, 'R'}, {"no-escape", no_argument, NULL, 'E'},
        {"help", no_argument, NULL, 'h'},       {0},
    };
    VmRunOptions o = {0};
    int c;

    /* Keep getopt quiet: errors are reported once, in our own words. */
    opterr = 0;
    optind = 0;
    while ((c = getopt_long(argc, argv, "+:tu:e:w:h", longopts, NULL)) >= 0) {
        switch (c) {
        case 't':
            o.tty = true;
            break;
        case 'u':
            if (!*optarg) {
                vmrun_options_done(&o);
                return error_set(err, -EINVAL, "-u needs a user name");
            }
            o.user = optarg;
            break;
        case 'e': {
            if (!env_entry_valid(optarg)) {
                vmrun_options_done(&o);
                return error_set(err, -EINVAL, "-e wants KEY=VALUE, not '%.64s'", optarg);
            }
            if (o.envc >= VMRUN_ENV_MAX) {
                vmrun_options_done(&o);
                return error_set(err, -EINVAL, "too many -e options (at most %u)", VMRUN_ENV_MAX);
            }
            char **n = reallocarray(o.env, o.envc + 2, sizeof(char *));
            if (!n) {
                vmrun_options_done(&o);
                return error_set(err, -EINVAL, "out of memory");
            }
            o.env = n;
            o.env[o.envc++] = optarg;
            o.env[o.envc] = NULL;
            break;
        }
        case 'w':
            if (optarg[0] != '/') {
                vmrun_options_done(&o);
                return error_set(err, -EINVAL, "-w wants an absolute directory, not '%.64s'",
                                 optarg);
            }
            o.cwd = optarg;
            break;
        case 'T':
            o.timing = true;
            break;
        case 'W':
            o.wait_wayland = true;
            break;
        case 'R':
            o.raw_output = true;
            break;
        case 'E':
            o.no_escape = true;
            break;
        case 'h':
            o.help = true;
            *ret = o;
            return 0;
        default:
            vmrun_options_done(&o);
            return opts_error(err, c, argv);
        }
    }
    if (optind >= argc) {
        vmrun_options_done(&o);
        return error_set(err, -EINVAL, "no VM given (see --help)");
    }
    o.vm = argv[optind++];
    if (optind >= argc) {
        vmrun_options_done(&o);
        return error_set(err, -EINVAL, "no command given for VM '%.64s' (see --help)", o.vm);
    }
    if (argv[optind][0] == '\0') {
        vmrun_options_done(&o);
        return error_set(err, -EINVAL, "the command name is empty");
    }
    o.argv = argv + optind;
    o.argc = (size_t)(argc - optind);
    *ret = o;
    return 0;
}
