/* qubes-lite-vsock's two listening sockets, the vhost-user socket and
 * PATH: made before the sandbox, at the canonical paths the sandbox binds
 * their directories at, born private, and removed at exit only while
 * they are still ours. */
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

typedef struct VsockSocket {
    char *path; /* canonical: the same inside the sandbox and out */
    char *dir;  /* its directory, canonical */
    int fd;     /* listening, non-blocking, close-on-exec */
    struct stat bound;
} VsockSocket;

/* Listens on path (its directory must exist; a stale socket of an earlier
 * run, nobody listening, is replaced). The socket file is born 0600 (umask
 * 0177 around bind): nobody but its owner, and root, may connect, from the
 * first moment. */
int vsock_socket_listen(const char *path, VsockSocket *ret);
/* Opens the socket file to a group: GROUP (a name or a number) as its
 * group, mode 0660. Started unprivileged, the user must be a member. */
int vsock_socket_open_to_group(const VsockSocket *s, const char *group);
/* Removes the socket file while it is still the one we made (a file
 * another run put there since stays), frees the paths. The descriptor is
 * the caller's to close. */
void vsock_socket_remove(VsockSocket *s);
