/* A child's side of the control channel (ctl.h). Every message is
 * validated by ctl_recv() first; the main process is trusted to mean what
 * it says, so a message the child cannot take (which only a bug of the
 * main process can send) ends the child. SETUP comes first and once:
 * port, generation, MAC, role, name and the listening socket; once it has
 * that, a sandboxed child locks itself down (confine_lockdown_child():
 * from then on it creates no process, socket or file, executes nothing
 * and maps nothing executable). A ring (GET_BUFFER, PUT_BUFFER) meant for
 * an earlier generation of this child, or older than the one it holds, is
 * ignored; one that cannot be attached (the other child had the memfd
 * first and may have written anything) costs only the link with that
 * peer. */
#pragma once

#include "child-state.h"

/* The control socket is readable: every message there. 1: go on; 0: the
 * main process is gone. */
int child_on_ctl(Child *c);
