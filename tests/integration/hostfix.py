"""Fixtures for the host side: a configuration directory, the real guest
agent and the real host agent, and vm-run pointed at them.

`host_stack(**options)` builds a HostStack in a fresh temporary directory:

    etc/host.json            {"user": <user>}
    etc/vms/test.json        {"id": 3, "name": "test"}
    run/test.sock            the host agent's socket (--listen)
    guest.sock               the guest agent's socket (--guest)

and starts qubes-lite-guest-agent then qubes-lite-host-agent --no-vmm
(options choose to start the guest later, or never). `stack.vm_run(...)`
runs vm-run with QUBES_LITE_CONFIG_DIR and QUBES_LITE_RUNTIME_DIR set. On
teardown every daemon started is terminated by pid and must exit cleanly,
without a sanitizer report; vm-run processes still running are killed by
pid.
"""
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

import qlwire
from procs import wait_for  # noqa: F401 (re-exported to tests)
from conftest import program

SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "runtime error:",
                   "UndefinedBehaviorSanitizer")
VM = "test"
VM_ID = 3
# A user other than root who may use the VM; tests that need a refused
# peer run vm-run as nobody (65534).
DEFAULT_USER = "daemon"


class Daemon:
    """A daemon started by pid with its output in a log file."""

    def __init__(self, name, args, env, log_path, ready_text, preexec=None, user=None):
        self.name = name
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, preexec_fn=preexec,
                                     **({} if user is None else
                                        dict(user=user, group=user, extra_groups=[])))
        self.pid = self.proc.pid
        try:
            wait_for(lambda: ready_text in self.log_text() or self.proc.poll() is not None,
                     what=f"{name} to be ready")
        except TimeoutError:
            self.stop(check=False)
            raise
        if self.proc.poll() is not None:
            text = self.log_text()
            self.log.close()
            raise RuntimeError(f"{name} exited at start-up ({self.proc.returncode}): {text}")

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, check=True):
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait()
                if check:
                    raise AssertionError(f"{self.name} did not exit on SIGTERM")
        if not self.log.closed:
            self.log.close()
        text = self.log_text()
        if check:
            assert self.proc.returncode == 0, \
                f"{self.name} exited with {self.proc.returncode}:\n{text[-4000:]}"
            for mark in SANITIZER_MARKS:
                assert mark not in text, text[-8000:]


class HostStack:
    def __init__(self, user=DEFAULT_USER, start_guest=True, guest_timeout=60,
                 dir_mode=0o700, guest_args=(), run_as=None):
        # Short path: unix socket paths are limited to 108 bytes. Stacks
        # that other users take part in live where those users can reach.
        shared = run_as is not None or dir_mode & 0o005 == 0o005
        self.dir = tempfile.mkdtemp(prefix="qlh-", dir="/tmp" if shared else None)
        os.chmod(self.dir, dir_mode)
        self.etc = os.path.join(self.dir, "etc")
        self.run_dir = os.path.join(self.dir, "run")
        self.sock = os.path.join(self.run_dir, VM + ".sock")
        self.guest_sock = os.path.join(self.dir, "guest.sock")
        os.makedirs(os.path.join(self.etc, "vms"))
        # run_as: a uid that runs both daemons (unprivileged stack).
        self.run_as = run_as
        self.shared = shared
        if run_as is not None:
            os.chmod(self.dir, 0o755)
            os.chown(self.dir, run_as, run_as)
        host = {} if user is None else {"user": user}
        self.write_json("host.json", host)
        self.write_json(f"vms/{VM}.json", {"id": VM_ID, "name": VM})
        self.env = dict(os.environ)
        self.env["QUBES_LITE_CONFIG_DIR"] = self.etc
        self.env["QUBES_LITE_RUNTIME_DIR"] = self.run_dir
        self.env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        self.env.pop("QUBES_LITE_LOG_LEVEL", None)
        self.guest = None
        self.host = None
        self.clients = []
        self.guest_timeout = guest_timeout
        self.guest_args = list(guest_args)
        try:
            if start_guest:
                self.start_guest()
            self.start_host()
        except BaseException:
            # Nothing may outlive a stack that failed to come up.
            if self.guest is not None:
                self.guest.stop(check=False)
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def program(self, name):
        """The program's path; for stacks other users take part in, a copy
        in our directory, so that they need no access to the build tree."""
        path = program(name)
        if not self.shared:
            return path
        copy = os.path.join(self.dir, "bin", name)
        if not os.path.exists(copy):
            os.makedirs(os.path.dirname(copy), mode=0o755, exist_ok=True)
            shutil.copy2(path, copy)
            os.chmod(copy, 0o755)
        return copy

    def write_json(self, rel, obj):
        import json
        with open(os.path.join(self.etc, rel), "w") as f:
            json.dump(obj, f)

    def start_guest(self):
        args = [self.program("qubes-lite-guest-agent"), "--listen", "unix:" + self.guest_sock,
                "--log-level", "debug", "--kill-grace", "2"] + self.guest_args
        self.guest = Daemon("guest agent", args, self.env,
                            os.path.join(self.dir, "guest.log"), "Listening on", user=self.run_as)

    def start_host(self, *extra, preexec=None):
        args = [self.program("qubes-lite-host-agent"), "--vm", VM, "--no-vmm",
                "--listen", "unix:" + self.sock, "--guest", "unix:" + self.guest_sock,
                "--guest-timeout", str(self.guest_timeout), "--log-level", "debug"]
        self.host = Daemon("host agent", args + list(extra), self.env,
                           os.path.join(self.dir, "host.log"), "serving", preexec=preexec,
                           user=self.run_as)

    # ---- vm-run --------------------------------------------------------

    def vm_run_args(self, *args):
        return [self.program("vm-run")] + [str(a) for a in args]

    def vm_run(self, *args, input=None, timeout=120, **kw):
        """Runs vm-run to completion; returns the CompletedProcess (bytes)."""
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        if input is None and "stdin" not in kw:
            kw["stdin"] = subprocess.DEVNULL
        return subprocess.run(self.vm_run_args(*args), input=input, timeout=timeout,
                              env=self.env, **kw)

    def popen(self, *args, **kw):
        """Starts vm-run; the process is killed by pid on teardown if still running."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(self.vm_run_args(*args), env=self.env, **kw)
        self.clients.append(p)
        return p

    # ---- talking to the agents directly -----------------------------------

    def connect_host(self, hello=True, timeout=30):
        c = qlwire.Conn.unix(self.sock, timeout=timeout)
        if hello:
            c.hello()
        return c

    def host_status(self):
        c = self.connect_host()
        try:
            c.send("host_status_request")
            name, msg = c.recv(timeout=30)
            assert name == "host_status", (name, msg)
            return msg
        finally:
            c.close()

    def guest_status(self):
        c = qlwire.Conn.unix(self.guest_sock, timeout=30)
        try:
            c.hello()
            return c.status()
        finally:
            c.close()

    def stop(self):
        for p in self.clients:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
        errors = []
        for d in (self.host, self.guest):
            if d is None:
                continue
            try:
                d.stop()
            except AssertionError as e:
                errors.append(str(e))
        shutil.rmtree(self.dir, ignore_errors=True)
        assert not errors, "\n".join(errors)


@pytest.fixture
def host_stack():
    stacks = []

    def make(**kw):
        s = HostStack(**kw)
        stacks.append(s)
        return s

    yield make
    for s in stacks:
        s.stop()


@pytest.fixture
def stack(host_stack):
    """The usual set-up: guest agent running, host agent attached to it."""
    return host_stack()
