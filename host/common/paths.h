/* Where things are: the configuration and runtime directories, and what
 * a VM name may be. No I/O beyond reading the environment, no libraries:
 * vm-run links this without the JSON parser. */
#pragma once

#include <stdbool.h>

#define CONFIG_VM_NAME_MAX 12u

/* $QUBES_LITE_CONFIG_DIR when set and non-empty, else DEFAULT_CONFIG_DIR. */
const char *config_dir(void);
/* $QUBES_LITE_RUNTIME_DIR when set and non-empty, else DEFAULT_RUNTIME_DIR. */
const char *config_runtime_dir(void);

/* [a-z][a-z0-9-]{0,11}: the TAP interface is vm-<name>, 15 bytes at most. */
bool config_vm_name_valid(const char *name);
