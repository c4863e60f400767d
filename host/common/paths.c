/* Configuration and runtime directories, VM names. */
#include "paths.h"

#include <stdlib.h>
#include <string.h>

#include "addr.h"

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

bool config_vm_name_valid(const char *name) {
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > CONFIG_VM_NAME_MAX || name[0] < 'a' || name[0] > 'z') {
        return false;
    }
    for (size_t i = 1; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
            return false;
        }
    }
    return true;
}
