"""A hostile vhost-user frontend against vm-switch: a guest whose transmit
ring breaks the rules gets its connection dropped and its VM marked
broken; its child is not restarted and accepts the next frontend; the
other VMs never notice. The frontend here is a few lines of Python
speaking vhost-user over the VM's socket, with its "guest memory" a
memfd; the other VMs are dpdk-testpmd."""
import mmap
import os
import socket
import struct
import time

from switchfix import C1_MAC, C2_MAC, ROUTER_MAC, needs_testpmd, pmd, switch_run  # noqa: F401

pytestmark = needs_testpmd

GET_FEATURES, SET_FEATURES, SET_OWNER, SET_MEM_TABLE = 1, 2, 3, 5
SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE = 8, 9, 10
SET_VRING_KICK, SET_VRING_CALL = 12, 13
VERSION_1 = 1 << 32
MEM_SIZE = 1 << 20
UVA = 0x100000000  # where the "frontend" says its memory is mapped
TX = 1
NUM = 8
DESC, AVAIL, USED, BUF = 0x1000, 0x2000, 0x3000, 0x4000


class Frontend:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(path)
        self.memfd = os.memfd_create("guest")
        os.ftruncate(self.memfd, MEM_SIZE)
        self.mem = mmap.mmap(self.memfd, MEM_SIZE)
        self.kick = os.eventfd(0)
        self.call = os.eventfd(0)

    def send(self, req, payload=b"", fds=()):
        msg = struct.pack("<III", req, 1, len(payload)) + payload
        if fds:
            socket.send_fds(self.sock, [msg], list(fds))
        else:
            self.sock.sendall(msg)

    def recv_reply(self):
        hdr = self.sock.recv(12, socket.MSG_WAITALL)
        req, flags, size = struct.unpack("<III", hdr)
        return req, self.sock.recv(size, socket.MSG_WAITALL)

    def start_tx_ring(self):
        self.send(SET_OWNER)
        self.send(GET_FEATURES)
        _, feat = self.recv_reply()
        assert struct.unpack("<Q", feat)[0] & VERSION_1
        self.send(SET_FEATURES, struct.pack("<Q", VERSION_1))
        region = struct.pack("<QQQQ", 0, MEM_SIZE, UVA, 0)
        self.send(SET_MEM_TABLE, struct.pack("<II", 1, 0) + region, [self.memfd])
        self.send(SET_VRING_NUM, struct.pack("<II", TX, NUM))
        self.send(SET_VRING_ADDR, struct.pack("<IIQQQQ", TX, 0, UVA + DESC, UVA + USED,
                                              UVA + AVAIL, 0))
        self.send(SET_VRING_BASE, struct.pack("<II", TX, 0))
        self.send(SET_VRING_CALL, struct.pack("<Q", TX), [self.call])
        self.send(SET_VRING_KICK, struct.pack("<Q", TX), [self.kick])

    def offer_bad_chain(self):
        # One descriptor whose "next" points at itself: a loop.
        self.mem[DESC:DESC + 16] = struct.pack("<QIHH", BUF, 64, 1, 0)  # flags NEXT, next 0
        self.mem[AVAIL + 4:AVAIL + 6] = struct.pack("<H", 0)             # ring[0] = head 0
        self.mem[AVAIL + 2:AVAIL + 4] = struct.pack("<H", 1)             # idx = 1
        os.eventfd_write(self.kick, 1)

    def closed_by_peer(self, timeout=10):
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self):
        self.sock.close()
        self.mem.close()
        for fd in (self.memfd, self.kick, self.call):
            os.close(fd)


def test_descriptor_loop_breaks_only_that_vm(switch_run):
    sw = switch_run
    sw.write_conf("router", ROUTER_MAC, "router")
    sw.write_conf("c1", C1_MAC)
    sw.write_conf("c2", C2_MAC)
    sw.start()
    before = {vm: v["pid"] for vm, v in sw.wait_running(["router", "c1", "c2"]).items()}
    r = pmd(sw, "router", ROUTER_MAC, C2_MAC)
    b = pmd(sw, "c2", C2_MAC, ROUTER_MAC)
    r.start_rx()
    b.start_rx()
    deadline = time.monotonic() + 30
    while b.rx_packets() == 0:
        assert time.monotonic() < deadline, "router -> c2 does not work to begin with"
        r.send(1)
        time.sleep(0.3)

    bad = Frontend(os.path.join(sw.socket_dir, "c1.sock"))
    bad.start_tx_ring()
    sw.wait_stats(lambda s: s["c1"]["state"] == "serving", what="the hostile frontend served")
    bad.offer_bad_chain()
    assert bad.closed_by_peer(), "vm-switch kept serving a frontend that broke its ring"
    s = sw.wait_stats(lambda s: s["c1"]["state"] == "broken", what="c1 marked broken")
    assert "c1: the guest broke its transmit queue" in sw.log_text()
    # Not a crash: the same child, nothing restarted, nobody else touched.
    assert {vm: v["pid"] for vm, v in s.items()} == before
    assert all(v["restarts"] == 0 for v in s.values())
    bad.close()

    # The other pair carries on.
    n = b.rx_packets()
    r.send(1)
    b.wait_rx(n + 32)
    # And c1's child takes the next frontend.
    again = Frontend(os.path.join(sw.socket_dir, "c1.sock"))
    again.send(GET_FEATURES)
    _, feat = again.recv_reply()
    assert struct.unpack("<Q", feat)[0] & VERSION_1
    sw.wait_stats(lambda s: s["c1"]["state"] == "serving", what="c1 served again")
    again.close()
    sw.wait_stats(lambda s: s["c1"]["state"] == "waiting", what="c1 waiting after a clean close")
