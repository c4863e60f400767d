/* Configuration files: host.json and vms/<name>.json in the configuration
 * directory ($QUBES_LITE_CONFIG_DIR, else /etc/qubes-lite).
 *
 * Only the keys the host agent and vm-run use today are read, and each is
 * validated. Unknown keys are tolerated for now; the full schema comes
 * with its own validation. Every error names the file, the key and the
 * reason. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include "paths.h"
#include "util.h"

#define CONFIG_ERROR_MAX 512
#define CONFIG_VM_ID_MIN 3u
#define CONFIG_VM_ID_MAX 255u

typedef struct ConfigError {
    char message[CONFIG_ERROR_MAX];
} ConfigError;

typedef struct HostConfig {
    char *user; /* NULL: no user besides root */
    uid_t user_uid;
    gid_t user_gid;
} HostConfig;

typedef struct VmConfig {
    char *name;
    unsigned id; /* odd, 3..255; also the vsock CID */
} VmConfig;

/* Loads <dir>/host.json. -ENOENT when the file does not exist (callers
 * decide whether that is fine); -EINVAL, -ENOMEM, ... otherwise, with
 * err->message set. */
int config_load_host(const char *dir, HostConfig **ret, ConfigError *err);
/* Loads <dir>/vms/<name>.json. -ENOENT when there is no such VM. */
int config_load_vm(const char *dir, const char *name, VmConfig **ret, ConfigError *err);

void host_config_free(HostConfig *c);
void vm_config_free(VmConfig *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(HostConfig *, host_config_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(VmConfig *, vm_config_free)
