/* vm-run's command line, parsed into a plain struct (no I/O, testable). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "util.h"

#define VMRUN_ENV_MAX 4096u

typedef struct VmRunOptions {
    bool help;
    bool tty;         /* -t: run on a pty */
    bool timing;      /* --timing */
    bool wait_wayland; /* --wait-wayland: start once the VM's Wayland display answers */
    bool raw_output;  /* --raw-output: no filter before a terminal */
    bool no_escape;   /* --no-escape: no ~. with -t */
    const char *user; /* -u, NULL: the agent's default */
    const char *cwd;  /* -w, NULL: the user's home */
    char **env;       /* -e K=V entries, NULL-terminated */
    size_t envc;
    const char *vm;
    char **argv; /* CMD ARG..., points into the caller's argv */
    size_t argc;
} VmRunOptions;

/* Parses argv. Returns 0 (check ->help), or -EINVAL with a one-line reason
 * in err (without the "vm-run: " prefix). Strings point into argv. */
int vmrun_parse_args(int argc, char **argv, VmRunOptions *ret, ErrorText *err);
void vmrun_options_done(VmRunOptions *o);

extern const char vmrun_usage[];
