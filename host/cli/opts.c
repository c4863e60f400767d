/* The parsers' shared error words: see opts.h. */
#include "opts.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>

int opts_fail(char *err, size_t errsize, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errsize, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

int opts_unknown(char *err, size_t errsize, char **argv) {
    /* optopt names a short option; for a long one it is 0, or the
     * option's value when it was given an argument it does not take. */
    if (optopt > 0 && optopt < 0x100) {
        return opts_fail(err, errsize, "unknown option '-%c' (see --help)", optopt);
    }
    return opts_fail(err, errsize, "unknown option '%.64s' (see --help)", argv[optind - 1]);
}
