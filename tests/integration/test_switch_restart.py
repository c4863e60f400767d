"""A vm-switch child killed with SIGKILL in the middle of traffic: the main
process restarts it at once on the same socket, a new frontend is served
by it, and the other pair's frames keep flowing meanwhile."""
import os
import signal
import time

from qltest.procs import pid_alive, wait_for
from qltest.switch import BURST, C1_MAC, C2_MAC, ROUTER_MAC, needs_testpmd

pytestmark = needs_testpmd


def test_kill_child_mid_traffic(switch_run):
    sw = switch_run
    sw.start_vms("router", "c1", "c2")
    r, a, b = sw.serve(router=C2_MAC, c1=ROUTER_MAC, c2=ROUTER_MAC)

    # c1 talks to the router, the router streams to c2 without end.
    a.send(2)
    r.wait_rx(2 * BURST)
    r.stream()
    b.wait_rx(1000)

    victim = sw.stats()["c1"]["pid"]
    others = {vm: sw.stats()[vm]["pid"] for vm in ("router", "c2")}
    os.kill(victim, signal.SIGKILL)
    t_kill = time.monotonic()
    s = sw.wait_stats(lambda s: s["c1"]["pid"] not in (0, victim) and s["c1"]["restarts"] == 1,
                      what="c1's child restarted")
    restarted_in = time.monotonic() - t_kill
    assert not pid_alive(victim)
    assert {vm: s[vm]["pid"] for vm in others} == others
    assert s["router"]["restarts"] == 0 and s["c2"]["restarts"] == 0

    # The router -> c2 stream went on through all this.
    n0 = b.rx_packets()
    time.sleep(1)
    n1 = b.rx_packets()
    assert n1 > n0, "router -> c2 stopped after c1's child was killed"
    r.stop_fwd()
    assert "c1: child" in sw.log_text() and "killed by signal 9" in sw.log_text()

    # c1's old frontend lost its backend; a new one connects to the same
    # socket and is served by the new child, both ways.
    a.kill()
    a2 = sw.pmd("c1", C1_MAC, ROUTER_MAC)
    a2.start_rx()
    sw.wait_stats(lambda s: s["c1"]["state"] == "serving", what="c1 served again")
    rr = r.rx_packets()
    r.set_peer(C1_MAC)
    r.send_until(a2)
    a2.send(1)
    r.wait_rx(rr + BURST)
    print(f"c1 restarted within {restarted_in:.2f} s (counters file, refreshed every second); "
          f"c2 received {n1 - n0} frames in the second after")


def test_hung_child_restarted(switch_run):
    """A child that stops answering pings (SIGSTOP) is asked again every
    100 ms once a ping goes unanswered, killed when none is answered for
    2 s, and started again; the others stay."""
    sw = switch_run
    s = sw.start_vms("router", "c1")
    victim, router = s["c1"]["pid"], s["router"]["pid"]
    time.sleep(1.2)  # past the start-up grace: pinged every second
    os.kill(victim, signal.SIGSTOP)
    t0 = time.monotonic()
    line = "c1: child %d answered no ping for 2 s: killing it" % sw.log_pid(victim)
    wait_for(lambda: line in sw.log_text(), timeout=20, interval=0.02,
             what="the hung child killed")
    took = time.monotonic() - t0
    s = sw.wait_stats(lambda s: s["c1"]["pid"] not in (0, victim) and s["c1"]["restarts"] == 1,
                      timeout=20, what="the hung child replaced")
    wait_for(lambda: not pid_alive(victim), timeout=10, what="the hung child to be gone")
    assert s["router"]["pid"] == router and s["router"]["restarts"] == 0
    # The first miss is said once, not for every ping after it.
    log = sw.log_text()
    assert log.count("c1: no answer to a ping within 100 ms; asking again") == 1, log
    print(f"hung child killed {took:.2f} s after SIGSTOP")
