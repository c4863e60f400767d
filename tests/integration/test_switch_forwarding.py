"""vm-switch forwarding between real vhost-user frontends: one dpdk-testpmd
(net_virtio_user) per VM, a router and two clients. Frames go where the
policy says and nowhere else, and the counters file says what happened.
"""
import time

from qltest.switch import BROADCAST, BURST, C1_MAC, C2_MAC, ROUTER_MAC, needs_testpmd

pytestmark = needs_testpmd


def three_vms(sw):
    sw.start_vms("router", "c1", "c2")
    return sw.serve(router=C1_MAC, c1=ROUTER_MAC, c2=ROUTER_MAC)


def settle(sw):
    """Counters as they stand once nothing moves any more."""
    prev = None
    while True:
        time.sleep(1.2)
        cur = sw.stats()
        if cur == prev:
            return cur
        prev = cur


def delta(after, before, vm, key):
    return after[vm][key] - before[vm][key]


def test_policy(switch_run):
    sw = switch_run
    r, a, b = three_vms(sw)
    r.send_until(a)
    a.send_until(r)
    base = settle(sw)
    ra, rr, rb = a.rx_packets(), r.rx_packets(), b.rx_packets()
    assert rb == 0, "c2 received frames addressed to c1"

    # Router -> c1: delivered to c1 only.
    r.send(2)
    a.wait_rx(ra + 2 * BURST)
    # Client -> router.
    a.send(2)
    r.wait_rx(rr + 2 * BURST)
    # Client -> client: never delivered, counted against the sender.
    a.set_peer(C2_MAC)
    a.send(2)
    sw.wait_stats(lambda s: delta(s, base, "c1", "drop_client_to_client") == 2 * BURST,
                  what="client-to-client drops")
    # Router broadcast: every client.
    r.set_peer(BROADCAST)
    r.send(1)
    a.wait_rx(ra + 3 * BURST)
    b.wait_rx(BURST)
    # Client broadcast: the router only.
    b.set_peer(BROADCAST)
    b.send(1)
    r.wait_rx(rr + 3 * BURST)
    # Unknown unicast from the router: dropped, never flooded.
    r.set_peer("52:54:00:5a:00:77")
    r.send(1)
    sw.wait_stats(lambda s: delta(s, base, "router", "drop_unknown_unicast") == BURST,
                  what="unknown unicast drops")

    end = settle(sw)
    assert a.rx_packets() == ra + 3 * BURST
    assert b.rx_packets() == BURST
    assert r.rx_packets() == rr + 3 * BURST
    # rx: received from the guest; tx: delivered to the guest. 64-byte frames.
    assert delta(end, base, "router", "rx_frames") == 4 * BURST
    assert delta(end, base, "router", "tx_frames") == 3 * BURST
    assert delta(end, base, "router", "tx_bytes") == 3 * BURST * 64
    assert delta(end, base, "c1", "rx_frames") == 4 * BURST
    assert delta(end, base, "c1", "rx_bytes") == 4 * BURST * 64
    assert delta(end, base, "c1", "tx_frames") == 3 * BURST
    assert delta(end, base, "c2", "rx_frames") == BURST
    assert delta(end, base, "c2", "tx_frames") == BURST
    for vm in ("router", "c1", "c2"):
        assert end[vm]["drop_spoofed_source"] == 0
        assert end[vm]["drop_ring_full"] == 0
        assert end[vm]["restarts"] == 0
    print("counters:", end)


def test_spoofed_source_dropped(switch_run):
    sw = switch_run
    sw.start_vms("router", "c1")
    r = sw.pmd("router", ROUTER_MAC, C1_MAC)
    r.start_rx()
    # An impostor on c1's socket, sending with a MAC that is not c1's.
    imp = sw.pmd("c1", "52:54:00:5a:00:99", ROUTER_MAC)
    sw.wait_stats(lambda s: s["c1"]["state"] == "serving" and s["router"]["state"] == "serving")
    imp.send(2)
    s = sw.wait_stats(lambda s: s["c1"]["drop_spoofed_source"] == 2 * BURST,
                      what="spoofed frames counted")
    assert s["c1"]["rx_frames"] == 2 * BURST
    time.sleep(1)
    assert r.rx_packets() == 0
    s = settle(sw)
    assert s["router"]["tx_frames"] == 0
    assert s["c1"]["drop_spoofed_source"] == 2 * BURST


def test_large_frames_over_small_receive_buffers(switch_run):
    """1500-byte frames into a guest whose receive buffers hold 384 bytes:
    each frame spreads over several buffers (MRG_RXBUF, num_buffers) and
    arrives whole; frames longer than a ring slot are dropped as oversize."""
    sw = switch_run
    sw.start_vms("router", "c1")
    r = sw.pmd("router", ROUTER_MAC, C1_MAC)
    # 512-byte mbufs less 128 bytes of headroom.
    a = sw.pmd("c1", C1_MAC, ROUTER_MAC, extra=["--mbuf-size=512", "--enable-scatter"])
    r.start_rx()
    a.start_rx()
    r.send_until(a)
    base = settle(sw)
    n, nbytes = a.rx_packets(), a.rx_bytes_errors()[0]
    r.stop_fwd()
    r.cmd("set txpkts 1500")
    r.send(2)
    a.wait_rx(n + 2 * BURST)
    got_bytes, errors = a.rx_bytes_errors()
    assert errors == 0
    assert got_bytes - nbytes == 2 * BURST * 1500
    # Two segments of 1100 bytes: 2200 bytes, more than a ring slot holds.
    r.stop_fwd()
    r.cmd("set txpkts 1100,1100")
    r.send(1)
    s = sw.wait_stats(lambda s: delta(s, base, "router", "drop_oversize") == BURST,
                      what="oversize drops")
    time.sleep(1)
    assert a.rx_packets() == n + 2 * BURST
    end = settle(sw)
    assert delta(end, base, "c1", "tx_frames") == 2 * BURST
    assert delta(end, base, "c1", "tx_bytes") == 2 * BURST * 1500
    assert delta(end, base, "router", "rx_frames") == 3 * BURST


def test_client_to_router_backpressure(switch_run):
    """A client streaming to a router that does not read: the frames wait
    (in the ring, then in the client's own transmit queue) instead of
    being dropped, and once the router reads again every frame the switch
    took from the client reaches it."""
    sw = switch_run
    sw.start_vms("router", "c1")
    r, a = sw.serve(router=C1_MAC, c1=ROUTER_MAC)
    a.send_until(r)
    base = settle(sw)
    rr = r.rx_packets()

    r.stop_fwd()          # the router stops reading its receive queue
    a.stream()            # the client sends without end
    time.sleep(2)
    stuck = sw.stats()["c1"]["rx_frames"]
    time.sleep(1.5)
    # Taken from the guest only as fast as the router's buffers, the ring
    # and its queue allow: the switch took next to nothing more.
    assert sw.stats()["c1"]["rx_frames"] - stuck < 1024
    r.start_rx()          # the router reads again: the stream resumes
    sw.wait_stats(lambda s: s["c1"]["rx_frames"] > stuck + 10000, what="the stream to resume")
    a.stop_fwd()
    end = settle(sw)
    took = delta(end, base, "c1", "rx_frames")
    assert delta(end, base, "router", "tx_frames") == took
    assert r.rx_packets() - rr == took
    for key, value in end["c1"].items():
        if key.startswith("drop_"):
            assert value == 0, (key, end["c1"])
    print(f"{took} frames client -> router, none lost")


def test_slow_client_does_not_stall_the_router(switch_run):
    """The router broadcasts without end; one client stops reading. Its
    frames are dropped after a bounded retry and counted against it
    (ring_full), while the other client keeps receiving."""
    sw = switch_run
    r, a, b = three_vms(sw)
    r.send_until(a)
    a.stop_fwd()             # c1 stops reading
    r.set_peer(BROADCAST)
    r.stream()
    b.wait_rx(b.rx_packets() + 5000)
    n = b.rx_packets()
    time.sleep(1)
    assert b.rx_packets() > n, "c2 starved while c1 does not read"
    s = sw.wait_stats(lambda s: s["c1"]["drop_ring_full"] > 1000, what="ring_full drops for c1")
    r.stop_fwd()
    assert s["router"]["drop_ring_full"] == 0
    assert s["router"]["rx_frames"] > s["c1"]["tx_frames"]
    print(f"c1 dropped {s['c1']['drop_ring_full']} (ring full), "
          f"c2 drops {s['c2']['drop_ring_full']}")
