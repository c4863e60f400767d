"""vm-switch and dpdk-testpmd as processes a test or benchmark drives.

Switch: a vm-switch started on a temporary config and socket directory,
one `<vm>.conf` per VM; reads its counters file (`vm-switch.stats` in the
socket directory: one line of `key=value` per VM).

Testpmd: an interactive dpdk-testpmd (--no-huge, no PCI), either the
vhost-user backend (net_vhost ports) or the frontend (net_virtio_user
ports) of a measurement; commands go to its stdin, and each one's output
is what it printed up to its next prompt.

Both are ended by their pid, never by name.

The switch runs in its sandbox unless told sandbox=False (--no-sandbox).
As root it is told --user nobody, who gets the socket directory and may
traverse the temporary directories it lives in. In the sandbox the pids
in the counters file are those of the switch's own pid namespace:
stats() translates them to the host's.
"""
import os
import pwd
import re
import shutil
import signal
import subprocess
import threading
import time

from qltest.procs import children_of, ns_pid

STATS_FILE = "vm-switch.stats"
SANDBOX_USER = "nobody"


class ProcError(Exception):
    pass


def tail(path, n=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def stop_proc(proc, timeout=5.0):
    """SIGTERM, then SIGKILL after timeout; by pid. Returns the exit status."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def parse_stats(text):
    """{vm: {key: int or str}} from the counters file's text."""
    vms = {}
    for line in text.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if "vm" not in fields:
            continue
        row = {}
        for k, v in fields.items():
            row[k] = int(v) if v.isdigit() else v
        vms[fields["vm"]] = row
    return vms


class Switch:
    """vms: {name: (mac, "router" or "client")}."""

    def __init__(self, binary, workdir, vms, args=(), log_level="info", sandbox=True):
        self.sandbox = sandbox
        self.pid_cache = {}
        self.binary = binary
        self.workdir = workdir
        self.vms = dict(vms)
        self.args = list(args)
        self.log_level = log_level
        self.config_dir = os.path.join(workdir, "conf")
        self.socket_dir = os.path.join(workdir, "sock")   # keep it short: sun_path
        self.log = os.path.join(workdir, "vm-switch.log")
        self.proc = None

    def sock(self, vm):
        return os.path.join(self.socket_dir, vm + ".sock")

    @property
    def stats_path(self):
        return os.path.join(self.socket_dir, STATS_FILE)

    def start(self, cpus=None):
        """cpus: a taskset CPU list for the switch and its children."""
        for d in (self.config_dir, self.socket_dir):
            os.makedirs(d, exist_ok=True)
        for vm, (mac, role) in self.vms.items():
            with open(os.path.join(self.config_dir, vm + ".conf"), "w") as f:
                f.write(f"mac={mac}\nrole={role}\n")
        argv = [self.binary, "--config-dir", self.config_dir, "--socket-dir",
                self.socket_dir, "--log-level", self.log_level, *self.sandbox_args(),
                *self.args]
        if cpus is not None:
            argv = [shutil.which("taskset") or "taskset", "-c", str(cpus)] + argv
        with open(self.log, "w") as f:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f,
                                         stderr=subprocess.STDOUT)
        return self

    def sandbox_args(self):
        if not self.sandbox:
            return ["--no-sandbox"]
        if os.geteuid() != 0:
            return []
        # The user the switch becomes reads conf/ and writes sock/; the
        # temporary directories above them are the test's own.
        pw = pwd.getpwnam(SANDBOX_USER)
        os.chown(self.socket_dir, pw.pw_uid, pw.pw_gid)
        d = os.path.dirname(os.path.abspath(self.socket_dir))
        while d != "/" and os.stat(d).st_uid == os.geteuid():
            os.chmod(d, os.stat(d).st_mode | 0o011)
            d = os.path.dirname(d)
        return ["--user", SANDBOX_USER]

    def host_pids(self):
        """{pid in the switch's pid namespace: pid on the host}."""
        kids = children_of(self.proc.pid)
        if not kids:
            return {}
        main = kids[0]
        out = {ns_pid(main): main}
        for kid in children_of(main):
            n = ns_pid(kid)
            if n is not None:
                out[n] = kid
        return out

    def wait_ready(self, timeout=20):
        """Until every VM's socket exists and the counters file lists every
        VM serving or waiting for its frontend."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            socks = all(os.path.exists(self.sock(vm)) for vm in self.vms)
            st = self.stats() if socks else {}
            if socks and all(st.get(vm, {}).get("state") in ("serving", "waiting")
                             for vm in self.vms):
                return st
            if time.monotonic() > deadline:
                missing = [vm for vm in self.vms if not os.path.exists(self.sock(vm))]
                raise ProcError(f"vm-switch not ready after {timeout:.0f} s "
                                f"(sockets missing: {missing or 'none'}; counters: {st})\n"
                                + tail(self.log))
            time.sleep(0.05)

    def check_alive(self):
        if self.proc.poll() is not None:
            raise ProcError(f"vm-switch exited {self.proc.returncode}:\n" + tail(self.log))

    def stats(self):
        try:
            with open(self.stats_path) as f:
                st = parse_stats(f.read())
        except FileNotFoundError:
            return {}
        if self.sandbox:
            # A child seen before and gone since keeps its host pid, as it
            # would without the sandbox; one never seen (not forked yet,
            # or gone unseen) gets a negative pid no test takes for a
            # process.
            want = {v["pid"] for v in st.values() if isinstance(v.get("pid"), int)
                    and v["pid"] > 0}
            deadline = time.monotonic() + 1
            pids = self.host_pids()
            while not want <= set(pids) | set(self.pid_cache) and time.monotonic() < deadline:
                time.sleep(0.02)
                pids = self.host_pids()
            self.pid_cache.update(pids)
            for v in st.values():
                if isinstance(v.get("pid"), int) and v["pid"] > 0:
                    v["pid"] = self.pid_cache.get(v["pid"], -v["pid"])
        return st

    def wait_stats(self, pred, timeout=10, what="counters"):
        """Polls the counters file until pred(stats) holds; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.stats()
            if pred(st):
                return st
            self.check_alive()
            if time.monotonic() > deadline:
                raise ProcError(f"vm-switch: {what} not reached after {timeout:.0f} s; "
                                f"counters now: {st}\n" + tail(self.log))
            time.sleep(0.05)

    def child_pid(self, vm):
        return self.stats()[vm]["pid"]

    def stop(self):
        return stop_proc(self.proc)


PROMPT = "testpmd> "


class Testpmd:
    """vdevs: DPDK --vdev strings; cpu: the one CPU both its lcores share
    (the main lcore and the forwarding one, as in DPDK's own examples);
    args: testpmd's own options (after --)."""

    def __init__(self, name, workdir, vdevs, cpu=1, args=(), mem_mb=512, mbufs=16384):
        self.name = name
        self.log = os.path.join(workdir, f"testpmd-{name}.log")
        self.prefix = f"ql-{name}-{os.getpid()}"
        argv = [shutil.which("dpdk-testpmd") or "dpdk-testpmd",
                "--lcores", f"0@{cpu},1@{cpu}", "--no-huge", "-m", str(mem_mb), "--no-pci",
                f"--file-prefix={self.prefix}", "--log-level=lib.eal:warning"]
        for v in vdevs:
            argv += ["--vdev", v]
        argv += ["--", "-i", f"--total-num-mbufs={mbufs}", *args]
        self.argv = argv
        self.proc = None
        self.out = ""
        self.cond = threading.Condition()
        self.eof = False

    @staticmethod
    def available():
        return shutil.which("dpdk-testpmd") is not None

    def start(self, timeout=30):
        self.proc = subprocess.Popen(["stdbuf", "-o0", *self.argv], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=self._reader, daemon=True).start()
        self._wait_prompts(1, time.monotonic() + timeout, "start-up")
        return self

    def _reader(self):
        with open(self.log, "w") as log:
            while True:
                data = os.read(self.proc.stdout.fileno(), 65536)
                if not data:
                    break
                text = data.decode("utf-8", "replace").replace("\r", "")
                log.write(text)
                log.flush()
                with self.cond:
                    self.out += text
                    self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def _wait_prompts(self, n, deadline, what):
        with self.cond:
            while self.out.count(PROMPT) < n:
                left = deadline - time.monotonic()
                if self.eof or left <= 0:
                    raise ProcError(f"testpmd {self.name}: {what}: "
                                    + ("exited" if self.eof else "timed out") + "\n"
                                    + self.out[-3000:])
                self.cond.wait(min(left, 0.2))

    def cmd(self, line, timeout=30):
        """Runs one interactive command; returns what it printed."""
        with self.cond:
            n = self.out.count(PROMPT)
            start = len(self.out)
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()
        self._wait_prompts(n + 1, time.monotonic() + timeout, line)
        with self.cond:
            text = self.out[start:]
        return text[: text.rfind(PROMPT)]

    def port_stats(self):
        """{port: {"rx": packets, "tx": packets, "rx_bytes", "tx_bytes",
        "rx_missed", "tx_errors"}} from `show port stats all`."""
        text = self.cmd("show port stats all")
        ports = {}
        for block in re.split(r"#+ NIC statistics for port ", text)[1:]:
            port = int(block.split()[0])
            val = lambda k: int(re.search(k + r":\s+(\d+)", block).group(1))
            ports[port] = dict(rx=val("RX-packets"), tx=val("TX-packets"),
                               rx_bytes=val("RX-bytes"), tx_bytes=val("TX-bytes"),
                               rx_missed=val("RX-missed"), tx_errors=val("TX-errors"))
        return ports

    def stop(self, timeout=10):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b"stop\nquit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout)
            except (OSError, subprocess.TimeoutExpired):
                pass
        rc = stop_proc(self.proc)
        return rc
