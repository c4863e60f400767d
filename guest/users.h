/* The users programs run as, with their groups, looked up once and kept.
 *
 * A root agent gives every program its user's groups, as initgroups()
 * would. Looking them up goes through NSS (the group modules of
 * nsswitch.conf), which the agent must not load into itself (it would keep
 * them for good: some 600 KiB of RSS) and which a child sharing the
 * agent's memory may not run. So a short-lived lookup child (fork) asks NSS
 * and sends the record back over a pipe, in the background; spawn uses the
 * record to set the ids without any lookup. A record is used only while
 * /etc/passwd, /etc/group and /etc/nsswitch.conf are unchanged (same inode,
 * size, mtime and ctime) and for at most USER_CACHE_TTL_USEC (for users
 * and groups that NSS finds elsewhere than in these files); otherwise, and
 * while no record is there yet, the program's child looks the user up
 * itself, as it always did. */
#pragma once

#include <pwd.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#define USER_CACHE_TTL_USEC (10ULL * 1000000ULL)
#define USER_CACHE_MAX 8
#define USER_LOOKUP_TIMEOUT_USEC (5ULL * 1000000ULL)
/* A record travels in one pipe write no larger than PIPE_BUF. */
#define USER_RECORD_MAX 4096u

typedef struct UserRecord {
    uid_t uid;
    gid_t gid;
    const char *name, *dir, *shell;
    size_t n_groups;
    const gid_t *groups;
} UserRecord;

typedef struct UserCache UserCache;

int user_cache_new(sd_event *e, UserCache **ret);
UserCache *user_cache_free(UserCache *c);

/* The record of the user an Exec names (a name or a numeric uid; NULL: the
 * agent's own user) when one is kept and still current. Otherwise NULL,
 * and a lookup is started in the background for the next Exec. The record
 * stays valid until control returns to the event loop. */
const UserRecord *user_cache_get(UserCache *c, const char *name);

/* The password database entry for an Exec's user: by uid when name is a
 * number, else by name; NULL: the effective uid's. NULL with errno set (0:
 * no such user) when there is none. */
struct passwd *user_lookup(const char *name);

/* The record's wire form, from the lookup child to the agent: uid, gid,
 * group count (u32 each), the lengths of name, home and shell (u16 each,
 * then two bytes of zero), the groups (u32 each), then the three strings
 * without terminators; host byte order, at most USER_RECORD_MAX bytes.
 * Encoding returns the length or -E2BIG; parsing checks every length and
 * that no string is empty (the home and shell may be) or holds a NUL, and
 * returns a record in one allocation (free() it). */
ssize_t user_record_encode(const struct passwd *pw, const gid_t *groups, size_t n_groups,
                           uint8_t *buf, size_t size);
int user_record_parse(const uint8_t *untrusted, size_t n, UserRecord **ret);
