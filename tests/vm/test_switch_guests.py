"""vm-switch between real Linux guests: three qemu TCG guests, a router and
two clients, each with a virtio-net NIC over vhost-user to the vm-switch
from $BUILD/bin (qemu is the frontend and connects to the VM's socket with
reconnect=1; the guest's kernel runs its own virtio_net driver with
offloads, EVENT_IDX and interrupts).

One vm-switch (qltest.switch) and the three guests are started once for
the module (the guests boot in parallel) and driven over a second serial port
(qltest.qemu.Guest, guest-ctl.sh). The tests run in file order:

  - each guest's NIC comes up with its MAC, every VM's child serves;
  - each client pings the router and the router pings each client;
  - a client's broadcast reaches the router only (the other client never
    learns of it), and a unicast ping between the clients gets nowhere
    even with static ARP entries on both sides: the switch refuses it and
    counts drop_client_to_client;
  - a client that changes its MAC (`ip link set dev eth0 address`) reaches
    no one, the switch counts drop_spoofed_source, and with its own MAC
    back it reaches the router again;
  - both clients ping the router every 100 ms; one client's child is
    killed with SIGKILL (its pid from vm-switch.stats) in the middle: the
    other client loses no ping, the main process restarts the child,
    qemu reconnects and that client's pings are answered again.

Skipped (with the reason) when qemu, busybox-static or the Debian kernel
cannot be had; failed when vm-switch was not built. The console logs,
vm-switch's log and counters stay in the directory named on failure.
Environment: BUILD (default build), QL_VM_TIMEOUT (boot timeout per
guest, default 120 s), QL_SWITCH_ARGS (extra vm-switch options).
"""
import os
import re
import shlex
import signal
import sys
import time

import pytest

from qltest import BIN, KeptOnFailure, initramfs, qemu, sanitizer_reports
from qltest.procs import ProcError
from qltest.switch import Switch

SWITCH = os.path.join(BIN, "vm-switch")

# name: (mac, role, address); link-local addresses, frames never leave the
# qemu <-> vm-switch path.
VMS = {
    "router": ("52:54:00:51:00:01", "router", "169.254.51.1"),
    "client1": ("52:54:00:51:00:02", "client", "169.254.51.2"),
    "client2": ("52:54:00:51:00:03", "client", "169.254.51.3"),
}
SPOOFED_MAC = "52:54:00:51:00:66"
MEMORY_MB = 192


def mac(vm):
    return VMS[vm][0]


def ip(vm):
    return VMS[vm][2]


class Net:
    error = None        # set: every test fails with this
    switch = None
    guests = {}
    workdir = None


def _fail(net, msg):
    pytest.fail(msg + (f"\nlogs: {net.workdir}" if net.workdir else ""), pytrace=False)


@pytest.fixture(scope="module", params=["sandbox", "no-sandbox"])
def net(request):
    """The switch and its guests, once with the switch in its sandbox (the
    default) and once with --no-sandbox."""
    n = Net()
    if not os.access(SWITCH, os.X_OK):
        n.error = f"not built: {SWITCH} (run make)"
        yield n
        return
    kern = qemu.guest_kernel_or_skip()
    # Sockets live here too: a short /tmp path keeps them within sun_path.
    work = KeptOnFailure(request, "ql-switch-guests.", "switch guests")
    n.workdir = work.path
    try:
        initrd = qemu.net_image(kern, os.path.join(n.workdir, "net.cpio.gz"))
        n.switch = Switch(n.workdir, sandbox=request.param == "sandbox",
                          args=shlex.split(os.environ.get("QL_SWITCH_ARGS", "")))
        for vm, (m, role, _) in VMS.items():
            n.switch.write_conf(vm, m, role)
        n.switch.start()
        n.switch.wait_ready()
        n.guests = {vm: qemu.Guest(vm, kern.vmlinux, initrd, n.workdir,
                                   nics=[(n.switch.sock(vm), mac(vm))], memory=MEMORY_MB)
                    for vm in VMS}
        for g in n.guests.values():
            g.start()
        timeout = float(os.environ.get("QL_VM_TIMEOUT", "120"))
        boot = {vm: g.wait_ready(timeout) for vm, g in n.guests.items()}
        for vm, g in n.guests.items():
            g.check(f"ip addr add {ip(vm)}/16 dev eth0 && ip link set eth0 up")
        sys.stderr.write("switch guests ready after "
                         + ", ".join(f"{vm} {s:.1f}s" for vm, s in boot.items()) + "\n")
    except (ProcError, RuntimeError, qemu.GuestError, initramfs.InitramfsError,
            OSError) as e:
        n.error = f"setting up vm-switch and the guests failed: {e}"
    yield n
    for g in n.guests.values():
        g.stop()
    if n.switch:
        n.switch.stop(check=False)
    work.finish(ok=n.error is None)


def ready(net):
    if net.error:
        _fail(net, net.error)
    return net.guests, net.switch


def ping_summary(out):
    """(transmitted, received, [seq of each reply]) from busybox ping."""
    counts = qemu.ping_counts(out)
    assert counts, f"no ping summary in:\n{out}"
    return (*counts, [int(s) for s in re.findall(r"seq=(\d+)", out)])


def replies(out):
    """Replies busybox ping got; 0 when it gave up early (a send to an
    unresolved neighbour fails and ping exits without a summary)."""
    counts = qemu.ping_counts(out)
    return counts[1] if counts else len(re.findall(r"seq=\d+", out))


def drops(st, vm, reason):
    return st.get(vm, {}).get(f"drop_{reason}", 0)


def test_guests_boot_and_nics_serve(net):
    guests, switch = ready(net)
    for vm, g in guests.items():
        out = g.check("cat /sys/class/net/eth0/address; "
                      "basename $(readlink /sys/class/net/eth0/device/driver)")
        assert out.split() == [mac(vm), "virtio_net"], (vm, out)
    st = switch.wait_stats(lambda st: all(st.get(vm, {}).get("state") == "serving"
                                          for vm in VMS), what="every VM serving")
    for vm in VMS:
        row = st[vm]
        assert row["role"] == VMS[vm][1], row
        assert row["restarts"] == 0, row
        for k in ("pid", "rx_frames", "rx_bytes", "tx_frames", "tx_bytes"):
            assert isinstance(row.get(k), int), (k, row)


def test_clients_reach_router_and_back(net):
    guests, switch = ready(net)
    for c in ("client1", "client2"):
        assert guests[c].wait_reachable(ip("router")) is not None, \
            f"{c} never reached the router\n" + switch.stats_path
    ids = {c: guests[c].send(f"ping -c 5 -i 0.2 {ip('router')}") for c in ("client1", "client2")}
    for c, i in ids.items():
        rc, out = guests[c].wait(i, 60)
        sent, got, _ = ping_summary(out)
        assert rc == 0 and sent == got == 5, f"{c} -> router:\n{out}"
    for c in ("client1", "client2"):
        rc, out = guests["router"].sh(f"ping -c 3 -i 0.2 {ip(c)}", 60)
        assert rc == 0 and ping_summary(out)[1] == 3, f"router -> {c}:\n{out}"
    # Each client sent 5 requests and 3 replies and got as many back; the
    # router twice that (the counters file lags by up to a second).
    least = {"router": 16, "client1": 8, "client2": 8}
    switch.wait_stats(lambda st: all(st.get(vm, {}).get(k, 0) >= n
                                     for vm, n in least.items()
                                     for k in ("rx_frames", "tx_frames", "rx_bytes", "tx_bytes")),
                      what=f"frames counted both ways, at least {least}")


def test_clients_never_reach_each_other(net):
    guests, switch = ready(net)
    c1, c2 = guests["client1"], guests["client2"]
    # A broadcast (ARP who-has) from client1 goes to the router only:
    # client2 never hears of client1, so it has no neighbour entry for it.
    rc, out = c1.sh(f"ping -c 3 -W 1 {ip('client2')}", 30)
    assert rc != 0 and replies(out) == 0, out
    neigh = c2.check(f"ip neigh show to {ip('client1')} dev eth0")
    assert "lladdr" not in neigh, f"client2 heard client1's ARP: {neigh}"
    # With static ARP entries both ways the frames do leave the clients,
    # addressed to each other: the switch is what refuses them.
    before = switch.stats()
    for a, b in (("client1", "client2"), ("client2", "client1")):
        guests[a].check(f"arp -i eth0 -s {ip(b)} {mac(b)}")
    ids = {a: guests[a].send(f"ping -c 5 -i 0.2 -W 2 {ip(b)}")
           for a, b in (("client1", "client2"), ("client2", "client1"))}
    for a, i in ids.items():
        rc, out = guests[a].wait(i, 60)
        assert rc != 0 and replies(out) == 0, f"{a} reached the other client:\n{out}"
    switch.wait_stats(lambda st: all(drops(st, a, "client_to_client")
                                     >= drops(before, a, "client_to_client") + 5
                                     for a in ("client1", "client2")),
                      what="5 client_to_client drops from each client")
    for a, b in (("client1", "client2"), ("client2", "client1")):
        guests[a].check(f"arp -i eth0 -d {ip(b)}")


def icmp_in_echos(g):
    """Echo requests the guest's kernel has received (/proc/net/snmp)."""
    names, values = g.check("grep ^Icmp: /proc/net/snmp").splitlines()[:2]
    return int(dict(zip(names.split(), values.split()))["InEchos"])


def tx_packets(g):
    return int(g.check("cat /sys/class/net/eth0/statistics/tx_packets"))


def test_spoofed_source_mac_gets_nowhere(net):
    guests, switch = ready(net)
    c1, router = guests["client1"], guests["router"]
    # The router's address stays resolved (static) so that the echo
    # requests themselves go out with the spoofed source.
    c1.check(f"arp -i eth0 -s {ip('router')} {mac('router')}")
    before = switch.stats()
    echos = icmp_in_echos(router)
    try:
        tx0 = tx_packets(c1)
        c1.check(f"ip link set dev eth0 address {SPOOFED_MAC}")
        assert c1.check("cat /sys/class/net/eth0/address").strip() == SPOOFED_MAC
        rc, out = c1.sh(f"ping -c 5 -i 0.2 -W 2 {ip('router')}; sleep 1", 60)
        assert replies(out) == 0, f"spoofed client reached the router:\n{out}"
        # virtio_net counts a frame once the switch has taken it from the
        # queue: every one of these left with the spoofed source.
        sent = tx_packets(c1) - tx0
    finally:
        c1.sh(f"ip link set dev eth0 address {mac('client1')}; arp -i eth0 -d {ip('router')}")
    assert sent >= 3, f"client1 sent only {sent} frames with the spoofed MAC"
    assert icmp_in_echos(router) == echos, "echo requests with a spoofed source reached the router"
    switch.wait_stats(lambda st: drops(st, "client1", "spoofed_source")
                      >= drops(before, "client1", "spoofed_source") + sent,
                      what=f"{sent} spoofed_source drops from client1 (the frames it sent)")
    assert c1.wait_reachable(ip("router")) is not None, \
        "client1 does not reach the router with its own MAC back"


def test_child_killed_mid_traffic(net):
    guests, switch = ready(net)
    count, interval = 100, 0.1
    st0 = switch.wait_stats(lambda st: all(st.get(vm, {}).get("state") == "serving"
                                           for vm in VMS), what="every VM serving")
    pids = {vm: st0[vm]["pid"] for vm in VMS}
    ids = {c: guests[c].send(f"ping -c {count} -i {interval} -W 5 {ip('router')}")
           for c in ("client1", "client2")}
    time.sleep(2.0)                          # traffic flows on both pairs
    victim = pids["client1"]
    t_kill = time.monotonic()
    os.kill(victim, signal.SIGKILL)          # vm-switch's child, started by this test
    st = switch.wait_stats(lambda st: st.get("client1", {}).get("pid") not in (None, victim)
                           and st["client1"].get("state") == "serving",
                           timeout=15, what="client1's child restarted and serving")
    restart_s = time.monotonic() - t_kill
    results = {c: guests[c].wait(i, count * interval + 60) for c, i in ids.items()}
    sys.stderr.write(f"switch guests: client1's child serving again {restart_s * 1e3:.0f} ms "
                     f"after SIGKILL (counters file granularity: 1 s)\n")

    # The other pair lost nothing.
    rc, out = results["client2"]
    sent, got, _ = ping_summary(out)
    assert rc == 0 and sent == got == count, \
        f"client2 <-> router lost {sent - got} of {sent} while client1's child restarted:\n{out}"
    # The killed VM's pings went through before, and are answered again after.
    rc, out = results["client1"]
    sent, got, seqs = ping_summary(out)
    assert any(s < 10 for s in seqs), f"client1's pings never went through:\n{out}"
    tail_seqs = [s for s in seqs if s >= count - 20]
    assert len(tail_seqs) >= 15, \
        f"client1's pings not answered again after its child restarted:\n{out}"
    st = switch.stats()
    assert st["client1"]["restarts"] >= 1, st["client1"]
    for vm in ("router", "client2"):
        assert st[vm]["pid"] == pids[vm] and st[vm]["restarts"] == 0, \
            f"{vm}'s child was touched: {st[vm]} (was pid {pids[vm]})"
    assert guests["client1"].wait_reachable(ip("router")) is not None


def test_no_sanitizer_reports(net):
    """With the ASan+UBSan build (`make check`), no child reported anything
    while it served (their stderr is vm-switch's log)."""
    _, switch = ready(net)
    switch.check_alive()
    bad = sanitizer_reports(switch.log_text())
    assert not bad, "\n".join(bad[:20])
