/* Configuration and runtime directories, the VMs' files, our programs. */
#include "paths.h"

#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "addr.h"
#include "util.h"

#define VM_FILE_SUFFIX ".json"

static const char *env_dir(const char *var, const char *fallback) {
    const char *e = getenv(var);
    return (e && *e) ? e : fallback;
}

const char *config_dir(void) {
    return env_dir("QUBES_LITE_CONFIG_DIR", DEFAULT_CONFIG_DIR);
}

const char *config_runtime_dir(void) {
    return env_dir("QUBES_LITE_RUNTIME_DIR", DEFAULT_RUNTIME_DIR);
}

/* What follows a VM's name in its runtime files: each starts with the
 * one character no VM name holds. */
static const char *const runtime_suffixes[_CONFIG_RUNTIME_MAX] = {
    [CONFIG_RUNTIME_COMMAND] = ".sock",       [CONFIG_RUNTIME_CONSOLE] = ".console",
    [CONFIG_RUNTIME_CROSVM] = ".crosvm.sock", [CONFIG_RUNTIME_SECRET] = ".secret",
    [CONFIG_RUNTIME_VSOCK] = ".vsock.sock",
};

char *config_runtime_file(const char *dir, const char *vm, ConfigRuntimeFile kind) {
    char *p;
    if (!vm_name_valid(vm) || (unsigned)kind >= _CONFIG_RUNTIME_MAX) {
        return NULL;
    }
    return asprintf(&p, "%s/%s%s", dir, vm, runtime_suffixes[kind]) < 0 ? NULL : p;
}

char *config_vm_runtime_file(const char *vm, ConfigRuntimeFile kind) {
    return config_runtime_file(config_runtime_dir(), vm, kind);
}

int config_dir_check(ErrorText *err) {
    const char *dir = config_dir();
    const char *e = getenv("QUBES_LITE_CONFIG_DIR");
    struct stat st;
    int r = 0;

    if (stat(dir, &st) < 0) {
        r = -errno;
    } else if (!S_ISDIR(st.st_mode)) {
        r = -ENOTDIR;
    } else if (access(dir, R_OK | X_OK) < 0) {
        r = -errno;
    }
    if (r == 0) {
        return 0;
    }
    return error_set(err, r, "cannot read the configuration directory %s: %s (%s)", dir,
                     strerror(-r),
                     e && *e ? "set by QUBES_LITE_CONFIG_DIR"
                             : "the default; QUBES_LITE_CONFIG_DIR chooses another");
}

char *config_host_file(const char *dir) {
    char *p;
    return asprintf(&p, "%s/host.json", dir) < 0 ? NULL : p;
}

char *config_vms_dir(const char *dir) {
    char *p;
    return asprintf(&p, "%s/vms", dir) < 0 ? NULL : p;
}

char *config_vm_file(const char *dir, const char *name) {
    char *p;
    return asprintf(&p, "%s/vms/%s" VM_FILE_SUFFIX, dir, name) < 0 ? NULL : p;
}

static int vm_file_filter(const struct dirent *d) {
    size_t n = strlen(d->d_name), sl = strlen(VM_FILE_SUFFIX);
    return d->d_name[0] != '.' && n > sl && streq(d->d_name + n - sl, VM_FILE_SUFFIX);
}

void config_vm_files_free(ConfigVmFile *v, size_t n) {
    for (size_t i = 0; v && i < n; i++) {
        free(v[i].file);
    }
    free(v);
}

int config_vm_files(const char *dir, ConfigVmFile **ret, size_t *ret_n) {
    _cleanup_free_ char *vms = config_vms_dir(dir);
    struct dirent **ents = NULL;
    ConfigVmFile *v;
    int n, r = 0;

    if (!vms) {
        return -ENOMEM;
    }
    /* alphasort is strcoll(): bytewise, as none of our programs sets a
     * locale. */
    n = scandir(vms, &ents, vm_file_filter, alphasort);
    if (n < 0) {
        return -errno;
    }
    v = calloc((size_t)n + 1, sizeof(*v));
    for (int i = 0; i < n; i++) {
        if (v && !(v[i].file = strdup(ents[i]->d_name))) {
            r = -ENOMEM;
        }
        if (v && vm_name_from_filename(ents[i]->d_name, VM_FILE_SUFFIX, v[i].name) < 0) {
            v[i].name[0] = '\0';
        }
        free(ents[i]);
    }
    free(ents);
    if (!v || r < 0) {
        config_vm_files_free(v, (size_t)n);
        return -ENOMEM;
    }
    *ret = v;
    *ret_n = (size_t)n;
    return 0;
}

char *config_program_beside_self(const char *name) {
    char self[PATH_MAX];
    char *p;
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

    if (n <= 0) {
        return NULL;
    }
    self[n] = '\0';
    if (asprintf(&p, "%s/%s", dirname(self), name) < 0) {
        return NULL;
    }
    if (access(p, X_OK) < 0) {
        free(p);
        return NULL;
    }
    return p;
}

char *config_program_or_path(const char *name) {
    char *p = config_program_beside_self(name);
    return p ? p : strdup(name);
}
