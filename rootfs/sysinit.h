/* The steps /init takes before it starts anything: file systems, kernel
 * modules, host name, the default user. Each step is the init's own
 * decision to go on after a failure, so each logs its failures itself: a
 * VM that comes up half set up can still be looked at on its console. */
#pragma once

#include <netinet/in.h>
#include <stdbool.h>
#include <sys/types.h>

/* proc, sysfs, devtmpfs, devpts, /dev/shm, /run, and /dev's symlinks.
 * Returns false when /proc or /dev could not be mounted. */
bool sysinit_mount(void);

/* Loads each module the list names (a path under dir, one a line), in the
 * list's order; returns how many failed. */
unsigned sysinit_modules(const char *list, const char *dir);

/* Sets the host name and writes /etc/hostname and /etc/hosts. */
void sysinit_hostname(const char *name);

/* The user's uid and gid from /etc/passwd, where the user is added first
 * (uid and gid 1000 or the next free one, a group of its own, a home in
 * /home) when it is not there. Returns 0 or a negative errno. */
int sysinit_user(const char *name, uid_t *ret_uid, gid_t *ret_gid);

/* /run/user/UID, the user's XDG_RUNTIME_DIR. */
void sysinit_runtime_dir(uid_t uid, gid_t gid);

/* /etc/resolv.conf with these name servers. */
void sysinit_resolv_conf(const struct in_addr *dns, unsigned n);
