"""vm-switch as tests and benchmarks run it: the real program on a
temporary configuration and socket directory, its counters file, and
dpdk-testpmd with one net_virtio_user port playing each VM.

    sw = Switch(tmpdir)                config/ and sock/ under tmpdir
    sw.write_conf("router", ROUTER_MAC, "router")
    sw.start()                         vm-switch --config-dir ... --socket-dir ...
                                       (in its sandbox, or with --no-sandbox)
    sw.stats()                         {vm: {"pid": .., "state": .., ...}}
    vm = sw.pmd("c1", C1_MAC, peer=ROUTER_MAC)
    vm.start_rx()                      rxonly forwarding: counts what arrives
    vm.send(bursts=2)                  2 x 32 frames of 64 bytes to its peer MAC
    vm.rx_packets()                    frames its port received
    sw.stop()                          SIGTERM; exit 0, no sanitizer report,
                                       its children gone

    sw.start_vms("router", "c1")       NETWORK's VMs configured, the switch
                                       started, their children running
    r, a = sw.serve(router=C1_MAC, c1=ROUTER_MAC)    a served Pmd on each

The switch runs in its sandbox unless told sandbox=False (--no-sandbox).
As root it is told --user nobody, who gets the socket directory and may
traverse the directories above it. In the sandbox the pids in the counters
file are those of the switch's own pid namespace: stats() translates them
to the host's.

The switch_run fixture runs each test twice: with the sandbox and with
--no-sandbox. Every testpmd of a Pmd runs on CPU 0 (its forwarding lcore
busy-polls once started); vm-switch is not pinned unless start(cpus=).
Everything started is stopped by pid.
"""
import functools
import os
import pwd
import shutil
import stat
import tempfile
import time

import pytest

from qltest import BUILD, program
from qltest.procs import (Daemon, ProcError, children_of, drop_to, ns_pid, pid_alive, tail,
                          wait_for)
from qltest.testpmd import Testpmd, available as testpmd_available

# The test build of vm-switch (child.c's VM_SWITCH_TEST_HOOKS).
HOOKED = os.path.join(BUILD, "tests", "switch", "vm-switch")
SANDBOX_USER = "nobody"
STATS_FILE = "vm-switch.stats"

ROUTER_MAC = "52:54:00:5a:00:01"
C1_MAC = "52:54:00:5a:00:02"
C2_MAC = "52:54:00:5a:00:03"
BROADCAST = "ff:ff:ff:ff:ff:ff"
BURST = 32                       # frames a Pmd sends per burst
# The tests' network: name -> (mac, role).
NETWORK = {"router": (ROUTER_MAC, "router"), "c1": (C1_MAC, None), "c2": (C2_MAC, None)}

needs_testpmd = pytest.mark.skipif(
    not testpmd_available(), reason="dpdk-testpmd not installed (Debian package dpdk-dev)")


def parse_stats(text):
    """The counters file: one line per VM, key=value pairs; every value a
    number but the role and the state."""
    out = {}
    for line in text.splitlines():
        fields = dict(kv.split("=", 1) for kv in line.split())
        name = fields.pop("vm")
        for k, v in fields.items():
            if k not in ("role", "state"):
                fields[k] = int(v)
        out[name] = fields
    return out


def make_traversable(path):
    """go+x on path and on the directories above it, up to the first one
    that is not ours (temporary directories are made 0700)."""
    path = os.path.abspath(path)
    while path != "/":
        st = os.stat(path)
        if st.st_uid != os.geteuid():
            return
        if st.st_mode & 0o011 != 0o011:
            os.chmod(path, stat.S_IMODE(st.st_mode) | 0o011)
        path = os.path.dirname(path)


class Switch:
    def __init__(self, base, sandbox=True, log_level="info", args=()):
        self.base = str(base)
        self.sandbox = sandbox
        self.log_level = log_level
        self.args = list(args)
        self.pid_cache = {}
        self.vms = set()
        self.pmds = []
        self.daemon = None
        self.proc = None
        self.config_dir = os.path.join(self.base, "config")
        self.socket_dir = os.path.join(self.base, "sock")   # keep it short: sun_path
        self.log_path = os.path.join(self.base, "vm-switch.log")
        os.makedirs(self.config_dir, exist_ok=True)
        os.makedirs(self.socket_dir, exist_ok=True)

    def sock(self, vm):
        return os.path.join(self.socket_dir, vm + ".sock")

    def stats_path(self):
        return os.path.join(self.socket_dir, STATS_FILE)

    def write_conf(self, name, mac, role=None, text=None):
        """Writes <name>.conf in one go (a rename, as editors and
        configuration tools do)."""
        if text is None:
            text = f"mac={mac}\n" + (f"role={role}\n" if role else "")
        tmp = os.path.join(self.config_dir, f".{name}.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, os.path.join(self.config_dir, f"{name}.conf"))
        self.vms.add(name)

    def remove_conf(self, name):
        os.unlink(os.path.join(self.config_dir, f"{name}.conf"))
        self.vms.discard(name)

    # ---- running it ----------------------------------------------------------

    def start_vms(self, *names, **start):
        """The VMs named (of NETWORK) configured, the switch started (with
        start's options) and their children running; returns the counters."""
        for name in names:
            self.write_conf(name, *NETWORK[name])
        self.start(**start)
        return self.wait_running(list(names))

    def start(self, extra=(), env=None, binary=None, unprivileged=False, cpus=None):
        """unprivileged: as root, start the switch as SANDBOX_USER already
        (as systemd's DynamicUser= does) rather than telling it --user.
        cpus: a taskset CPU list for the switch and its children."""
        preexec = None
        if not self.sandbox:
            sandbox = ["--no-sandbox"]
        elif os.geteuid() != 0:
            sandbox = []
        else:
            # The user the switch becomes reads config/ and writes sock/.
            pw = pwd.getpwnam(SANDBOX_USER)
            os.chmod(self.config_dir, 0o755)
            os.chown(self.socket_dir, pw.pw_uid, pw.pw_gid)
            make_traversable(self.base)
            if unprivileged:
                sandbox = []
                preexec = functools.partial(drop_to, pw.pw_uid, pw.pw_gid)
            else:
                sandbox = ["--user", SANDBOX_USER]
        args = [binary or program("vm-switch"), "--config-dir", self.config_dir,
                "--socket-dir", self.socket_dir, "--log-level", self.log_level,
                *sandbox, *self.args, *extra]
        if cpus is not None:
            args = [shutil.which("taskset") or "taskset", "-c", str(cpus)] + args
        env = dict(os.environ, **(env or {}))
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        self.daemon = Daemon("vm-switch", args, self.log_path, "serving ", env=env,
                             preexec=preexec, ready_timeout=30)
        self.proc = self.daemon.proc
        return self

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_log(self, text, timeout=20):
        try:
            wait_for(lambda: text in self.log_text(), timeout=timeout, what=repr(text))
        except TimeoutError:
            raise AssertionError(f"{text!r} not in the log:\n{self.log_text()[-3000:]}")

    def check_alive(self):
        if self.proc.poll() is not None:
            raise ProcError(f"vm-switch exited {self.proc.returncode}:\n" + tail(self.log_path))

    # ---- its processes -------------------------------------------------------

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

    # ---- its counters --------------------------------------------------------

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
            if pred(last):
                return last
            self.check_alive()
            return None
        try:
            return wait_for(check, timeout=timeout, interval=0.1, what=what)
        except TimeoutError:
            raise ProcError(f"timed out waiting for {what}; last counters: {last}\n"
                            f"log:\n{self.log_text()[-4000:]}")

    def wait_running(self, names, timeout=30):
        return self.wait_stats(
            lambda s: all(n in s and s[n]["pid"] > 0 and s[n]["state"] != "restarting"
                          for n in names),
            timeout=timeout, what=f"children of {names}")

    def wait_ready(self, timeout=20):
        """Until every VM's socket exists and the counters file lists every
        VM serving or waiting for its frontend."""
        return self.wait_stats(
            lambda s: all(os.path.exists(self.sock(vm)) and
                          s.get(vm, {}).get("state") in ("serving", "waiting")
                          for vm in self.vms),
            timeout=timeout, what=f"every VM's socket and child ({sorted(self.vms)})")

    # ---- frontends -----------------------------------------------------------

    def pmd(self, name, mac, peer, extra=()):
        """A Pmd on VM name's socket, stopped with the switch."""
        p = Pmd(self, name, mac, peer, extra=extra)
        self.pmds.append(p)
        return p

    def serve(self, **peers):
        """A receiving Pmd on each VM named (with its NETWORK MAC), sending
        to peers[name]; returns them, in that order, once all are served."""
        pmds = [self.pmd(name, NETWORK[name][0], peer) for name, peer in peers.items()]
        for p in pmds:
            p.start_rx()
        self.wait_stats(lambda s: all(s[n]["state"] == "serving" for n in peers),
                        what=f"{', '.join(peers)} served")
        return pmds

    def stop(self, check=True):
        """Kills its Pmds, stops vm-switch (with check: it exits 0 on
        SIGTERM without a sanitizer report, and its children with it)."""
        for p in self.pmds:
            p.kill()
        if self.daemon is None:
            return None
        children = [v["pid"] for v in self.stats().values() if v.get("pid", 0) > 0] \
            if check else []
        rc = self.daemon.stop(check=check)
        if check:
            wait_for(lambda: not any(pid_alive(p) for p in children), timeout=10,
                     what="the children to exit")
        return rc


class Pmd(Testpmd):
    """dpdk-testpmd with one virtio-user port on <socket dir>/<name>.sock,
    playing VM name: rxonly until told to send."""

    def __init__(self, sw, name, mac, peer, cpu=0, extra=()):
        self.run_dir = tempfile.mkdtemp(prefix=f"pmd-{name}-", dir=sw.base)
        super().__init__(name, self.run_dir,
                         [f"net_virtio_user0,path={sw.sock(name)},queues=1,mac={mac}"],
                         cpu=cpu, mem_mb=256, mbufs=2048, eal=["--no-shconf"],
                         args=["--forward-mode=rxonly", f"--eth-peer=0,{peer}", "--rxd=256",
                               "--txd=256", "--burst=32", *extra],
                         env=dict(os.environ, XDG_RUNTIME_DIR=self.run_dir))
        self.started = False
        self.streaming = False
        self.start(timeout=60)

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
        """bursts x BURST frames to the peer MAC, then goes on receiving."""
        self.stop_fwd()
        self.cmd(f"start tx_first {bursts}")
        self.started = True

    def send_until(self, receiver, timeout=30):
        """Sends a burst every 0.3 s until receiver has some: the first
        frames may meet a driver that is still starting."""
        deadline = time.monotonic() + timeout
        while receiver.rx_packets() == 0:
            assert time.monotonic() < deadline, \
                f"nothing from {self.name} reached {receiver.name}"
            self.send(1)
            time.sleep(0.3)

    def stream(self):
        """Sends to the peer MAC without end (txonly) until stop_fwd."""
        self.stop_fwd()
        self.cmd("set fwd txonly")
        self.streaming = True
        self.cmd("start")
        self.started = True

    def rx_packets(self):
        return self.port_stats()[0]["rx"]

    def tx_packets(self):
        return self.port_stats()[0]["tx"]

    def rx_bytes_errors(self):
        st = self.port_stats()[0]
        return st["rx_bytes"], st["rx_errors"]

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
        super().kill()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def quit(self):
        if self.proc.poll() is None:
            try:
                self.stop_fwd()
            except AssertionError:
                pass
        self.stop(timeout=20)
        self.kill()


def switch_in_tmp(sandbox):
    """The body of a fixture: a Switch in a short temporary directory (unix
    socket paths are limited to 108 bytes), stopped and its log checked at
    the end, the directory removed."""
    base = tempfile.mkdtemp(prefix="qls-")
    sw = Switch(base, sandbox=sandbox)
    try:
        yield sw
        sw.stop()
    finally:
        sw.stop(check=False)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sandbox", "no-sandbox"])
def switch_run(request):
    """A Switch, once in its sandbox and once without."""
    yield from switch_in_tmp(request.param == "sandbox")
