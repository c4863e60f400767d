/* What every VMM behind VmmOps shares. */
#include "vmm.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int vmm_print_command(const VmmOps *ops, const HostConfig *h, const VmConfig *vm, FILE *out,
                      ErrorText *err) {
    _cleanup_strv_free_ char **argv = NULL;
    int r = ops->argv(h, vm, &argv, err);
    if (r < 0) {
        return r;
    }
    for (char **p = argv; *p; p++) {
        fprintf(out, "%s\n", *p);
    }
    if (fflush(out) != 0 || ferror(out)) {
        r = errno > 0 ? -errno : -EIO;
        return error_set(err, r, "cannot write the command: %s", strerror(-r));
    }
    return 0;
}
