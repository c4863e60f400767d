"""A real VM: the cold start, and warm figures beside ssh into the same VM.

  - Cold start: `vm-run --timing test true` on a stopped VM, to its exit.
    The VM is the lifecycle tests' (qltest.vmm.VmmStack with "vmm": "qemu":
    the host agent starts qemu booting the test image, and qemu's vsock
    device, qubes-lite-vsock); each round is a new stack, so every VM
    start is a first one. The total and the parts --timing reports, each
    the median of the rounds.
  - Warm: one guest (qltest.vsock.VsockGuest: qubes-lite-vsock as its
    vsock device, the guest agent on port 5200, the host agent outside on
    hvsock:PATH:5200) that also runs sshd on vsock port 22
    (ssh_image_parts(), start_sshd()). `vm-run test true` round trip
    against `ssh ... true`, and `vm-run test cat` against `ssh ... cat`
    between the same generator and sink; ssh reaches the guest through
    `qubes-lite-vsock-proxy hvsock:PATH:22`, the proxy `vm-shell --ssh`
    runs, over the same device. Both sides interleaved, in the same run.

run() appends rows as bench.py prints them; the rows it cannot measure
(no qemu, no kernel, no openssh) say skipped, with the reason in a note.
"""
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from figures import MIB, fmt_rate, fmt_time, median
from measure import MeasureError, timed_pipe, timed_run
from qltest import program, qemu
from qltest.host import VM
from qltest.vmm import VmmStack
from qltest.vsock import SSH_PEERS, VsockGuest, ssh_image_parts

GOAL_SSH_SPEEDUP = 30.0       # vm-run true at least 30x faster than ssh true
GOAL_STREAM = 1.0             # vm-run cat at least ssh's throughput

FULL = dict(cold_rounds=3, spawns=20, ssh_spawns=5, cat_rounds=3, cat_size=64 * MIB)
QUICK = dict(cold_rounds=1, spawns=5, ssh_spawns=2, cat_rounds=1, cat_size=8 * MIB)

# What --timing prints, each since vm-run started: "vm-run:   exec   12.345 ms".
TIMING_LINE = re.compile(r"^vm-run:   (.+?)\s+([0-9.]+) ms", re.M)
VM_START_TOOK = re.compile(r"\(VM start took ([0-9.]+) ms\)")
PARTS = ("connect", "VM start", "guest agent ready", "exec", "exit")


class VmBenchError(Exception):
    pass


def cold_start_once():
    """One `vm-run --timing test true` on a VM nobody started yet:
    {part: seconds since vm-run started} and the total."""
    try:
        s = VmmStack(vmm="qemu", user="root")
    except pytest.skip.Exception as e:
        raise qemu.Unavailable(str(e))
    try:
        r = s.vm_run("--timing", VM, "true", timeout=300)
        if r.returncode != 0:
            raise VmBenchError(f"vm-run --timing {VM} true: exit {r.returncode}: "
                               f"{r.stderr.strip()}\n{s.log()[-2000:]}")
        got = {name: float(ms) / 1000 for name, ms in TIMING_LINE.findall(r.stderr)}
        took = VM_START_TOOK.search(r.stderr)
        if any(p not in got for p in PARTS) or not took:
            raise VmBenchError(f"vm-run --timing printed no {PARTS}:\n{r.stderr}")
        got["VM start took"] = float(took.group(1)) / 1000
        return got
    finally:
        s.stop()


def cold_start(cfg, rows, details):
    rounds = [cold_start_once() for _ in range(cfg["cold_rounds"])]
    m = {k: median([r[k] for r in rounds]) for k in rounds[0]}
    for k in PARTS:
        details.append((f"cold start: {k}, since vm-run started (s)", [r[k] for r in rounds]))
    # The parts, each from the end of the one before.
    parts = [("VM start", m["VM start"] - m["connect"]),
             ("agent ready", m["guest agent ready"] - m["VM start"]),
             ("exec", m["exec"] - m["guest agent ready"]),
             ("exit", m["exit"] - m["exec"])]
    rows.append(dict(
        figure=f"qemu VM: cold start, `vm-run --timing {VM} true` on a stopped VM "
               f"(median of {len(rounds)}), and its parts",
        ours=fmt_time(m["exit"]),
        peer=", ".join(f"{name} {fmt_time(t)}" for name, t in parts),
        ratio=f"{m['VM start took'] / m['exit'] * 100:.0f} % VM start", goal="—", met=None,
        raw=dict(ours_total_s=m["exit"], peer_vm_start_s=m["VM start took"],
                 parts_s=dict(parts), rounds=len(rounds))))


class WarmGuest:
    """The VsockGuest with sshd, and the commands both sides run."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.st = VsockGuest(tmp)
        self.key = None

    def start(self):
        kern = qemu.guest_kernel()
        parts, why = ssh_image_parts(self.tmp)
        if parts is None:
            raise qemu.Unavailable(why)
        binaries, files, self.key = parts
        self.st.boot(kern, self.st.image(kern, files=files, binaries=binaries), timeout=180)
        self.st.start_sshd()
        self.st.start_host_agent().env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
        self.env = self.st.host.env
        # Both answer before anything is timed.
        timed_run(self.vm_run("true"), self.env)
        timed_run(self.ssh("true"), self.env)

    def vm_run(self, *argv):
        return self.st.host.vm_run_args(VM, *argv)

    def ssh(self, *argv):
        proxy = f"{program('qubes-lite-vsock-proxy')} hvsock:{self.st.path}:22"
        return [SSH_PEERS["ssh"], "-F", "/dev/null", "-o", f"ProxyCommand={proxy}",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-i", self.key, "-l", "root",
                "qubes-lite-test", *argv]

    def stop(self):
        return self.st.stop()


def warm(cfg, rows, details, notes):
    tmp = tempfile.mkdtemp(prefix="ql-vm-bench.", dir="/tmp")
    os.chmod(tmp, 0o755)
    g = WarmGuest(tmp)
    ours, ssh, ours_cat, ssh_cat = [], [], [], []
    try:
        g.start()
        for i in range(cfg["spawns"]):
            ours.append(timed_run(g.vm_run("true"), g.env))
            if i < cfg["ssh_spawns"]:
                ssh.append(timed_run(g.ssh("true"), g.env))
        size = cfg["cat_size"]
        for r in range(cfg["cat_rounds"]):
            # Interleaved, the order flipped every round.
            for side in (("ours", "ssh") if r % 2 == 0 else ("ssh", "ours")):
                argv = g.vm_run("cat") if side == "ours" else g.ssh("cat")
                dt, n = timed_pipe(argv, size, g.env)
                (ours_cat if side == "ours" else ssh_cat).append(n / dt)
    finally:
        notes.extend(f"qemu VM: {f}" for f in g.stop())
        shutil.rmtree(tmp, ignore_errors=True)
    m_ours, m_ssh = median(ours), median(ssh)
    details.append((f"warm vm-run {VM} true, qemu VM (s)", ours))
    details.append(("warm ssh true through the vsock proxy, same VM (s)", ssh))
    rows.append(dict(figure=f"qemu VM: warm `vm-run {VM} true` vs `ssh true` into it (vsock proxy)",
                     ours=fmt_time(m_ours), peer=fmt_time(m_ssh),
                     ratio=f"{m_ssh / m_ours:.1f}× faster", goal=f"≥ {GOAL_SSH_SPEEDUP:g}× faster",
                     met=m_ssh / m_ours >= GOAL_SSH_SPEEDUP,
                     raw=dict(ours_s=m_ours, peer_s=m_ssh)))
    m_ours, m_ssh = median(ours_cat), median(ssh_cat)
    label = f"{cfg['cat_size'] // MIB} MiB"
    details.append((f"vm-run {VM} cat {label}, qemu VM (B/s)", ours_cat))
    details.append((f"ssh cat {label} through the vsock proxy, same VM (B/s)", ssh_cat))
    rows.append(dict(figure=f"qemu VM: `vm-run {VM} cat` of {label} vs `ssh cat` into it",
                     ours=fmt_rate(m_ours), peer=fmt_rate(m_ssh),
                     ratio=f"{m_ours / m_ssh:.2f}×", goal=f"≥ {GOAL_STREAM:g}× ssh",
                     met=m_ours / m_ssh >= GOAL_STREAM,
                     raw=dict(ours_Bps=m_ours, peer_Bps=m_ssh)))



def run(quick, rows, details, notes, rounds=None):
    """Appends the real VM's rows (cold start, warm round trip, warm
    stream); raises VmBenchError when a measurement fails."""
    cfg = dict(QUICK if quick else FULL)
    if rounds:
        cfg["cold_rounds"] = cfg["cat_rounds"] = rounds
    for p in ("qubes-lite-vsock", "qubes-lite-vsock-proxy", "qubes-lite-host-agent", "vm-run"):
        try:
            program(p)
        except FileNotFoundError as e:
            raise VmBenchError(str(e))
    try:
        try:
            cold_start(cfg, rows, details)
        except qemu.Unavailable as e:
            notes.append(f"qemu VM: cold start skipped: {e}")
            rows.append(skipped(f"qemu VM: cold start, `vm-run --timing {VM} true`"))
        try:
            warm(cfg, rows, details, notes)
        except qemu.Unavailable as e:
            notes.append(f"qemu VM: warm figures skipped: {e}")
            rows.append(skipped(f"qemu VM: warm `vm-run {VM} true` vs `ssh true` into it"))
            rows.append(skipped(f"qemu VM: `vm-run {VM} cat` vs `ssh cat` into it"))
    except (MeasureError, qemu.GuestError, RuntimeError, OSError, AssertionError,
            subprocess.SubprocessError) as e:
        raise VmBenchError(str(e)) from e


def skipped(figure):
    return dict(figure=figure, ours="—", peer="—", ratio="—", goal="—", met=None)
