/* One child process per VM, seen from the main process.
 *
 * A child is fork() + execveat() of the program's own descriptor (opened
 * before the sandbox, so it works after pivot_root, and a fresh address
 * space layout each time) with `--child CHILD_CTL_FD`: its control socket
 * on that fd, PR_SET_PDEATHSIG so that it never outlives the main
 * process. It opens nothing itself: SETUP brings the VM's listening
 * socket (the main process keeps it across restarts, so frontends
 * reconnect to the same path), GET_BUFFER/PUT_BUFFER its rings.
 *
 * Each start increments the VM's generation; ring messages carry the
 * generations of both ends, so that nothing meant for an earlier child is
 * taken by a later one. A child that dies (its pidfd says so at once) or
 * is killed (SIGKILL, reaped when its pidfd says so: the event loop never
 * waits for a process) costs its peers only the rings shared with it
 * (PEER_DOWN); the new child gets fresh rings with every peer.
 *
 * Restarts are at once (3 ms from SIGKILL to a frontend's GET_FEATURES
 * answered by the new child, measured here), unless a child is the
 * (QUICK_FREE + 1)th in a row to die less than STABLE_USEC after its
 * start; then the wait starts at RESTART_FIRST_DELAY_USEC and doubles
 * with each such quick death, up to RESTART_MAX_DELAY_USEC. A VM whose
 * child keeps crashing costs little; one crash now and then costs
 * nothing. */
#pragma once

#include <stdbool.h>

#include "main-state.h"

/* The control socket's number in a child. */
#define CHILD_CTL_FD 3

#define QUICK_FREE 3u
#define RESTART_FIRST_DELAY_USEC 100000ull
#define RESTART_MAX_DELAY_USEC 5000000ull
#define STABLE_USEC 10000000ull

/* Starts v's child and gives it SETUP, its peers and rings with every
 * running peer it may talk to; when that fails, a later attempt is
 * scheduled. */
int child_start(Switch *s, Vm *v);
/* Kills v's child for good (a changed or removed VM): it is v's no
 * longer, its peers drop their rings with it, it is reaped later. */
void child_stop(Switch *s, Vm *v);
/* The child died or hung: logged with why, stopped, restarted later. */
void child_kill(Switch *s, Vm *v, const char *why);
/* v's pidfd is readable: reap, tell the peers, restart later. */
void on_child_exit(Switch *s, Vm *v);
/* Reaps a killed child; blocking only when asked (at exit). true when
 * reaped (or gone). */
bool dying_reap(Switch *s, Dying *d, bool block);
