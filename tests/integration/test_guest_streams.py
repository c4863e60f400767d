"""Guest agent: stream connections. An Exec with a stream_key on one
connection (A) and an Attach with the same key on another (B) of the same
peer pair up in either order; B becomes the program's stdin and stdout,
while stderr and the control messages stay on A.

The test plays the client over unix sockets. The parked and waiting sides
give up after 10 s: only the few tests that need that wait for it."""
import errno
import hashlib
import os
import select
import signal
import socket
import threading
import time

import pytest

from qltest import qlwire
from qltest.procs import pid_alive, run_as_nobody, wait_for
from qltest.qlwire import pb

KEY_SIZE = 16
# How long one side of a pair waits for the other (the agent's limit is 10 s):
# waits for that outcome are bounded by this, generously.
PAIR_WAIT_BOUND = 40


def new_key():
    return os.urandom(KEY_SIZE)


def status(g):
    """A Status round trip on a fresh connection. The agent serves one event
    at a time, so frames sent on other connections before this are seen
    (on this machine's loopback) by the time the answer comes: the tests use
    it to order their connections."""
    c = g.connect()
    try:
        return c.status()
    finally:
        c.close()


def attach(g, key):
    """A stream connection: Hello, then Attach (Attached not read)."""
    b = g.connect()
    b.send("attach", key=key)
    return b


def expect_attached(b, timeout=30):
    name, msg = b.recv(timeout=timeout)
    assert name == "attached", (name, msg)


def read_exactly(b, n, timeout=60):
    """n raw bytes of the stream connection (after Attached)."""
    deadline = time.monotonic() + timeout
    out = bytearray(b.buf)
    b.buf = b""
    while len(out) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"only {len(out)} of {n} bytes: {bytes(out[:200])!r}")
        if select.select([b.sock], [], [], left)[0]:
            chunk = b.sock.recv(1 << 20)
            if not chunk:
                raise qlwire.Closed(bytes(out))
            out += chunk
    b.buf = bytes(out[n:])
    return bytes(out[:n])


def read_to_eof(b, timeout=60, sink=None):
    """The raw bytes left on the stream connection until EOF (or their
    sha256 when sink is a hash object)."""
    deadline = time.monotonic() + timeout
    out = bytearray()

    def take(chunk):
        if sink is not None:
            sink.update(chunk)
        else:
            out.extend(chunk)
    if b.buf:
        take(b.buf)
        b.buf = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the stream connection did not reach EOF")
        if select.select([b.sock], [], [], left)[0]:
            try:
                chunk = b.sock.recv(1 << 20)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return bytes(out)
            take(chunk)


def pair(g, argv, attach_first, **fields):
    """Starts argv as a stream session: Exec on A and Attach on B in the
    order asked, the first one seen by the agent before the second is sent.
    Returns (A, B) with Attached and Started read."""
    key = new_key()
    argv = [x.encode() if isinstance(x, str) else x for x in argv]
    if attach_first:
        b = attach(g, key)
        status(g)
        a = g.start(argv, stream_key=key, **fields)
    else:
        a = g.start(argv, stream_key=key, **fields)
        status(g)
        b = attach(g, key)
    expect_attached(b)
    name, msg = a.recv(timeout=30)
    assert name == "started" and msg.pid > 0, (name, msg)
    a.pid = msg.pid
    return a, b


def finish(a, timeout=60):
    """Exited on A (stdout never comes there), ExitAck, A closed."""
    out, err, ex, others = a.recv_until_exit(timeout=timeout)
    assert out == b"" and others == [], (out, others)
    a.send("exit_ack")
    assert a.expect_closed(timeout=timeout) == []
    return err, ex


# ---- pairing and data ------------------------------------------------------------

@pytest.mark.parametrize("attach_first", [False, True], ids=["exec-first", "attach-first"])
def test_stream_session(guest_agent, attach_first):
    g = guest_agent()
    a, b = pair(g, ["sh", "-c", 'echo out; echo err >&2; read x; echo "in:$x"; exit 3'],
                attach_first)
    b.sock.sendall(b"line\n")
    b.sock.shutdown(socket.SHUT_WR)
    assert read_to_eof(b) == b"out\nin:line\n"
    err, ex = finish(a)
    assert err == b"err\n"
    assert ex.WhichOneof("result") == "code" and ex.code == 3


def test_8mib_both_ways_through_cat(guest_agent):
    g = guest_agent()
    a, b = pair(g, ["cat"], attach_first=False)
    total = 8 << 20
    block = os.urandom(1 << 20)
    sent = hashlib.sha256()
    errors = []

    def writer():
        try:
            for i in range(total // len(block)):
                chunk = block[i:] + block[:i]
                sent.update(chunk)
                b.sock.sendall(chunk)
            b.sock.shutdown(socket.SHUT_WR)
        except BaseException as e:    # noqa: B902 - reported below
            errors.append(e)
    b.sock.settimeout(120)
    t = threading.Thread(target=writer)
    t.start()
    got = hashlib.sha256()
    size = [0]

    class Counting:
        def update(self, chunk):
            size[0] += len(chunk)
            got.update(chunk)
    try:
        read_to_eof(b, timeout=300, sink=Counting())
    finally:
        t.join(timeout=300)
    assert not errors, errors
    assert size[0] == total
    assert got.hexdigest() == sent.hexdigest()
    err, ex = finish(a)
    assert err == b"" and ex.WhichOneof("result") == "code" and ex.code == 0


def test_program_holds_one_blocking_socket_as_stdin_and_stdout(guest_agent):
    g = guest_agent()
    script = ("import fcntl, os, stat\n"
              "s0, s1, s2 = os.fstat(0), os.fstat(1), os.fstat(2)\n"
              "print(stat.S_ISSOCK(s0.st_mode), stat.S_ISSOCK(s1.st_mode),\n"
              "      (s0.st_dev, s0.st_ino) == (s1.st_dev, s1.st_ino),\n"
              "      bool(fcntl.fcntl(0, fcntl.F_GETFL) & os.O_NONBLOCK),\n"
              "      (s2.st_dev, s2.st_ino) == (s1.st_dev, s1.st_ino), flush=True)\n")
    a, b = pair(g, ["python3", "-c", script], attach_first=True)
    b.sock.shutdown(socket.SHUT_WR)
    assert read_to_eof(b) == b"True True True False False\n"
    err, ex = finish(a)
    assert (err, ex.code) == (b"", 0)


def test_stat_of_stdin_and_stdout_is_socket(guest_agent):
    g = guest_agent()
    a, b = pair(g, ["stat", "-L", "-c", "%F", "/proc/self/fd/0", "/proc/self/fd/1"],
                attach_first=False)
    assert read_to_eof(b) == b"socket\nsocket\n"
    err, ex = finish(a)
    assert (err, ex.code) == (b"", 0)


@pytest.mark.parametrize("attach_first", [False, True], ids=["exec-first", "attach-first"])
def test_stdin_sent_right_after_attach_reaches_the_program(guest_agent, attach_first):
    """The client sends Attach, its stdin and its half-close at once, before
    Attached: the agent reads no further than Attach, so all of it is the
    program's, and the half-close is no hang-up."""
    g = guest_agent()
    key = new_key()
    early = b"early bytes\n" + bytes(range(256)) + qlwire.encode("ping", nonce=1)

    def send_attach():
        b = g.connect()
        b.send_raw(qlwire.encode("attach", key=key) + early)
        b.sock.shutdown(socket.SHUT_WR)
        return b
    if attach_first:
        b = send_attach()
        status(g)
        time.sleep(0.3)                 # let the agent see the half-close while B is parked
        a = g.start(["cat"], stream_key=key)
    else:
        a = g.start(["cat"], stream_key=key)
        status(g)
        b = send_attach()
    expect_attached(b)
    assert a.recv()[0] == "started"
    assert read_to_eof(b) == early
    err, ex = finish(a)
    assert (err, ex.code) == (b"", 0)


def test_stderr_stays_framed_on_the_exec_connection(guest_agent):
    g = guest_agent()
    script = "head -c 300000 /dev/zero | tr '\\0' e >&2; printf out"
    a, b = pair(g, ["sh", "-c", script], attach_first=True)
    b.sock.shutdown(socket.SHUT_WR)
    err, ex = finish(a)
    assert err == b"e" * 300000
    assert ex.code == 0
    assert read_to_eof(b) == b"out"


def test_exited_waits_for_stderr_not_for_stdout(guest_agent):
    """A background child keeps stdin and stdout (the stream connection) but
    not stderr: Exited comes once the shell is gone, and the child still
    answers on the stream connection afterwards."""
    g = guest_agent()
    script = 'exec 3<&0; (read x <&3; echo "got $x") 2>/dev/null & echo started; exit 5'
    a, b = pair(g, ["sh", "-c", script], attach_first=False)
    assert read_exactly(b, len(b"started\n")) == b"started\n"
    out, err, ex, others = a.recv_until_exit(timeout=30)
    assert (out, err, others) == (b"", b"", [])
    assert ex.WhichOneof("result") == "code" and ex.code == 5
    b.sock.sendall(b"late\n")
    b.sock.shutdown(socket.SHUT_WR)
    assert read_to_eof(b) == b"got late\n"
    a.send("exit_ack")
    assert a.expect_closed() == []


def test_exited_waits_for_stderr_held_by_a_child(guest_agent, tmp_path):
    """The other way round: a child that holds stderr (and not stdout) keeps
    Exited back until it ends."""
    g = guest_agent()
    gate = tmp_path / "gate"
    script = (f"(while [ ! -e {gate} ]; do sleep 0.05; done; echo bye >&2) >/dev/null <&- & "
              "echo parent; exit 0")
    a, b = pair(g, ["sh", "-c", script], attach_first=True)
    b.sock.shutdown(socket.SHUT_WR)
    assert read_to_eof(b) == b"parent\n"     # the child does not hold the stream connection
    a.sock.settimeout(30)
    # Exited must not come while the child holds stderr.
    r, _, _ = select.select([a.sock], [], [], 1.0)
    assert not r and a.buf == b"", "a frame came while stderr was still open"
    gate.write_text("")
    err, ex = finish(a)
    assert err == b"bye\n" and ex.code == 0


def test_signal_on_a_stream_session(guest_agent):
    g = guest_agent()
    a, b = pair(g, ["sleep", "1000"], attach_first=True)
    a.send("signal", signo=signal.SIGTERM)
    err, ex = finish(a)
    assert ex.WhichOneof("result") == "signal" and ex.signal.signo == signal.SIGTERM
    assert read_to_eof(b) == b""


def test_signal_sent_while_waiting_for_attach_is_handled_after_start(guest_agent):
    """A waits for its stream connection unread: a Signal sent meanwhile is
    handled once the program runs."""
    g = guest_agent()
    key = new_key()
    a = g.start(["sleep", "1000"], stream_key=key)
    a.send("signal", signo=signal.SIGINT)
    status(g)
    b = attach(g, key)
    expect_attached(b)
    assert a.recv()[0] == "started"
    err, ex = finish(a)
    assert ex.WhichOneof("result") == "signal" and ex.signal.signo == signal.SIGINT
    assert read_to_eof(b) == b""


@pytest.mark.parametrize("attach_first", [False, True], ids=["exec-first", "attach-first"])
def test_start_failure(guest_agent, attach_first):
    g = guest_agent()
    key = new_key()
    if attach_first:
        b = attach(g, key)
        status(g)
        a = g.start(["no-such-command-ql"], stream_key=key)
    else:
        a = g.start(["no-such-command-ql"], stream_key=key)
        status(g)
        b = attach(g, key)
    out, err, ex, others = a.recv_until_exit(timeout=30)
    assert others == []                   # no Started for a program that never ran
    assert out == b""
    assert err == b"qubes-lite: no-such-command-ql: command not found\n"
    assert ex.WhichOneof("result") == "start_errno" and ex.start_errno == errno.ENOENT
    a.send("exit_ack")
    assert a.expect_closed() == []
    # B: Attached then EOF, or just EOF; never any bytes.
    frames = b.expect_closed(timeout=30)
    assert [n for n, _ in frames] in ([], ["attached"]), frames
    assert b.buf == b""


def test_not_executable_start_failure(guest_agent, tmp_path):
    g = guest_agent()
    p = tmp_path / "notexec"
    p.write_text("#!/bin/sh\necho no\n")
    p.chmod(0o644)
    key = new_key()
    a = g.start([str(p)], stream_key=key)
    status(g)
    b = attach(g, key)
    out, err, ex, others = a.recv_until_exit(timeout=30)
    assert err == f"qubes-lite: {p}: Permission denied\n".encode()
    assert ex.WhichOneof("result") == "start_errno" and ex.start_errno == errno.EACCES
    a.send("exit_ack")
    frames = b.expect_closed(timeout=30)
    assert [n for n, _ in frames] in ([], ["attached"]), frames


# ---- what the exec connection may not carry -------------------------------------

@pytest.mark.parametrize("what", ["data", "stdin_close"])
def test_stdin_on_the_exec_connection_is_a_protocol_error(guest_agent, what):
    g = guest_agent("--kill-grace", "1")
    a, b = pair(g, ["cat"], attach_first=False)
    if what == "data":
        a.send("data", stream=pb.STREAM_STDIN, data=b"x")
    else:
        a.send("stdin_close")
    a.expect_error(pb.ERROR_PROTOCOL)
    # The session ended: the program is gone, so is its hold on B.
    wait_for(lambda: not pid_alive(a.pid), timeout=30, what="the program gone")
    assert read_to_eof(b, timeout=30) == b""
    wait_for(lambda: status(g).live_sessions == 0, timeout=30, what="no live session")


INVALID_EXECS = {
    "pty-and-key": dict(stream_key=b"k" * KEY_SIZE, pty={"rows": 24, "cols": 80}),
    "key-15": dict(stream_key=b"k" * (KEY_SIZE - 1)),
    "key-17": dict(stream_key=b"k" * (KEY_SIZE + 1)),
}


@pytest.mark.parametrize("case", sorted(INVALID_EXECS))
def test_invalid_stream_exec(guest_agent, tmp_path, case):
    g = guest_agent()
    marker = tmp_path / "ran"
    a = g.start(["touch", str(marker)], **INVALID_EXECS[case])
    a.expect_error(pb.ERROR_INVALID)
    assert not marker.exists()


@pytest.mark.parametrize("size", [0, KEY_SIZE - 1, KEY_SIZE + 1])
def test_attach_with_a_bad_key_is_invalid(guest_agent, size):
    g = guest_agent()
    b = g.connect()
    b.send("attach", key=b"k" * size)
    b.expect_error(pb.ERROR_INVALID)


def test_attach_before_hello(guest_agent):
    g = guest_agent()
    b = g.connect(hello=False)
    assert b.recv()[0] == "hello"
    b.send("attach", key=new_key())
    b.expect_error(pb.ERROR_PROTOCOL)


@pytest.mark.parametrize("stream", [False, True], ids=["relay", "stream"])
def test_attach_on_a_running_session(guest_agent, stream):
    g = guest_agent("--kill-grace", "1")
    if stream:
        a, b = pair(g, ["sleep", "1000"], attach_first=False)
    else:
        a = g.start(["sleep", "1000"])
        assert a.recv()[0] == "started"
    a.send("attach", key=new_key())
    a.expect_error(pb.ERROR_PROTOCOL)


def test_attach_after_exit(guest_agent):
    g = guest_agent()
    a = g.start(["true"])
    a.send("stdin_close")
    out, err, ex, _ = a.recv_until_exit()
    a.send("attach", key=new_key())
    a.expect_error(pb.ERROR_PROTOCOL)


# ---- one key, one pair -----------------------------------------------------------

def test_attach_with_a_parked_key_is_refused(guest_agent):
    g = guest_agent()
    key = new_key()
    b1 = attach(g, key)
    status(g)
    b2 = attach(g, key)
    b2.expect_error(pb.ERROR_PROTOCOL)
    # The first one is still parked and pairs.
    a = g.start(["echo", "first"], stream_key=key)
    expect_attached(b1)
    assert a.recv()[0] == "started"
    assert read_to_eof(b1) == b"first\n"
    err, ex = finish(a)
    assert ex.code == 0


def test_exec_with_a_waiting_key_is_refused(guest_agent, tmp_path):
    g = guest_agent()
    key = new_key()
    marker = tmp_path / "second"
    a1 = g.start(["echo", "first"], stream_key=key)
    status(g)
    a2 = g.start(["touch", str(marker)], stream_key=key)
    a2.expect_error(pb.ERROR_PROTOCOL)
    b = attach(g, key)
    expect_attached(b)
    assert a1.recv()[0] == "started"
    assert read_to_eof(b) == b"first\n"
    err, ex = finish(a1)
    assert ex.code == 0
    assert not marker.exists()


def test_keys_pair_only_their_own(guest_agent):
    """Several sessions started together, each B attached in the reverse
    order: every program gets its own stream."""
    g = guest_agent()
    n = 8
    keys = [new_key() for _ in range(n)]
    execs = [g.start(["sh", "-c", f'read x; echo "{i}:$x"'], stream_key=keys[i])
             for i in range(n)]
    status(g)
    streams = {}
    for i in reversed(range(n)):
        streams[i] = attach(g, keys[i])
    for i in range(n):
        expect_attached(streams[i])
        assert execs[i].recv()[0] == "started"
        streams[i].sock.sendall(f"in{i}\n".encode())
        streams[i].sock.shutdown(socket.SHUT_WR)
    for i in range(n):
        assert read_to_eof(streams[i]) == f"{i}:in{i}\n".encode()
        err, ex = finish(execs[i])
        assert ex.code == 0


# ---- giving up on the other side -------------------------------------------------

def test_unpaired_sides_give_up(guest_agent, tmp_path):
    """An Exec whose Attach never comes fails with UNAVAILABLE without
    running its program, and an Attach whose Exec never comes is closed:
    each after the agent's wait, both waiting it out side by side."""
    g = guest_agent()
    g.run(["true"])
    before = g.settled_fd_count()
    key = new_key()
    b = attach(g, key)
    # Parked: a connection, not a live session; its key is taken.
    assert status(g).live_sessions == 0
    attach(g, key).expect_error(pb.ERROR_PROTOCOL)
    marker = tmp_path / "ran"
    a = g.start(["touch", str(marker)], stream_key=new_key())
    a.expect_error(pb.ERROR_UNAVAILABLE, timeout=PAIR_WAIT_BOUND)
    assert not marker.exists()
    frames = b.expect_closed(timeout=PAIR_WAIT_BOUND)
    names = [n for n, _ in frames]
    assert names in ([], ["error"]), frames
    assert status(g).live_sessions == 0
    a.close()
    b.close()
    wait_for(lambda: g.fd_count() == before, timeout=30, what=f"fd count back to {before}")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: a client of another uid")
def test_attach_from_another_uid_never_pairs(guest_agent, tmp_path):
    g = guest_agent("--allow-uid", "65534")
    os.chmod(g.dir, 0o755)
    os.chmod(g.sock, 0o777)
    key = new_key()
    marker = tmp_path / "ran"
    a = g.start(["touch", str(marker)], stream_key=key)
    status(g)

    def other():
        b = qlwire.Conn.unix(g.sock, timeout=30)
        b.hello()
        b.send("attach", key=key)
        frames = b.expect_closed(timeout=PAIR_WAIT_BOUND)
        assert [n for n, _ in frames] in ([], ["error"]), frames

    assert run_as_nobody(other) == 0
    a.expect_error(pb.ERROR_UNAVAILABLE, timeout=PAIR_WAIT_BOUND)
    assert not marker.exists()


# ---- resources -------------------------------------------------------------------

def test_parked_connection_that_hangs_up_is_freed(guest_agent):
    g = guest_agent()
    pair_a, pair_b = pair(g, ["true"], attach_first=True)   # warm up the lazy fds
    finish(pair_a)
    read_to_eof(pair_b)
    pair_b.close()
    before = g.settled_fd_count()
    keys = [new_key() for _ in range(5)]
    parked = [attach(g, k) for k in keys]
    st = status(g)
    assert st.live_sessions == 0
    assert g.fd_count() >= before + len(parked)
    for b in parked:
        b.close()
    # Well within the 10 s a parked connection may wait: what frees them
    # here is the hang-up.
    wait_for(lambda: g.fd_count() == before, timeout=5,
             what=f"fd count back to {before} after the hang-ups")
    # The key is free again: a new Attach with it parks (no duplicate) and pairs.
    b = attach(g, keys[0])
    status(g)
    a = g.start(["echo", "again"], stream_key=keys[0])
    expect_attached(b)
    assert a.recv()[0] == "started"
    assert read_to_eof(b) == b"again\n"
    err, ex = finish(a)
    assert ex.code == 0


def test_exec_that_hangs_up_while_waiting_is_freed(guest_agent, tmp_path):
    g = guest_agent()
    g.run(["true"])
    before = g.settled_fd_count()
    key = new_key()
    marker = tmp_path / "ran"
    a = g.start(["touch", str(marker)], stream_key=key)
    status(g)
    # Waiting: its key is taken.
    g.start(["true"], stream_key=key).expect_error(pb.ERROR_PROTOCOL)
    a.close()
    wait_for(lambda: g.fd_count() == before, timeout=30, what=f"fd count back to {before}")
    # The key is free again; an Attach with it pairs with a new Exec only.
    a = g.start(["echo", "again"], stream_key=key)
    status(g)
    b = attach(g, key)
    expect_attached(b)
    assert a.recv()[0] == "started"
    assert read_to_eof(b) == b"again\n"
    err, ex = finish(a)
    assert ex.code == 0
    assert not marker.exists()


def test_fd_count_back_to_start_after_50_sessions(guest_agent):
    g = guest_agent()
    a, b = pair(g, ["true"], attach_first=False)    # the lazy fds of the event loop
    finish(a)
    read_to_eof(b)
    b.close()
    before = g.settled_fd_count()
    n = 50
    sessions = []
    try:
        for i in range(n):
            key = new_key()
            if i % 2:
                sessions.append((g.start(["cat"], stream_key=key), attach(g, key)))
            else:
                b = attach(g, key)
                sessions.append((g.start(["cat"], stream_key=key), b))
        for a, b in sessions:
            expect_attached(b, timeout=60)
            assert a.recv(timeout=60)[0] == "started"
        assert status(g).live_sessions == n
        for i, (a, b) in enumerate(sessions):
            b.sock.sendall(f"session {i}\n".encode())
            b.sock.shutdown(socket.SHUT_WR)
        for i, (a, b) in enumerate(sessions):
            assert read_to_eof(b) == f"session {i}\n".encode()
            err, ex = finish(a)
            assert ex.code == 0
    finally:
        for a, b in sessions:
            a.close()
            b.close()
    wait_for(lambda: g.fd_count() == before, timeout=30, what=f"fd count back to {before}")
    assert status(g).live_sessions == 0
