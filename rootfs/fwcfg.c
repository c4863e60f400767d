/* fw_cfg over I/O ports: see fwcfg.h. */
#include "fwcfg.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <sys/io.h>
#endif

#include "util.h"

static uint32_t get_be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint16_t get_be16(const uint8_t *p) {
    return (uint16_t)(p[0] << 8 | p[1]);
}

int fwcfg_dir_find(const uint8_t *untrusted_dir, size_t len, const char *name,
                   FwCfgFile *ret_file) {
    size_t want = strlen(name);
    bool found = false;
    FwCfgFile file = {0};

    if (want == 0 || want >= FWCFG_NAME_SIZE) {
        return -EINVAL;
    }
    if (len < 4) {
        return -EBADMSG;
    }
    uint32_t count = get_be32(untrusted_dir);
    if (count > FWCFG_FILES_MAX || count > (len - 4) / FWCFG_ENTRY_SIZE) {
        return -EBADMSG;
    }
    /* Every entry is checked, also after a match: a directory with a
     * broken entry is refused as a whole rather than half believed. */
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *e = untrusted_dir + 4 + (size_t)i * FWCFG_ENTRY_SIZE;
        const char *untrusted_name = (const char *)e + 8;
        size_t n = strnlen(untrusted_name, FWCFG_NAME_SIZE);
        if (n == FWCFG_NAME_SIZE) {
            return -EBADMSG;
        }
        if (!found && n == want && memcmp(untrusted_name, name, n) == 0) {
            file = (FwCfgFile){.size = get_be32(e), .select = get_be16(e + 4)};
            found = true;
        }
    }
    if (!found) {
        return -ENOENT;
    }
    *ret_file = file;
    return 0;
}

const char *fwcfg_strerror(int r) {
    switch (r) {
    case -ENODEV:
        return "the VM has no fw_cfg device";
    case -ENOENT:
        return "the VMM gave no such file";
    case -EBADMSG:
        return "its size is wrong, or the file directory is broken";
    default:
        return strerror(-r);
    }
}

#if defined(__x86_64__) || defined(__i386__)

/* The thin layer over the ports: choose an item, read its next bytes. */
static void port_select(uint16_t select) {
    outw(select, FWCFG_PORT_SELECTOR);
}

static void port_read(void *buf, size_t size) {
    uint8_t *p = buf;
    for (size_t i = 0; i < size; i++) {
        p[i] = inb(FWCFG_PORT_DATA);
    }
}

static int read_file_ports(const char *name, void *ret, size_t size) {
    uint8_t signature[4], count_be[4];
    FwCfgFile file;

    port_select(FWCFG_SELECT_SIGNATURE);
    port_read(signature, sizeof(signature));
    /* No device reads as all ones (0xff), not as "QEMU". */
    if (memcmp(signature, FWCFG_SIGNATURE, sizeof(signature)) != 0) {
        return -ENODEV;
    }
    port_select(FWCFG_SELECT_FILE_DIR);
    port_read(count_be, sizeof(count_be));
    uint32_t count = get_be32(count_be);
    if (count > FWCFG_FILES_MAX) {
        return -EBADMSG;
    }
    size_t len = 4 + (size_t)count * FWCFG_ENTRY_SIZE;
    _cleanup_free_ uint8_t *dir = malloc(len);
    if (!dir) {
        return -ENOMEM;
    }
    memcpy(dir, count_be, 4);
    port_read(dir + 4, len - 4);
    int r = fwcfg_dir_find(dir, len, name, &file);
    if (r < 0) {
        return r;
    }
    if (file.size != size) {
        return -EBADMSG;
    }
    port_select(file.select);
    port_read(ret, size);
    return 0;
}

int fwcfg_read_file(const char *name, void *ret, size_t size) {
    if (ioperm(FWCFG_PORT_SELECTOR, 2, 1) < 0) {
        return -errno;
    }
    int r = read_file_ports(name, ret, size);
    (void)ioperm(FWCFG_PORT_SELECTOR, 2, 0);
    return r;
}

#else

int fwcfg_read_file(const char *name, void *ret, size_t size) {
    (void)name;
    (void)ret;
    (void)size;
    return -EOPNOTSUPP;
}

#endif
