"""vm-switch figures for bench.py, each beside dpdk-testpmd's own vhost-user
backend measured in the same run (see README.md beside this file).

Part one drives both with one frontend dpdk-testpmd (CPU 1) holding four
net_virtio_user ports: ports 0 and 1 are the router's and a client's NICs
on vm-switch (their configured MACs as source, each other's as
destination), ports 2 and 3 the same two NICs on the backend testpmd's
net_vhost ports, which forward to each other (io mode). vm-switch and the
backend testpmd share CPU 0. Measured:

  - frames/s forwarded at 64 B and 1500 B: each frontend port sends a
    first few bursts, then sends every frame the other port receives back
    out (`mac` forwarding: the port's own MAC as source, the other VM's as
    destination; testpmd's flowgen has fixed MACs the policy would drop),
    so frames circle through the backend as fast as it forwards them;
    counted as the frontend receives them, both directions summed, the two
    backends interleaved round by round;
  - in the same rounds, the CPU time and the context switches per frame
    of both children together against the backend testpmd's (all its
    threads);
  - each vm-switch child's private memory (its mappings that are not
    shared: guest memory and rings are shared mappings, left out) against
    the backend testpmd's, after the traffic;
  - wakeups per second (context switches, every thread) of each idle
    child against the idle backend testpmd (forwarding stopped);
  - crash to serving again: SIGKILL to the client's child, until a
    vhost-user frontend connecting to its socket gets its GET_FEATURES
    answered; the peer is a testpmd backend killed and started again by a
    supervisor (the only way a one-process backend comes back).

Part two boots two qemu guests, each with one NIC on vm-switch (router,
client) and one on the backend testpmd, and measures the ping round trip
from the client to the router over each, interleaved (testpmd forwards
only during its own rounds, so its busy polling does not steal the CPU
from the other rounds).
"""
import os
import re
import shutil
import signal
import tempfile
import time

from figures import MIB, fmt_mem, fmt_pps, fmt_time, median
from qltest import qemu, testpmd
from qltest.procs import ProcError, context_switches, cpu_seconds, private_memory
from qltest.switch import Switch
from qltest.testpmd import Testpmd
from qltest.vhost import get_features

GOAL_PPS_RATIO = 0.50         # vm-switch at least 50 % of testpmd's frames/s
GOAL_PRIVATE = 2 * MIB        # per child, beyond guest memory and rings
GOAL_WAKEUPS = 2.0            # per second, idle child
GOAL_RESTART = 0.050          # SIGKILL to serving again
GOAL_CHILD_PPS = 2e6          # frames per second of the children's CPU time

FULL = dict(pps_rounds=5, pps_seconds=3.0, pps_warmup=1.0, idle_seconds=10.0,
            crash_rounds=5, crash_peer_rounds=3, ping_rounds=5, ping_count=50)
QUICK = dict(pps_rounds=1, pps_seconds=1.0, pps_warmup=0.5, idle_seconds=1.0,
             crash_rounds=1, crash_peer_rounds=1, ping_rounds=1, ping_count=10)

ROUTER_MAC = "52:54:00:b0:00:01"
CLIENT_MAC = "52:54:00:b0:00:02"
SIZES = (64, 1500)
SWITCH_CPU, LOAD_CPU = 0, 1
# Bursts of 32 frames each frontend port sends to start with; then its
# `mac` forwarding sends every frame it receives back out of the other
# port (flowgen would not do: its MACs are fixed in testpmd).
TX_FIRST = 32
PING_INTERVAL = 0.02


class SwitchBenchError(Exception):
    pass


# --------------------------------------------------------------- /proc

def wakeup_rates(pids, seconds):
    """{pid: context switches per second over `seconds`}."""
    before = {p: context_switches(p) for p in pids}
    t0 = time.monotonic()
    time.sleep(seconds)
    dt = time.monotonic() - t0
    return {p: (context_switches(p) - before[p]) / dt for p in pids}


# ------------------------------------------------------------- part one

class Pmds:
    """vm-switch (router + client), the backend testpmd and the frontend."""

    def __init__(self, binary, tmp, crash_vms):
        self.tmp = tmp
        self.binary = binary
        vms = {"router": (ROUTER_MAC, "router"), "client": (CLIENT_MAC, "client")}
        # Clients without a frontend, each killed once: a child that
        # crashes again soon after its restart may be held back on purpose.
        self.crash_vms = [f"crash{i}" for i in range(crash_vms)]
        for i, vm in enumerate(self.crash_vms):
            vms[vm] = (f"52:54:00:b0:01:{i:02x}", "client")
        self.switch = Switch(os.path.join(tmp, "sw"))
        for vm, (mac, role) in vms.items():
            self.switch.write_conf(vm, mac, role)
        self.peer_socks = [os.path.join(tmp, f"pmd{i}.sock") for i in (0, 1)]
        self.backend = self.frontend = None

    def start_backend(self):
        for s in self.peer_socks:
            if os.path.exists(s):
                os.unlink(s)
        self.backend = Testpmd(
            "backend", self.tmp, [f"net_vhost{i},iface={s},queues=1"
                                  for i, s in enumerate(self.peer_socks)],
            cpu=SWITCH_CPU, args=["--forward-mode=io", "--rxd=1024", "--txd=1024",
                                  "--burst=32"], mbufs=32768)
        self.backend.start()
        for s in self.peer_socks:
            wait_path(s, 20)

    def start(self):
        self.switch.start(binary=self.binary, cpus=SWITCH_CPU)
        self.switch.wait_ready()
        self.start_backend()
        macs = [ROUTER_MAC, CLIENT_MAC, ROUTER_MAC, CLIENT_MAC]
        paths = [self.switch.sock("router"), self.switch.sock("client")] + self.peer_socks
        vdevs = [f"net_virtio_user{i},path={p},queues=1,mac={m}"
                 for i, (p, m) in enumerate(zip(paths, macs))]
        # Each port sends to the other NIC's MAC, from its own.
        peers = [f"--eth-peer={i},{macs[i ^ 1]}" for i in range(4)]
        self.frontend = Testpmd("frontend", self.tmp, vdevs, cpu=LOAD_CPU,
                                        args=["--forward-mode=mac", "--rxd=1024",
                                              "--txd=1024", "--burst=32", *peers],
                                        mbufs=32768)
        self.frontend.start()
        self.switch.wait_stats(lambda st: all(st.get(vm, {}).get("state") == "serving"
                                              for vm in ("router", "client")),
                               what="both children serving")

    def rate(self, ports, size, cfg):
        """Frames/s the frontend receives on ports (router's, client's),
        forwarding through whatever backs them, and what forwarding them
        cost whatever backs them (both children, or the backend testpmd):
        (frames/s both summed, router→client, client→router, CPU seconds
        per frame, context switches per frame)."""
        fe = self.frontend
        peer = ports[0] == 2
        pids = ([self.backend.proc.pid] if peer
                else list(child_pids(self.switch, ("router", "client")).values()))
        fe.cmd(f"set portlist {','.join(map(str, ports))}")
        fe.cmd(f"set txpkts {size}")
        if peer:
            self.backend.cmd("start")
        try:
            # Frames of the previous round still in flight are received
            # and dropped first, so that this round circles its own.
            fe.cmd("set fwd rxonly")
            fe.cmd("start")
            time.sleep(0.3)
            fe.cmd("stop")
            fe.cmd("set fwd mac")
            fe.cmd(f"start tx_first {TX_FIRST}")
            try:
                time.sleep(cfg["pps_warmup"])
                fe.cmd("clear port stats all")
                t0 = time.monotonic()
                cost0 = process_cost(pids)
                time.sleep(cfg["pps_seconds"])
                st = fe.port_stats()
                cost1 = process_cost(pids)
                dt = time.monotonic() - t0
            finally:
                fe.cmd("stop")
        finally:
            if peer:
                self.backend.cmd("stop")
        frames = sum(st[p]["rx"] for p in ports)
        octets = sum(st[p]["rx_bytes"] for p in ports)
        # txonly sends `size` bytes (flowgen would send 4 fewer, leaving
        # room for the FCS): anything else is not this round's frames.
        if frames and abs(octets / frames - size) > 4:
            raise SwitchBenchError(f"ports {ports}: frames of {octets / frames:.0f} B "
                                   f"on average in a {size} B round")
        per = max(frames, 1)
        return (frames / dt, st[ports[1]]["rx"] / dt, st[ports[0]]["rx"] / dt,
                (cost1[0] - cost0[0]) / per, (cost1[1] - cost0[1]) / per)

    def stop(self):
        for p in (self.frontend, self.backend):
            if p:
                p.stop()
        self.switch.stop(check=False)


def process_cost(pids):
    """(CPU seconds, context switches) of the processes pids, summed."""
    return (sum(cpu_seconds(p) for p in pids), sum(context_switches(p) for p in pids))


def wait_path(path, timeout):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise SwitchBenchError(f"{path} did not appear")
        time.sleep(0.01)


def bench_pps(pmds, cfg, rows, details, notes):
    """Frames/s at each size, vm-switch's ports against the backend
    testpmd's (Pmds.rate), the two alternating round by round; medians of
    the rounds, each direction on its own in the summary. vm-switch's drop
    counters over the rounds become a note; a policy drop (spoofed,
    client to client) is an error: the load must pass the policy. Goal:
    at least 50 % of testpmd's rate at 64 B (the 1500 B row uses it too)."""
    ports = {"vm-switch": (0, 1), "testpmd vhost io": (2, 3)}
    res = {(side, size): [] for side in ports for size in SIZES}
    drops0 = pmds.switch.stats()
    for r in range(cfg["pps_rounds"]):
        for size in SIZES:
            # Alternate which side goes first from round to round.
            for side in (list(ports) if r % 2 == 0 else list(ports)[::-1]):
                res[side, size].append(pmds.rate(ports[side], size, cfg))
    st = pmds.switch.stats()
    drops = {f"{vm} {k}": v - drops0.get(vm, {}).get(k, 0)
             for vm, row in st.items() for k, v in row.items()
             if k.startswith("drop_") and v - drops0.get(vm, {}).get(k, 0)}
    notes.append("vm-switch drops during the frame rounds: "
                 + (", ".join(f"{k}={v}" for k, v in sorted(drops.items())) or "none"))
    ours, peer = {}, {}
    for size in SIZES:
        for side in ports:
            for i, what in ((0, ""), (1, " router→client"), (2, " client→router")):
                details.append((f"{side} {size} B{what} frames/s",
                                [x[i] for x in res[side, size]]))
            details.append((f"{side} {size} B CPU time per frame (s)",
                            [x[3] for x in res[side, size]]))
            details.append((f"{side} {size} B context switches/s",
                            [x[4] * x[0] for x in res[side, size]]))
        ours[size] = [x[0] for x in res["vm-switch", size]]
        peer[size] = [x[0] for x in res["testpmd vhost io", size]]
        m_ours, m_peer = median(ours[size]), median(peer[size])
        ratio = m_ours / m_peer if m_peer else float("nan")
        goal = (f"≥ {100 * GOAL_PPS_RATIO:.0f} % of testpmd"
                + ("" if size == 64 else " (the 64 B goal)"))
        rows.append(dict(figure=f"vm-switch frames/s router↔client, {size} B, vs testpmd "
                                "vhost (io fwd)",
                         ours=fmt_pps(m_ours), peer=fmt_pps(m_peer), ratio=f"{100 * ratio:.0f} %",
                         goal=goal, met=ratio >= GOAL_PPS_RATIO,
                         raw=dict(ours_pps=m_ours, peer_pps=m_peer)))
    bench_cost(res, rows)
    if any(v for k, v in drops.items() if "spoofed" in k or "client_to_client" in k):
        raise SwitchBenchError(f"vm-switch dropped the load by policy: {drops}")


def bench_cost(res, rows):
    """From bench_pps's rounds at 64 B: CPU time (user + system, from
    /proc/PID/stat) and context switches (every thread) per frame
    forwarded, both children summed against the backend testpmd, medians
    of the rounds. The testpmd backend busy-polls a whole CPU however
    many frames come, so its CPU time per frame is the inverse of its
    rate. Goal: at least 2 Mpps per CPU the children use, i.e. at most
    500 ns of their CPU time per frame; the context switches have none."""
    ours = res["vm-switch", 64]
    peer = res["testpmd vhost io", 64]
    cpu_ours, cpu_peer = median([x[3] for x in ours]), median([x[3] for x in peer])
    cs_ours, cs_peer = median([x[4] for x in ours]), median([x[4] for x in peer])
    goal_cpu = 1 / GOAL_CHILD_PPS
    rows.append(dict(figure="CPU time per frame, 64 B: vm-switch's two children vs testpmd "
                            "backend",
                     ours=fmt_time(cpu_ours), peer=fmt_time(cpu_peer),
                     ratio=f"{cpu_ours / cpu_peer:.2f}×" if cpu_peer else "—",
                     goal=f"≤ {fmt_time(goal_cpu)} (≥ {fmt_pps(GOAL_CHILD_PPS)} per core)",
                     met=cpu_ours <= goal_cpu,
                     raw=dict(ours_s=cpu_ours, peer_s=cpu_peer)))
    rows.append(dict(figure="context switches per frame, 64 B: vm-switch's two children vs "
                            "testpmd backend",
                     ours=f"{cs_ours:.4f}", peer=f"{cs_peer:.4f}", ratio="—", goal="—",
                     met=None, raw=dict(ours_per_frame=cs_ours, peer_per_frame=cs_peer)))


def child_pids(switch, vms):
    st = switch.stats()
    return {vm: st[vm]["pid"] for vm in vms}


def bench_memory(pmds, rows, details):
    """After the traffic, each child's private memory in mappings that are
    not shared (procs.private_memory: guest memory and rings are shared and
    left out; the summary also gives the total with them); the worst child
    against the backend testpmd's own (for both ports). Goal: at most 2 MiB
    per child."""
    pids = child_pids(pmds.switch, ("router", "client"))
    mem = {vm: private_memory(pid) for vm, pid in pids.items()}
    peer_total, peer_own = private_memory(pmds.backend.proc.pid)
    for vm, (total, own) in mem.items():
        details.append((f"vm-switch {vm} child private memory, not shared (B)", [own]))
        details.append((f"vm-switch {vm} child private memory, all (B)", [total]))
    details.append(("testpmd backend private memory, not shared (B)", [peer_own]))
    details.append(("testpmd backend private memory, all (B)", [peer_total]))
    worst = max(own for _, own in mem.values())
    rows.append(dict(figure="vm-switch private memory per child (not shared) vs testpmd "
                            "backend (2 ports)",
                     ours=fmt_mem(worst), peer=fmt_mem(peer_own),
                     ratio=f"{100 * worst / peer_own:.1f} %" if peer_own else "—",
                     goal=f"≤ {fmt_mem(GOAL_PRIVATE)}", met=worst <= GOAL_PRIVATE,
                     raw=dict(ours_B=worst, peer_B=peer_own)))


def bench_wakeups(pmds, cfg, rows, details):
    """Idle: the frontend's forwarding stopped, its ports still connected.
    Context switches of every thread of each child over idle_seconds
    against the idle backend testpmd's. Goal: at most 2 per second."""
    pids = child_pids(pmds.switch, ("router", "client"))
    peer_pid = pmds.backend.proc.pid
    rates = wakeup_rates(list(pids.values()) + [peer_pid], cfg["idle_seconds"])
    for vm, pid in pids.items():
        details.append((f"vm-switch {vm} child idle wakeups/s", [rates[pid]]))
    details.append(("testpmd backend (all threads) idle wakeups/s", [rates[peer_pid]]))
    worst = max(rates[p] for p in pids.values())
    rows.append(dict(figure=f"idle wakeups/s per child over {cfg['idle_seconds']:g} s vs "
                            "idle testpmd backend",
                     ours=f"{worst:.1f}/s", peer=f"{rates[peer_pid]:.1f}/s",
                     ratio=f"{worst / rates[peer_pid]:.2f}×" if rates[peer_pid] else "—",
                     goal=f"≤ {GOAL_WAKEUPS:g}/s", met=worst <= GOAL_WAKEUPS,
                     raw=dict(ours_per_s=worst, peer_per_s=rates[peer_pid])))


def bench_crash(pmds, cfg, rows, details):
    """Last in part one: it ends the frontend's client port (DPDK's
    virtio-user does not reconnect as a client) and the backend testpmd.
    Each round kills a different child once: first the client's (whose
    frontend was connected), then the spare clients', since a child that
    crashes again soon after a restart may be held back. Timed: SIGKILL to
    a vhost-user frontend's GET_FEATURES answered on that VM's socket
    (vhost.get_features, connecting again and again): DPDK's virtio-user
    does not reconnect as a client and qemu's reconnect timer ticks in
    whole seconds, so the first answer is timed, not a frame. The peer is
    testpmd killed and started again by us, as a supervisor would (a
    one-process backend comes back only that way). Goal: at most 50 ms."""
    ours, peer = [], []
    switch = pmds.switch
    victims = ["client"] + pmds.crash_vms
    for r in range(max(cfg["crash_rounds"], cfg["crash_peer_rounds"])):
        if r < cfg["crash_rounds"]:
            vm = victims[r]
            st = switch.wait_stats(lambda st: st.get(vm, {}).get("state")
                                   in ("serving", "waiting"), what=f"{vm}'s child up")
            pid = st[vm]["pid"]
            t0 = time.monotonic()
            os.kill(pid, signal.SIGKILL)   # vm-switch's child, started here
            get_features(switch.sock(vm), t0 + 10)
            ours.append(time.monotonic() - t0)
        if r < cfg["crash_peer_rounds"]:
            be = pmds.backend
            t0 = time.monotonic()
            be.proc.kill()               # the testpmd we started, by pid
            be.proc.wait()
            pmds.start_backend()         # what a supervisor does
            get_features(pmds.peer_socks[1], t0 + 60)
            peer.append(time.monotonic() - t0)
    details.append(("vm-switch SIGKILL to serving again (s)", ours))
    details.append(("testpmd SIGKILL + restart to serving again (s)", peer))
    m_ours, m_peer = median(ours), median(peer)
    rows.append(dict(figure="crash to serving again: vm-switch child vs testpmd restarted",
                     ours=fmt_time(m_ours), peer=fmt_time(m_peer),
                     ratio=f"{m_peer / m_ours:.0f}× faster" if m_ours else "—",
                     goal=f"≤ {GOAL_RESTART * 1e3:.0f} ms", met=m_ours <= GOAL_RESTART,
                     raw=dict(ours_s=m_ours, peer_s=m_peer)))


# ------------------------------------------------------------- part two

GUEST_VMS = {"router": ("52:54:00:b1:00:01", "169.254.61.1", "169.254.62.1"),
             "client": ("52:54:00:b1:00:02", "169.254.61.2", "169.254.62.2")}
RTT_RE = re.compile(r"seq=\d+ ttl=\d+ time=([\d.]+) ms")


def qemu_outage(switch, client, addr, seconds=4.0, interval=0.01):
    """Seconds of unanswered pings from the client guest when its child is
    killed 1 s into a run: the pings lost times their actual interval
    (the guest's uptime over the run, divided by the pings sent)."""
    pid = switch.stats()["client"]["pid"]
    count = int(seconds / interval)
    i = client.send("a=$(cut -d' ' -f1 /proc/uptime); "
                    f"ping -c {count} -i {interval} -W 1 -q {addr}; "
                    "b=$(cut -d' ' -f1 /proc/uptime); echo \"elapsed $a $b\"")
    time.sleep(1.0)
    os.kill(pid, signal.SIGKILL)          # vm-switch's child, started here
    rc, out = client.wait(i, seconds * 10 + 60)
    counts = qemu.ping_counts(out)
    e = re.search(r"elapsed ([\d.]+) ([\d.]+)", out)
    if not (counts and e) or counts[1] == 0:
        raise SwitchBenchError(f"client pings around SIGKILL to its child:\n{out}")
    sent, got = counts
    return (sent - got) * (float(e.group(2)) - float(e.group(1))) / sent


def bench_ping(binary, tmp, cfg, rows, details, notes):
    """Part two: two guests (qemu.net_image), each with eth0 on a second
    vm-switch and eth1 on a backend testpmd, on two subnets. The client
    pings the router every PING_INTERVAL over one path, then the other,
    alternating round by round; testpmd forwards only during its own
    rounds. No goal: the guests' TCG dominates both. Then qemu_outage: the
    crash as a qemu guest sees it, mostly qemu's own reconnect timer
    (reconnect=1). Skipped, with the reason, where no guest can run."""
    try:
        kern = qemu.guest_kernel()
    except qemu.Unavailable as e:
        notes.append(f"guest ping skipped: {e}")
        rows.append(dict(figure="ping RTT guest→guest: vm-switch vs testpmd vhost",
                         ours="—", peer="—", ratio="—", goal="—", met=None))
        return
    work = os.path.join(tmp, "guests")
    os.makedirs(work)
    initrd = qemu.net_image(kern, os.path.join(work, "net.cpio.gz"))
    switch = Switch(os.path.join(work, "sw"))
    for vm, (m, _, _) in GUEST_VMS.items():
        switch.write_conf(vm, m, vm)
    socks = {vm: os.path.join(work, f"pmd-{vm}.sock") for vm in GUEST_VMS}
    backend = None
    guests = {}
    try:
        switch.start(binary=binary)
        switch.wait_ready()
        backend = Testpmd("guests", work,
                                  [f"net_vhost{i},iface={socks[vm]},queues=1"
                                   for i, vm in enumerate(GUEST_VMS)],
                                  cpu=LOAD_CPU, args=["--forward-mode=io"])
        backend.start()
        for s in socks.values():
            wait_path(s, 20)
        guests = {vm: qemu.Guest(vm, kern.vmlinux, initrd, work,
                                 nics=[(switch.sock(vm), m), (socks[vm], m)], memory=192)
                  for vm, (m, _, _) in GUEST_VMS.items()}
        for g in guests.values():
            g.start()
        for g in guests.values():
            g.wait_ready(180)
        for vm, (_, a0, a1) in GUEST_VMS.items():
            guests[vm].check(f"ip addr add {a0}/24 dev eth0 && ip link set eth0 up && "
                             f"ip addr add {a1}/24 dev eth1 && ip link set eth1 up")
        client = guests["client"]
        targets = {"switch": GUEST_VMS["router"][1], "peer": GUEST_VMS["router"][2]}
        backend.cmd("start")
        for side, addr in targets.items():
            if client.wait_reachable(addr) is None:
                raise SwitchBenchError(f"guest ping over {side} never answered")
        backend.cmd("stop")
        samples = {"switch": [], "peer": []}
        for r in range(cfg["ping_rounds"]):
            for side in (("switch", "peer") if r % 2 == 0 else ("peer", "switch")):
                if side == "peer":
                    backend.cmd("start")
                try:
                    out = client.check(f"ping -c {cfg['ping_count']} -i {PING_INTERVAL} "
                                       f"-W 2 {targets[side]}", 120)
                finally:
                    if side == "peer":
                        backend.cmd("stop")
                samples[side] += [float(x) / 1e3 for x in RTT_RE.findall(out)]
        outage = qemu_outage(switch, client, targets["switch"])
        notes.append(f"with qemu as the frontend, the client's pings every 10 ms went "
                     f"unanswered for {outage:.2f} s around SIGKILL to its child "
                     "(qemu tries the socket again once a second: reconnect=1)")
    except (ProcError, RuntimeError, OSError, qemu.GuestError) as e:
        raise SwitchBenchError(f"guest ping: {e}")
    finally:
        for g in guests.values():
            g.stop()
        if backend:
            backend.stop()
        switch.stop(check=False)
    details.append(("ping RTT guest→guest via vm-switch (s)", samples["switch"]))
    details.append(("ping RTT guest→guest via testpmd vhost io (s)", samples["peer"]))
    m_ours, m_peer = median(samples["switch"]), median(samples["peer"])
    rows.append(dict(figure=f"ping RTT guest→guest (qemu TCG, every {PING_INTERVAL * 1e3:.0f} "
                            "ms): vm-switch vs testpmd vhost",
                     ours=fmt_time(m_ours), peer=fmt_time(m_peer),
                     ratio=f"{m_ours / m_peer:.2f}×", goal="—", met=None,
                     raw=dict(ours_s=m_ours, peer_s=m_peer)))


# ------------------------------------------------------------------ entry

def run(binary, quick, rows, details, notes, rounds=None, frames_only=False, seconds=None,
        guests=True):
    """Appends the vm-switch rows; raises SwitchBenchError. frames_only:
    the frames/s and per-frame rows only (no memory, idle, crash or guest
    figures); seconds: of each frames/s round; guests: part two."""
    cfg = dict(QUICK if quick else FULL)
    if rounds:
        cfg["pps_rounds"] = cfg["crash_rounds"] = cfg["ping_rounds"] = rounds
    if seconds:
        cfg["pps_seconds"] = seconds
    if not os.access(binary, os.X_OK):
        raise SwitchBenchError(f"{binary} not built (run make)")
    if not testpmd.available():
        raise SwitchBenchError("dpdk-testpmd not installed (apt-get install dpdk-dev)")
    if (os.cpu_count() or 1) < 2:
        notes.append("one CPU: vm-switch and the load generator share it")
    load0 = os.getloadavg()[0]
    tmp = tempfile.mkdtemp(prefix="ql-switch-bench.")
    try:
        pmds = Pmds(binary, tmp, 0 if frames_only else cfg["crash_rounds"] - 1)
        try:
            pmds.start()
            bench_pps(pmds, cfg, rows, details, notes)
            if not frames_only:
                bench_memory(pmds, rows, details)
                bench_wakeups(pmds, cfg, rows, details)
                bench_crash(pmds, cfg, rows, details)
        except (ProcError, RuntimeError, OSError) as e:
            raise SwitchBenchError(str(e))
        finally:
            pmds.stop()
        if guests and not frames_only:
            bench_ping(binary, tmp, cfg, rows, details, notes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    notes.append(f"load average {load0:.2f} before the vm-switch figures, "
                 f"{os.getloadavg()[0]:.2f} after (other work on the machine shows here)")


def main():
    """The vm-switch figures alone, printed as bench.py prints them."""
    import argparse
    import json
    import sys

    import bench
    from qltest import BIN
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one short round of each figure")
    ap.add_argument("--rounds", type=int, help="rounds of every figure")
    ap.add_argument("--seconds", type=float, help="seconds of each frames/s round")
    ap.add_argument("--frames-only", action="store_true",
                    help="only the frames/s and per-frame figures (part one's first)")
    ap.add_argument("--no-guests", action="store_true", help="skip part two (qemu guests)")
    ap.add_argument("--binary", default=os.path.join(BIN, "vm-switch"),
                    help="the vm-switch to measure (default: BUILD's)")
    ap.add_argument("--json", metavar="FILE", help="also write rows and samples as JSON")
    args = ap.parse_args()
    rows, details, notes = [], [], []
    print(f"vm-switch bench: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}", flush=True)
    try:
        run(args.binary, args.quick, rows, details, notes, args.rounds, args.frames_only,
            args.seconds, not args.no_guests)
    except SwitchBenchError as e:
        print(f"switch_bench: {e}", file=sys.stderr)
        return 1
    bench.print_table(rows)
    for n in notes:
        print(f"note: {n}")
    bench.print_details(details)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(rows=rows, samples={name: xs for name, xs in details}), f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
