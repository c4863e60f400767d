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
import errno
import fcntl
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import termios
import time

import pytest

from qltest import made, program, qlwire
from qltest.guest import no_secret_unless_chosen
from qltest.procs import Daemon, wait_for

VM = "test"
VM_ID = 3
# A user other than root who may use the VM; tests that need a refused
# peer run vm-run as nobody (65534).
DEFAULT_USER = "daemon"


class StackDir:
    """A test stack's temporary directory: etc/host.json, etc/vms/<vm>.json,
    run/ (the host agent's socket run/<vm>.sock) and guest.sock, the
    environment that points the programs there, and the clients started
    (killed by pid at the end)."""

    def __init__(self, prefix, user, vm_config, vm=VM, tmp=None, base=None, env=None):
        # Short path: unix socket paths are limited to 108 bytes.
        self.own_dir = base is None
        self.dir = tempfile.mkdtemp(prefix=prefix, dir=tmp) if base is None else base
        self.vm = vm
        self.etc = os.path.join(self.dir, "etc")
        self.run_dir = os.path.join(self.dir, "run")
        self.sock = os.path.join(self.run_dir, vm + ".sock")
        self.guest_sock = os.path.join(self.dir, "guest.sock")
        os.makedirs(os.path.join(self.etc, "vms"))
        self.write_json("host.json", {} if user is None else {"user": user})
        self.write_json(f"vms/{vm}.json", dict({"id": VM_ID, "name": vm}, **vm_config))
        self.env = dict(os.environ)
        self.env.pop("QUBES_LITE_LOG_LEVEL", None)
        self.env.update(env or {})
        self.env["QUBES_LITE_CONFIG_DIR"] = self.etc
        self.env["QUBES_LITE_RUNTIME_DIR"] = self.run_dir
        self.env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        self.clients = []

    def write_json(self, rel, obj):
        with open(os.path.join(self.etc, rel), "w") as f:
            json.dump(obj, f)

    def connect_host(self, hello=True, timeout=30):
        c = qlwire.Conn.unix(self.sock, timeout=timeout)
        if hello:
            c.hello()
        return c

    def request(self, name, timeout=60, **fields):
        """One request on the host agent's socket; returns (reply name, reply)."""
        c = self.connect_host(timeout=timeout)
        try:
            c.send(name, **fields)
            return c.recv(timeout=timeout)
        finally:
            c.close()

    def connect_guest(self, streams=0):
        """Connect {streams}: (the lease, [the guest connection and the
        stream ones]) once the host agent handed them over, in one
        SCM_RIGHTS message, without starting a VM."""
        c = self.connect_host()
        c.send("connect", streams=streams)
        name, msg, fds, carriers = qlwire.recv_frame_with_fds(c.sock)
        assert name == "connected", (name, msg)
        assert msg.vm_start_us == 0
        assert len(fds) == 1 + streams and carriers == 1, (fds, carriers)
        return c, [socket.socket(fileno=fd) for fd in fds]

    def host_status(self):
        name, msg = self.request("host_status_request")
        assert name == "host_status", (name, msg)
        return msg

    def stop_processes(self, *daemons, check=True):
        """Kills the clients still running and stops the daemons (with
        check, each must exit cleanly); returns what went wrong."""
        for p in self.clients:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
        errors = []
        for d in daemons:
            if d is None:
                continue
            try:
                d.stop(check=check)
            except AssertionError as e:
                errors.append(str(e))
        return errors

    def finish(self, errors):
        """Removes the directory (unless it was the caller's), then fails
        with the errors, if any."""
        if self.own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        assert not errors, "\n".join(errors)


class HostStack(StackDir):
    """The guest agent on guest.sock and the host agent (--no-vmm) on
    run/<vm>.sock attached to it; vm-run pointed at them.

    run_as: a uid that runs both daemons (unprivileged stack); log_level
    None leaves the daemons at their default; base: a directory of the
    caller's to use (and leave) rather than a new one; guest_addr: the
    host agent's --guest address, for a guest agent that is not ours
    (start_guest=False), e.g. in a VM behind qubes-lite-vsock."""

    def __init__(self, user=DEFAULT_USER, start_guest=True, guest_timeout=60,
                 dir_mode=0o700, guest_args=(), run_as=None, vm=VM, log_level="debug",
                 env=None, base=None, guest_addr=None):
        # Stacks that other users take part in live where those users can reach.
        shared = run_as is not None or dir_mode & 0o005 == 0o005
        super().__init__("qlh-", user, {}, vm=vm, tmp="/tmp" if shared else None, base=base,
                         env=env)
        if base is None:
            os.chmod(self.dir, dir_mode)
        self.run_as = run_as
        self.shared = shared
        if run_as is not None:
            os.chmod(self.dir, 0o755)
            os.chown(self.dir, run_as, run_as)
        self.log_args = [] if log_level is None else ["--log-level", log_level]
        self.guest = None
        self.host = None
        self.guest_addr = guest_addr or "unix:" + self.guest_sock
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
            if self.own_dir:
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

    def start_guest(self):
        args = [self.program("qubes-lite-guest-agent"), "--listen", "unix:" + self.guest_sock,
                *self.log_args, "--kill-grace", "2"] + self.guest_args
        args += no_secret_unless_chosen(self.guest_args)
        self.guest = Daemon("guest agent", args, os.path.join(self.dir, "guest.log"),
                            "Listening on", env=self.env, user=self.run_as)

    def start_host(self, *extra, preexec=None):
        args = [self.program("qubes-lite-host-agent"), "--vm", self.vm, "--no-vmm",
                "--listen", "unix:" + self.sock, "--guest", self.guest_addr,
                "--guest-timeout", str(self.guest_timeout), *self.log_args]
        self.host = Daemon("host agent", args + list(extra), os.path.join(self.dir, "host.log"),
                           "serving", env=self.env, preexec=preexec, user=self.run_as)

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

    def pty_session(self, args, size=None):
        """Starts vm-run ARGS with a pty as its stdin/stdout/stderr (of
        size (rows, cols) when given): (process, the master fd, which the
        caller closes, and read_until(needle, timeout) returning all read
        so far once needle is in it)."""
        master, slave = os.openpty()
        if size:
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", *size, 0, 0))
        p = subprocess.Popen(self.vm_run_args(*args), stdin=slave, stdout=slave, stderr=slave,
                             env=self.env, start_new_session=True)
        self.clients.append(p)
        os.close(slave)
        out = bytearray()

        def read_until(needle, timeout=60):
            deadline = time.monotonic() + timeout
            while needle not in out:
                assert time.monotonic() < deadline, out
                if select.select([master], [], [], 0.2)[0]:
                    try:
                        out.extend(os.read(master, 65536))
                    except OSError:
                        assert needle in out, out
            return bytes(out)

        return p, master, read_until

    def run_on_pty(self, args, rows=33, cols=101, timeout=60):
        """Runs vm-run with a pty as its stdin/stdout/stderr; returns (status, output)."""
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        env = dict(self.env, TERM="xterm-256color")
        p = subprocess.Popen(self.vm_run_args(*args), stdin=slave, stdout=slave, stderr=slave,
                             env=env, start_new_session=True)
        self.clients.append(p)
        os.close(slave)
        out = bytearray()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.5)
            if r:
                try:
                    data = os.read(master, 65536)
                except OSError as e:
                    if e.errno == errno.EIO:
                        break
                    raise
                if not data:
                    break
                out += data
            elif p.poll() is not None:
                # Drain what is left, then stop.
                while select.select([master], [], [], 0.2)[0]:
                    try:
                        data = os.read(master, 65536)
                    except OSError:
                        break
                    if not data:
                        break
                    out += data
                break
        status = p.wait(timeout=timeout)
        os.close(master)
        return status, bytes(out)

    # ---- talking to the guest agent directly -----------------------------

    def guest_status(self):
        c = qlwire.Conn.unix(self.guest_sock, timeout=30)
        try:
            c.hello()
            return c.status()
        finally:
            c.close()

    def wait_live_sessions(self, n):
        wait_for(lambda: self.guest_status().live_sessions == n,
                 what=f"{n} live session(s) in the guest")

    def stop(self, check=True):
        self.finish(self.stop_processes(self.host, self.guest, check=check))


@pytest.fixture
def host_stack():
    """host_stack(**options): a HostStack."""
    yield from made(HostStack)


@pytest.fixture
def stack(host_stack):
    """The usual set-up: guest agent running, host agent attached to it."""
    return host_stack()
