/* The counters file: written by the main process, printed by --stats. */
#include "main-stats.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "log.h"

/* v's counters as the file shows them: those of its children, plus what
 * the others' children counted against it. */
static CtlCounters vm_counters(const Switch *s, const Vm *v) {
    unsigned port = vm_port(s, v);
    CtlCounters c = v->base;
    ctl_counters_add(&c, &v->cur);
    c.drops[CTL_DROP_RING_FULL] = v->ring_full_in;
    for (unsigned j = 0; j < CTL_MAX_PORTS; j++) {
        c.drops[CTL_DROP_RING_FULL] += s->vm[j].ring_full_to[port];
    }
    /* Frames of ours a peer's child refused from its ring: a sign that
     * our child is compromised (or our own child's word against it). */
    for (unsigned r = 0; r < POLICY_DROP_MAX; r++) {
        c.drops[r] += v->refused_in[r];
        for (unsigned j = 0; j < CTL_MAX_PORTS; j++) {
            c.drops[r] += s->vm[j].refused_from[port][r];
        }
    }
    return c;
}

/* One VM's line, newline included: its length, or -1 when it does not fit. */
static int format_line(const Vm *v, const CtlCounters *c, char *line, size_t size) {
    const char *state = v->pid > 0 ? ctl_state_name(v->child_state) : "restarting";
    int n = snprintf(line, size,
                     "vm=%s pid=%d role=%s state=%s restarts=%u rx_frames=%llu "
                     "rx_bytes=%llu tx_frames=%llu tx_bytes=%llu",
                     v->name, (int)v->pid, role_name(v->conf.role), state, v->restarts,
                     (unsigned long long)c->rx_frames, (unsigned long long)c->rx_bytes,
                     (unsigned long long)c->tx_frames, (unsigned long long)c->tx_bytes);
    for (unsigned d = 0; d < CTL_DROP_MAX && n > 0 && (size_t)n < size; d++) {
        n += snprintf(line + n, size - (size_t)n, " drop_%s=%llu", ctl_drop_name(d),
                      (unsigned long long)c->drops[d]);
    }
    if (n <= 0 || (size_t)n >= size - 1) {
        return -1;
    }
    line[n++] = '\n';
    return n;
}

void write_stats(Switch *s) {
    char line[1024];
    _cleanup_close_ int fd = openat(s->socket_fd, STATS_TMP,
                                    O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
        log_warning("cannot write %s/%s: %m", s->opt->socket_dir, STATS_TMP);
        return;
    }
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        const Vm *v = &s->vm[i];
        if (!v->used) {
            continue;
        }
        CtlCounters c = vm_counters(s, v);
        int n = format_line(v, &c, line, sizeof(line));
        if (n > 0 && loop_write(fd, line, (size_t)n) < 0) {
            log_warning("cannot write %s: %m", STATS_TMP);
            return;
        }
    }
    if (renameat(s->socket_fd, STATS_TMP, s->socket_fd, STATS_FILE) < 0) {
        log_warning("cannot rename %s to %s: %m", STATS_TMP, STATS_FILE);
    }
    s->stats_dirty = false;
}

int print_stats(const char *socket_dir) {
    char path[PATH_MAX];
    char buf[4096];
    snprintf(path, sizeof(path), "%s/%s", socket_dir, STATS_FILE);
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, PROGRAM ": cannot read %s: %m (is vm-switch running there?)\n", path);
        return EXIT_FAILURE;
    }
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0) {
            fprintf(stderr, PROGRAM ": cannot read %s: %m\n", path);
            return EXIT_FAILURE;
        }
        if (n == 0) {
            return EXIT_SUCCESS;
        }
        if (loop_write(STDOUT_FILENO, buf, (size_t)n) < 0) {
            return EXIT_FAILURE;
        }
    }
}
