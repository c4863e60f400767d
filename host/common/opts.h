/* What every host program's command-line parser says when getopt
 * refuses an option: one message of ours, never getopt's own (which names
 * the program by its full path, on a second line). The parsers set
 * opterr = 0 and start their optstring with ':' (after a '+', if any), so
 * that a missing argument is told apart. Messages go to an ErrorText,
 * without the "PROGRAM: " the program puts in front. */
#pragma once

#include "util.h"

/* After getopt_long() returned '?' or ':' (c): "unknown option '-x'",
 * "unknown option '--xyz'", or "option '--xyz' needs an argument" (as
 * given, bounded), and " (see --help)", into err; -EINVAL. */
int opts_error(ErrorText *err, int c, char **argv);
