"""qubes-lite-vsock against a guest made of Python: a vhost-user frontend
(qltest.vhost.Frontend, its "guest memory" a memfd) that starts the receive,
transmit and event queues and speaks virtio-vsock on them the way the
Linux driver does, and host programs on the device's unix socket.

What a real guest cannot easily show is shown here: the config space's
guest_cid, the TRANSPORT_RESET event on every frontend connection, the
exact packets (ports, CIDs, credit) the device sends, a guest that breaks
the protocol (only its connection is reset), a looping descriptor chain
(the frontend is dropped, the next one served), the source port rule, and
the sockets' permissions. Real guests: tests/vm/test_vsock_device_guest.py.
"""
import os
import select
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import time

import pytest

from qltest import program
from qltest.procs import drop_to, run_as_nobody, wait_for
from qltest.vhost import VERSION_1, Frontend, store_word
from qltest.vsock import GUEST_CID, Device, read_line

HOST_CID = 2
HDR = struct.Struct("<QQIIIHHIII")  # struct virtio_vsock_hdr
REQUEST, RESPONSE, RST, SHUTDOWN, RW, CREDIT_UPDATE, CREDIT_REQUEST = range(1, 8)
STREAM, SEQPACKET = 1, 2
RX, TX, EVENT = 0, 1, 2
GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_CONFIG = 15, 16, 24
PROTOCOL_F_CONFIG = 1 << 9
GUEST_BUF = 256 * 1024
RX_BUF = HDR.size + 4096


def hdr(op, src_port, dst_port, data=b"", flags=0, buf_alloc=GUEST_BUF, fwd_cnt=0,
        src_cid=GUEST_CID, dst_cid=HOST_CID, type_=STREAM, length=None):
    return HDR.pack(src_cid, dst_cid, src_port, dst_port,
                    len(data) if length is None else length, type_, op, flags, buf_alloc,
                    fwd_cnt) + data


class Pkt:
    def __init__(self, raw):
        (self.src_cid, self.dst_cid, self.src_port, self.dst_port, self.len, self.type,
         self.op, self.flags, self.buf_alloc, self.fwd_cnt) = HDR.unpack_from(raw)
        self.data = raw[HDR.size:HDR.size + self.len]

    def __repr__(self):
        return (f"Pkt(op={self.op} {self.src_cid}:{self.src_port}->{self.dst_cid}:"
                f"{self.dst_port} len={self.len} flags={self.flags})")


class Guest:
    """The guest side: a frontend with the three queues started, receive
    and event buffers offered, packets sent on the transmit queue."""

    def __init__(self, vhost_path, queues=(RX, TX, EVENT)):
        self.fe = Frontend(vhost_path)
        self.fe.negotiate(VERSION_1)
        self.q = {q: self.fe.start_queue(q, sync=False) for q in queues}
        self.fe.sync()
        self.rx_seen = 0
        self.ev_seen = 0
        self.tx_sent = 0
        self.pending = []  # packets received, not yet taken
        if RX in self.q:
            self.q[RX].offer([RX_BUF] * self.q[RX].num, writable=True)
        if EVENT in self.q:
            self.q[EVENT].offer([4] * self.q[EVENT].num, writable=True)

    def send(self, raw):
        """Puts one packet on the transmit queue; returns once it is used."""
        txq = self.q[TX]
        txq.offer([len(raw)], writable=False, data=[raw])
        self.tx_sent += 1
        deadline = time.monotonic() + 10
        while txq.used_idx() != self.tx_sent & 0xffff:
            if time.monotonic() > deadline:
                raise TimeoutError("the device did not take the packet")
            select.select([txq.call], [], [], 0.01)
            try:
                os.eventfd_read(txq.call)
            except BlockingIOError:
                pass

    def _drain_rx(self):
        rxq = self.q[RX]
        while self.rx_seen != rxq.used_idx():
            head, length = rxq.used_entry(self.rx_seen)
            self.pending.append(Pkt(rxq.buffer(head, length)))
            self.rx_seen = (self.rx_seen + 1) & 0xffff
            rxq.offer([RX_BUF], writable=True)

    def recv(self, timeout=10):
        """The next packet the device sent."""
        deadline = time.monotonic() + timeout
        while not self.pending:
            self._drain_rx()
            if self.pending:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no packet from the device")
            select.select([self.q[RX].call], [], [], min(left, 0.01))
            try:
                os.eventfd_read(self.q[RX].call)
            except BlockingIOError:
                pass
        return self.pending.pop(0)

    def expect(self, op, timeout=10):
        p = self.recv(timeout)
        assert p.op == op, p
        assert (p.src_cid, p.dst_cid) == (HOST_CID, GUEST_CID), p
        return p

    def recv_skipping_credit(self, timeout=10):
        """The next packet that is not a CREDIT_UPDATE."""
        while True:
            p = self.recv(timeout)
            if p.op != CREDIT_UPDATE:
                return p

    def nothing(self, wait=0.3):
        time.sleep(wait)
        self._drain_rx()
        assert not self.pending, self.pending

    def events(self):
        """The event ids the device wrote since last asked."""
        evq = self.q[EVENT]
        out = []
        while self.ev_seen != evq.used_idx():
            head, length = evq.used_entry(self.ev_seen)
            out.append(struct.unpack("<I", evq.buffer(head, length))[0] if length == 4 else None)
            self.ev_seen = (self.ev_seen + 1) & 0xffff
        return out

    def accept(self, req):
        """Answers a host's REQUEST as a listening guest does."""
        self.send(hdr(RESPONSE, req.dst_port, req.src_port))

    def close(self):
        self.fe.close()


@pytest.fixture
def tmp():
    # Short: unix socket paths hold 107 bytes.
    d = tempfile.mkdtemp(prefix="qlv-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    for n in os.listdir(d):
        os.unlink(os.path.join(d, n))
    os.rmdir(d)


@pytest.fixture(params=["sandboxed", "no-sandbox"])
def sandbox(request):
    """Every test that starts the device runs twice: in its sandbox (as it
    ships) and with --no-sandbox."""
    return request.param == "sandboxed"


@pytest.fixture
def dev(tmp, sandbox):
    d = Device(tmp, sandbox=sandbox)
    yield d
    assert d.stop() == 0, d.log_text()[-4000:]


def closed(s):
    """Whether the device closed s: its end, or a reset when it left
    bytes of ours unread."""
    try:
        return s.recv(10) == b""
    except ConnectionResetError:
        return True


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        c = s.recv(n - len(out))
        if not c:
            break
        out += c
    return out


def host_connects(dev, guest, port=5200, data=b""):
    """A host program's connection accepted by the guest: (socket, REQUEST)."""
    s = dev.client(port, data)
    req = guest.expect(REQUEST)
    assert req.dst_port == port and req.type == STREAM
    guest.accept(req)
    line = read_line(s)
    assert line == b"OK %d\n" % req.src_port, line
    return s, req


# ---- the program -------------------------------------------------------------


def test_command_line(tmp):
    exe = program("qubes-lite-vsock")
    r = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--uds-path" in r.stdout
    base = ["--socket", f"{tmp}/v.sock", "--uds-path", f"{tmp}/u.sock", "--guest-cid", "3"]
    for bad in (base[:4], base[2:], ["--guest-cid", "2"] + base[:4],
                base[:4] + ["--guest-cid", "4294967295"], base + ["--seccomp-mode", "x"],
                base + ["--log-level", "loud"], base + ["extra"], base + ["--bogus"]):
        r = subprocess.run([exe, *bad], capture_output=True, text=True)
        assert r.returncode == 2, (bad, r.stderr)
        assert r.stderr.startswith("qubes-lite-vsock: "), r.stderr
    assert os.listdir(tmp) == []


def test_sockets_private_and_removed(tmp, sandbox):
    d = Device(tmp, sandbox=sandbox)
    for p in (d.vhost, d.path):
        st = os.lstat(p)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)

    # Another uid cannot connect to either.
    def try_connect():
        for p in (d.path, d.vhost):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(p)
            except PermissionError:
                continue
            os._exit(3)
    assert run_as_nobody(try_connect) == 0

    # A second device on the same sockets is refused; the first goes on.
    r = subprocess.run([program("qubes-lite-vsock"), "--socket", d.vhost, "--uds-path",
                        os.path.join(tmp, "other.sock"), "--guest-cid", "3", "--no-sandbox"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "in use" in r.stderr, r.stderr
    assert d.stop() == 0
    assert not os.path.exists(d.vhost) and not os.path.exists(d.path)

    # Sockets left by a device killed with SIGKILL are taken over.
    d = Device(tmp, sandbox=sandbox)
    d.kill()
    assert os.path.exists(d.vhost) and os.path.exists(d.path)
    d = Device(tmp, sandbox=sandbox)
    assert d.stop() == 0


# ---- the vhost-user side -----------------------------------------------------------


def test_config_space_and_transport_reset(dev):
    fe = Frontend(dev.vhost)
    fe.send(GET_PROTOCOL_FEATURES)
    _, pf = fe.recv_reply()
    assert struct.unpack("<Q", pf)[0] & PROTOCOL_F_CONFIG
    fe.send(SET_PROTOCOL_FEATURES, struct.pack("<Q", PROTOCOL_F_CONFIG))
    fe.send(GET_CONFIG, struct.pack("<III", 0, 8, 0) + bytes(8))
    _, cfg = fe.recv_reply()
    assert struct.unpack("<IIIQ", cfg) == (0, 8, 0, GUEST_CID)
    fe.close()

    # Every frontend connection tells the guest to drop what an earlier
    # device had: TRANSPORT_RESET (id 0) on the event queue, once.
    for i in range(2):
        g = Guest(dev.vhost)
        wait_for(lambda: g.q[EVENT].used_idx() == 1, timeout=10, what="the event")
        assert g.events() == [0]
        g.nothing()
        assert g.events() == []
        g.close()
        wait_for(lambda: dev.log_text().count("Frontend disconnected") == i + 2,
                 what="the disconnect")


def test_qemu_shape_without_event_queue(dev):
    """qemu keeps the event queue: receive and transmit alone work."""
    g = Guest(dev.vhost, queues=(RX, TX))
    s, req = host_connects(dev, g)
    s.sendall(b"ping")
    p = g.expect(RW)
    assert p.data == b"ping"
    g.close()


# ---- host -> guest ---------------------------------------------------------------------


def test_host_connects(dev):
    g = Guest(dev.vhost)
    s, req = host_connects(dev, g, data=b"early")
    # Our uid owns PATH: a port only a privileged process could bind.
    assert req.src_port == 1023
    assert req.buf_alloc == 64 * 1024 and req.fwd_cnt == 0
    # What was sent right behind the CONNECT line is the stream's.
    p = g.expect(RW)
    assert p.data == b"early" and (p.src_port, p.dst_port) == (1023, 5200)
    g.send(hdr(RW, 5200, 1023, b"hello host"))
    assert recv_exact(s, 10) == b"hello host"
    # A second connection, to the same port: the next port down.
    s2, req2 = host_connects(dev, g)
    assert req2.src_port == 1022
    # The host half-closes: SHUTDOWN(SEND); data still flows to it.
    s.shutdown(socket.SHUT_WR)
    p = g.expect(SHUTDOWN)
    assert p.flags == 2 and p.src_port == 1023
    g.send(hdr(RW, 5200, 1023, b"after"))
    assert recv_exact(s, 5) == b"after"
    # The guest closes both ways: the host reads its end; our RST follows.
    g.send(hdr(SHUTDOWN, 5200, 1023, flags=3))
    assert s.recv(10) == b""
    assert g.expect(RST).src_port == 1023
    s.close()
    # The host closes all the way: SHUTDOWN of both ways; the guest's RST
    # ends it.
    s2.close()
    p = g.expect(SHUTDOWN)
    assert p.flags == 3 and p.src_port == 1022
    g.send(hdr(RST, 5200, 1022))
    g.nothing()
    g.close()


def test_host_refused(dev):
    # No guest driver yet: closed at once.
    s = dev.client(5200)
    assert closed(s)
    g = Guest(dev.vhost)
    # The guest refuses (nothing listens): closed.
    s = dev.client(5201)
    req = g.expect(REQUEST)
    g.send(hdr(RST, req.dst_port, req.src_port))
    assert closed(s)
    # Not a CONNECT line: closed, nothing reaches the guest.
    for bad in (b"CONNECT 5200\r\n", b"HELLO\n", b"CONNECT 05200\n", b"CONNECT 4294967295\n"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(dev.path)
        s.sendall(bad)
        assert closed(s), bad
    g.nothing()
    # A line sent in pieces is fine.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(dev.path)
    for piece in (b"CONN", b"ECT 52", b"02\n"):
        s.sendall(piece)
        time.sleep(0.1)
    req = g.expect(REQUEST)
    assert req.dst_port == 5202
    g.close()


def test_unprivileged_client_port(dev):
    """Anyone else the socket's permissions let in gets a port above 1023."""
    g = Guest(dev.vhost)
    os.chmod(dev.path, 0o666)  # as an administrator adding a group would
    rd, wr = os.pipe()

    def connect_and_wait():
        os.close(rd)
        s = dev.client(5200)
        line = read_line(s)
        os.write(wr, line)
    pid = os.fork()
    if pid == 0:
        try:
            drop_to()
            connect_and_wait()
        finally:
            os._exit(0)
    os.close(wr)
    req = g.expect(REQUEST)
    assert req.src_port >= 1024, req
    g.accept(req)
    assert os.read(rd, 100) == b"OK %d\n" % req.src_port
    os.close(rd)
    os.waitpid(pid, 0)
    g.close()


def port_as(dev, guest, uid, groups=()):
    """The source port the guest sees for a connection to PATH from a
    forked child with uid (and gid 65534, the supplementary groups), or
    "EACCES" when PATH's permissions refuse it. The child closes once it
    read the OK line: the guest's last packet."""
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(rd)
            os.setgroups(list(groups))
            os.setresgid(65534, 65534, 65534)
            os.setresuid(uid, uid, uid)
            try:
                s = dev.client(5200)
            except PermissionError:
                os.write(wr, b"EACCES")
                os._exit(0)
            os.write(wr, b"+")
            os.write(wr, read_line(s))
        finally:
            os._exit(0)
    os.close(wr)
    try:
        first = os.read(rd, 6)
        if first == b"EACCES":
            return "EACCES"
        assert first == b"+", first
        req = guest.expect(REQUEST)
        guest.accept(req)
        line = os.read(rd, 100)
        assert line == b"OK %d\n" % req.src_port, line
        return req.src_port
    finally:
        os.close(rd)
        os.waitpid(pid, 0)


def test_uds_group(tmp, sandbox):
    """PATH opened to a group with --uds-group (a number here): its member
    connects, from a port above 1023; without it, the same uid is refused
    at PATH's permissions."""
    d = Device(tmp, sandbox=sandbox)
    g = Guest(d.vhost)
    assert port_as(d, g, 65534, groups=[4242]) == "EACCES"
    g.close()
    assert d.stop() == 0

    d = Device(tmp, "--uds-group", "4242", sandbox=sandbox)
    st = os.lstat(d.path)
    assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == 4242, (oct(st.st_mode), st.st_gid)
    g = Guest(d.vhost)
    assert port_as(d, g, 65534) == "EACCES"
    s, req = host_connects(d, g)
    assert req.src_port < 1024, req
    assert port_as(d, g, 65534, groups=[4242]) >= 1024
    s.close()
    g.close()
    assert d.stop() == 0


def test_started_unprivileged_ports(tmp, sandbox):
    """Started as another user (systemd's User=): root's connections and
    that user's own get ports below 1024, sandboxed too (where root reads
    as an unmapped uid)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to start the device as another user")
    os.chown(tmp, 65534, 65534)
    d = Device(tmp, sandbox=sandbox, user=65534)
    assert os.lstat(d.path).st_uid == 65534
    g = Guest(d.vhost)
    s, req = host_connects(d, g)
    assert req.src_port < 1024, req
    assert port_as(d, g, 65534) < 1024
    s.close()
    g.close()
    assert d.stop() == 0


def test_host_to_guest_flow_control(dev):
    """The guest's window is never exceeded; its CREDIT_UPDATE lets more go."""
    g = Guest(dev.vhost)
    s, req = host_connects(dev, g)
    payload = bytes(range(256)) * 1024  # 256 KiB
    s.sendall(payload[:8192])
    got = b""
    while len(got) < 8192:
        p = g.expect(RW)
        assert p.len <= 4096  # the receive buffers' room
        got += p.data
    assert got == payload[:8192]
    # A guest whose window is 10000 bytes, 8192 of them used.
    g.send(hdr(CREDIT_UPDATE, 5200, req.src_port, buf_alloc=10000, fwd_cnt=0))
    s.sendall(payload[8192:20000])
    while len(got) < 10000:
        got += g.expect(RW).data
    assert got == payload[:10000]
    g.nothing()
    # It read everything: the rest flows, within the window each time.
    while len(got) < 20000:
        g.send(hdr(CREDIT_UPDATE, 5200, req.src_port, buf_alloc=10000, fwd_cnt=len(got)))
        window = b""
        while True:
            window += g.expect(RW).data
            assert len(window) <= 10000
            if len(got) + len(window) == 20000 or len(window) == 10000:
                break
        got += window
    assert got == payload[:20000]
    g.nothing()
    g.close()


# ---- guest -> host ---------------------------------------------------------------------


def test_guest_connects(dev):
    g = Guest(dev.vhost)
    lsn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsn.bind(f"{dev.path}_6000")
    lsn.listen()
    lsn.settimeout(10)
    g.send(hdr(REQUEST, 40000, 6000))
    p = g.expect(RESPONSE)
    assert (p.src_port, p.dst_port, p.type) == (6000, 40000, STREAM)
    c, _ = lsn.accept()
    c.settimeout(10)
    g.send(hdr(RW, 40000, 6000, b"from guest"))
    assert recv_exact(c, 10) == b"from guest"
    c.sendall(b"from host")
    p = g.expect(RW)
    assert p.data == b"from host"
    # Nobody on 6001: RST at once; SEQPACKET is refused in its own type.
    g.send(hdr(REQUEST, 40001, 6001))
    p = g.expect(RST)
    assert (p.src_port, p.dst_port) == (6001, 40001)
    g.send(hdr(REQUEST, 40002, 6000, type_=SEQPACKET))
    p = g.expect(RST)
    assert p.type == SEQPACKET and p.dst_port == 40002
    # The guest closes: the host reads its end, the guest gets its RST.
    g.send(hdr(SHUTDOWN, 40000, 6000, flags=3))
    assert c.recv(10) == b""
    g.expect(RST)
    c.close()
    lsn.close()
    os.unlink(f"{dev.path}_6000")
    g.close()


# ---- a guest that breaks the rules -----------------------------------------------------


def test_hostile_guest(dev):
    g = Guest(dev.vhost)
    s1, r1 = host_connects(dev, g)
    s2, r2 = host_connects(dev, g)
    # Speaking as another CID, or to another: dropped, unanswered.
    g.send(hdr(REQUEST, 40000, 6000, src_cid=GUEST_CID + 1))
    g.send(hdr(RST, 5200, r1.src_port, src_cid=4))
    g.send(hdr(RST, 5200, r1.src_port, dst_cid=GUEST_CID + 2))
    g.nothing()
    # More than its window on connection 1, while its host program reads
    # nothing: once the socket and our 64 KiB are full, that connection is
    # reset, and 2 is not.
    big = hdr(RW, 5200, r1.src_port, b"y" * 4096)
    sent = 0
    reset = None
    while reset is None:
        g.send(big)
        sent += 4096
        assert sent < 16 << 20, "never reset"
        g._drain_rx()
        for p in g.pending:
            if p.op == RST:
                reset = p
            else:
                assert p.op == CREDIT_UPDATE, p
        g.pending.clear()
    assert reset.src_port == r1.src_port
    # What it sent before it saw the RST names no connection now: each
    # gets an RST too, and nothing else comes.
    time.sleep(0.3)
    g._drain_rx()
    assert all(p.op == RST and p.src_port == r1.src_port for p in g.pending), g.pending
    g.pending.clear()
    got = 0
    while True:  # what fitted arrived, then the end
        k = len(s1.recv(1 << 20))
        if k == 0:
            break
        got += k
    assert 0 < got < sent
    g.send(hdr(RW, 5200, r2.src_port, b"still here"))
    assert recv_exact(s2, 10) == b"still here"
    # A length beyond the descriptor, an unknown op, flags on RW: reset.
    s3, r3 = host_connects(dev, g)
    g.send(hdr(RW, 5200, r3.src_port, b"abc", length=100))
    assert g.expect(RST).src_port == r3.src_port
    assert s3.recv(10) == b""
    s4, r4 = host_connects(dev, g)
    g.send(hdr(9, 5200, r4.src_port))
    assert g.expect(RST).src_port == r4.src_port
    s5, r5 = host_connects(dev, g)
    g.send(hdr(RW, 5200, r5.src_port, b"a", flags=1))
    assert g.expect(RST).src_port == r5.src_port
    # A header too short for one: the chain is returned, nothing else.
    g.send(b"\0" * 20)
    g.nothing()
    g.send(hdr(RW, 5200, r2.src_port, b"!"))
    assert recv_exact(s2, 1) == b"!"

    # A looping descriptor chain breaks the transmit queue: the frontend is
    # dropped, its connections end, and the next frontend is served.
    txq = g.q[TX]
    struct.pack_into("<QIHH", g.fe.mem, txq.desc + 16 * (txq.avail_idx % txq.num),
                     txq.bufs, 64, 1, txq.avail_idx % txq.num)
    struct.pack_into("<H", g.fe.mem, txq.avail + 4 + 2 * (txq.avail_idx % txq.num),
                     txq.avail_idx % txq.num)
    store_word(g.fe.mem, txq.avail + 2, (txq.avail_idx + 1) & 0xffff)
    os.eventfd_write(txq.kick, 1)
    assert g.fe.closed_by_peer()
    assert s2.recv(10) == b""
    g.close()
    wait_for(lambda: "broke a virtqueue" in dev.log_text(), what="the log line")
    g = Guest(dev.vhost)
    s, req = host_connects(dev, g)
    g.close()


def test_frontend_gone_ends_sessions(dev):
    g = Guest(dev.vhost)
    socks = [host_connects(dev, g)[0] for _ in range(3)]
    g.close()
    for s in socks:
        assert s.recv(10) == b""
    # A new frontend starts from nothing.
    g = Guest(dev.vhost)
    s, req = host_connects(dev, g)
    assert req.src_port == 1020  # the port cursor goes on
    g.close()


def test_many_connections(dev):
    """1,100 host connections and 100 guest ones at once, each moving data."""
    g = Guest(dev.vhost)
    lsn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsn.bind(f"{dev.path}_7000")
    lsn.listen(200)
    socks, ports = [], []
    for i in range(1100):
        s, req = host_connects(dev, g, port=5200 + i % 2)
        socks.append(s)
        ports.append((req.src_port, req.dst_port))
    assert len(set(ports)) == 1100
    assert all(p < 1024 for p, _ in ports)  # privileged: 1,023 per guest port
    for i in range(100):
        g.send(hdr(REQUEST, 30000 + i, 7000))
        g.expect(RESPONSE)
    peers = [lsn.accept()[0] for _ in range(100)]
    for i, s in enumerate(socks):
        s.sendall(b"%d" % i)
    got = {}
    while len(got) < 1100:
        p = g.expect(RW)
        got[p.src_port, p.dst_port] = p.data
    assert sorted(int(v) for v in got.values()) == list(range(1100))
    for i in range(100):
        g.send(hdr(RW, 30000 + i, 7000, b"g%d" % i))
    assert sorted(recv_exact(c, len(b"g%d" % i)) for i, c in enumerate(peers)) == \
        sorted(b"g%d" % i for i in range(100))
    os.kill(dev.proc.pid, signal.SIGUSR1)
    wait_for(lambda: "connections now 1200" in dev.log_text(), what="the report")
    for s in socks + peers:
        s.close()
    lsn.close()
    os.unlink(f"{dev.path}_7000")
    g.close()
