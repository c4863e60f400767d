"""Fixtures that start qubes-lite-guest-agent and talk to it.

`guest_agent(*args)` starts an agent listening on a unix socket in a fresh
temporary directory, with the extra command-line arguments given, and
returns a GuestAgent. On teardown every agent started is terminated by pid
and must exit cleanly (no crash, no sanitizer report).
"""
import hashlib
import os
import select
import shutil
import signal
import struct
import subprocess
import tempfile
import time

import pytest

import qlwire
from procs import children_of, pid_alive, wait_for  # noqa: F401 (re-exported to tests)
from qlwire import pb

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BUILD = os.path.join(ROOT, os.environ.get("BUILD", "build"))
AGENT = os.path.join(BUILD, "bin", "qubes-lite-guest-agent")

SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "UndefinedBehaviorSanitizer")


class GuestAgent:
    def __init__(self, args, preexec=None, dir_mode=0o700):
        if not os.access(AGENT, os.X_OK):
            raise FileNotFoundError(f"{AGENT} not built (run make)")
        # Short path: unix socket paths are limited to 108 bytes.
        self.dir = tempfile.mkdtemp(prefix="qlg-")
        os.chmod(self.dir, dir_mode)
        self.sock = os.path.join(self.dir, "guest.sock")
        self.log_path = os.path.join(self.dir, "agent.log")
        self.args = [AGENT, "--listen", "unix:" + self.sock, "--log-level", "debug"] + list(args)
        self.log = open(self.log_path, "wb")
        self.stopped = False
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, preexec_fn=preexec, env=env)
        self.pid = self.proc.pid
        try:
            # The socket file exists from bind(); "Listening" comes after listen().
            wait_for(lambda: (os.path.exists(self.sock) and "Listening on" in self.log_text())
                     or self.proc.poll() is not None, timeout=30, what="the agent's socket")
        except TimeoutError:
            self.stop(check=False)
            raise
        if self.proc.poll() is not None:
            raise RuntimeError(f"agent exited at start-up ({self.proc.returncode}): {self.log_text()}")

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def fd_count(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def children(self):
        return children_of(self.pid)

    def settled_fd_count(self):
        """The agent's fd count once it has no child: a user lookup in
        flight holds a pipe and a pidfd that go away on their own."""
        wait_for(lambda: not self.children(), timeout=30, what="the agent without children")
        return self.fd_count()

    def rss_kib(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self, check=True):
        if self.stopped:
            return
        self.stopped = True
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait()
                if check:
                    raise AssertionError("agent did not exit on SIGTERM")
        self.log.close()
        text = self.log_text()
        rc = self.proc.returncode
        shutil.rmtree(self.dir, ignore_errors=True)
        if check:
            assert rc == 0, f"agent exited with {rc}:\n{text[-4000:]}"
            for mark in SANITIZER_MARKS:
                assert mark not in text, text[-8000:]

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


def frames(buf):
    """Splits complete frames off a bytearray; yields (name, msg)."""
    while len(buf) >= 4:
        (n,) = struct.unpack(">I", buf[:4])
        if len(buf) < 4 + n:
            return
        env = pb.Envelope()
        env.ParseFromString(bytes(buf[4:4 + n]))
        del buf[:4 + n]
        name = env.WhichOneof("msg")
        yield name, getattr(env, name)


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
            for name, msg in frames(buf):
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
    agents = []

    def start(*args, preexec=None, dir_mode=0o700):
        a = GuestAgent(args, preexec=preexec, dir_mode=dir_mode)
        agents.append(a)
        return a

    yield start
    errors = []
    for a in agents:
        try:
            a.stop()
        except AssertionError as e:
            errors.append(e)
    if errors:
        raise errors[0]
