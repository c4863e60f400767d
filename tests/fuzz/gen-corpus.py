#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets: tests/fuzz/corpus/<target>/.

Run from anywhere; it replaces each target's seeds with the ones below. The
protobuf encoding is done by hand (a few lines) so that seeds can also be
what no encoder would produce: bad values, unknown fields, non-minimal
varints, truncations.

    tests/fuzz/gen-corpus.py
"""
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


# ---- protobuf wire format ---------------------------------------------------

def varint(n):
    n &= (1 << 64) - 1  # negative int32/enum values are 10-byte varints
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(field, wire_type):
    return varint(field << 3 | wire_type)


def vi(field, n):
    """A varint field."""
    return key(field, 0) + varint(n)


def ld(field, data):
    """A length-delimited field (bytes, string, sub-message)."""
    if isinstance(data, str):
        data = data.encode()
    return key(field, 2) + varint(len(data)) + data


def cat(*parts):
    return b"".join(parts)


# ---- messages (field numbers from proto/qubes-lite.proto) -------------------

def hello(major=1, minor=0, software="qubes-lite-test 0.1", secret=None):
    return cat(vi(1, major) if major else b"", vi(2, minor) if minor else b"",
               ld(3, software) if software else b"", ld(4, secret) if secret is not None else b"")


def pty(rows=24, cols=80, term="xterm-256color"):
    return cat(vi(1, rows), vi(2, cols), ld(3, term) if term else b"")


def exec_(argv=(b"true",), env=(), cwd=b"", user="", pty_=None, wayland=False, window=0,
          stream_key=None):
    return cat(*(ld(1, a) for a in argv), *(ld(2, e) for e in env),
               ld(3, cwd) if cwd else b"", ld(4, user) if user else b"",
               ld(5, pty_) if pty_ is not None else b"",
               vi(6, 1) if wayland else b"", vi(7, window) if window else b"",
               ld(8, stream_key) if stream_key is not None else b"")


KEY = bytes(range(0xA0, 0xB0))  # a stream key (16 bytes)


def data(stream=1, payload=b"hello\n"):
    return cat(vi(1, stream) if stream else b"", ld(2, payload))


def exited_code(code):
    return vi(1, code)


def exited_signal(signo, core=False):
    return ld(2, cat(vi(1, signo), vi(2, 1) if core else b""))


def exited_errno(e):
    return vi(3, e)


def error(code=1, message="malformed frame"):
    return cat(vi(1, code) if code else b"", ld(2, message) if message else b"")


def host_status(vm="banking", running=True, leases=1, uptime=1000, idle=0, state=None,
                sessions=0, timeout=0):
    if state is None:
        state = 2 if running else 0
    return cat(ld(1, vm) if vm else b"", vi(2, 1) if running else b"",
               vi(3, leases) if leases else b"", vi(4, uptime) if uptime else b"",
               vi(5, idle) if idle else b"", vi(6, state) if state else b"",
               vi(7, sessions) if sessions else b"", vi(8, timeout) if timeout else b"")


# Envelope fields.
HELLO, EXEC, STARTED, DATA, STDIN_CLOSE, STDIN_ACK, RESIZE, SIGNAL, EXITED, EXIT_ACK, \
    ERROR, STATUS_REQUEST, STATUS, PING, PONG, SHUTDOWN, SHUTDOWN_REPLY, CONNECT, \
    CONNECTED, HOST_STATUS_REQUEST, HOST_STATUS, HOST_START, HOST_STOP, HOST_STOPPED, \
    CONSOLE_ATTACH, CONSOLE_ATTACHED, ATTACH, ATTACHED = range(1, 29)


def env(field, body=b""):
    return ld(field, body)


def frame(body):
    return struct.pack(">I", len(body)) + body


# ---- seeds per target --------------------------------------------------------

EXEC_SEEDS = {
    "true": exec_(),
    "ls-args": exec_(argv=(b"ls", b"-l", b"/tmp")),
    "empty-arg": exec_(argv=(b"printf", b"")),
    "env": exec_(env=(b"LANG=C.UTF-8", b"EMPTY=", b"A==b")),
    "cwd": exec_(cwd=b"/home/user"),
    "user": exec_(user="user"),
    "uid": exec_(user="1000"),
    "pty": exec_(argv=(b"bash",), pty_=pty()),
    "pty-no-term": exec_(argv=(b"bash",), pty_=pty(term="")),
    "wayland": exec_(argv=(b"firefox",), wayland=True, window=65536),
    "everything": exec_(argv=(b"vim", b"notes.txt"), env=(b"EDITOR=vim",), cwd=b"/",
                        user="user", pty_=pty(50, 132, "screen-256color"), wayland=True,
                        window=1 << 20),
    "utf8-args": exec_(argv=("échelle".encode(), "日本".encode())),
    "no-argv": exec_(argv=()),
    "empty-argv0": exec_(argv=(b"",)),
    "nul-arg": exec_(argv=(b"sh", b"a\0b")),
    "env-no-eq": exec_(env=(b"NOEQUALS",)),
    "env-empty-key": exec_(env=(b"=x",)),
    "cwd-relative": exec_(cwd=b"tmp"),
    "cwd-nul": exec_(cwd=b"/tmp\0x"),
    "user-dash": exec_(user="-root"),
    "user-long": exec_(user="u" * 33),
    "user-space": exec_(user="a b"),
    "pty-rows-0": exec_(pty_=pty(rows=0)),
    "pty-cols-big": exec_(pty_=pty(cols=65536)),
    "pty-bad-term": exec_(pty_=pty(term="xterm;rm")),
    "window-big": exec_(window=(16 << 20) + 1),
    "many-args": exec_(argv=tuple(b"a%d" % i for i in range(64))),
    "unknown-field": cat(exec_(), vi(99, 7)),
    "dup-cwd": cat(exec_(cwd=b"/a"), ld(3, b"/b")),
    "stream-key": exec_(argv=(b"cat",), stream_key=KEY),
    "stream-key-everything": exec_(argv=(b"tar", b"xf", b"-"), env=(b"LANG=C",), cwd=b"/tmp",
                                   user="user", window=65536, stream_key=KEY),
    "stream-key-empty": exec_(stream_key=b""),
    "stream-key-15": exec_(stream_key=KEY[:15]),
    "stream-key-17": exec_(stream_key=KEY + b"\0"),
    "stream-key-pty": exec_(argv=(b"bash",), pty_=pty(), stream_key=KEY),
    "stream-key-empty-pty": exec_(argv=(b"bash",), pty_=pty(), stream_key=b""),
    "dup-stream-key": cat(exec_(stream_key=KEY[:15]), ld(8, KEY)),
}

PTY_SEEDS = {
    "vt100": pty(24, 80, "vt100"),
    "xterm": pty(),
    "big": pty(65535, 65535, "x" * 64),
    "no-term": pty(term=""),
    "rows-0": pty(rows=0),
    "cols-0": pty(cols=0),
    "rows-65536": pty(rows=65536),
    "term-long": pty(term="x" * 65),
    "term-space": pty(term="xterm 256"),
    "term-esc": pty(term="x\x1b"),
    "term-dot-plus": pty(term="rxvt.unicode+x_y-z"),
    "empty": b"",
}

HELLO_SEEDS = {
    "v1": hello(),
    "v1-minor": hello(1, 3),
    "v2": hello(2, 0, "future"),
    "no-software": hello(software=""),
    "empty": b"",
    "software-256": hello(software="s" * 256),
    "software-257": hello(software="s" * 257),
    "software-ctrl": hello(software="agent\r\n"),
    "software-utf8": hello(software="agent ✓"),
    "big-version": hello(0xFFFFFFFF, 0xFFFFFFFF),
    "nonminimal-varint": cat(key(1, 0), b"\x81\x80\x80\x00"),
    "secret": hello(1, 2, "qubes-lite-host-agent 0.1", bytes(range(32))),
    "secret-short": hello(1, 2, secret=bytes(31)),
    "secret-long": hello(1, 2, secret=bytes(33)),
}

DATA_SEEDS = {
    "stdout": data(1, b"hello\n"),
    "stdin": data(0, b"input"),
    "stderr": data(2, b"error: nope\n"),
    "binary": data(1, bytes(range(256))),
    "one-byte": data(1, b"x"),
    "4k": data(1, b"a" * 4096),
    "empty": data(1, b""),
    "stream-3": data(3, b"x"),
    "stream-neg": data(-1, b"x"),
    "no-data": vi(1, 1),
    "dup-data": cat(data(1, b"first"), ld(2, b"second")),
}

EXITED_SEEDS = {
    "code-0": exited_code(0),
    "code-1": exited_code(1),
    "code-255": exited_code(255),
    "code-256": exited_code(256),
    "signal-9": exited_signal(9),
    "signal-11-core": exited_signal(11, True),
    "signal-0": exited_signal(0),
    "signal-65": exited_signal(65),
    "signal-empty": ld(2, b""),
    "errno-2": exited_errno(2),
    "errno-0": exited_errno(0),
    "errno-4096": exited_errno(4096),
    "none": b"",
    "code-then-signal": cat(exited_code(3), exited_signal(15)),
    "signal-then-errno": cat(exited_signal(15), exited_errno(13)),
}

ERROR_SEEDS = {
    "protocol": error(1, "unexpected message"),
    "version": error(2, "version 2 is not supported"),
    "denied": error(4, "peer not allowed"),
    "no-message": error(8, ""),
    "unspecified": error(0, "x"),
    "future-code": error(1000, "new"),
    "negative-code": error(-5, "neg"),
    "newline": error(5, "two\nlines"),
    "utf8": error(5, "café"),
    "long": error(7, "m" * 4096),
    "too-long": error(7, "m" * 4097),
    "empty": b"",
}

HOST_STATUS_SEEDS = {
    "running": host_status(),
    "stopped": host_status(running=False, leases=0, uptime=0),
    "idle": host_status(idle=123456, uptime=1 << 40),
    "no-vm": host_status(vm=""),
    "vm-64": host_status(vm="v" * 64),
    "vm-65": host_status(vm="v" * 65),
    "vm-esc": host_status(vm="vm\x1b[31m"),
    "starting": host_status(running=False, state=1),
    "stopping": host_status(running=False, state=3),
    "state-4": host_status(state=4),
    "sessions": host_status(sessions=3, timeout=60, idle=1000),
    "empty": b"",
}

ALL_MESSAGES = {
    "hello": env(HELLO, hello()),
    "exec": env(EXEC, exec_(argv=(b"ls", b"-l"), env=(b"A=1",), cwd=b"/tmp")),
    "exec-pty": env(EXEC, exec_(argv=(b"bash",), pty_=pty(), window=4096)),
    "started": env(STARTED, vi(1, 4242)),
    "data": env(DATA, data()),
    "stdin-close": env(STDIN_CLOSE),
    "stdin-ack": env(STDIN_ACK, vi(1, 4096)),
    "resize": env(RESIZE, cat(vi(1, 50), vi(2, 132))),
    "signal": env(SIGNAL, vi(1, 2)),
    "exited": env(EXITED, exited_code(0)),
    "exited-signal": env(EXITED, exited_signal(9)),
    "exit-ack": env(EXIT_ACK),
    "error": env(ERROR, error(4, "peer not allowed")),
    "status-request": env(STATUS_REQUEST),
    "status": env(STATUS, cat(vi(1, 5000), vi(2, 1), vi(3, 10), vi(4, 600))),
    "ping": env(PING, vi(1, 0x0123456789ABCDEF)),
    "pong": env(PONG, vi(1, 1)),
    "shutdown": env(SHUTDOWN),
    "shutdown-reply": env(SHUTDOWN_REPLY),
    "connect": env(CONNECT, vi(1, 1)),
    "connected": env(CONNECTED, cat(vi(1, 1500000), vi(2, 20000))),
    "host-status-request": env(HOST_STATUS_REQUEST),
    "host-status": env(HOST_STATUS, host_status()),
    "host-start": env(HOST_START),
    "host-stop": env(HOST_STOP),
    "host-stopped": env(HOST_STOPPED, cat(vi(1, 2), vi(2, 1200))),
    "host-stopped-bad": env(HOST_STOPPED, vi(1, 9)),
    "console-attach": env(CONSOLE_ATTACH, cat(vi(1, 24), vi(2, 80))),
    "console-attach-half": env(CONSOLE_ATTACH, vi(1, 24)),
    "console-attached": env(CONSOLE_ATTACHED, vi(1, 65536)),
    "console-attached-big": env(CONSOLE_ATTACHED, vi(1, (1 << 20) + 1)),
    "exec-stream": env(EXEC, exec_(argv=(b"cat",), stream_key=KEY)),
    "exec-stream-pty": env(EXEC, exec_(argv=(b"bash",), pty_=pty(), stream_key=KEY)),
    "exec-stream-key-short": env(EXEC, exec_(stream_key=KEY[:8])),
    "attach": env(ATTACH, ld(1, KEY)),
    "attach-empty": env(ATTACH),
    "attach-key-15": env(ATTACH, ld(1, KEY[:15])),
    "attach-key-17": env(ATTACH, ld(1, KEY + b"x")),
    "attach-dup-key": env(ATTACH, cat(ld(1, KEY[:3]), ld(1, KEY))),
    "attached": env(ATTACHED),
    "attached-unknown-field": env(ATTACHED, vi(5, 1)),
    "connect-streams": env(CONNECT, cat(vi(1, 1), vi(2, 1))),
    "connect-streams-0": env(CONNECT, vi(2, 0)),
    "connect-streams-2": env(CONNECT, vi(2, 2)),
    "connect-streams-max": env(CONNECT, vi(2, 0xFFFFFFFF)),
}


def frame_seeds():
    seeds = {}
    # Byte 0 picks the chunk size the stream is fed in (value + 1).
    for name, body in ALL_MESSAGES.items():
        seeds["one-" + name] = b"\xff" + frame(body)
    session = cat(frame(env(HELLO, hello())),
                  frame(env(EXEC, exec_(argv=(b"cat",), window=65536))),
                  frame(env(DATA, data(0, b"input\n"))),
                  frame(env(STDIN_CLOSE)),
                  frame(env(EXIT_ACK)))
    seeds["session-bytewise"] = b"\x00" + session
    seeds["session-chunks-7"] = b"\x06" + session
    seeds["session-whole"] = b"\xff" + session
    reply = cat(frame(env(HELLO, hello())), frame(env(STARTED, vi(1, 99))),
                frame(env(DATA, data(1, b"out"))), frame(env(DATA, data(2, b"err"))),
                frame(env(STDIN_ACK, vi(1, 6))), frame(env(EXITED, exited_code(0))))
    seeds["reply-chunks-3"] = b"\x02" + reply
    # A stream session: the Exec's connection carries stderr and control
    # messages only; the stream connection Attach, then plain bytes, which
    # a reader must not take for frames.
    control = cat(frame(env(HELLO, hello())),
                  frame(env(EXEC, exec_(argv=(b"cat",), stream_key=KEY))),
                  frame(env(SIGNAL, vi(1, 15))),
                  frame(env(EXIT_ACK)))
    seeds["stream-control-chunks-5"] = b"\x04" + control
    stream = cat(frame(env(HELLO, hello())), frame(env(ATTACH, ld(1, KEY))))
    seeds["stream-attach"] = b"\xff" + stream
    seeds["stream-attach-then-bytes"] = b"\x02" + stream + b"raw stdin, not a frame\n"
    seeds["stream-attach-twice"] = b"\x00" + stream + frame(env(ATTACH, ld(1, KEY)))
    seeds["stream-reply"] = b"\x03" + cat(frame(env(HELLO, hello())), frame(env(ATTACHED)),
                                           b"\x00\x00\x00\x05plain")
    seeds["connect-streams"] = b"\x01" + cat(frame(env(HELLO, hello())),
                                              frame(env(CONNECT, vi(2, 1))),
                                              frame(env(CONNECTED, vi(2, 20000))))
    seeds["empty-stream"] = b"\x00"
    seeds["half-header"] = b"\x00\x00\x00"
    seeds["empty-body"] = b"\x01" + frame(b"")
    seeds["over-cap"] = b"\x03" + struct.pack(">I", (1 << 20) + 1)
    seeds["at-cap-truncated"] = b"\x03" + struct.pack(">I", 1 << 20) + b"\x0a"
    seeds["truncated-body"] = b"\x00" + frame(env(PING, vi(1, 5)))[:-2]
    seeds["garbage-body"] = b"\x10" + frame(b"\xff\xff\xff")
    seeds["unknown-field"] = b"\x10" + frame(vi(99, 1))
    seeds["invalid-then-valid"] = b"\x05" + frame(env(SIGNAL, vi(1, 0))) + frame(env(PING))
    seeds["hello-then-junk"] = b"\x08" + frame(env(HELLO, hello())) + b"junk"
    seeds["budget"] = b"\xff" + frame(env(EXEC, b"\x0a\x00" * 3000))
    return seeds


# ---- vm-switch control messages (switch/net/ctl.h) -------------------------------
# First byte: bit 0 = sent by a child, bits 1-2 = number of fds.

def ctl(sender_child, n_fds, type_, body):
    return bytes([(1 if sender_child else 0) | n_fds << 1]) + struct.pack("<II", type_, 0) + body


CTL_DROP_MAX = 12
CTL_MAX_PORTS = 64
POLICY_DROP_MAX = 6        # switch/net/policy.h: the policy's drop reasons
MAC = bytes([0x52, 0x54, 0, 0x12, 0x34, 0x56])


def pong(seq=1, state=1, counters=(10, 640, 9, 576), drops=(), full=(), refused=()):
    """CtlPong: seq, state, counters, drops, ring_full_to[port],
    refused_from[port][reason]."""
    d = list(drops) + [0] * (CTL_DROP_MAX - len(drops))
    f = list(full) + [0] * (CTL_MAX_PORTS - len(full))
    n = CTL_MAX_PORTS * POLICY_DROP_MAX
    r = list(refused) + [0] * (n - len(refused))
    return struct.pack("<QII", seq, state, 0) + struct.pack("<4Q", *counters) + \
        struct.pack(f"<{CTL_DROP_MAX}Q", *d) + struct.pack(f"<{CTL_MAX_PORTS}Q", *f) + \
        struct.pack(f"<{n}Q", *r)


CTL_SEEDS = {
    "pong": ctl(True, 0, 65, pong()),
    "pong-drops": ctl(True, 0, 65, pong(seq=2**64 - 1, state=2, drops=range(1, 13),
                                        full=[7] * 64, refused=range(1, 65))),
    "pong-bad-state": ctl(True, 0, 65, pong(state=3)),
    "pong-short": ctl(True, 0, 65, pong()[:-1]),
    "pong-with-fd": ctl(True, 1, 65, pong()),
    "buffer-ready": ctl(True, 0, 64, struct.pack("<IIII", 3, 2, 1, 0)),
    "buffer-ready-bad-port": ctl(True, 0, 64, struct.pack("<IIII", 64, 2, 1, 0)),
    "child-sends-put": ctl(True, 3, 6, struct.pack("<IIII", 3, 2, 1, 0)),
    "setup": ctl(False, 1, 1, struct.pack("<II", 0, 1) + MAC + bytes([1, 0]) +
                 b"router".ljust(16, b"\0")),
    "setup-bad-name": ctl(False, 1, 1, struct.pack("<II", 0, 1) + MAC + bytes([0, 0]) +
                          b"Router".ljust(16, b"\0")),
    "peer": ctl(False, 0, 2, struct.pack("<I", 5) + MAC + bytes([0, 0])),
    "peer-down": ctl(False, 0, 4, struct.pack("<II", 5, 3)),
    "get-buffer": ctl(False, 3, 5, struct.pack("<IIII", 1, 1, 1, 0)),
    "ping": ctl(False, 0, 7, struct.pack("<Q", 42)),
    "header-only": ctl(True, 0, 65, b""),
}


TARGETS = {
    "fuzz-frame": frame_seeds(),
    "fuzz-exec": EXEC_SEEDS,
    "fuzz-pty": PTY_SEEDS,
    "fuzz-hello": HELLO_SEEDS,
    "fuzz-data": DATA_SEEDS,
    "fuzz-exited": EXITED_SEEDS,
    "fuzz-error": ERROR_SEEDS,
    "fuzz-host-status": HOST_STATUS_SEEDS,
    "fuzz-ctl": CTL_SEEDS,
}


def main():
    for target, seeds in TARGETS.items():
        d = os.path.join(CORPUS, target)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        for name, blob in seeds.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(blob)
        print(f"{target}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()
