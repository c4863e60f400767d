/* vm-switch's <vm>.conf files from the configuration. */
#include "switchconf.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "host/common/config.h"
#include "util.h"
#include "vmconf.h"

/* What each <vm>.conf of a VM in the configuration should hold: NULL text
 * for a VM not on the network, keep for one whose file does not load. */
typedef struct Entry {
    char name[VM_NAME_MAX + 1];
    char text[VM_CONF_TEXT_MAX];
    bool on_net;
    bool keep;
} Entry;

/* mkdir -p, each new directory 0755 whatever the umask. */
static int mkdir_p(const char *path) {
    _cleanup_free_ char *p = strdup(path);
    if (!p) {
        return -ENOMEM;
    }
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == '\0') {
            char c = *s;
            *s = '\0';
            if (mkdir(p, 0755) == 0) {
                if (chmod(p, 0755) < 0) {
                    return -errno;
                }
            } else if (errno != EEXIST) {
                return -errno;
            }
            *s = c;
            if (c == '\0') {
                return 0;
            }
        }
    }
}

/* Whether dirfd/name already holds exactly `text`. */
static bool same_text(int dirfd, const char *name, const char *text) {
    /* One byte more than any text: a longer file is not the same. */
    char buf[VM_CONF_TEXT_MAX];
    _cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        return false;
    }
    ssize_t n = read(fd, buf, sizeof(buf));
    return n >= 0 && (size_t)n == strlen(text) && memcmp(buf, text, (size_t)n) == 0;
}

/* dirfd/<name>.conf := text, through a hidden temporary the switch ignores. */
static int write_conf(int dirfd, const char *name, const char *text) {
    char file[VM_NAME_MAX + 8], tmp[VM_NAME_MAX + 16];
    size_t len = strlen(text);

    snprintf(file, sizeof(file), "%s.conf", name);
    if (same_text(dirfd, file, text)) {
        return 0;
    }
    snprintf(tmp, sizeof(tmp), ".%s.conf.tmp", name);
    (void)unlinkat(dirfd, tmp, 0);
    _cleanup_close_ int fd =
        openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
        return -errno;
    }
    int r = 0;
    ssize_t w;
    if (fchmod(fd, 0644) < 0) {
        r = -errno;
    } else if ((w = write(fd, text, len)) != (ssize_t)len) {
        r = w < 0 ? -errno : -EIO;
    } else if (fsync(fd) < 0 || renameat(dirfd, tmp, dirfd, file) < 0) {
        r = -errno;
    }
    if (r < 0) {
        (void)unlinkat(dirfd, tmp, 0);
    }
    return r;
}

static const Entry *find(const Entry *v, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++) {
        if (streq(v[i].name, name)) {
            return &v[i];
        }
    }
    return NULL;
}

/* The configuration's VMs, each with the text of its <vm>.conf on net. */
static int collect(const char *config_dir, const char *net, FILE *errors, Entry **ret,
                   size_t *ret_n) {
    ConfigVmFile *files = NULL;
    size_t n = 0, k = 0;

    int r = config_vm_files(config_dir, &files, &n);
    if (r == -ENOENT) {
        n = 0; /* no VMs: none on the network */
    } else if (r < 0) {
        return r;
    }
    Entry *v = calloc(n + 1, sizeof(*v));
    for (size_t i = 0; v && i < n; i++) {
        _cleanup_(vm_config_freep) VmConfig *vm = NULL;
        ErrorText err = {{0}};
        const char *name = files[i].name;

        if (!name[0]) {
            continue;
        }
        Entry *e = &v[k++];
        memcpy(e->name, name, sizeof(e->name));
        if (config_load_vm(config_dir, name, &vm, &err) < 0) {
            if (errors) {
                fprintf(errors, "%s (its %s.conf is left as it is)\n", err.message, name);
            }
            e->keep = true;
            continue;
        }
        for (size_t j = 0; j < vm->n_vm_networks; j++) {
            const ConfigVmNet *vn = &vm->vm_networks[j];
            if (streq(vn->network, net)) {
                VmConf conf = {.role = vn->router ? VM_ROLE_ROUTER : VM_ROLE_CLIENT};
                memcpy(conf.mac, vn->mac, sizeof(conf.mac));
                vm_conf_format(&conf, e->text);
                e->on_net = true;
                break;
            }
        }
    }
    config_vm_files_free(files, n);
    if (!v) {
        return -ENOMEM;
    }
    *ret = v;
    *ret_n = k;
    return 0;
}

int switchconf_write(const char *config_dir, const char *net, const char *dir, FILE *errors) {
    _cleanup_free_ Entry *v = NULL;
    _cleanup_close_ int dirfd = -EBADF;
    size_t n = 0;
    int r, written = 0;

    r = collect(config_dir, net, errors, &v, &n);
    if (r < 0) {
        return r;
    }
    /* No VM names the network (none on it, none whose file may): a
     * network nobody configured, unless its directory is there already
     * (its last VM left: its files go below). */
    bool named = false;
    for (size_t i = 0; i < n; i++) {
        named = named || v[i].on_net || v[i].keep;
    }
    if (!named && access(dir, F_OK) < 0) {
        return errno == ENOENT ? -ENXIO : -errno;
    }
    r = mkdir_p(dir);
    if (r < 0) {
        return r;
    }
    dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (dirfd < 0) {
        return -errno;
    }
    for (size_t i = 0; i < n; i++) {
        if (v[i].on_net) {
            r = write_conf(dirfd, v[i].name, v[i].text);
            if (r < 0) {
                return r;
            }
            written++;
        }
    }

    /* The files of VMs no longer on the network (or gone). */
    _cleanup_closedir_ DIR *d = fdopendir(dup(dirfd));
    if (!d) {
        return -errno;
    }
    for (struct dirent *de; (errno = 0, de = readdir(d));) {
        char name[VM_NAME_MAX + 1];
        if (vm_name_from_filename(de->d_name, ".conf", name) < 0) {
            continue; /* not a <vm>.conf: not ours to remove */
        }
        const Entry *e = find(v, n, name);
        if ((!e || (!e->on_net && !e->keep)) && unlinkat(dirfd, de->d_name, 0) < 0 &&
            errno != ENOENT) {
            return -errno;
        }
    }
    if (errno != 0) {
        return -errno; /* readdir() failed */
    }
    return written;
}
