/* The free-form attribute sets of a VM's file, passed on to the VMM:
 * additionalDisks, rootDisk, sharedDirectories, pciDevices, vhostUser (a
 * list of sets each), gpu and sound (true, false or a set). Internal to
 * host/common (config.c parses a VM's file with these).
 *
 * Pairs keep the order of the file (jansson iterates objects in insertion
 * order, always since 2.8; builtins.toJSON writes attribute sets sorted by
 * name, which crosvm does not mind). Values are rendered as crosvm's
 * key=value syntax wants them, and may not hold the separator of their
 * option (',', or ':' for shared directories): a value cannot smuggle in
 * another option. */
#pragma once

#include <jansson.h>

#include "config-parser.h"
#include "host/common/config.h"

typedef enum ConfigDeviceKind {
    CONFIG_DEVICE_DISK,
    CONFIG_DEVICE_ROOT_DISK,
    CONFIG_DEVICE_SHARED_DIR,
    CONFIG_DEVICE_PCI,
    CONFIG_DEVICE_VHOST_USER,
} ConfigDeviceKind;

/* obj's list `name` of sets of the given kind into out. */
void sets_devices(ConfigParser *p, json_t *obj, const char *name, ConfigDeviceKind kind,
                  ConfigDeviceList *out);
/* rootDisk: a set, or a plain path taken as {path = ...;}; *out stays
 * NULL when absent. */
void sets_root_disk(ConfigParser *p, json_t *obj, ConfigDevice **out);
/* gpu, sound: a boolean or a set of crosvm options. */
void sets_feature(ConfigParser *p, json_t *obj, const char *name, ConfigFeature *out);
