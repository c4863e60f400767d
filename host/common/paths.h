/* Where things are: the configuration and runtime directories. No I/O
 * beyond reading the environment, no libraries: vm-run links this without
 * the JSON parser. What a VM name may be is proto/rules.h's. */
#pragma once

/* $QUBES_LITE_CONFIG_DIR when set and non-empty, else DEFAULT_CONFIG_DIR. */
const char *config_dir(void);
/* $QUBES_LITE_RUNTIME_DIR when set and non-empty, else DEFAULT_RUNTIME_DIR. */
const char *config_runtime_dir(void);
