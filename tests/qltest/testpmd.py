"""DPDK's dpdk-testpmd, interactive, as a test or benchmark drives it.

    pmd = Testpmd("backend", workdir, ["net_vhost0,iface=SOCK,queues=1"], cpu=0,
                  args=["--forward-mode=io"]).start()
    pmd.cmd("start")                   what it printed up to its next prompt
    pmd.port_stats()                   {port: {"rx": .., "tx": .., "rx_bytes": .., ...}}
    pmd.stop()                         stop, quit; SIGTERM/SIGKILL by pid if need be

No hugepages (--no-huge, memory from a memfd that a vhost-user peer can
map), no PCI; its ports are --vdev strings: net_vhost (a vhost-user
backend) or net_virtio_user (a frontend, standing in for a guest). Its
output goes to <workdir>/testpmd-<name>.log as well.
"""
import itertools
import os
import re
import shutil
import subprocess
import threading
import time

from qltest.procs import ProcError, stop_proc

PROMPT = "testpmd> "
TESTPMD = shutil.which("dpdk-testpmd")
_instances = itertools.count()


def available():
    return TESTPMD is not None


class Testpmd:
    """vdevs: DPDK --vdev strings; cpu: the one CPU both its lcores share
    (the main lcore and the forwarding one, as in DPDK's own examples);
    args: testpmd's own options (after --); eal: more EAL options."""

    def __init__(self, name, workdir, vdevs, cpu=1, args=(), mem_mb=512, mbufs=16384, eal=(),
                 env=None):
        self.name = name
        self.log = os.path.join(workdir, f"testpmd-{name}.log")
        # Unique among the testpmds of every process: DPDK keeps its
        # runtime files by this prefix.
        self.prefix = f"ql-{name}-{os.getpid()}-{next(_instances)}"
        argv = [TESTPMD or "dpdk-testpmd",
                "--lcores", f"0@{cpu},1@{cpu}", "--no-huge", "-m", str(mem_mb), "--no-pci",
                f"--file-prefix={self.prefix}", "--log-level=lib.eal:warning", *eal]
        for v in vdevs:
            argv += ["--vdev", v]
        argv += ["--", "-i", f"--total-num-mbufs={mbufs}", *args]
        self.argv = argv
        self.env = env
        self.proc = None
        self.out = ""
        self.cond = threading.Condition()
        self.eof = False

    def start(self, timeout=30):
        self.proc = subprocess.Popen(["stdbuf", "-o0", *self.argv], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=self.env)
        threading.Thread(target=self._reader, daemon=True).start()
        try:
            self._wait_prompts(1, time.monotonic() + timeout, "start-up")
        except ProcError:
            self.kill()
            raise
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
                                    + (f"exited ({self.proc.poll()})" if self.eof
                                       else "timed out") + "\n" + self.out[-3000:])
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
        "rx_missed", "rx_errors", "tx_errors"}} from `show port stats all`."""
        text = self.cmd("show port stats all")
        ports = {}
        for block in re.split(r"#+ NIC statistics for port ", text)[1:]:
            port = int(block.split()[0])
            val = lambda k: int(re.search(k + r":\s+(\d+)", block).group(1))  # noqa: E731
            ports[port] = dict(rx=val("RX-packets"), tx=val("TX-packets"),
                               rx_bytes=val("RX-bytes"), tx_bytes=val("TX-bytes"),
                               rx_missed=val("RX-missed"), rx_errors=val("RX-errors"),
                               tx_errors=val("TX-errors"))
        return ports

    def kill(self):
        """SIGKILL, by pid (a crash, or the end of a test that is done with it)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout=10):
        """Stops forwarding and quits; SIGTERM, then SIGKILL, if it does not."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b"stop\nquit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout)
            except (OSError, subprocess.TimeoutExpired):
                pass
        return stop_proc(self.proc)
