/* The journal's side of logging (log.h), apart from log.c so that a
 * program that never calls log_use_journal() does not link sd-journal
 * (vm-switch links no libsystemd). log_use_journal() (log-journal.c)
 * hands log.c its sender. */
#pragma once

#include <sys/uio.h>

/* Sends one record, n "NAME=value" fields; 0 or a negative errno. */
typedef int (*LogJournalSend)(const struct iovec *iov, int n);

void log_journal_send_set(LogJournalSend send);
