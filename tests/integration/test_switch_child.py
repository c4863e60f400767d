"""One vm-switch child against a compromised peer child (writing into the
shared rings) and a hostile guest (a Python vhost-user frontend): whatever
they do, the child answers its pings, never dies because of another
process's writes, and does not spin."""
import os
import shutil
import struct
import tempfile
import time

import pytest

from qltest import made
from qltest.child import (CLIENT, RING_HEAD, RING_SLOTS, RING_TAIL, ROUTER, ChildRun, PeerRing,
                          mac_bytes)
from qltest.procs import wait_for
from qltest.vhost import (DESC_NEXT, EVENT_IDX, HDR, MRG_RXBUF, RX, SET_VRING_NUM, TX, VERSION_1,
                          Frontend)

ROUTER_MAC = "52:54:00:5b:00:01"
C1_MAC = "52:54:00:5b:00:02"
C2_MAC = "52:54:00:5b:00:03"
OTHER_MAC = "52:54:00:5b:00:99"
BROADCAST = "ff:ff:ff:ff:ff:ff"


def frame(dst, src, size=64):
    return mac_bytes(dst) + mac_bytes(src) + b"\x08\x00" + b"x" * (size - 14)


@pytest.fixture
def children():
    """children(name, port=, mac=, role=): a ChildRun in a short temporary
    directory (unix socket paths are limited to 108 bytes)."""
    base = tempfile.mkdtemp(prefix="qlc-")
    try:
        yield from made(lambda *a, **kw: ChildRun(base, *a, **kw))
    finally:
        shutil.rmtree(base, ignore_errors=True)


def client_to_router(children):
    """c1 (port 1) with the router on port 0, a ring c1 -> router, and a
    guest's frontend that negotiated: (child, ring, frontend)."""
    ch = children("c1", port=1, mac=C1_MAC, role=CLIENT)
    ch.peer(0, ROUTER_MAC, ROUTER)
    out = ch.put_buffer(0)
    ch.ping()
    fe = Frontend(ch.sock_path)
    fe.negotiate()
    return ch, out, fe


def client_with_router_ring(children):
    """c1 (port 1) with the router on port 0 and a ring router -> c1."""
    ch = children("c1", port=1, mac=C1_MAC, role=CLIENT)
    ch.peer(0, ROUTER_MAC, ROUTER)
    ring = ch.get_buffer(0)
    return ch, ring


def test_corrupt_ring_from_peer_does_not_kill_child(children):
    """A client child that moved the head of its ring to the router far
    past the tail, between GET_BUFFER and the router's PUT_BUFFER: the
    router child drops that ring only and goes on."""
    r = children("router", port=0, mac=ROUTER_MAC, role=ROUTER)
    r.peer(1, C1_MAC, CLIENT)
    r.peer(2, C2_MAC, CLIENT)
    r.get_buffer(1)
    r.get_buffer(2)
    bad = PeerRing()
    bad.set_u32(RING_HEAD, 1000)
    r.put_buffer(1, ring=bad)
    good = r.put_buffer(2)
    pong, _ = r.ping()
    assert r.alive(), r.log_text()
    assert "ring towards port 1" in r.log_text()
    # The ring towards c2 works: a broadcast from the router's guest gets
    # there, the one towards c1 is counted as peer_down.
    fe = Frontend(r.sock_path)
    fe.negotiate()
    tx = fe.start_queue(TX)
    tx.offer([HDR + 64], writable=False, data=[bytes(HDR) + frame(BROADCAST, ROUTER_MAC)])
    wait_for(lambda: good.u32(RING_HEAD) == 1, timeout=5, what="the frame on the ring to c2")
    pong, _ = r.ping()
    assert pong["drops"]["peer_down"] == 1, pong
    assert r.alive()
    fe.close()


def test_rx_buffers_too_small_no_busy_loop(children):
    """A frame that needs more receive buffers than the guest offers:
    the child waits for more without spinning, and a frame that cannot fit
    in the whole ring is dropped as oversize."""
    ch, ring = client_with_router_ring(children)
    fe = Frontend(ch.sock_path)
    fe.negotiate(VERSION_1 | MRG_RXBUF)
    rx = fe.start_queue(RX)
    rx.offer([64], writable=True)
    ring.produce([frame(C1_MAC, ROUTER_MAC, 1000)])
    time.sleep(0.3)
    a = ch.cpu_seconds()
    time.sleep(1.0)
    used = ch.cpu_seconds() - a
    assert used < 0.2, f"the child used {used:.2f} s of CPU in 1 s waiting for buffers"
    # Eight 64-byte buffers (the whole ring) cannot hold it: oversize.
    rx.offer([64] * 7, writable=True)
    wait_for(lambda: ch.ping()[0]["drops"]["oversize"] == 1, timeout=5,
             what="the frame dropped as oversize")
    assert rx.used_idx() == 0
    assert ring.u32(RING_TAIL) == 1
    # Later frames that fit are delivered into the same buffers.
    ring.produce([frame(C1_MAC, ROUTER_MAC, 100)])
    wait_for(lambda: rx.used_idx() == 2, timeout=5, what="the next frame delivered")
    assert ch.ping()[0]["tx_frames"] == 1


def test_rx_event_idx_wakes_on_new_buffers(children):
    """With EVENT_IDX the child, short of buffers in the middle of a frame,
    asks for a kick on the next buffer the guest adds (a guest that
    follows avail_event kicks only then)."""
    ch, ring = client_with_router_ring(children)
    fe = Frontend(ch.sock_path)
    fe.negotiate(VERSION_1 | MRG_RXBUF | EVENT_IDX)
    rx = fe.start_queue(RX)
    rx.offer([64], writable=True)
    ring.produce([frame(C1_MAC, ROUTER_MAC, 1000)])
    time.sleep(0.5)
    assert rx.used_idx() == 0
    kicked = rx.offer([2048], writable=True)
    assert kicked, "avail_event was left where the guest had already gone"
    wait_for(lambda: rx.used_idx() == 2, timeout=5, what="the frame in two buffers")
    assert ch.ping()[0]["tx_frames"] == 1


def test_ring_frames_checked_by_the_consumer(children):
    """A compromised client child publishes frames with another source MAC,
    and to another client: the router child drops them, counted as
    spoofed_source or client_to_client against that client; the router's
    own counters do not move."""
    r = children("router", port=0, mac=ROUTER_MAC, role=ROUTER)
    r.peer(1, C1_MAC, CLIENT)
    r.peer(2, C2_MAC, CLIENT)
    ring = r.get_buffer(1)
    fe = Frontend(r.sock_path)
    fe.negotiate(VERSION_1 | MRG_RXBUF)
    rx = fe.start_queue(RX)
    rx.offer([2048] * 8, writable=True)
    good = frame(ROUTER_MAC, C1_MAC)
    ring.produce([frame(ROUTER_MAC, OTHER_MAC), frame(ROUTER_MAC, C2_MAC), good,
                  frame(C2_MAC, C1_MAC), frame(BROADCAST, C1_MAC), b"\x01" * 10])
    wait_for(lambda: ring.u32(RING_TAIL) == 6, timeout=5, what="the router to take them")
    wait_for(lambda: rx.used_idx() == 2, timeout=5, what="two frames delivered")
    time.sleep(0.2)
    assert rx.used_idx() == 2
    _, n = rx.used_entry(0)
    assert rx.buffer(rx.used_entry(0)[0], n)[HDR:] == good
    pong, _ = r.ping()
    assert pong["tx_frames"] == 2
    assert pong["refused_from"][1]["spoofed_source"] == 2, pong
    assert pong["refused_from"][1]["client_to_client"] == 1, pong
    assert pong["refused_from"][1]["runt"] == 1, pong
    assert all(v == 0 for k, v in pong["drops"].items()), pong


def test_unpollable_kick_fd_breaks_only_the_device(children):
    ch = children("c1", port=1, mac=C1_MAC, role=CLIENT)
    fe = Frontend(ch.sock_path)
    fe.negotiate()
    kick = os.memfd_create("not-pollable")
    try:
        fe.start_queue(TX, kick=kick, sync=False)
        assert fe.closed_by_peer(), "the frontend with a memfd as kick fd was kept"
        assert ch.alive(), ch.log_text()
        assert ch.ping()[0]["state"] == "broken"
    finally:
        os.close(kick)
        fe.close()


def test_full_call_pipe_does_not_block(children):
    """A guest whose call fd is a full pipe: the child does not block on
    it and answers its pings."""
    ch, out, fe = client_to_router(children)
    rd, wr = os.pipe()
    os.set_blocking(wr, False)
    try:
        while True:
            os.write(wr, b"x" * 65536)
    except BlockingIOError:
        pass
    os.set_blocking(wr, True)
    try:
        tx = fe.start_queue(TX, call=wr)
        tx.offer([HDR + 64] * 4, writable=False,
                 data=[bytes(HDR) + frame(ROUTER_MAC, C1_MAC)] * 4)
        wait_for(lambda: out.u32(RING_HEAD) == 4, timeout=5, what="frames on the ring")
        wait_for(lambda: tx.used_idx() == 4, timeout=5, what="the chains used")
        pong, rtt = ch.ping(timeout=2)
        assert pong["rx_frames"] == 4
    finally:
        os.close(rd)
        os.close(wr)
        fe.close()


def test_protocol_violation_is_broken(children):
    ch = children("c1", port=1, mac=C1_MAC, role=CLIENT)
    fe = Frontend(ch.sock_path)
    fe.negotiate()
    fe.send(SET_VRING_NUM, struct.pack("<II", 0, 3))  # not a power of two
    assert fe.closed_by_peer()
    assert ch.ping()[0]["state"] == "broken"
    fe.close()


def test_frames_before_a_bad_chain_are_published(children):
    """A guest whose transmit ring breaks after good frames, in one batch:
    the device is broken, and the frames taken before go out all the same
    (committed to the ring, not left unpublished)."""
    ch, out, fe = client_to_router(children)
    tx = fe.start_queue(TX)
    good = bytes(HDR) + frame(ROUTER_MAC, C1_MAC)
    fe.mem[tx.bufs:tx.bufs + len(good)] = good
    tx.offer_chains([(tx.bufs, len(good), 0, 0),
                     (tx.bufs, 64, DESC_NEXT, 1)],   # next: itself
                    [0, 1])
    assert fe.closed_by_peer()
    assert ch.ping()[0]["state"] == "broken"
    assert out.u32(RING_HEAD) == 1
    fe.close()


def test_counts_against_a_removed_port_are_forgotten(children):
    """What a child counted against a peer (ring full, refused frames) is
    not reported for that port once the peer has left the network: the
    next VM in the slot starts from zero."""
    r = children("router", port=0, mac=ROUTER_MAC, role=ROUTER)
    r.peer(1, C1_MAC, CLIENT)
    ring_in = r.get_buffer(1)
    r.put_buffer(1)  # never consumed: fills up
    fe = Frontend(r.sock_path)
    fe.negotiate()
    tx = fe.start_queue(TX)
    rx = fe.start_queue(RX)
    rx.offer([2048] * 8, writable=True)
    data = bytes(HDR) + frame(C1_MAC, ROUTER_MAC)
    sent = 0
    while sent < RING_SLOTS + 8:
        tx.offer([len(data)] * 8, writable=False, data=[data] * 8)
        sent += 8
        wait_for(lambda: tx.used_idx() == sent, timeout=5, what="the chains used")
    ring_in.produce([frame(ROUTER_MAC, OTHER_MAC)])
    wait_for(lambda: ring_in.u32(RING_TAIL) == 1, timeout=5, what="the frame taken")
    pong, _ = r.ping()
    assert pong["ring_full_to"][1] == 8, pong["ring_full_to"][:4]
    assert pong["refused_from"][1]["spoofed_source"] == 1
    r.peer_remove(1)
    pong, _ = r.ping()
    assert pong["ring_full_to"][1] == 0
    assert pong["refused_from"][1]["spoofed_source"] == 0
    fe.close()
