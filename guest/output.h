/* A program's stdout and stderr onto its session's connection as Data
 * frames, with backpressure: nothing is read while OUTPUT_PENDING_MAX
 * bytes wait to be sent, so memory stays flat whatever the output. With
 * nothing queued, the bytes go from the pipe to the socket by splice()
 * without passing through the agent; otherwise, and from a pty, they are
 * read straight into the connection's queue (copied once, by the
 * kernel). */
#pragma once

#include <stdbool.h>

#include "conn.h"

#define OUTPUT_PENDING_MAX (2u * WIRE_DATA_MAX) /* stop reading the program above */
#define OUTPUT_CHUNKS_PER_WAKE 4

/* Whether the connection takes more output now. */
bool output_wanted(const Conn *c);

/* Moves what fd (a pipe, or a pty's master: pty) holds onto c as Data of
 * stream: up to OUTPUT_CHUNKS_PER_WAKE chunks, while output_wanted().
 * Returns 0 when fd is to be watched again, 1 when it reached its end
 * (EOF, the pty's last slave gone, or a read error: *ret_error, else 0),
 * or a negative errno when the connection failed. */
int output_pump(Conn *c, int fd, WireStream stream, bool pty, int *ret_error);
