/* The parsers' shared error words: see opts.h. */
#include "opts.h"

#include <errno.h>
#include <getopt.h>

int opts_unknown(ErrorText *err, char **argv) {
    /* optopt names a short option; for a long one it is 0, or the
     * option's value when it was given an argument it does not take. */
    if (optopt > 0 && optopt < 0x100) {
        return error_set(err, -EINVAL, "unknown option '-%c' (see --help)", optopt);
    }
    return error_set(err, -EINVAL, "unknown option '%.64s' (see --help)", argv[optind - 1]);
}
