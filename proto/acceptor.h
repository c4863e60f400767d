/* Accepting connections on a listening socket from an sd-event loop: the
 * loop of every daemon that listens (the guest agent, the host agent's
 * command socket and its console).
 *
 * Each waiting connection is accepted non-blocking and close-on-exec and
 * handed to the owner, at most ACCEPT_BATCH per wake-up so that the
 * connections already served get their turn. Out of fds or memory
 * (EMFILE, ENFILE, ENOBUFS, ENOMEM), the listening socket stays readable
 * and a level-triggered loop would spin on it: accepting pauses for
 * ACCEPT_PAUSE_USEC instead, the connections wait in the backlog, and
 * connections ending meanwhile free what is needed. The pause's timer is
 * made with the Acceptor, so that pausing needs no fd. The owner may also
 * hold accepting (its limit of connections reached).
 *
 * Library code: it logs nothing; a failed accept is passed to the owner,
 * which logs it with its context. */
#pragma once

#include <stdbool.h>
#include <systemd/sd-event.h>

#define ACCEPT_BATCH 64u
#define ACCEPT_PAUSE_USEC (200 * 1000ULL)

typedef struct Acceptor Acceptor;

/* fd >= 0: a new connection, the owner's from now on. fd < 0: accept()
 * failed with that errno, and acceptor_paused() says whether accepting
 * pauses for it (out of fds or memory) or only that connection was lost
 * (-ECONNABORTED ...). The owner may call acceptor_hold() from here, not
 * acceptor_free(). */
typedef void (*AcceptFn)(void *userdata, int fd);

/* Watches listen_fd, which stays the caller's. */
int acceptor_new(sd_event *e, int listen_fd, AcceptFn fn, void *userdata, Acceptor **ret);
/* NULL is fine; returns NULL. */
Acceptor *acceptor_free(Acceptor *a);
/* Stops accepting (hold) until released; a pause goes on by itself. */
void acceptor_hold(Acceptor *a, bool hold);
/* Whether accepting pauses because the process ran out of fds or memory. */
bool acceptor_paused(const Acceptor *a);
