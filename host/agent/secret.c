/* The VM's secret on the host: see secret.h. */
#include "secret.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "host/common/paths.h"
#include "secret-file.h"
#include "util.h"

char *vm_secret_path(const char *vm) {
    return config_vm_runtime_file(vm, CONFIG_RUNTIME_SECRET);
}

static int secret_random(uint8_t ret[WIRE_SECRET_SIZE]) {
    size_t n = 0;
    while (n < WIRE_SECRET_SIZE) {
        ssize_t k = getrandom(ret + n, WIRE_SECRET_SIZE - n, 0);
        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        n += (size_t)k;
    }
    return 0;
}

static int secret_open(const char *path) {
    /* O_EXCL|O_NOFOLLOW: never through a file or link someone put there. */
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    return fd < 0 ? -errno : fd;
}

int vm_secret_create(const char *path, uint8_t ret[WIRE_SECRET_SIZE]) {
    uint8_t secret[WIRE_SECRET_SIZE];
    int r;

    r = secret_random(secret);
    if (r < 0) {
        return r;
    }
    _cleanup_close_ int fd = secret_open(path);
    if (fd == -EEXIST) {
        /* Left by a host agent that died: the directory is ours and
         * nobody else may write to it (agent_runtime_dir_check). */
        if (unlink(path) < 0 && errno != ENOENT) {
            r = -errno;
            goto out;
        }
        fd = secret_open(path);
    }
    if (fd < 0) {
        r = fd;
        goto out;
    }
    /* The umask may have taken more than 0600 asks for, never less. */
    if (fchmod(fd, 0600) < 0) {
        r = -errno;
    } else {
        r = loop_write(fd, secret, sizeof(secret));
    }
    if (r < 0) {
        (void)unlink(path);
        goto out;
    }
    memcpy(ret, secret, sizeof(secret));
    r = 0;
out:
    explicit_bzero(secret, sizeof(secret));
    return r;
}

int vm_secret_load(const char *path, uint8_t ret[WIRE_SECRET_SIZE]) {
    return secret_read_file(path, ret);
}

void vm_secret_remove(const char *path) {
    if (path) {
        (void)unlink(path);
    }
}
