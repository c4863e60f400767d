/* What vm-run's and vm-shell's command-line parsers share: errors told
 * in a caller's buffer, in the same words. */
#pragma once

#include <stddef.h>

#include "util.h"

/* Formats the error into err and returns -EINVAL. */
_printf_(3, 4) int opts_fail(char *err, size_t errsize, const char *fmt, ...);

/* After getopt_long() returned '?': "unknown option '-x'" or
 * "unknown option '--xyz'" (as given, bounded), and -EINVAL. */
int opts_unknown(char *err, size_t errsize, char **argv);
