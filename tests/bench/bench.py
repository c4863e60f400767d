#!/usr/bin/python3
"""qubes-lite benchmarks: every figure beside its peer, measured in the same run.

Starts the guest agent and the host agent (--no-vmm) in a temporary
directory exactly as the integration tests do, with a VM named "bench",
then measures:

  - the round trip of `vm-run bench true` against spawning `true` locally
    with the same harness, and against `ssh 127.0.0.1 true` to an sshd
    started here with key authentication;
  - the throughput of `vm-run bench cat` against a local `cat`, both fed by
    `head -c SIZE /dev/zero` and read by the same byte-counting sink;
  - the guest agent's memory (VmRSS, VmHWM) while it streams SIZE bytes to
    a reader that is slower than the producer, against its idle memory;
  - 1,000 `vm-run` sessions live at once (all must succeed), against the
    same commands run here at once, and both agents' peak fds and memory,
    and whether they came back to their baseline.

Timings on a small VM are noisy: every figure is a median over several
rounds with the two sides interleaved, and no goal fails the run; the table
says whether each goal was met. See README.md beside this file.

    PYTHONPATH=tests /usr/bin/python3 tests/bench/bench.py [--quick] [--json FILE]

BUILD (environment) names the build directory (default: build).
"""
import argparse
import json
import os
import platform
import pwd
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import switch_bench
import vm_bench
import vsock_bench
from figures import (GIB, KIB, MIB, fmt_mem, fmt_rate, fmt_size, fmt_time, median,
                     quantile)
from measure import MeasureError, kill, timed_pipe, timed_run
from qltest import BIN
from qltest.host import HostStack
from qltest.load import concurrent_sessions, fd_limit, local_sessions
from qltest.procs import Daemon, memory, tail

VM = "bench"
# A VM's PATH, not whatever the caller's shell collected: both sides of a
# figure look `true` up along the same, ordinary PATH.
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Goals (from the design): printed, never enforced.
GOAL_SPAWN_RATIO = 3.0        # vm-run true at most 3x a local spawn of true
GOAL_SSH_SPEEDUP = 30.0       # vm-run true at least 30x faster than ssh true
GOAL_THROUGHPUT = 0.50        # vm-run cat at least 50 % of a local cat
GOAL_RSS_MAX = 4 * MIB        # guest agent RSS during a bulk transfer
GOAL_RSS_SPREAD = 512 * KIB   # "flat": RSS varies by at most this much
GOAL_LOAD_RSS_BACK = 512 * KIB  # after the crowd, VmRSS within this of the baseline

FULL = dict(spawn_rounds=5, spawn_per_round=60, ssh_per_round=8,
            cat_rounds=3, cat_size=2 * GIB,
            rss_size=2 * GIB, idle_seconds=1.0, load_sessions=1000)
QUICK = dict(spawn_rounds=2, spawn_per_round=10, ssh_per_round=3,
             cat_rounds=1, cat_size=64 * MIB,
             rss_size=32 * MIB, idle_seconds=0.3, load_sessions=50)

SLOW_READ = 64 * KIB          # the slow reader reads this much ...
SLOW_SLEEP = 0.001            # ... then sleeps this long
SAMPLE_PERIOD = 0.1           # memory sampling period


# What a measurement raises when the measured command fails.
BenchError = MeasureError


# ------------------------------------------------------------------- stack

def start_stack(tmp):
    """The guest agent and the host agent (--no-vmm) as the integration
    tests run them (qltest.host), at their default log level, with a VM
    named VM; the guest agent must accept our uid (root is accepted by
    default, naming it again is harmless). Ready only when a whole
    session goes through."""
    try:
        stack = HostStack(user=pwd.getpwuid(os.getuid()).pw_name, vm=VM, log_level=None,
                          guest_args=["--allow-uid", str(os.getuid())], base=tmp,
                          env={"PATH": PATH})
    except (OSError, RuntimeError) as e:
        raise BenchError(str(e))
    deadline = time.monotonic() + 10
    while True:
        r = subprocess.run(vm_cmd(stack, "true"), env=stack.env, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True)
        if r.returncode == 0:
            return stack
        if time.monotonic() > deadline:
            stack.stop(check=False)
            raise BenchError(f"vm-run {VM} true: exit {r.returncode}: {r.stderr.strip()}\n"
                             f"guest agent:\n{tail(stack.guest.log_path, 20)}"
                             f"host agent:\n{tail(stack.host.log_path, 20)}")
        time.sleep(0.05)


def vm_cmd(stack, *argv):
    return stack.vm_run_args(VM, *argv)


class Sshd:
    """An sshd of our own on 127.0.0.1 on a free port, key authentication
    only, no PAM, everything (host key, user key, authorized_keys, config)
    in tmp: OpenSSH as Debian ships it (sntrup761x25519 key exchange,
    chacha20-poly1305). The client runs with -F /dev/null and BatchMode,
    without known-hosts checks. sshd runs the command through the user's
    login shell, and bash would source ~/.bashrc for it: the client passes
    SHLVL (accepted by this sshd only) to keep the user's start-up files out
    of the figure, whose peer is ssh's own cost. As root, /run/sshd (sshd's
    privilege-separation directory) is created if missing."""

    def __init__(self, tmp):
        self.dir = os.path.join(tmp, "ssh")
        self.proc = None
        self.port = None

    def start(self):
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        if not (os.access(sshd, os.X_OK) and shutil.which("ssh") and shutil.which("ssh-keygen")):
            raise BenchError("openssh-server/openssh-client not installed")
        os.makedirs(self.dir, mode=0o700)
        hostkey = os.path.join(self.dir, "host_ed25519")
        self.key = os.path.join(self.dir, "id_ed25519")
        for k in (hostkey, self.key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench",
                            "-f", k], check=True, stdin=subprocess.DEVNULL)
        authorized = os.path.join(self.dir, "authorized_keys")
        shutil.copyfile(self.key + ".pub", authorized)
        # sshd running as root checks its privilege-separation directory.
        if os.getuid() == 0 and not os.path.isdir("/run/sshd"):
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        conf = os.path.join(self.dir, "sshd_config")
        with open(conf, "w") as f:
            f.write(f"""\
ListenAddress 127.0.0.1
Port {self.port}
HostKey {hostkey}
PidFile none
AuthorizedKeysFile {authorized}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
PrintMotd no
PrintLastLog no
UseDNS no
# bash sources ~/.bashrc for commands run by sshd unless SHLVL is set;
# the peer measured is ssh itself, not the user's shell start-up files.
AcceptEnv SHLVL
LogLevel ERROR
""")
        self.log = os.path.join(self.dir, "sshd.log")
        self.proc = Daemon("sshd", [sshd, "-D", "-e", "-f", conf], self.log)
        deadline = time.monotonic() + 10
        while True:
            r = subprocess.run(self.cmd("true"), stdin=subprocess.DEVNULL,
                               capture_output=True, text=True)
            if r.returncode == 0:
                return
            if not self.proc.alive() or time.monotonic() > deadline:
                raise BenchError(f"ssh to our sshd failed: {r.stderr.strip()}\n"
                                 f"{tail(self.log, 20)}")
            time.sleep(0.1)

    def cmd(self, *argv):
        return ["ssh", "-F", "/dev/null", "-p", str(self.port), "-i", self.key,
                "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes",
                "-o", "LogLevel=ERROR", "-o", "SetEnv=SHLVL=1",
                "-l", pwd.getpwuid(os.getuid()).pw_name, "127.0.0.1", *argv]

    def stop(self):
        if self.proc:
            self.proc.stop(check=False)


# ------------------------------------------------------------ measurements

def bench_spawn(stack, sshd, cfg, rows, details):
    """Round trip of `true`: locally, through vm-run, through ssh, each
    timed by timed_run and looked up along the same ordinary PATH. Through
    vm-run that is a whole session: vm-run starting, connecting to the host
    agent, receiving the guest connection, Hello, Exec, the guest agent
    starting `true`, the exit status travelling back; the local spawn is
    the floor any launcher pays. Goals: at most 3x the local spawn, at
    least 30x faster than ssh."""
    env = stack.env
    local, ours, ssh = [], [], []
    for argv in (["true"], vm_cmd(stack, "true")):      # warm caches
        for _ in range(3):
            timed_run(argv, env)
    for _ in range(cfg["spawn_rounds"]):
        for _ in range(cfg["spawn_per_round"]):     # interleaved, same conditions
            local.append(timed_run(["true"], env))
            ours.append(timed_run(vm_cmd(stack, "true"), env))
        if sshd:
            for _ in range(cfg["ssh_per_round"]):
                ssh.append(timed_run(sshd.cmd("true"), env))
    m_local, m_ours = median(local), median(ours)
    details.append(("spawn true, local", local))
    details.append((f"vm-run {VM} true", ours))
    rows.append(dict(figure=f"`vm-run {VM} true` vs local spawn of `true`",
                     ours=fmt_time(m_ours), peer=fmt_time(m_local),
                     ratio=f"{m_ours / m_local:.2f}×", goal=f"≤ {GOAL_SPAWN_RATIO:g}×",
                     met=m_ours / m_local <= GOAL_SPAWN_RATIO,
                     raw=dict(ours_s=m_ours, peer_s=m_local)))
    if sshd:
        m_ssh = median(ssh)
        details.append(("ssh 127.0.0.1 true", ssh))
        rows.append(dict(figure=f"`vm-run {VM} true` vs `ssh 127.0.0.1 true`",
                         ours=fmt_time(m_ours), peer=fmt_time(m_ssh),
                         ratio=f"{m_ssh / m_ours:.1f}× faster",
                         goal=f"≥ {GOAL_SSH_SPEEDUP:g}× faster",
                         met=m_ssh / m_ours >= GOAL_SSH_SPEEDUP,
                         raw=dict(ours_s=m_ours, peer_s=m_ssh)))


def bench_cat(stack, cfg, rows, details):
    """`vm-run bench cat` against a local `cat`, between the same generator
    and sink (timed_pipe; a short count is an error). Through vm-run every
    byte crosses vm-run's stream connection (a unix socket here, vsock in a
    VM), which `cat` holds as its stdin and stdout: vm-run splices its
    stdin pipe into it and it into its stdout pipe, and the guest agent
    never touches the bytes. Goal: at least 50 % of the local throughput."""
    size = cfg["cat_size"]
    local, ours = [], []
    for _ in range(cfg["cat_rounds"]):
        dt, n = timed_pipe(["cat"], size, stack.env)
        local.append(n / dt)
        dt, n = timed_pipe(vm_cmd(stack, "cat"), size, stack.env)
        ours.append(n / dt)
    m_local, m_ours = median(local), median(ours)
    details.append((f"cat {fmt_size(size)}, local (B/s)", local))
    details.append((f"vm-run {VM} cat {fmt_size(size)} (B/s)", ours))
    rows.append(dict(figure=f"`vm-run {VM} cat` of {fmt_size(size)} vs local `cat`",
                     ours=fmt_rate(m_ours), peer=fmt_rate(m_local),
                     ratio=f"{100 * m_ours / m_local:.0f} %",
                     goal=f"≥ {100 * GOAL_THROUGHPUT:.0f} %",
                     met=m_ours / m_local >= GOAL_THROUGHPUT,
                     raw=dict(ours_Bps=m_ours, peer_Bps=m_local)))


def stream_slowly(proc, pid, stream):
    """Reads stream (proc's stdout or stderr) to the end, slowly, sampling
    pid's memory meanwhile: (samples, seconds, bytes read)."""
    got = [0]

    def slow_reader():
        buf = bytearray(SLOW_READ)
        fd = stream.fileno()
        while True:
            n = os.readv(fd, [buf])
            if n == 0:
                return
            got[0] += n
            time.sleep(SLOW_SLEEP)

    reader = threading.Thread(target=slow_reader, daemon=True)
    t0 = time.monotonic()
    reader.start()
    busy = []
    while reader.is_alive():
        try:
            busy.append(memory(pid))
        except OSError:
            break
        reader.join(SAMPLE_PERIOD)
    dt = time.monotonic() - t0
    proc.wait()
    return busy, dt, got[0]


def bench_rss(stack, cfg, rows, details):
    """Guest agent memory while it relays a stream to a reader slower than
    the source. The stream is the command's stderr: stdout (without a pty)
    goes on the stream connection, past the agent, and would measure
    nothing; stderr (like a pty's output) is read and framed by the agent.
    The reader takes SLOW_READ and sleeps SLOW_SLEEP, so the agent is under
    constant backpressure. Every SAMPLE_PERIOD, VmRSS and VmHWM (the peak
    the kernel recorded: nothing slips between two samples); the peer is
    the same process idle just before. Three rows: VmRSS max and VmHWM
    (goal: at most 4 MiB), and VmRSS spread over the transfer without its
    first second, where the session's buffers are allocated once (flat
    memory shows as a spread near zero; goal: at most 512 KiB). RssAnon,
    the agent's own memory, goes to the summary."""
    pid = stack.guest.pid
    size = cfg["rss_size"]
    idle = []
    end = time.monotonic() + cfg["idle_seconds"]
    while time.monotonic() < end:
        idle.append(memory(pid))
        time.sleep(SAMPLE_PERIOD)

    proc = subprocess.Popen(vm_cmd(stack, "sh", "-c", f"head -c {size} /dev/zero >&2; echo done"),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=stack.env)
    try:
        busy, dt, got = stream_slowly(proc, pid, proc.stderr)
        err = proc.stdout.read()
    finally:
        kill(proc)
    if proc.returncode != 0 or got != size or err != b"done\n":
        raise BenchError(f"vm-run {VM} head -c {size} >&2: exit {proc.returncode}, "
                         f"{got} bytes, stdout {err[:200]!r}")

    idle_rss = median([m["VmRSS"] for m in idle])
    idle_hwm = max(m["VmHWM"] for m in idle)
    rss = [m["VmRSS"] for m in busy] or [idle_rss]
    hwm = max([m["VmHWM"] for m in busy] or [idle_hwm])
    # Flatness: the first second holds the session's set-up (buffers that
    # are allocated once); what matters is whether memory keeps growing.
    steady = rss[int(1 / SAMPLE_PERIOD):] or rss
    spread = max(steady) - min(steady)
    idle_spread = max(m["VmRSS"] for m in idle) - min(m["VmRSS"] for m in idle)
    details.append(("guest agent VmRSS idle (B)", [m["VmRSS"] for m in idle]))
    details.append((f"guest agent VmRSS streaming {fmt_size(size)} in {dt:.1f} s (B)", rss))
    details.append(("guest agent RssAnon idle (B)", [m["RssAnon"] for m in idle]))
    details.append(("guest agent RssAnon streaming (B)", [m["RssAnon"] for m in busy]))
    label = f"{fmt_size(size)} relayed (stderr) to a slow reader"
    rows.append(dict(figure=f"guest agent VmRSS max, {label}, vs idle",
                     ours=fmt_mem(max(rss)), peer=fmt_mem(idle_rss),
                     ratio=f"{max(rss) / idle_rss:.2f}×", goal=f"≤ {fmt_mem(GOAL_RSS_MAX)}",
                     met=max(rss) <= GOAL_RSS_MAX,
                     raw=dict(ours_B=max(rss), peer_B=idle_rss)))
    rows.append(dict(figure=f"guest agent VmHWM, {label}, vs idle",
                     ours=fmt_mem(hwm), peer=fmt_mem(idle_hwm),
                     ratio=f"{hwm / idle_hwm:.2f}×", goal=f"≤ {fmt_mem(GOAL_RSS_MAX)}",
                     met=hwm <= GOAL_RSS_MAX,
                     raw=dict(ours_B=hwm, peer_B=idle_hwm)))
    rows.append(dict(figure=f"guest agent VmRSS spread, {label}, vs idle",
                     ours=fmt_mem(spread), peer=fmt_mem(idle_spread), ratio="—",
                     goal=f"flat: ≤ {fmt_mem(GOAL_RSS_SPREAD)}",
                     met=spread <= GOAL_RSS_SPREAD,
                     raw=dict(ours_B=spread, peer_B=idle_spread,
                              samples=len(rss), seconds=dt)))


def bench_load(stack, cfg, rows, details):
    """N `vm-run` sessions live at once through the one host agent and
    guest agent (qltest.load: each command waits for its line on stdin
    until the guest agent counts all N, then prints it and exits with a
    status of its own), against the same N commands run here at once with
    the same harness. Rows: the time from the first spawn to the last exit
    (every session must have its own output and status); for each agent,
    its peak fds and VmRSS against its baseline (taken after one session),
    and whether both came back (fds equal, VmRSS within
    GOAL_LOAD_RSS_BACK) once the crowd was gone. The agents were started
    at a soft limit of 1,024 fds, a service manager's default."""
    n = cfg["load_sessions"]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * n + 64 and hard >= 4 * n + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    peer = local_sessions(n, env=stack.env)
    res = concurrent_sessions(stack, n)
    if res.failures or peer.failures:
        raise BenchError(f"{n} concurrent sessions: {len(res.failures)} failed, e.g. "
                         f"{res.failures[:3]}; locally {len(peer.failures)}")
    details.append((f"{n} concurrent vm-run sessions (s)", [res.seconds]))
    rows.append(dict(figure=f"{n:,} concurrent `vm-run` sessions, all exited, vs the same "
                            f"run here",
                     ours=fmt_time(res.seconds), peer=fmt_time(peer.seconds),
                     ratio=f"{res.seconds / peer.seconds:.2f}×", goal="all succeed",
                     met=True, raw=dict(ours_s=res.seconds, peer_s=peer.seconds, sessions=n)))
    for name in ("host agent", "guest agent"):
        (bf, br), (pf, pr), (af, ar) = res.baseline[name], res.peak[name], res.after[name]
        back = af == bf and ar <= br + GOAL_LOAD_RSS_BACK
        rows.append(dict(figure=f"{name} peak fds, VmRSS during {n:,} sessions vs its baseline; "
                                f"after: {af} fds, {fmt_mem(ar)}",
                         ours=f"{pf} fds, {fmt_mem(pr)}", peer=f"{bf} fds, {fmt_mem(br)}",
                         ratio=f"{pr / br:.2f}×",
                         goal=f"back: = fds, ≤ +{fmt_mem(GOAL_LOAD_RSS_BACK)}", met=back,
                         raw=dict(ours_B=pr, peer_B=br, fds_peak=pf, fds_baseline=bf,
                                  after_fds=af, after_B=ar)))


# ------------------------------------------------------------------ output

def print_table(rows):
    head = ("figure", "ours", "peer", "ratio", "goal", "met?")
    cells = [head] + [(r["figure"], r["ours"], r["peer"], r["ratio"], r["goal"],
                       ("—" if r["goal"] == "—" else "skipped") if r["met"] is None
                       else ("yes" if r["met"] else "NO"))
                      for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    line = lambda c: "| " + " | ".join(s.ljust(w) for s, w in zip(c, widths)) + " |"
    print(line(head))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for c in cells[1:]:
        print(line(c))


def print_details(details):
    print("\nsamples: n, median, min, p90, max")
    for name, xs in details:
        if not xs:
            print(f"  {name}: no samples")
            continue
        if "B/s" in name:
            f = fmt_rate
        elif "(B)" in name:
            f = fmt_mem
        elif name.endswith("/s"):
            f = lambda x: f"{x:,.1f}"
        else:
            f = fmt_time
        print(f"  {name}: n={len(xs)} {f(median(xs))} "
              f"[{f(min(xs))} .. {f(quantile(xs, 0.9))} .. {f(max(xs))}]")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="few rounds and small sizes: a smoke test in seconds")
    ap.add_argument("--size", type=int, help="bytes per bulk transfer (cat and memory)")
    ap.add_argument("--rounds", type=int, help="rounds of every timing")
    ap.add_argument("--no-ssh", action="store_true", help="skip the ssh peer")
    ap.add_argument("--no-switch", action="store_true",
                    help="skip the vm-switch figures (switch_bench.py)")
    ap.add_argument("--no-vm", action="store_true",
                    help="skip the qemu VM figures (vm_bench.py)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    cfg = dict(QUICK if args.quick else FULL)
    if args.size:
        cfg["cat_size"] = cfg["rss_size"] = args.size
    if args.rounds:
        cfg["spawn_rounds"] = cfg["cat_rounds"] = args.rounds

    tmp = tempfile.mkdtemp(prefix="qubes-lite-bench.")
    stack = sshd = None
    rows, details, notes = [], [], []

    def on_signal(signo, _frame):
        raise KeyboardInterrupt(f"signal {signo}")
    signal.signal(signal.SIGTERM, on_signal)
    try:
        # As a service manager starts them: a soft limit of 1,024 fds.
        with fd_limit(min(1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1])):
            stack = start_stack(tmp)
        if args.no_ssh:
            notes.append("ssh peer skipped (--no-ssh)")
        else:
            sshd = Sshd(tmp)
            try:
                sshd.start()
            except (BenchError, OSError, subprocess.CalledProcessError) as e:
                notes.append(f"ssh peer skipped: {e}")
                sshd.stop()
                sshd = None
        print(f"qubes-lite bench ({'quick' if args.quick else 'full'}): "
              f"{platform.node()}, Linux {platform.release()}, {os.cpu_count()} CPUs "
              f"(load {os.getloadavg()[0]:.2f}), "
              f"{cfg['spawn_rounds']}×{cfg['spawn_per_round']} spawns, "
              f"{cfg['cat_rounds']}× {fmt_size(cfg['cat_size'])} cat, "
              f"{fmt_size(cfg['rss_size'])} slow stream, "
              f"{cfg['load_sessions']} concurrent sessions", flush=True)
        bench_spawn(stack, sshd, cfg, rows, details)
        if sshd is None:
            rows.append(dict(figure=f"`vm-run {VM} true` vs `ssh 127.0.0.1 true`",
                             ours="—", peer="—", ratio="—",
                             goal=f"≥ {GOAL_SSH_SPEEDUP:g}× faster", met=None))
        bench_cat(stack, cfg, rows, details)
        bench_rss(stack, cfg, rows, details)
        bench_load(stack, cfg, rows, details)
        if args.no_switch:
            notes.append("vm-switch figures skipped (--no-switch)")
        else:
            try:
                switch_bench.run(os.path.join(BIN, "vm-switch"), args.quick, rows, details,
                                 notes, args.rounds)
            except switch_bench.SwitchBenchError as e:
                raise BenchError(f"vm-switch: {e}")
        try:
            vsock_bench.run(args.quick, rows, details, notes, args.rounds)
        except vsock_bench.VsockBenchError as e:
            raise BenchError(f"qubes-lite-vsock: {e}")
        if args.no_vm:
            notes.append("qemu VM figures skipped (--no-vm)")
        else:
            try:
                vm_bench.run(args.quick, rows, details, notes, args.rounds)
            except vm_bench.VmBenchError as e:
                raise BenchError(f"qemu VM: {e}")
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        if sshd:
            sshd.stop()
        if stack:
            stack.stop(check=False)
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print()
    print_table(rows)
    for n in notes:
        print(f"note: {n}")
    print_details(details)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(mode="quick" if args.quick else "full", config=cfg,
                           rows=[{k: v for k, v in r.items()} for r in rows],
                           samples={name: xs for name, xs in details}), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
