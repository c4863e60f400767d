/* systemd units for the VMs of a configuration: the text of each unit,
 * without I/O beyond the FILE it is written to (the generator decides
 * where units go). */
#pragma once

#include <stdbool.h>
#include <stdio.h>

#include "host/common/config.h"

#define UNITS_VFIO_SERVICE "qubes-lite-vfio.service"

typedef struct UnitsEnv {
    const char *host_agent;  /* absolute path of qubes-lite-host-agent */
    const char *config_dir;  /* non-NULL: passed as QUBES_LITE_CONFIG_DIR */
    const char *runtime_dir; /* where the sockets are; non-default: passed on too */
    const char *vm_switch;   /* absolute path of vm-switch (the switch units only) */
    const char *switch_dir;  /* the switch socket dir, under /run (the switch units only) */
} UnitsEnv;

/* Whether s may stand in a unit file as a path or value as it is: no
 * whitespace, quotes, backslashes, specifiers (%) or control bytes. */
bool units_value_safe(const char *s);

/* qubes-lite-<vm>.socket: the VM's command socket, owned by the configured
 * user, mode 0600, activating qubes-lite-<vm>-vm.service. */
int units_write_socket(FILE *f, const HostConfig *h, const VmConfig *vm, const UnitsEnv *env);
/* qubes-lite-<vm>-vm.service: the host agent for the VM (Type=notify),
 * after the vm-switch services of its networks (and after the vfio
 * binding when it has PCI devices and the host isolates some). A VM with
 * gpu or sound, on a host with a user, gets that user's runtime directory
 * as XDG_RUNTIME_DIR (and, with gpu, WAYLAND_DISPLAY). */
int units_write_service(FILE *f, const HostConfig *h, const VmConfig *vm, const UnitsEnv *env);
/* vm-switch-<net>.service: vm-switch for one network, unprivileged
 * (DynamicUser=), its sockets in <switch dir>/<net>; its <vm>.conf files in
 * units_switch_config_dir() are written from the configuration as root
 * by `qubes-lite-host-agent --write-switch-config` before it starts and
 * on reload. -EINVAL when a path or a vm-switch option cannot stand in a
 * unit file, or the switch dir is not under /run. */
int units_write_switch(FILE *f, const HostConfig *h, const char *net, const UnitsEnv *env);
/* <runtime dir>/switch/<net>, the switch's configuration directory. */
int units_switch_config_dir(const char *runtime_dir, const char *net, char **ret);
/* qubes-lite-vfio.service: binds isolatedPciDevices to vfio-pci once. */
int units_write_vfio(FILE *f, const HostConfig *h, const UnitsEnv *env);
