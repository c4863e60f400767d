/* log_use_journal(): see log.h and log-journal.h. */
#include "log-journal.h"
#include "log.h"

/* log.c writes CODE_FILE, CODE_LINE and CODE_FUNC of the caller itself;
 * sd-journal's would be ours. */
#define SD_JOURNAL_SUPPRESS_LOCATION 1
#include <systemd/sd-journal.h>

static int journal_sendv(const struct iovec *iov, int n) {
    return sd_journal_sendv(iov, n);
}

void log_use_journal(void) {
    log_journal_send_set(journal_sendv);
}
