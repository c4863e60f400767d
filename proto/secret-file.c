/* Reading and comparing the VM's secret: see secret-file.h. */
#include "secret-file.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

int secret_read_file(const char *path, uint8_t ret[WIRE_SECRET_SIZE]) {
    uint8_t buf[WIRE_SECRET_SIZE + 1];
    struct stat st;
    size_t n = 0;

    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
    if (fd < 0) {
        return -errno;
    }
    if (fstat(fd, &st) < 0) {
        return -errno;
    }
    if (!S_ISREG(st.st_mode)) {
        return -EBADMSG;
    }
    if (st.st_uid != geteuid() || (st.st_mode & 0077) != 0) {
        return -EPERM;
    }
    /* One byte more than we want: a longer file is refused, not cut. The
     * size is not taken from st_size: sysfs files report theirs loosely. */
    while (n < sizeof(buf)) {
        ssize_t k = read(fd, buf + n, sizeof(buf) - n);
        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        if (k == 0) {
            break;
        }
        n += (size_t)k;
    }
    if (n != WIRE_SECRET_SIZE) {
        explicit_bzero(buf, sizeof(buf));
        return -EBADMSG;
    }
    memcpy(ret, buf, WIRE_SECRET_SIZE);
    explicit_bzero(buf, sizeof(buf));
    return 0;
}

bool secret_equal(const uint8_t secret[WIRE_SECRET_SIZE], const uint8_t *untrusted) {
    volatile uint8_t diff = 0;

    if (!untrusted) {
        return false;
    }
    for (size_t i = 0; i < WIRE_SECRET_SIZE; i++) {
        diff |= (uint8_t)(secret[i] ^ untrusted[i]);
    }
    return diff == 0;
}
