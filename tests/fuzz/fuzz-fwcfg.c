/* fw_cfg's file directory (rootfs/fwcfg.c), as the VMM gives it: the
 * lookup reads nothing past the bytes given, and its answer is the
 * directory's own: found is the first entry of that name within the
 * count, -ENOENT means no entry within the count has it and every name is
 * terminated, -EBADMSG a count the bytes do not hold (or above the bound)
 * or a name without its NUL.
 *
 * Input: the directory's bytes, the count first. */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rootfs/fwcfg.h"

#define NAME "opt/qubes-lite/secret"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FwCfgFile f = {.select = 0x1234, .size = 0x5678};
    /* A copy of exactly `size` bytes: ASan sees any read past them. */
    uint8_t *dir = malloc(size ? size : 1);
    if (!dir) {
        return 0;
    }
    memcpy(dir, data, size);
    int r = fwcfg_dir_find(dir, size, NAME, &f);

    bool bad = size < 4;
    uint32_t count = 0;
    size_t first = SIZE_MAX;
    if (!bad) {
        count = (uint32_t)dir[0] << 24 | (uint32_t)dir[1] << 16 | (uint32_t)dir[2] << 8 | dir[3];
        bad = count > FWCFG_FILES_MAX || (size - 4) / FWCFG_ENTRY_SIZE < count;
    }
    for (uint32_t i = 0; !bad && i < count; i++) {
        const char *name = (const char *)dir + 4 + (size_t)i * FWCFG_ENTRY_SIZE + 8;
        if (strnlen(name, FWCFG_NAME_SIZE) == FWCFG_NAME_SIZE) {
            bad = true;
        } else if (first == SIZE_MAX && strcmp(name, NAME) == 0) {
            first = i;
        }
    }
    if (bad) {
        if (r != -EBADMSG || f.select != 0x1234 || f.size != 0x5678) {
            abort();
        }
    } else if (first == SIZE_MAX) {
        if (r != -ENOENT || f.select != 0x1234 || f.size != 0x5678) {
            abort();
        }
    } else {
        const uint8_t *e = dir + 4 + first * FWCFG_ENTRY_SIZE;
        uint32_t want_size = (uint32_t)e[0] << 24 | (uint32_t)e[1] << 16 | (uint32_t)e[2] << 8 | e[3];
        uint16_t want_select = (uint16_t)(e[4] << 8 | e[5]);
        if (r != 0 || f.select != want_select || f.size != want_size) {
            abort();
        }
    }
    free(dir);
    return 0;
}
