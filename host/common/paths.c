/* Configuration and runtime directories. */
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
