"""qubes-lite-vsock beside qemu's user-mode network, in one TCG guest.

The guest (qltest.vsock.VsockGuest, as tests/vm/test_vsock_device_guest.py
sets it up: the device on vhost-user, the real guest agent on vsock port
5200, the real host agent outside with --guest hvsock:PATH:5200) also has a virtio-net NIC on qemu's
user-mode network (slirp) with hostfwd ports to busybox `nc -ll -e`
servers running the same payload programs. Each figure is measured on
both paths, interleaved, in the same run:

  - `vm-run bench true` round trip, against `socat` connecting through a
    hostfwd port to `nc -e true` (both a client process spawned, a command
    run in the guest, its end seen by the client);
  - bytes to the guest (`cat >/dev/null` in the guest) and from it
    (`head -c N /dev/zero`), vm-run's stdin and stdout against a TCP
    connection to the same command;
  - the raw device: an echo through PATH to a guest vsock echo server
    (vmhelper) against the same echo (`cat`) through slirp;
  - the device's CPU time per GiB moved, against qemu's own (the guest's
    TCG and its virtio) for the same bytes;
  - the device's memory (VmRSS) with 1,000 idle connections against idle.

run() appends rows as bench.py prints them; it raises VsockBenchError when
it cannot run at all.
"""
import os
import resource
import select
import shutil
import socket
import subprocess
import tempfile
import time

from figures import GIB, MIB, fmt_mem, fmt_rate, fmt_time, median
from qltest import initramfs, program, qemu
from qltest.procs import cpu_seconds, memory
from qltest.vsock import AGENT_PORT, OK_LINE, VsockGuest

ECHO_PORT = 5300              # the guest's vsock echo server
IDLE_CONNS = 1000
GOAL_IDLE_RSS = 4 * MIB
# In the guest: the slirp side's payload programs, one nc server each.
SLIRP = {"true": (2221, "true"), "sink": (2222, "/bin/ql-sink"),
         "source": (2223, "/bin/ql-source"), "echo": (2224, "cat")}

FULL = dict(rounds=3, spawns=20, size=128 * MIB, echo_size=64 * MIB)
QUICK = dict(rounds=1, spawns=5, size=8 * MIB, echo_size=4 * MIB)


class VsockBenchError(Exception):
    pass


class Unavailable(VsockBenchError):
    """What the guest needs is not here: the figures are skipped."""


def own_memory(pid):
    """memory() and "own": the device's own memory, RssAnon (its heap) plus
    RssFile (its program and libraries). It maps the guest's RAM (a memfd
    qemu shares), and the guest pages it has touched count in its VmRSS as
    RssShmem: the guest's memory, not the device's."""
    m = memory(pid)
    m["own"] = m["RssAnon"] + m["RssFile"]
    return m


class Bench:
    def __init__(self, tmp, cfg, notes):
        self.cfg = cfg
        self.notes = notes
        self.st = VsockGuest(tmp)
        self.ports = {}
        self.cpu = {"device": [0.0, 0], "qemu-device": [0.0, 0]}

    def start(self):
        try:
            kernel = qemu.guest_kernel()
        except qemu.Unavailable as e:
            raise Unavailable(str(e))
        if not shutil.which("socat"):
            raise Unavailable("socat not installed (apt-get install socat)")
        initrd = self.st.image(kernel, modules=["virtio_net"], files={
            "/bin/ql-sink": b"#!/bin/sh\nexec cat >/dev/null\n",
            "/bin/ql-source": b"#!/bin/sh\nexec head -c %d /dev/zero\n" % self.cfg["size"]})
        fwd = []
        for name, (gport, _) in SLIRP.items():
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.ports[name] = s.getsockname()[1]
            fwd.append(f"hostfwd=tcp:127.0.0.1:{self.ports[name]}-:{gport}")
        self.st.boot(kernel, initrd, extra=[
            "-netdev", "user,id=slirp," + ",".join(fwd),
            "-device", "virtio-net-pci,netdev=slirp"], timeout=180)
        g = self.st.guest
        g.check("chmod +x /bin/ql-sink /bin/ql-source && ip link set eth0 up && "
                "ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 && "
                "ping -c 1 -W 5 10.0.2.2 >/dev/null")
        for name, (gport, prog) in SLIRP.items():
            g.check(f"nc -ll -p {gport} -e {prog} </dev/null >/dev/null 2>&1 &")
        g.check(f"vmhelper echo-server {ECHO_PORT} </dev/null >/dev/null 2>&1 &")
        self.st.start_host_agent().env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
        # Both paths answer before anything is timed.
        deadline = time.monotonic() + 60
        while True:
            try:
                self.slirp_round_trip()
                break
            except (OSError, VsockBenchError):
                if time.monotonic() > deadline:
                    raise VsockBenchError("the slirp path never answered")
                time.sleep(0.5)

    def stop(self):
        """Everything stopped; what went wrong doing so becomes a note."""
        self.notes.extend(f"vsock: {f}" for f in self.st.stop())

    # ---- one measurement each ------------------------------------------------------

    def timed_cpu(self, fn, key):
        """Runs fn(); adds the device's and qemu's CPU time to key's tally."""
        dev, qemu = self.st.device.pid, self.st.guest.proc.pid
        d0, q0 = cpu_seconds(dev), cpu_seconds(qemu)
        n = fn()
        if key:
            self.cpu["device"][0] += cpu_seconds(dev) - d0
            self.cpu["qemu-device"][0] += cpu_seconds(qemu) - q0
            self.cpu["device"][1] += n
            self.cpu["qemu-device"][1] += n
        return n

    def vm_run_round_trip(self):
        t0 = time.monotonic()
        r = self.st.host.vm_run("test", "true", timeout=120)
        if r.returncode != 0:
            raise VsockBenchError(f"vm-run test true: {r.returncode} {r.stderr!r}")
        return time.monotonic() - t0

    def slirp_round_trip(self):
        t0 = time.monotonic()
        r = subprocess.run(["socat", "-u", f"TCP:127.0.0.1:{self.ports['true']}",
                            "OPEN:/dev/null"], stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=120)
        if r.returncode != 0:
            raise VsockBenchError(f"socat: {r.stderr!r}")
        return time.monotonic() - t0

    def _pump(self, wr, rd, size, want_back):
        """Writes size zero bytes to wr (unless None) while reading rd to
        its end; returns the bytes read, which must be want_back."""
        chunk = bytes(MIB)
        sent, got = 0, 0
        wfd = wr.fileno() if wr is not None else None
        rfd = rd.fileno()
        os.set_blocking(rfd, False)
        if wfd is not None:
            os.set_blocking(wfd, False)
        while True:
            ws = [wfd] if wfd is not None and sent < size else []
            r, w, _ = select.select([rfd], ws, [], 120)
            if not r and not w:
                raise VsockBenchError("transfer stalled")
            if w:
                try:
                    sent += os.write(wfd, chunk[:size - sent])
                except BlockingIOError:
                    pass
                if sent == size:
                    if isinstance(wr, socket.socket):
                        wr.shutdown(socket.SHUT_WR)
                    else:
                        wr.close()
                    wfd = None
            if r:
                try:
                    data = os.read(rfd, MIB)
                except BlockingIOError:
                    continue
                if not data:
                    break
                got += len(data)
        if got != want_back:
            raise VsockBenchError(f"got {got} bytes back, not {want_back}")
        return size + got

    def vm_run_transfer(self, direction):
        size = self.cfg["size"]
        argv = ["sh", "-c", "cat >/dev/null"] if direction == "to" else \
            ["head", "-c", str(size), "/dev/zero"]
        p = self.st.host.popen("test", *argv, stdin=subprocess.PIPE if direction == "to"
                                 else subprocess.DEVNULL, stdout=subprocess.PIPE)
        try:
            n = self._pump(p.stdin if direction == "to" else None, p.stdout,
                           size if direction == "to" else 0, 0 if direction == "to" else size)
        finally:
            p.stdout.close()
        if p.wait(timeout=120) != 0:
            raise VsockBenchError(f"vm-run {' '.join(argv)}: exit {p.returncode}")
        return n

    def slirp_transfer(self, direction):
        size = self.cfg["size"]
        s = socket.create_connection(("127.0.0.1", self.ports["sink" if direction == "to"
                                                             else "source"]), timeout=120)
        try:
            return self._pump(s if direction == "to" else None, s,
                              size if direction == "to" else 0,
                              0 if direction == "to" else size)
        finally:
            s.close()

    def device_echo(self):
        s, _ = self.st.hvsock(ECHO_PORT)
        try:
            return self._pump(s, s, self.cfg["echo_size"], self.cfg["echo_size"])
        finally:
            s.close()

    def slirp_echo(self):
        s = socket.create_connection(("127.0.0.1", self.ports["echo"]), timeout=120)
        try:
            return self._pump(s, s, self.cfg["echo_size"], self.cfg["echo_size"])
        finally:
            s.close()

    def idle_connections(self):
        """memory() idle and with IDLE_CONNS connections to the guest
        agent established and idle."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < IDLE_CONNS + 100:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, IDLE_CONNS + 200), hard))
        pid = self.st.device.pid
        before = own_memory(pid)
        socks, pending = [], {}
        try:
            for _ in range(IDLE_CONNS):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(self.st.path)
                s.sendall(b"CONNECT %d\n" % AGENT_PORT)
                socks.append(s)
                pending[s.fileno()] = (s, b"")
            # The guest agent closes a connection without Hello after 10 s:
            # the connections are counted, and memory read, well before.
            deadline = time.monotonic() + 30
            while pending:
                r, _, _ = select.select(list(pending), [], [], 1)
                if time.monotonic() > deadline:
                    raise VsockBenchError(f"{len(pending)} connections never established")
                for fd in r:
                    s, line = pending[fd]
                    c = s.recv(1)
                    if not c:
                        raise VsockBenchError("a connection was refused")
                    line += c
                    if line.endswith(b"\n"):
                        if not OK_LINE.fullmatch(line):
                            raise VsockBenchError(f"bad reply {line!r}")
                        del pending[fd]
                    else:
                        pending[fd] = (s, line)
            time.sleep(0.2)
            during = own_memory(pid)
        finally:
            for s in socks:
                s.close()
        return before, during


def run(quick, rows, details, notes, rounds=None):
    """Appends the qubes-lite-vsock rows; raises VsockBenchError."""
    cfg = dict(QUICK if quick else FULL)
    if rounds:
        cfg["rounds"] = rounds
    for p in ("qubes-lite-vsock", "qubes-lite-guest-agent", "qubes-lite-host-agent", "vm-run"):
        try:
            program(p)
        except FileNotFoundError as e:
            raise VsockBenchError(str(e))
    tmp = tempfile.mkdtemp(prefix="ql-vsock-bench.", dir="/tmp")
    os.chmod(tmp, 0o755)
    b = Bench(tmp, cfg, notes)
    samples = {k: [] for k in ("rt_dev", "rt_slirp", "to_dev", "to_slirp", "from_dev",
                               "from_slirp", "echo_dev", "echo_slirp")}
    figures = [
        "vsock device: `vm-run true` round trip vs slirp hostfwd + nc -e true",
        f"vsock device: `vm-run cat` to the guest vs slirp, {cfg['size'] // MIB} MiB",
        f"vsock device: `vm-run head` from the guest vs slirp, {cfg['size'] // MIB} MiB",
        f"vsock device: raw echo through PATH vs slirp, {cfg['echo_size'] // MIB} MiB each way",
        "vsock device: its CPU time per GiB moved vs qemu's for the same bytes",
        f"vsock device: memory (RssAnon + RssFile) with {IDLE_CONNS} idle connections vs none",
    ]
    try:
        try:
            b.start()
        except Unavailable as e:
            notes.append(f"vsock device figures skipped: {e}")
            rows.extend(dict(figure=f, ours="—", peer="—", ratio="—", goal="—", met=None)
                        for f in figures)
            return
        # Memory first: before any transfer has left buffers in the pool.
        idle, busy = b.idle_connections()
        for r in range(cfg["rounds"]):
            # Interleaved, the order flipped every round.
            first_dev = r % 2 == 0
            pairs = [("echo", lambda: b.timed_cpu(b.device_echo, "echo"), b.slirp_echo),
                     ("to", lambda: b.timed_cpu(lambda: b.vm_run_transfer("to"), "to"),
                      lambda: b.slirp_transfer("to")),
                     ("from", lambda: b.timed_cpu(lambda: b.vm_run_transfer("from"), "from"),
                      lambda: b.slirp_transfer("from"))]
            for name, dev, slirp in pairs:
                for side in (("dev", "slirp") if first_dev else ("slirp", "dev")):
                    t0 = time.monotonic()
                    n = (dev if side == "dev" else slirp)()
                    samples[f"{name}_{side}"].append(n / (time.monotonic() - t0))
            for _ in range(cfg["spawns"]):
                for side in (("dev", "slirp") if first_dev else ("slirp", "dev")):
                    samples[f"rt_{side}"].append(
                        b.vm_run_round_trip() if side == "dev" else b.slirp_round_trip())
    except (qemu.GuestError, initramfs.InitramfsError, RuntimeError, OSError, AssertionError,
            subprocess.SubprocessError) as e:
        raise VsockBenchError(str(e)) from e
    finally:
        b.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    def pair_row(figure, key, fmt, unit, goal, better_low):
        """unit: how bench.py's summary of the samples reads them, (s) or (B/s)."""
        ours, peer = median(samples[f"{key}_dev"]), median(samples[f"{key}_slirp"])
        ratio = ours / peer
        rows.append(dict(figure=figure, ours=fmt(ours), peer=fmt(peer), ratio=f"{ratio:.2f}×",
                         goal=goal, met=ratio < 1 if better_low else ratio >= 1,
                         raw=dict(ours_value=ours, peer_value=peer)))
        details.append((f"{figure}: device {unit}", samples[f"{key}_dev"]))
        details.append((f"{figure}: slirp {unit}", samples[f"{key}_slirp"]))

    pair_row(figures[0], "rt", fmt_time, "(s)", "< 1× (lower)", True)
    pair_row(figures[1], "to", fmt_rate, "(B/s)", "≥ 1× slirp", False)
    pair_row(figures[2], "from", fmt_rate, "(B/s)", "≥ 1× slirp", False)
    pair_row(figures[3], "echo", fmt_rate, "(B/s)", "≥ 1× slirp", False)
    dev_s, dev_n = b.cpu["device"]
    qemu_s, _ = b.cpu["qemu-device"]
    per_gib = dev_s / (dev_n / GIB)
    qemu_per_gib = qemu_s / (dev_n / GIB)
    rows.append(dict(figure=figures[4], ours=f"{per_gib:.2f} s/GiB",
                     peer=f"{qemu_per_gib:.2f} s/GiB", ratio=f"{per_gib / qemu_per_gib:.3f}×",
                     goal="—", met=None,
                     raw=dict(ours_s_per_gib=per_gib, peer_s_per_gib=qemu_per_gib)))
    rows.append(dict(figure=figures[5], ours=fmt_mem(busy["own"]), peer=fmt_mem(idle["own"]),
                     ratio=f"{busy['own'] / idle['own']:.2f}×",
                     goal=f"≤ {fmt_mem(GOAL_IDLE_RSS)}", met=busy["own"] <= GOAL_IDLE_RSS,
                     raw=dict(ours_bytes=busy["own"], peer_bytes=idle["own"])))
    for k in ("RssAnon", "RssFile", "RssShmem", "VmRSS"):
        details.append((f"vsock device {k}, none vs {IDLE_CONNS} idle connections (B)",
                        [idle[k], busy[k]]))
    notes.append("vsock: the device's RssShmem is guest RAM it touched (a memfd qemu maps "
                 "too), left out of its memory figure")
