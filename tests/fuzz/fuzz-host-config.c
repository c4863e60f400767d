/* The host's JSON configuration: whatever vms/<name>.json or host.json
 * holds, loading either succeeds with values that keep config.h's promises
 * and a crosvm command line can be built from them, or fails with an error
 * naming the file. Byte 0 chooses which file the rest of the input becomes.
 *
 * The loader reads files, so the input is written into a private temporary
 * configuration directory made once per process. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "host/common/config.h"
#include "host/agent/crosvm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64];
static char host_path[128], vm_path[128];

/* The scratch directory goes when the fuzzer exits. */
static void cleanup(void) {
    char vms[96];
    unlink(host_path);
    unlink(vm_path);
    snprintf(vms, sizeof(vms), "%s/vms", dir);
    rmdir(vms);
    rmdir(dir);
}

static void setup(void) {
    if (dir[0]) {
        return;
    }
    strcpy(dir, "/tmp/fuzz-host-config.XXXXXX");
    if (!mkdtemp(dir)) {
        abort();
    }
    char vms[96];
    snprintf(vms, sizeof(vms), "%s/vms", dir);
    if (mkdir(vms, 0700) < 0) {
        abort();
    }
    snprintf(host_path, sizeof(host_path), "%s/host.json", dir);
    snprintf(vm_path, sizeof(vm_path), "%s/vms/fuzz.json", dir);
    atexit(cleanup);
    /* The crosvm command line names runtime and sysfs paths; keep them
     * inside the scratch directory. */
    setenv("QUBES_LITE_RUNTIME_DIR", dir, 1);
    setenv("QUBES_LITE_SYSFS_ROOT", dir, 1);
}

static void write_file(const char *path, const uint8_t *data, size_t size) {
    FILE *f = fopen(path, "w");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        abort();
    }
}

static void check_argv(char **argv) {
    size_t n = 0;
    if (!argv || !argv[0]) {
        abort();
    }
    for (; argv[n]; n++) {
        if (n > 100000) {
            abort();
        }
    }
    /* crosvm [global…] run […] KERNEL: at least these three. */
    if (n < 3) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ErrorText err;
    HostConfig *host = NULL;
    VmConfig *vm = NULL;
    int r;

    if (size < 1) {
        return 0;
    }
    setup();
    bool as_host = data[0] & 1;
    unlink(host_path);
    unlink(vm_path);
    write_file(as_host ? host_path : vm_path, data + 1, size - 1);

    if (as_host) {
        r = config_load_host(dir, &host, &err);
        if (r < 0 && strstr(err.message, "host.json") == NULL) {
            abort();
        }
    } else {
        r = config_host_defaults(&host);
        if (r < 0) {
            abort();
        }
        r = config_load_vm(dir, "fuzz", &vm, &err);
        if (r < 0 && strstr(err.message, "fuzz.json") == NULL) {
            abort();
        }
        if (r == 0) {
            if (vm->id < CONFIG_VM_ID_MIN || vm->id > CONFIG_VM_ID_MAX || !(vm->id & 1)) {
                abort();
            }
            char **argv = NULL;
            r = vmm_crosvm_argv(host, vm, &argv, &err);
            if (r == 0) {
                check_argv(argv);
            } else if (r != -EINVAL && r != -ENOENT) {
                abort();
            }
            strv_free(argv);
        }
    }
    /* The whole-directory check must agree that something is wrong or not
     * and never crash. */
    FILE *null = fopen("/dev/null", "w");
    if (!null) {
        abort();
    }
    if (config_check_all(dir, null, CONFIG_CHECK_FILES) < 0) {
        abort();
    }
    fclose(null);
    host_config_free(host);
    vm_config_free(vm);
    return 0;
}
