"""Fixtures that start qubes-lite-guest-agent and talk to it.

`guest_agent(*args)` starts an agent listening on a unix socket in a fresh
temporary directory, with the extra command-line arguments given, and
returns a GuestAgent. It asks no VM secret (`--no-secret`) unless the
arguments say how it gets one, or `no_secret=False` leaves the agent's
default: refusing everyone. On teardown every agent started is terminated by pid
and must exit cleanly (no crash, no sanitizer report).
"""
import hashlib
import os
import select
import shutil
import tempfile
import time

import pytest

from qltest import made, program, qlwire
from qltest.procs import Daemon, children_of, fd_count, proc_status, wait_for
from qltest.qlwire import pb


SECRET_OPTIONS = ("--secret-file", "--secret-fw-cfg", "--no-secret")
PR_CAPBSET_DROP = 24
CAP_SYS_RAWIO = 17


def without_port_access():
    """A preexec for an agent with --secret-fw-cfg on this machine, which
    is no VM of ours: even as root it gets no I/O ports (ioperm fails with
    EPERM) instead of poking at whatever sits at 0x510."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_CAPBSET_DROP, CAP_SYS_RAWIO, 0, 0, 0) != 0 and os.geteuid() == 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP, CAP_SYS_RAWIO)")


def no_secret_unless_chosen(args):
    """`--no-secret` unless args choose how the agent gets the VM's secret:
    a test that is not about the secret plays a host agent without one."""
    return [] if any(a in SECRET_OPTIONS for a in args) else ["--no-secret"]


class GuestAgent:
    def __init__(self, args, preexec=None, dir_mode=0o700, no_secret=True):
        agent = program("qubes-lite-guest-agent")
        if no_secret:
            args = list(args) + no_secret_unless_chosen(args)
        # Short path: unix socket paths are limited to 108 bytes.
        self.dir = tempfile.mkdtemp(prefix="qlg-")
        os.chmod(self.dir, dir_mode)
        self.sock = os.path.join(self.dir, "guest.sock")
        self.args = [agent, "--listen", "unix:" + self.sock, "--log-level", "debug"] + list(args)
        self.stopped = False
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        try:
            # "Listening on" comes after bind() and listen().
            self.daemon = Daemon("agent", self.args, os.path.join(self.dir, "agent.log"),
                                 ready_text="Listening on", env=env, preexec=preexec,
                                 ready_timeout=30)
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        self.proc = self.daemon.proc
        self.pid = self.daemon.pid

    def log_text(self):
        return self.daemon.log_text()

    def fd_count(self):
        return fd_count(self.pid)

    def children(self):
        return children_of(self.pid)

    def settled_fd_count(self):
        """The agent's fd count once it has no child: a user lookup in
        flight holds a pipe and a pidfd that go away on their own."""
        wait_for(lambda: not self.children(), timeout=30, what="the agent without children")
        return self.fd_count()

    def rss_kib(self):
        return int(proc_status(self.pid).get("VmRSS", "0 kB").split()[0])

    def stop(self, check=True):
        if self.stopped:
            return
        self.stopped = True
        try:
            self.daemon.stop(check=check)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    # ---- talking to it ------------------------------------------------

    def connect(self, hello=True, timeout=30):
        c = qlwire.Conn.unix(self.sock, timeout=timeout)
        if hello:
            c.hello()
        return c

    def start(self, argv, **fields):
        """Connects, sends Hello and Exec; returns the Conn (Started not read)."""
        c = self.connect()
        fields.setdefault("argv", [a.encode() if isinstance(a, str) else a for a in argv])
        c.send("exec", **fields)
        return c

    def run(self, argv, stdin=None, timeout=60, **fields):
        """Runs argv to completion: returns (out, err, exited, others).

        stdin: bytes sent then closed (None: closed at once)."""
        c = self.start(argv, **fields)
        try:
            if stdin:
                for i in range(0, len(stdin), qlwire.DATA_MAX):
                    c.send("data", stream=pb.STREAM_STDIN, data=stdin[i:i + qlwire.DATA_MAX])
            c.send("stdin_close")
            res = c.recv_until_exit(timeout=timeout)
            c.send("exit_ack")
            c.expect_closed(timeout=timeout)
            return res
        finally:
            c.close()


def stream(conn, source_size, block, window, timeout=300, on_data=None, read_delay=0.0):
    """Sends source_size bytes of stdin (block repeated, each chunk within
    the credit the agent gives) while reading the output; then StdinClose.

    Returns (sha256 of stdin sent, sha256 of stdout, stderr, Exited, stdin acks,
    max credit outstanding)."""
    sock = conn.sock
    sock.setblocking(False)
    buf = bytearray(conn.buf)
    conn.buf = b""
    sent_hash, out_hash = hashlib.sha256(), hashlib.sha256()
    err = bytearray()
    credit = window
    sent = 0
    outgoing = b""
    closed_sent = False
    acks = 0
    started = False
    deadline = time.monotonic() + timeout
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError("stream did not finish")
        if not outgoing and sent < source_size and credit > 0:
            n = min(qlwire.DATA_MAX, credit, source_size - sent)
            off = sent % len(block)
            chunk = (block[off:] + block)[:n]
            sent_hash.update(chunk)
            outgoing = qlwire.encode("data", stream=pb.STREAM_STDIN, data=chunk)
            sent += n
            credit -= n
        elif not outgoing and sent >= source_size and not closed_sent:
            outgoing = qlwire.encode("stdin_close")
            closed_sent = True
        r, w, _ = select.select([sock], [sock] if outgoing else [], [], 1.0)
        if w:
            try:
                k = sock.send(outgoing)
                outgoing = outgoing[k:]
            except BlockingIOError:
                pass
        if r:
            if read_delay:
                time.sleep(read_delay)
            data = sock.recv(1 << 20)
            if not data:
                raise qlwire.Closed()
            buf += data
            for name, msg in qlwire.frames(buf):
                if name == "data":
                    if msg.stream == pb.STREAM_STDOUT:
                        out_hash.update(msg.data)
                        if on_data:
                            on_data(msg.data)
                    else:
                        err += msg.data
                elif name == "stdin_ack":
                    credit += msg.bytes
                    acks += msg.bytes
                    assert credit <= window, (credit, window)
                elif name == "started":
                    started = True
                elif name == "exited":
                    assert started
                    sock.setblocking(True)
                    conn.buf = bytes(buf)
                    return sent_hash.hexdigest(), out_hash.hexdigest(), bytes(err), msg, acks
                else:
                    raise AssertionError(f"unexpected {name}: {msg}")


@pytest.fixture
def guest_agent():
    """guest_agent(*args, preexec=None, dir_mode=0o700, no_secret=True): a
    GuestAgent."""
    yield from made(lambda *args, **kw: GuestAgent(args, **kw))
