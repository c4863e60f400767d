/* Powering the VM off: systemd over D-Bus, or a command (tests, guests
 * without systemd). */
#pragma once

#include <systemd/sd-event.h>

/* Starts the poweroff and returns; the request completes in the event
 * loop. command: NULL for D-Bus (logind's PowerOff, then systemd's
 * Manager.PowerOff if logind is not there), else run with /bin/sh -c.
 * on_failed is called if the poweroff turns out to have failed later. */
typedef void (*PowerFailed)(void *userdata);
int power_off(sd_event *e, const char *command, PowerFailed on_failed, void *userdata);
/* Releases what power_off() holds (bus connection, child watch). */
void power_done(void);
