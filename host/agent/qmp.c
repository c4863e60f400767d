/* A QMP client on the event loop (qmp.h). */
#include "qmp.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "util.h"

typedef enum QmpState {
    QMP_CONNECTING,   /* nobody listened yet: the retry timer runs */
    QMP_GREETING,     /* waiting for {"QMP": ...} */
    QMP_CAPABILITIES, /* qmp_capabilities sent, waiting for its reply */
    QMP_READY,
    QMP_CLOSED,
} QmpState;

typedef struct QmpPending {
    uint64_t id;
    char *text; /* the command's line until it is written out */
    QmpReplyFn done;
    void *userdata;
} QmpPending;

struct Qmp {
    sd_event *event;
    const QmpOps *ops;
    void *userdata;
    QmpState state;
    int fd;
    sd_event_source *io;
    /* Connecting by path. */
    struct sockaddr_un addr;
    sd_event_source *retry;
    uint64_t retry_usec, deadline;
    /* What we read, up to the next newline. */
    char *in;
    size_t in_len;
    /* What waits to be written. */
    char *out;
    size_t out_len, out_cap;
    QmpPending pending[QMP_PENDING_MAX];
    size_t n_pending;
    uint64_t next_id;
    /* qmp_free() from a callback: freed once the dispatch returns. */
    unsigned dispatching;
    bool free_pending;
};

static void qmp_destroy(Qmp *q) {
    sd_event_source_disable_unref(q->io);
    sd_event_source_disable_unref(q->retry);
    safe_close(q->fd);
    for (size_t i = 0; i < q->n_pending; i++) {
        free(q->pending[i].text);
    }
    free(q->in);
    free(q->out);
    sd_event_unref(q->event);
    free(q);
}

void qmp_free(Qmp *q) {
    if (!q) {
        return;
    }
    if (q->dispatching > 0) {
        /* Nothing more is called; the memory goes once the dispatch ends. */
        q->free_pending = true;
        q->state = QMP_CLOSED;
        return;
    }
    qmp_destroy(q);
}

bool qmp_is_ready(const Qmp *q) {
    return q->state == QMP_READY;
}

/* Around every call out of here: whatever it frees waits until it returns. */
static void dispatch_begin(Qmp *q) {
    q->dispatching++;
}

/* False when the Qmp was freed meanwhile (it is gone now). */
static bool dispatch_end(Qmp *q) {
    if (--q->dispatching == 0 && q->free_pending) {
        qmp_destroy(q);
        return false;
    }
    return !q->free_pending;
}

/* The end: every waiting command is told, then the owner, once. */
static void qmp_close(Qmp *q, int r) {
    if (q->state == QMP_CLOSED) {
        return;
    }
    q->state = QMP_CLOSED;
    sd_event_source_set_enabled(q->io, SD_EVENT_OFF);
    sd_event_source_set_enabled(q->retry, SD_EVENT_OFF);
    dispatch_begin(q);
    while (q->n_pending > 0 && !q->free_pending) {
        QmpPending p = q->pending[--q->n_pending];
        free(p.text);
        if (p.done) {
            p.done(p.userdata, r, NULL, NULL);
        }
    }
    if (!q->free_pending && q->ops->closed) {
        q->ops->closed(q->userdata, r);
    }
    dispatch_end(q);
}

/* ---- writing ---------------------------------------------------------------- */

static int out_append(Qmp *q, const char *text) {
    size_t n = strlen(text);
    if (q->out_len + n + 1 > q->out_cap) {
        size_t cap = MAX(q->out_cap * 2, q->out_len + n + 1);
        char *p = realloc(q->out, cap);
        if (!p) {
            return -ENOMEM;
        }
        q->out = p;
        q->out_cap = cap;
    }
    memcpy(q->out + q->out_len, text, n);
    q->out_len += n;
    q->out[q->out_len++] = '\n';
    return 0;
}

static void update_events(Qmp *q) {
    if (q->state == QMP_CLOSED || !q->io) {
        return;
    }
    (void)sd_event_source_set_io_events(q->io, EPOLLIN | (q->out_len > 0 ? EPOLLOUT : 0));
}

static int out_flush(Qmp *q) {
    while (q->out_len > 0) {
        ssize_t n = send(q->fd, q->out, q->out_len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN) {
                break;
            }
            return -errno;
        }
        memmove(q->out, q->out + n, q->out_len - (size_t)n);
        q->out_len -= (size_t)n;
    }
    update_events(q);
    return 0;
}

/* The commands that waited for the capabilities go out now. */
static int send_held(Qmp *q) {
    for (size_t i = 0; i < q->n_pending; i++) {
        if (q->pending[i].text) {
            int r = out_append(q, q->pending[i].text);
            if (r < 0) {
                return r;
            }
            free(TAKE_PTR(q->pending[i].text));
        }
    }
    return out_flush(q);
}

static char *command_text(const char *command, json_t *args, uint64_t id) {
    _cleanup_(json_decrefp) json_t *o =
        json_pack("{s:s, s:I}", "execute", command, "id", (json_int_t)id);
    if (!o || (args && json_object_set(o, "arguments", args) < 0)) {
        return NULL;
    }
    return json_dumps(o, JSON_COMPACT);
}

int qmp_execute(Qmp *q, const char *command, json_t *args, QmpReplyFn done, void *userdata) {
    _cleanup_(json_decrefp) json_t *a = args;

    if (q->state == QMP_CLOSED) {
        return -ENOTCONN;
    }
    if (q->n_pending >= QMP_PENDING_MAX) {
        return -EBUSY;
    }
    uint64_t id = ++q->next_id;
    char *text = command_text(command, a, id);
    if (!text) {
        return -ENOMEM;
    }
    q->pending[q->n_pending++] =
        (QmpPending){.id = id, .text = text, .done = done, .userdata = userdata};
    if (q->state != QMP_READY) {
        return 0;
    }
    int r = send_held(q);
    if (r < 0) {
        q->n_pending--;
        free(q->pending[q->n_pending].text);
        return r;
    }
    return 0;
}

/* ---- reading ---------------------------------------------------------------- */

/* The reply to the pending command with that id: it is removed first, so
 * that its callback may send the next one. */
static int on_reply(Qmp *q, json_t *untrusted_id, json_t *ret, json_t *error) {
    if (!json_is_integer(untrusted_id)) {
        return -EPROTO;
    }
    json_int_t id = json_integer_value(untrusted_id);
    for (size_t i = 0; i < q->n_pending; i++) {
        QmpPending p = q->pending[i];
        if (p.text || (json_int_t)p.id != id) {
            continue;
        }
        memmove(&q->pending[i], &q->pending[i + 1], (q->n_pending - i - 1) * sizeof(p));
        q->n_pending--;
        if (!p.done) {
            return 0;
        }
        if (error) {
            json_t *desc = json_object_get(error, "desc");
            p.done(p.userdata, -EREMOTEIO, NULL,
                   json_is_string(desc) ? json_string_value(desc) : "(no description)");
        } else {
            p.done(p.userdata, 0, ret, NULL);
        }
        return 0;
    }
    return -EPROTO;
}

/* One line from qemu, in the order the protocol allows. */
static int on_line(Qmp *q, const char *line, size_t n) {
    json_error_t jerr;
    _cleanup_(json_decrefp) json_t *m = json_loadb(line, n, JSON_REJECT_DUPLICATES, &jerr);

    if (!json_is_object(m)) {
        return -EPROTO;
    }
    json_t *ret = json_object_get(m, "return"), *error = json_object_get(m, "error");
    json_t *event = json_object_get(m, "event");
    switch (q->state) {
    case QMP_GREETING: {
        if (!json_is_object(json_object_get(m, "QMP"))) {
            return -EPROTO;
        }
        q->state = QMP_CAPABILITIES;
        int r = out_append(q, "{\"execute\":\"qmp_capabilities\",\"id\":0}");
        return r < 0 ? r : out_flush(q);
    }
    case QMP_CAPABILITIES:
        if (event) {
            break;
        }
        if (!ret || error || json_integer_value(json_object_get(m, "id")) != 0) {
            return -EPROTO;
        }
        q->state = QMP_READY;
        if (q->ops->ready) {
            q->ops->ready(q->userdata);
        }
        return q->state == QMP_READY ? send_held(q) : 0;
    case QMP_READY:
        if (ret || (error && json_is_object(error))) {
            return on_reply(q, json_object_get(m, "id"), ret, error);
        }
        break;
    default:
        return 0;
    }
    if (!json_is_string(event)) {
        return -EPROTO;
    }
    if (q->ops->event) {
        json_t *data = json_object_get(m, "data");
        q->ops->event(q->userdata, json_string_value(event), json_is_object(data) ? data : NULL);
    }
    return 0;
}

/* Every whole line in the buffer; what follows the last newline stays. */
static int on_lines(Qmp *q) {
    size_t start = 0;
    int r = 0;

    for (char *nl; r >= 0 && q->state != QMP_CLOSED &&
                   (nl = memchr(q->in + start, '\n', q->in_len - start));) {
        size_t n = (size_t)(nl - (q->in + start));
        r = on_line(q, q->in + start, n);
        start += n + 1;
    }
    if (q->free_pending) {
        return 0;
    }
    memmove(q->in, q->in + start, q->in_len - start);
    q->in_len -= start;
    return r;
}

static int on_readable(Qmp *q) {
    if (!q->in) {
        q->in = malloc(QMP_LINE_MAX);
        if (!q->in) {
            return -ENOMEM;
        }
    }
    for (;;) {
        if (q->in_len >= QMP_LINE_MAX) {
            return -EMSGSIZE;
        }
        ssize_t n = recv(q->fd, q->in + q->in_len, QMP_LINE_MAX - q->in_len, MSG_DONTWAIT);
        if (n < 0) {
            return errno == EAGAIN ? 0 : errno == EINTR ? 1 : -errno;
        }
        if (n == 0) {
            return -ECONNRESET;
        }
        q->in_len += (size_t)n;
        dispatch_begin(q);
        int r = on_lines(q);
        if (!dispatch_end(q)) {
            return 0;
        }
        if (r < 0 || q->state == QMP_CLOSED) {
            return r;
        }
    }
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
    Qmp *q = userdata;
    int r = 0;

    if (revents & EPOLLOUT) {
        r = out_flush(q);
    }
    if (r >= 0 && (revents & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
        do {
            dispatch_begin(q);
            r = on_readable(q);
            if (!dispatch_end(q)) {
                return 0;
            }
        } while (r == 1);
    }
    if (r < 0) {
        qmp_close(q, r);
    }
    return 0;
}

static int qmp_alloc(sd_event *e, const QmpOps *ops, void *userdata, Qmp **ret) {
    Qmp *q = calloc(1, sizeof(*q));
    if (!q) {
        return -ENOMEM;
    }
    q->event = sd_event_ref(e);
    q->ops = ops;
    q->userdata = userdata;
    q->fd = -EBADF;
    *ret = q;
    return 0;
}

static int qmp_attach(Qmp *q, int fd) {
    q->fd = fd;
    q->state = QMP_GREETING;
    return sd_event_add_io(q->event, &q->io, fd, EPOLLIN, on_io, q);
}

int qmp_new(sd_event *e, int fd, const QmpOps *ops, void *userdata, Qmp **ret) {
    Qmp *q;
    int r = fd_nonblock(fd, true);
    if (r >= 0) {
        r = qmp_alloc(e, ops, userdata, &q);
    }
    if (r < 0) {
        safe_close(fd);
        return r;
    }
    r = qmp_attach(q, fd);
    if (r < 0) {
        qmp_destroy(q);
        return r;
    }
    *ret = q;
    return 0;
}

/* One connect: 1 when connected, 0 when nobody listens yet. */
static int try_connect(Qmp *q) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        return -errno;
    }
    if (connect(fd, (struct sockaddr *)&q->addr, sizeof(q->addr)) < 0) {
        int r = -errno;
        safe_close(fd);
        return r == -ENOENT || r == -ECONNREFUSED || r == -EAGAIN ? 0 : r;
    }
    int r = qmp_attach(q, fd);
    return r < 0 ? r : 1;
}

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
    Qmp *q = userdata;
    int r = try_connect(q);

    if (r == 0 && usec >= q->deadline) {
        r = -ETIMEDOUT;
    }
    if (r == 0) {
        r = sd_event_source_set_time(s, usec + q->retry_usec);
        if (r >= 0) {
            r = sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        }
    }
    if (r < 0) {
        qmp_close(q, r);
    }
    return 0;
}

int qmp_connect(sd_event *e, const char *path, uint64_t retry_usec, uint64_t deadline,
                const QmpOps *ops, void *userdata, Qmp **ret) {
    Qmp *q;

    if (strlen(path) >= sizeof(q->addr.sun_path)) {
        return -ENAMETOOLONG;
    }
    int r = qmp_alloc(e, ops, userdata, &q);
    if (r < 0) {
        return r;
    }
    q->addr.sun_family = AF_UNIX;
    strcpy(q->addr.sun_path, path);
    q->retry_usec = retry_usec;
    q->deadline = deadline;
    q->state = QMP_CONNECTING;
    r = try_connect(q);
    if (r == 0) {
        r = sd_event_add_time(e, &q->retry, CLOCK_MONOTONIC, now_usec(CLOCK_MONOTONIC) + retry_usec,
                              0, on_retry, q);
    }
    if (r < 0) {
        qmp_destroy(q);
        return r;
    }
    *ret = q;
    return 0;
}
