/* What vm-run's and vm-shell's command-line parsers share: the words
 * for an unknown option. Their errors go to an ErrorText, without the
 * "PROGRAM: " the command puts in front. */
#pragma once

#include "util.h"

/* After getopt_long() returned '?': "unknown option '-x'" or
 * "unknown option '--xyz'" (as given, bounded) into err, and -EINVAL. */
int opts_unknown(ErrorText *err, char **argv);
