"""A vhost-user frontend written in Python: what a guest's VMM says to a
vhost-user backend (vm-switch's child for a VM), byte by byte, with the
"guest memory" a memfd the backend maps. Tests use it to play a guest that
breaks the rules.

    fe = Frontend(sock_path)
    fe.negotiate(VERSION_1 | MRG_RXBUF)     SET_OWNER, features, SET_MEM_TABLE
    rx = fe.start_queue(RX)                 a split ring of NUM descriptors
    rx.offer([2048] * 8, writable=True)     buffers for the device to fill
    rx.used_idx(), rx.used_entry(0), rx.buffer(head, length)
    tx.offer_chains([(addr, len, NEXT, 0)], [0])   descriptors as given
    fe.closed_by_peer()                     the backend dropped us

    features = get_features(sock_path, deadline)   a backend that answers
"""
import mmap
import os
import socket
import struct
import sys
import time

# Requests (vhost-user), the reply flag, feature bits (virtio).
GET_FEATURES, SET_FEATURES, SET_OWNER, SET_MEM_TABLE = 1, 2, 3, 5
SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE = 8, 9, 10
SET_VRING_KICK, SET_VRING_CALL = 12, 13
FLAG_VERSION, FLAG_REPLY = 0x1, 0x4
VERSION_1, MRG_RXBUF, EVENT_IDX = 1 << 32, 1 << 15, 1 << 29
# Descriptor flags.
DESC_NEXT, DESC_WRITE = 1, 2
# virtio-net queues and the header before each frame (with MRG_RXBUF).
RX, TX = 0, 1
HDR = 12
MEM_SIZE = 1 << 20
UVA = 0x100000000   # where the "frontend" says its memory is mapped
NUM = 8


# The ring indexes are read by the backend while we write them: each must
# be one load or one store of its full width, as a driver's are. Not
# struct.pack_into: it clears its bytes before it writes them (a backend
# reading in between sees the index go back to 0, and rightly drops us as
# broken), and "<H" goes byte by byte. A memoryview's item is one copy of
# the word's size, and so is unpacking a native format. This machine is
# little-endian, as virtio and vm-switch's rings are.
assert sys.byteorder == "little"


def load_word(mem, off, fmt="H"):
    """A 16-bit (fmt "I": 32-bit) word of shared memory, read at once."""
    return struct.unpack_from(fmt, mem, off)[0]


def store_word(mem, off, v, fmt="H"):
    """A 16-bit (fmt "I": 32-bit) word of shared memory, written at once."""
    with memoryview(mem) as whole, whole[off:off + struct.calcsize(fmt)].cast(fmt) as word:
        word[0] = v


def header(req, size):
    return struct.pack("<III", req, FLAG_VERSION, size)


class Queue:
    """A split ring in the frontend's memory: desc, avail, used, buffers."""

    def __init__(self, fe, q, num=NUM):
        self.fe, self.q, self.num = fe, q, num
        base = 0x1000 + q * 0x40000
        self.desc, self.avail, self.used = base, base + 0x1000, base + 0x2000
        self.bufs = base + 0x3000
        self.avail_idx = 0
        self.kick = os.eventfd(0)
        self.call = os.eventfd(0, os.EFD_NONBLOCK)

    def offer(self, sizes, writable, data=()):
        """Makes one single-descriptor chain available per size; kicks
        unless EVENT_IDX says the device does not want it."""
        mem = self.fe.mem
        old = self.avail_idx
        for i, size in enumerate(sizes):
            d = self.avail_idx % self.num
            addr = self.bufs + d * 0x2000
            if i < len(data):
                mem[addr:addr + len(data[i])] = data[i]
            struct.pack_into("<QIHH", mem, self.desc + 16 * d, addr, size,
                             DESC_WRITE if writable else 0, 0)
            struct.pack_into("<H", mem, self.avail + 4 + 2 * (self.avail_idx % self.num), d)
            self.avail_idx = (self.avail_idx + 1) & 0xffff
        store_word(mem, self.avail + 2, self.avail_idx)
        if self.fe.features & EVENT_IDX:
            event = load_word(mem, self.used + 4 + 8 * self.num)
            if ((self.avail_idx - event - 1) & 0xffff) >= ((self.avail_idx - old) & 0xffff):
                return False
        os.eventfd_write(self.kick, 1)
        return True

    def offer_chains(self, descs, heads):
        """Writes descs [(addr, len, flags, next)] from descriptor 0 on as
        they are, makes heads available and kicks: the chains a guest
        breaks on purpose."""
        mem = self.fe.mem
        for i, (addr, length, flags, nxt) in enumerate(descs):
            struct.pack_into("<QIHH", mem, self.desc + 16 * i, addr, length, flags, nxt)
        for head in heads:
            struct.pack_into("<H", mem, self.avail + 4 + 2 * (self.avail_idx % self.num), head)
            self.avail_idx = (self.avail_idx + 1) & 0xffff
        store_word(mem, self.avail + 2, self.avail_idx)
        os.eventfd_write(self.kick, 1)

    def used_idx(self):
        return load_word(self.fe.mem, self.used + 2)

    def used_entry(self, i):
        return struct.unpack_from("<II", self.fe.mem, self.used + 4 + 8 * (i % self.num))

    def buffer(self, head, length):
        addr = self.bufs + head * 0x2000
        return bytes(self.fe.mem[addr:addr + length])


class Frontend:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(path)
        self.memfd = os.memfd_create("guest")
        os.ftruncate(self.memfd, MEM_SIZE)
        self.mem = mmap.mmap(self.memfd, MEM_SIZE)
        self.features = 0
        self.queues = {}

    def send(self, req, payload=b"", fds=()):
        msg = header(req, len(payload)) + payload
        if fds:
            socket.send_fds(self.sock, [msg], list(fds))
        else:
            self.sock.sendall(msg)

    def recv_reply(self):
        hdr = self.sock.recv(12, socket.MSG_WAITALL)
        req, flags, size = struct.unpack("<III", hdr)
        return req, self.sock.recv(size, socket.MSG_WAITALL)

    def get_features(self):
        self.send(GET_FEATURES)
        _, feat = self.recv_reply()
        return struct.unpack("<Q", feat)[0]

    def negotiate(self, features=VERSION_1):
        self.send(SET_OWNER)
        assert self.get_features() & features == features
        self.features = features
        self.send(SET_FEATURES, struct.pack("<Q", features))
        region = struct.pack("<QQQQ", 0, MEM_SIZE, UVA, 0)
        self.send(SET_MEM_TABLE, struct.pack("<II", 1, 0) + region, [self.memfd])

    def start_queue(self, q, kick=None, call=None, sync=True):
        vq = Queue(self, q)
        self.queues[q] = vq
        self.send(SET_VRING_NUM, struct.pack("<II", q, vq.num))
        self.send(SET_VRING_ADDR, struct.pack("<IIQQQQ", q, 0, UVA + vq.desc, UVA + vq.used,
                                              UVA + vq.avail, 0))
        self.send(SET_VRING_BASE, struct.pack("<II", q, 0))
        self.send(SET_VRING_CALL, struct.pack("<Q", q), [call if call is not None else vq.call])
        self.send(SET_VRING_KICK, struct.pack("<Q", q), [kick if kick is not None else vq.kick])
        if sync:
            self.sync()
        return vq

    def sync(self):
        """Returns once the backend has handled every message before."""
        self.get_features()

    def closed_by_peer(self, timeout=10):
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self):
        self.sock.close()
        self.mem.close()
        os.close(self.memfd)
        for vq in self.queues.values():
            os.close(vq.kick)
            os.close(vq.call)


def get_features(path, deadline):
    """Connects to a vhost-user backend's socket (again and again until it
    accepts) and asks GET_FEATURES; returns the features once answered.
    Lean on purpose: benchmarks time a restarted backend with it."""
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(max(0.001, deadline - time.monotonic()))
            s.connect(path)
            s.sendall(header(GET_FEATURES, 0))
            reply = b""
            while len(reply) < 20:
                chunk = s.recv(20 - len(reply))
                if not chunk:
                    break
                reply += chunk
            if len(reply) == 20:
                req, flags, size, features = struct.unpack("<IIIQ", reply)
                if req == GET_FEATURES and flags & FLAG_REPLY and size == 8:
                    return features
        except OSError:
            pass
        finally:
            s.close()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path}: no GET_FEATURES answer")
        time.sleep(0.0005)
