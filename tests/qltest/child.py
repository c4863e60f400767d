"""One vm-switch child driven directly: the test plays its main process
over the control socket (SETUP, PEER, GET_BUFFER/PUT_BUFFER with real
sealed ring memfds, PING) and a hostile peer child by writing into the
shared rings; the guest is qltest.vhost's frontend. What a compromised
child or guest can do is done here byte by byte.

    ch = ChildRun(tmpdir, "c1", port=1, mac=C1_MAC, role=CLIENT)
    ch.peer(0, ROUTER_MAC, ROUTER)
    ring = ch.get_buffer(0)          ring router -> c1 (we write as producer)
    fe = Frontend(ch.sock_path); fe.negotiate(); fe.start_queue(RX)
    pong = ch.ping()                 {"state": .., "drops": {...}, ...}
"""
import fcntl
import mmap
import os
import socket
import struct
import subprocess
import time

from qltest import program
from qltest.procs import cpu_seconds
from qltest.vhost import load_word, store_word

CLIENT, ROUTER = 0, 1
SETUP, PEER, PEER_REMOVE, PEER_DOWN, GET_BUFFER, PUT_BUFFER, PING = 1, 2, 3, 4, 5, 6, 7
BUFFER_READY, PONG = 64, 65
STATES = ("waiting", "serving", "broken")
DROPS = ("runt", "spoofed_source", "client_to_client", "unknown_unicast", "to_self",
         "no_destination", "oversize", "malformed", "peer_down", "ring_full", "bad_slot",
         "guest_down")
MAX_PORTS = 64
POLICY_DROPS = 6  # the first six of DROPS

# The ring memfd (switch/net/ring.c): head, tail and the two wait flags on
# their own cache lines, then 256 slots of {len, flags, 2040 bytes}, each
# followed by one unused cache line.
RING_HEAD, RING_TAIL, RING_CWAIT, RING_PWAIT, RING_SLOT0 = 0, 64, 128, 192, 256
RING_SLOTS, RING_SLOT_SIZE = 256, 2048 + 64
RING_SHM = (256 + RING_SLOTS * RING_SLOT_SIZE + 4095) // 4096 * 4096
F_ADD_SEALS, F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW = 1033, 1, 2, 4


def mac_bytes(mac):
    return bytes.fromhex(mac.replace(":", ""))


class PeerRing:
    """A ring memfd with its two eventfds, mapped here as well."""

    def __init__(self):
        self.memfd = os.memfd_create("ring", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        os.ftruncate(self.memfd, RING_SHM)
        fcntl.fcntl(self.memfd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW)
        self.mem = mmap.mmap(self.memfd, RING_SHM)
        self.data_efd = os.eventfd(0, os.EFD_NONBLOCK)
        self.space_efd = os.eventfd(0, os.EFD_NONBLOCK)

    def fds(self):
        return [self.memfd, self.data_efd, self.space_efd]

    def u32(self, off):
        return load_word(self.mem, off, "I")

    def set_u32(self, off, v):
        store_word(self.mem, off, v & 0xffffffff, "I")

    def produce(self, frames):
        """Writes the frames after head, publishes them and wakes the consumer."""
        head = self.u32(RING_HEAD)
        for i, f in enumerate(frames):
            slot = RING_SLOT0 + ((head + i) % RING_SLOTS) * RING_SLOT_SIZE
            struct.pack_into("<II", self.mem, slot, len(f), 0)
            self.mem[slot + 8:slot + 8 + len(f)] = f
        self.set_u32(RING_HEAD, head + len(frames))
        os.eventfd_write(self.data_efd, 1)

    def close(self):
        self.mem.close()
        for fd in self.fds():
            os.close(fd)


class ChildRun:
    def __init__(self, base, name, port, mac, role, gen=1):
        self.base = str(base)
        self.name, self.port, self.mac, self.role, self.gen = name, port, mac, role, gen
        self.sock_path = os.path.join(self.base, f"{name}.sock")
        self.ctl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.log_path = os.path.join(self.base, f"{name}.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [program("vm-switch"), "--child", str(theirs.fileno()), "--log-level", "debug"],
            pass_fds=[theirs.fileno()], stdout=self.log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        theirs.close()
        self.ctl.settimeout(5)
        self.seq = 0
        self.rings = []
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.sock_path)
        listener.listen(4)
        msg = struct.pack("<IIII6sBB16s", SETUP, 0, port, gen, mac_bytes(mac), role, 0,
                          name.encode())
        socket.send_fds(self.ctl, [msg], [listener.fileno()])
        listener.close()

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def alive(self):
        return self.proc.poll() is None

    def peer(self, port, mac, role):
        self.ctl.send(struct.pack("<III6sBB", PEER, 0, port, mac_bytes(mac), role, 0))

    def peer_remove(self, port):
        self.ctl.send(struct.pack("<IIII", PEER_REMOVE, 0, port, 0))

    def _buffer(self, typ, port, ring, peer_gen=1):
        msg = struct.pack("<IIIIII", typ, 0, port, peer_gen, self.gen, 0)
        socket.send_fds(self.ctl, [msg], ring.fds())

    def get_buffer(self, port, peer_gen=1, ring=None):
        """A ring from port to the child; waits for its BUFFER_READY."""
        ring = ring or PeerRing()
        self.rings.append(ring)
        self._buffer(GET_BUFFER, port, ring, peer_gen)
        typ, body = self._recv()
        assert typ == BUFFER_READY, typ
        assert struct.unpack_from("<II", body) == (port, peer_gen)
        return ring

    def put_buffer(self, port, peer_gen=1, ring=None):
        """A ring from the child to port."""
        ring = ring or PeerRing()
        self.rings.append(ring)
        self._buffer(PUT_BUFFER, port, ring, peer_gen)
        return ring

    def _recv(self):
        data = self.ctl.recv(4096)
        if not data:
            raise EOFError(f"{self.name}: the child closed its control socket:\n"
                           f"{self.log_text()[-3000:]}")
        typ, _ = struct.unpack_from("<II", data)
        return typ, data[8:]

    def ping(self, timeout=2.0):
        """Sends a PING; returns the PONG (parsed) and its round trip in s."""
        self.seq += 1
        t0 = time.monotonic()
        self.ctl.settimeout(timeout)
        self.ctl.send(struct.pack("<IIQ", PING, 0, self.seq))
        while True:
            typ, body = self._recv()
            if typ == PONG:
                break
        rtt = time.monotonic() - t0
        seq, state, _ = struct.unpack_from("<QII", body)
        n = 4 + len(DROPS) + MAX_PORTS + MAX_PORTS * POLICY_DROPS
        vals = struct.unpack_from(f"<{n}Q", body, 16)
        assert seq == self.seq
        pong = {"state": STATES[state], "rx_frames": vals[0], "rx_bytes": vals[1],
                "tx_frames": vals[2], "tx_bytes": vals[3],
                "drops": dict(zip(DROPS, vals[4:4 + len(DROPS)])),
                "ring_full_to": vals[4 + len(DROPS):4 + len(DROPS) + MAX_PORTS],
                "refused_from": [dict(zip(DROPS, vals[k:k + POLICY_DROPS]))
                                 for k in range(4 + len(DROPS) + MAX_PORTS, n, POLICY_DROPS)]}
        return pong, rtt

    def cpu_seconds(self):
        return cpu_seconds(self.proc.pid)

    def stop(self):
        self.ctl.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        for r in self.rings:
            r.close()
