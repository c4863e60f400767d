"""The agent protocol from Python, for tests that play a peer.

The message classes are generated from proto/qubes-lite.proto with protoc
into $BUILD/gen/py at import time, so the tests speak exactly the schema
the C programs are built from.

    c = Conn.unix(path); c.hello()
    c.send("exec", argv=[b"true"]); name, msg = c.recv()
    out, err, exited, others = c.recv_until_exit()
    name, msg, fds, carriers = recv_frame_with_fds(sock)   (SCM_RIGHTS)
    peer = FakePeer(path, talk)            the test listening as a peer
"""
import importlib.util
import os
import select
import socket
import struct
import subprocess
import threading
import time

from qltest import BUILD, ROOT

GENPY = os.path.join(BUILD, "gen", "py")
PROTO = os.path.join(ROOT, "proto", "qubes-lite.proto")

FRAME_MAX = 1024 * 1024
DATA_MAX = 64 * 1024
VERSION_MAJOR = 1
VERSION_MINOR = 1


def _load_pb():
    os.makedirs(GENPY, exist_ok=True)
    out = os.path.join(GENPY, "qubes_lite_pb2.py")
    if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(PROTO):
        subprocess.run(["protoc", "--proto_path", os.path.dirname(PROTO),
                        "--python_out", GENPY, PROTO], check=True)
    spec = importlib.util.spec_from_file_location("qubes_lite_pb2", out)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pb = _load_pb()


class Closed(Exception):
    """The peer closed the connection."""


def decode(body):
    """(field name, message) of an Envelope's bytes."""
    env = pb.Envelope()
    env.ParseFromString(body)
    name = env.WhichOneof("msg")
    return name, getattr(env, name)


def frames(buf):
    """Splits complete frames off a bytearray; yields (name, msg)."""
    while len(buf) >= 4:
        (n,) = struct.unpack(">I", buf[:4])
        if len(buf) < 4 + n:
            return
        body = bytes(buf[4:4 + n])
        del buf[:4 + n]
        yield decode(body)


def recv_frame_with_fds(sock, timeout=60, max_fds=8):
    """One frame read from a socket with the fds that came with it
    (SCM_RIGHTS): (name, msg, fds, how many messages carried fds)."""
    sock.settimeout(timeout)
    fds, carriers = [], 0
    buf = b""
    while len(buf) < 4 or len(buf) < 4 + struct.unpack(">I", buf[:4])[0]:
        want = 4 - len(buf) if len(buf) < 4 else 4 + struct.unpack(">I", buf[:4])[0] - len(buf)
        data, more, _, _ = socket.recv_fds(sock, want, max_fds)
        if not data:
            for fd in fds + more:
                os.close(fd)
            raise Closed()
        buf += data
        if more:
            carriers += 1
        fds += more
    name, msg = decode(buf[4:])
    return name, msg, fds, carriers


def encode(name, **fields):
    """One frame: 4-byte big-endian length + Envelope with field `name` set."""
    env = pb.Envelope()
    sub = getattr(env, name)
    sub.SetInParent()
    for k, v in fields.items():
        attr = getattr(sub, k)
        if isinstance(v, dict):
            getattr(sub, k).SetInParent()
            for kk, vv in v.items():
                setattr(getattr(sub, k), kk, vv)
        elif isinstance(v, (list, tuple)):
            del attr[:]
            attr.extend(v)
        else:
            setattr(sub, k, v)
    body = env.SerializeToString()
    return struct.pack(">I", len(body)) + body


class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    @classmethod
    def unix(cls, path, timeout=10):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(path)
        return cls(s)

    def close(self):
        self.sock.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, name, **fields):
        self.sock.sendall(encode(name, **fields))

    def send_hello(self, major=VERSION_MAJOR, minor=VERSION_MINOR, software="qlwire-test"):
        self.send("hello", major=major, minor=minor, software=software)

    def hello(self, major=VERSION_MAJOR, minor=VERSION_MINOR):
        """Sends Hello and checks the peer's Hello."""
        self.send_hello(major, minor)
        name, msg = self.recv()
        assert name == "hello", (name, msg)
        return msg

    def _fill(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame from peer")
            # poll, not select: a load test's process holds more than
            # FD_SETSIZE fds.
            if self.sock.fileno() < 0:
                raise Closed()      # closed under us (a server shutting down)
            p = select.poll()
            p.register(self.sock, select.POLLIN)
            if not p.poll(left * 1000):
                continue
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise Closed()
            self.buf += chunk

    def recv(self, timeout=10):
        """Returns (field name, message) of the next Envelope."""
        deadline = time.monotonic() + timeout
        self._fill(4, deadline)
        (n,) = struct.unpack(">I", self.buf[:4])
        assert n <= FRAME_MAX, n
        self._fill(4 + n, deadline)
        body, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
        return decode(body)

    def status(self, timeout=30):
        """A StatusRequest round trip (after Hello): the Status message."""
        self.send("status_request")
        name, msg = self.recv(timeout=timeout)
        assert name == "status", (name, msg)
        return msg

    def recv_until_exit(self, timeout=30):
        """Collects stdout/stderr until Exited; returns (out, err, exited, others)."""
        out, err, others = bytearray(), bytearray(), []
        deadline = time.monotonic() + timeout
        while True:
            name, msg = self.recv(timeout=max(0.01, deadline - time.monotonic()))
            if name == "data":
                (out if msg.stream == pb.STREAM_STDOUT else err).extend(msg.data)
            elif name == "exited":
                return bytes(out), bytes(err), msg, others
            else:
                others.append((name, msg))

    def expect_error(self, code, timeout=30):
        """The next frame is Error(code), then the connection closes."""
        name, msg = self.recv(timeout=timeout)
        assert name == "error", (name, msg)
        assert msg.code == code, msg
        assert self.expect_closed(timeout=timeout) == []
        return msg

    def expect_closed(self, timeout=10):
        """Asserts the peer closes (after draining whatever it still sends)."""
        deadline = time.monotonic() + timeout
        frames = []
        try:
            while True:
                frames.append(self.recv(timeout=max(0.01, deadline - time.monotonic())))
        except (Closed, ConnectionResetError):
            return frames


class FakePeer:
    """The test playing a peer that listens: a unix socket at path whose
    connections are each handed, as a Conn, to talk(conn) (a subclass's
    method unless given), each in a thread of its own; with once, only the
    first one, after which the connection and the socket are closed. A
    peer that goes away or a recv that times out ends talk quietly."""

    def __init__(self, path, talk=None, once=False, timeout=None):
        self.handler = talk or self.talk
        self.once = once
        self.timeout = timeout
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(path)
        self.lsock.listen(8)
        self.conns = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                sock, _ = self.lsock.accept()
            except OSError:
                return
            sock.settimeout(self.timeout)
            self.conns.append(sock)
            if self.once:
                self._talk(Conn(sock))
                self.close()
                return
            threading.Thread(target=self._talk, args=(Conn(sock),), daemon=True).start()

    def _talk(self, conn):
        try:
            self.handler(conn)
        except (OSError, Closed, TimeoutError):
            pass

    def join(self, timeout):
        self.thread.join(timeout)

    def close(self):
        self.lsock.close()
        for sock in self.conns:
            sock.close()
