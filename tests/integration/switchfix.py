"""Fixtures for vm-switch: the real program in a temporary directory, and
DPDK's dpdk-testpmd with one net_virtio_user port playing each VM.

    sw = SwitchRun(tmpdir)            config/ and sock/ under tmpdir
    sw.write_conf("router", ROUTER_MAC, "router")
    sw.start()                        vm-switch --config-dir ... --socket-dir ...
                                      (in its sandbox, or with --no-sandbox)
    sw.stats()                        {vm: {"pid": .., "state": .., ...}}
    vm = Pmd(sw, "c1", C1_MAC, peer=ROUTER_MAC)
    vm.start_rx()                     rxonly forwarding: counts what arrives
    vm.send(bursts=2)                 2 x 32 frames of 64 bytes to its peer MAC
    vm.rx_packets()                   frames its port received

Every testpmd runs on CPU 0 (its forwarding lcore busy-polls once
started); vm-switch is not pinned. Everything started is stopped by pid.

The switch_run fixture runs each test twice: with the sandbox (the
default; as root the switch is told --user nobody) and with --no-sandbox.
In the sandbox the pids vm-switch reports are those of its own pid
namespace: stats() translates them to the host's.
"""
import os
import pwd
import re
import select
import shutil
import signal
import subprocess
import time

import pytest

from qltest import BUILD, program
from qltest.procs import children_of, ns_pid, pid_alive, wait_for  # noqa: F401 (re-exported)

TESTPMD = shutil.which("dpdk-testpmd")
# The test build of vm-switch (child.c's VM_SWITCH_TEST_HOOKS).
HOOKED = os.path.join(BUILD, "tests", "switch", "vm-switch")
SANDBOX_USER = "nobody"
SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "runtime error:",
                   "UndefinedBehaviorSanitizer")

ROUTER_MAC = "52:54:00:5a:00:01"
C1_MAC = "52:54:00:5a:00:02"
C2_MAC = "52:54:00:5a:00:03"
BROADCAST = "ff:ff:ff:ff:ff:ff"

needs_testpmd = pytest.mark.skipif(
    TESTPMD is None, reason="dpdk-testpmd not installed (Debian package dpdk-dev)")


def parse_stats(text):
    """The counters file: one line per VM, key=value pairs."""
    out = {}
    for line in text.splitlines():
        fields = dict(kv.split("=", 1) for kv in line.split())
        name = fields.pop("vm")
        for k, v in fields.items():
            if k not in ("role", "state"):
                fields[k] = int(v)
        out[name] = fields
    return out


class SwitchRun:
    def __init__(self, base, log_level="info", sandbox=False):
        self.base = str(base)
        self.sandbox = sandbox
        self.pid_cache = {}
        self.config_dir = os.path.join(self.base, "config")
        self.socket_dir = os.path.join(self.base, "sock")
        os.makedirs(self.config_dir, exist_ok=True)
        os.makedirs(self.socket_dir, exist_ok=True)
        if sandbox and os.geteuid() == 0:
            # The unprivileged user the switch becomes reads config/ and
            # writes sock/.
            pw = pwd.getpwnam(SANDBOX_USER)
            os.chmod(self.base, 0o755)
            os.chmod(self.config_dir, 0o755)
            os.chown(self.socket_dir, pw.pw_uid, pw.pw_gid)
        self.log_path = os.path.join(self.base, "vm-switch.log")
        self.log_level = log_level
        self.proc = None

    def write_conf(self, name, mac, role=None, text=None):
        """Writes <name>.conf in one go (a rename, as editors and
        configuration tools do)."""
        if text is None:
            text = f"mac={mac}\n" + (f"role={role}\n" if role else "")
        tmp = os.path.join(self.config_dir, f".{name}.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, os.path.join(self.config_dir, f"{name}.conf"))

    def remove_conf(self, name):
        os.unlink(os.path.join(self.config_dir, f"{name}.conf"))

    def start(self, extra=(), env=None, binary=None, unprivileged=False):
        """unprivileged: as root, start the switch as SANDBOX_USER already
        (as systemd's DynamicUser= does) rather than telling it --user."""
        self.log = open(self.log_path, "wb")
        preexec = None
        if not self.sandbox:
            sandbox = ["--no-sandbox"]
        elif os.geteuid() != 0:
            sandbox = []
        elif unprivileged:
            sandbox = []
            pw = pwd.getpwnam(SANDBOX_USER)

            def preexec():
                os.setgroups([])
                os.setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid)
                os.setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid)
        else:
            sandbox = ["--user", SANDBOX_USER]
        args = [binary or program("vm-switch"), "--config-dir", self.config_dir,
                "--socket-dir", self.socket_dir, "--log-level", self.log_level,
                *sandbox, *extra]
        env = dict(os.environ, **(env or {}))
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, preexec_fn=preexec)
        wait_for(lambda: "serving " in self.log_text() or self.proc.poll() is not None,
                 timeout=30, what="vm-switch to start")
        assert self.proc.poll() is None, self.log_text()

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stats_path(self):
        return os.path.join(self.socket_dir, "vm-switch.stats")

    def main_pid(self):
        """The main process: the switch itself, or in the sandbox the
        supervisor's one child (PID 1 of the sandbox)."""
        if not self.sandbox:
            return self.proc.pid
        kids = children_of(self.proc.pid)
        return kids[0] if kids else None

    def host_pids(self):
        """{pid in the switch's pid namespace: pid on the host}."""
        main = self.main_pid()
        if main is None:
            return {}
        out = {ns_pid(main): main}
        for kid in children_of(main):
            n = ns_pid(kid)
            if n is not None:
                out[n] = kid
        return out

    def log_pid(self, pid):
        """How the switch's log names host pid `pid`: in the sandbox, by its
        number in the switch's pid namespace."""
        if not self.sandbox:
            return pid
        for inner, host in self.pid_cache.items():
            if host == pid:
                return inner
        return ns_pid(pid)

    def stats(self):
        try:
            with open(self.stats_path()) as f:
                stats = parse_stats(f.read())
        except FileNotFoundError:
            return {}
        if self.sandbox:
            # The file names children already forked; one not found at
            # once may be gone. Never seen, it counts as not running: a
            # negative pid no test mistakes for a process.
            want = {v["pid"] for v in stats.values() if v.get("pid", 0) > 0}
            deadline = time.monotonic() + 1
            pids = self.host_pids()
            while not want <= set(pids) | set(self.pid_cache) and time.monotonic() < deadline:
                time.sleep(0.02)
                pids = self.host_pids()
            # A child seen before and gone since keeps its host pid, as
            # it would without the sandbox.
            self.pid_cache.update(pids)
            for v in stats.values():
                if v.get("pid", 0) > 0:
                    v["pid"] = self.pid_cache.get(v["pid"], -v["pid"])
        return stats

    def wait_stats(self, pred, timeout=30, what="the counters file"):
        """Waits until pred(stats) is true; returns those stats."""
        last = {}

        def check():
            nonlocal last
            last = self.stats()
            return last if pred(last) else None
        try:
            return wait_for(check, timeout=timeout, interval=0.1, what=what)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}; last counters: {last}\n"
                                 f"log:\n{self.log_text()[-4000:]}")

    def wait_running(self, names, timeout=30):
        return self.wait_stats(
            lambda s: all(n in s and s[n]["pid"] > 0 and s[n]["state"] != "restarting"
                          for n in names),
            timeout=timeout, what=f"children of {names}")

    def stop(self, check=True):
        if self.proc is None:
            return
        children = [v["pid"] for v in self.stats().values() if v.get("pid", 0) > 0]
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                if check:
                    raise AssertionError("vm-switch did not exit on SIGTERM")
        self.log.close()
        text = self.log_text()
        if check:
            assert self.proc.returncode == 0, f"vm-switch exited {self.proc.returncode}:\n{text}"
            for mark in SANITIZER_MARKS:
                assert mark not in text, text[-8000:]
            # Its children go with it.
            wait_for(lambda: not any(pid_alive(p) for p in children), timeout=10,
                     what="the children to exit")


class Pmd:
    """dpdk-testpmd with one virtio-user port on <socket dir>/<name>.sock,
    driven through its interactive prompt on stdin."""

    def __init__(self, sw, name, mac, peer, cpu=0, extra=()):
        self.name = name
        self.tag = f"{name}{os.getpid()}{int(time.monotonic() * 1000) % 100000}"
        self.run_dir = os.path.join(sw.base, "pmd-" + self.tag)
        os.makedirs(self.run_dir, exist_ok=True)
        sock = os.path.join(sw.socket_dir, f"{name}.sock")
        args = ["stdbuf", "-oL", TESTPMD, "--lcores", f"0@{cpu},1@{cpu}", "--no-huge",
                "-m", "256", "--no-pci", "--no-shconf", f"--file-prefix={self.tag}",
                "--vdev", f"net_virtio_user0,path={sock},queues=1,mac={mac}",
                "--", "-i", "--forward-mode=rxonly", f"--eth-peer=0,{peer}",
                "--total-num-mbufs=2048", "--rxd=256", "--txd=256", "--burst=32", *extra]
        env = dict(os.environ, XDG_RUNTIME_DIR=self.run_dir)
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=env)
        self.out = ""
        self.started = False
        self.streaming = False
        try:
            self._read_until("testpmd> ", timeout=60)
        except Exception:
            self.kill()
            raise

    def _read_until(self, marker, timeout=20):
        """Reads its output until marker shows up after what was read so far."""
        start = len(self.out)
        deadline = time.monotonic() + timeout
        while marker not in self.out[start:]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"testpmd {self.name}: no {marker!r}:\n{self.out[-3000:]}")
            r, _, _ = select.select([self.proc.stdout], [], [], min(left, 0.5))
            if r:
                b = os.read(self.proc.stdout.fileno(), 65536)
                if not b:
                    raise AssertionError(f"testpmd {self.name} exited "
                                         f"({self.proc.poll()}):\n{self.out[-3000:]}")
                self.out += b.decode(errors="replace")
        return self.out[start:]

    def cmd(self, line, timeout=20):
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()
        return self._read_until("testpmd> ", timeout)

    def start_rx(self):
        if not self.started:
            self.cmd("start")
            self.started = True

    def stop_fwd(self):
        if self.started:
            self.cmd("stop")
            self.started = False
        if self.streaming:
            self.cmd("set fwd rxonly")
            self.streaming = False

    def set_peer(self, mac):
        """Where send() and stream() address their frames (testpmd takes
        this only while it is not forwarding; send() starts it again)."""
        self.stop_fwd()
        out = self.cmd(f"set eth-peer 0 {mac}")
        assert "stop" not in out.lower(), out

    def send(self, bursts):
        """bursts x 32 frames to the peer MAC, then goes on receiving."""
        self.stop_fwd()
        self.cmd(f"start tx_first {bursts}")
        self.started = True

    def stream(self):
        """Sends to the peer MAC without end (txonly) until stop_fwd."""
        self.stop_fwd()
        self.cmd("set fwd txonly")
        self.streaming = True
        self.cmd("start")
        self.started = True

    def port_stats(self):
        text = self.cmd("show port stats 0")
        rx = re.search(r"RX-packets:\s+(\d+)", text)
        tx = re.search(r"TX-packets:\s+(\d+)", text)
        assert rx and tx, text
        return int(rx.group(1)), int(tx.group(1))

    def rx_bytes_errors(self):
        text = self.cmd("show port stats 0")
        b = re.search(r"RX-bytes:\s+(\d+)", text)
        e = re.search(r"RX-errors:\s+(\d+)", text)
        assert b and e, text
        return int(b.group(1)), int(e.group(1))

    def rx_packets(self):
        return self.port_stats()[0]

    def tx_packets(self):
        return self.port_stats()[1]

    def wait_rx(self, n, timeout=20):
        """Waits until at least n frames arrived; returns the count."""
        got = 0

        def check():
            nonlocal got
            got = self.rx_packets()
            return got >= n
        try:
            wait_for(check, timeout=timeout, interval=0.1, what=f"{self.name} to receive")
        except TimeoutError:
            raise AssertionError(f"{self.name} received {got} of {n} frames")
        return got

    def link_up(self):
        return "Link status: up" in self.cmd("show port info 0")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def quit(self):
        if self.proc.poll() is None:
            try:
                self.stop_fwd()
                self.proc.stdin.write(b"quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=20)
            except (subprocess.TimeoutExpired, BrokenPipeError, AssertionError):
                pass
        self.kill()


@pytest.fixture(params=["sandbox", "no-sandbox"])
def switch_run(request, tmp_path):
    """A SwitchRun in a short temporary directory (unix socket paths are
    limited to 108 bytes), in its sandbox and without; stopped, and its log
    checked, at the end."""
    import tempfile
    base = tempfile.mkdtemp(prefix="qls-")
    sw = SwitchRun(base, sandbox=request.param == "sandbox")
    pmds = []
    sw.pmds = pmds
    yield sw
    for p in pmds:
        p.kill()
    sw.stop()
    shutil.rmtree(base, ignore_errors=True)


def pmd(sw, name, mac, peer, extra=()):
    """A Pmd registered with the switch_run fixture (killed at the end)."""
    p = Pmd(sw, name, mac, peer, extra=extra)
    sw.pmds.append(p)
    return p
