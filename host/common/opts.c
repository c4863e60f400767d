/* The parsers' shared error words: see opts.h. */
#include "opts.h"

#include <errno.h>
#include <getopt.h>

int opts_error(ErrorText *err, int c, char **argv) {
    /* optopt names a short option; for a long one it is 0, or the
     * option's value when it was given an argument it does not take.
     * optind is past the word at fault. */
    const char *word = optind > 0 ? argv[optind - 1] : "?";
    if (c == ':') {
        if (optopt > 0 && optopt < 0x100) {
            return error_set(err, -EINVAL, "option '-%c' needs an argument (see --help)", optopt);
        }
        return error_set(err, -EINVAL, "option '%.64s' needs an argument (see --help)", word);
    }
    if (optopt > 0 && optopt < 0x100) {
        return error_set(err, -EINVAL, "unknown option '-%c' (see --help)", optopt);
    }
    return error_set(err, -EINVAL, "unknown option '%.64s' (see --help)", word);
}
