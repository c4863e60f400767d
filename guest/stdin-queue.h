/* A program's stdin as the client sends it: Data chunks queued until the
 * program reads them, written as its stdin (a pipe, or a pty's master)
 * becomes writable, and its end (StdinClose) passed on as EOF: closing
 * the pipe, or VEOF on a pty. The session acknowledges what the pump
 * consumed (StdinAck) and bounds what is queued (the stdin window).
 *
 * Chunks under STDIN_COPY_MAX bytes are copied into buffers of
 * STDIN_BUF_SIZE rather than kept as decoded frames: a frame costs some
 * hundred bytes besides its payload, and queued stdin must cost about
 * what the window allows, whatever the chunk sizes. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <systemd/sd-event.h>

#include "wire.h"

#define STDIN_COPY_MAX 1024u
#define STDIN_BUF_SIZE (16u * 1024u)

typedef struct StdinChunk StdinChunk;

typedef struct StdinQueue {
    int fd; /* the program's stdin; -EBADF once closed */
    bool pty;
    sd_event_source *src; /* fd writable: on while there is something to write */
    StdinChunk *head, *tail;
    size_t buffered; /* bytes queued */
    bool close_wanted, last_newline;
    unsigned veof_pending; /* VEOF characters still to write (pty) */
    bool veof_armed;
} StdinQueue;

/* An empty queue without an fd (nothing to write to). */
#define STDIN_QUEUE_NONE ((StdinQueue){.fd = -EBADF, .last_newline = true})

/* Takes the program's stdin over (non-blocking; a pty's master: pty). */
void stdin_queue_take(StdinQueue *q, int fd, bool pty);
/* Watches it with writable(userdata), off until stdin_queue_update()
 * turns it on. Nothing without an fd. */
int stdin_queue_watch(StdinQueue *q, sd_event *e, sd_event_io_handler_t writable, void *userdata);
/* Whether the program's stdin is still open. */
bool stdin_queue_is_open(const StdinQueue *q);
/* Queues a Data(stdin) message's bytes, taking its storage over when it
 * keeps the frame (m's pointers are then NULL). 0 or -ENOMEM. */
int stdin_queue_push(StdinQueue *q, Msg *m);
/* The end of stdin once what is queued is written. */
void stdin_queue_want_close(StdinQueue *q);
/* Writes what the program takes now. Returns the bytes consumed: written,
 * or dropped because the program closed its stdin (then the queue is
 * closed too, and *ret_error says why; else it is 0). */
size_t stdin_queue_pump(StdinQueue *q, int *ret_error);
/* Turns the fd's watch on while there is something to write. */
void stdin_queue_update(StdinQueue *q);
/* Drops what is queued. */
void stdin_queue_discard(StdinQueue *q);
/* Stops watching and closes the program's stdin (what is queued stays). */
void stdin_queue_close(StdinQueue *q);
