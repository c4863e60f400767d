"""A hostile vhost-user frontend against vm-switch: a guest whose transmit
ring breaks the rules gets its connection dropped and its VM marked
broken; its child is not restarted and accepts the next frontend; the
other VMs never notice. The frontend here is Python (qltest.vhost)
speaking vhost-user over the VM's socket, with its "guest memory" a
memfd; the other VMs are dpdk-testpmd."""
from qltest.switch import C2_MAC, ROUTER_MAC, needs_testpmd
from qltest.vhost import DESC_NEXT, TX, VERSION_1, Frontend

pytestmark = needs_testpmd


def test_descriptor_loop_breaks_only_that_vm(switch_run):
    sw = switch_run
    before = {vm: v["pid"] for vm, v in sw.start_vms("router", "c1", "c2").items()}
    r, b = sw.serve(router=C2_MAC, c2=ROUTER_MAC)
    r.send_until(b)

    bad = Frontend(sw.sock("c1"))
    bad.negotiate()
    tx = bad.start_queue(TX, sync=False)
    sw.wait_stats(lambda s: s["c1"]["state"] == "serving", what="the hostile frontend served")
    # One descriptor whose "next" points at itself: a loop.
    tx.offer_chains([(tx.bufs, 64, DESC_NEXT, 0)], [0])
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
    again = Frontend(sw.sock("c1"))
    assert again.get_features() & VERSION_1
    sw.wait_stats(lambda s: s["c1"]["state"] == "serving", what="c1 served again")
    again.close()
    sw.wait_stats(lambda s: s["c1"]["state"] == "waiting", what="c1 waiting after a clean close")
