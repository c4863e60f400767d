/* Starting a program for an Exec: fork, then in the child set up the
 * session, stdio (pipes or a pty), user, environment, working directory,
 * optionally wait for Wayland, and exec. The parent never blocks: whether
 * exec succeeded is learnt from a close-on-exec error pipe. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "wire.h"

typedef struct UserRecord UserRecord;

typedef struct SpawnOptions {
    const char *default_user; /* NULL: the agent's own user */
    uint64_t wayland_timeout_usec;
    /* The Exec's user (x->user, else default_user) with its groups, when a
     * current record is at hand (users.h): then a root agent's child sets
     * the ids from it without looking anything up. NULL: the child looks
     * the user up. */
    const UserRecord *user;
    /* With stream (no pty): stream_fd, a connected socket in blocking
     * mode, is the program's stdin and stdout; only stderr gets a pipe. */
    bool stream;
    int stream_fd;
} SpawnOptions;

typedef struct Spawned {
    pid_t pid; /* also the process group and session id */
    int pidfd;
    int err_fd;    /* EOF without data: exec succeeded */
    int stdin_fd;  /* pty: a dup of the master; -EBADF with a stream */
    int stdout_fd; /* pty: the master; -EBADF with a stream */
    int stderr_fd; /* pty: -EBADF */
} Spawned;

/* Everything returned is non-blocking and close-on-exec. */
int spawn_start(const MsgExec *x, const SpawnOptions *o, Spawned *ret);

/* What the child reports on the error pipe: a 4-byte errno (1 to
 * WIRE_ERRNO_MAX), then a shell-like message ending in a newline. The
 * child may have become the user by then: the report is checked like a
 * peer's. Returns 0 and the errno and message (pointing into untrusted),
 * or -EBADMSG when the report is malformed. */
#define SPAWN_REPORT_MAX 1024u
int spawn_parse_report(const uint8_t *untrusted, size_t n, int *ret_errno, const char **ret_msg,
                       size_t *ret_msg_len);
