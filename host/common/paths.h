/* Where things are: the configuration and runtime directories, the files
 * of the configured VMs, and our own programs. No I/O beyond reading the
 * environment and directories, no libraries: vm-run links this without
 * the JSON parser. What a VM name may be is proto/rules.h's. */
#pragma once

#include <stddef.h>

#include "rules.h"
#include "util.h"

/* $QUBES_LITE_CONFIG_DIR when set and non-empty, else DEFAULT_CONFIG_DIR. */
const char *config_dir(void);
/* $QUBES_LITE_RUNTIME_DIR when set and non-empty, else DEFAULT_RUNTIME_DIR. */
const char *config_runtime_dir(void);
/* Whether config_dir() is a directory we can read: 0, or a negative errno
 * with one line for the user in err ("cannot read the configuration
 * directory DIR: REASON", and where DIR came from). A program that would
 * otherwise see no VM in a directory that is not there says so instead. */
int config_dir_check(ErrorText *err);

/* A VM's files in the runtime directory. Each is <dir>/<vm>.<suffix>:
 * a VM name holds no '.', so a file's name ends at its first '.' and no
 * VM's file can be another VM's, whatever the names (VM 'a-crosvm''s
 * command socket is a-crosvm.sock, VM 'a''s crosvm socket a.crosvm.sock).
 * Every producer and consumer of these paths asks here. */
typedef enum ConfigRuntimeFile {
    CONFIG_RUNTIME_COMMAND, /* <vm>.sock: the host agent's command socket */
    CONFIG_RUNTIME_CONSOLE, /* <vm>.console: the serial console relay */
    CONFIG_RUNTIME_CROSVM,  /* <vm>.crosvm.sock: crosvm's control socket */
    CONFIG_RUNTIME_SECRET,  /* <vm>.secret: the VM's secret (host/agent/secret.h) */
    CONFIG_RUNTIME_VSOCK,   /* <vm>.vsock.sock: a qemu VM's qubes-lite-vsock (hvsock:) */
    _CONFIG_RUNTIME_MAX,
} ConfigRuntimeFile;

/* <dir>/<vm>.<suffix of kind>, newly allocated; NULL when vm is not a
 * valid VM name, kind is not one, or out of memory. */
char *config_runtime_file(const char *dir, const char *vm, ConfigRuntimeFile kind);
/* The same in config_runtime_dir(). */
char *config_vm_runtime_file(const char *vm, ConfigRuntimeFile kind);

/* <dir>/host.json, <dir>/vms and <dir>/vms/<name>.json, newly allocated;
 * NULL when out of memory. `name` is not checked here. */
char *config_host_file(const char *dir);
char *config_vms_dir(const char *dir);
char *config_vm_file(const char *dir, const char *name);

/* One file of <dir>/vms whose name ends in ".json" (dotfiles aside). */
typedef struct ConfigVmFile {
    char *file;                 /* "banking.json" */
    char name[VM_NAME_MAX + 1]; /* "banking"; "" when the file name is no VM name */
} ConfigVmFile;

/* Every such file, sorted by file name (bytewise): the one listing of
 * the configured VMs. -errno when the directory cannot be read (-ENOENT:
 * it does not exist); free with config_vm_files_free(). */
int config_vm_files(const char *dir, ConfigVmFile **ret, size_t *ret_n);
void config_vm_files_free(ConfigVmFile *v, size_t n);

/* The program `name` beside our own executable (a build tree, a package's
 * bin directory), when it is there and executable; NULL otherwise (and
 * when out of memory). Callers fall back to PATH or a fixed directory. */
char *config_program_beside_self(const char *name);
/* The same, else `name` itself for execvp() to find in PATH; newly
 * allocated, NULL only when out of memory. */
char *config_program_or_path(const char *name);
