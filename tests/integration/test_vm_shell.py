"""vm-shell VM: the serial console client against the real host agent's
console relay (the crosvm stand-in behind it echoes what it reads and
answers "size" with the window size it sees), run under a pseudo-terminal
from Python where a terminal matters; and the client's own errors."""
import contextlib
import fcntl
import os
import select
import signal
import struct
import subprocess
import termios
import time

import pytest

from qltest import program, qlwire
from qltest.host import VM
from qltest.procs import wait_for
from qltest.qlwire import pb

VM_SHELL = program("vm-shell")
CTRL_BRACKET = b"\x1d"


def started(vmm_stack, **kw):
    s = vmm_stack(**kw)
    name, msg = s.request("host_start")
    assert name == "host_status" and msg.state == pb.VM_STATE_RUNNING, (name, msg, s.log())
    return s


class PtyShell:
    """vm-shell with a pseudo-terminal as its stdin, stdout and stderr."""

    def __init__(self, s, rows=24, cols=80):
        self.master, self.slave = os.openpty()
        self.resize(rows, cols)
        self.before = termios.tcgetattr(self.slave)
        self.proc = subprocess.Popen([VM_SHELL, VM], stdin=self.slave, stdout=self.slave,
                                     stderr=self.slave, env=s.env, start_new_session=True)
        s.clients.append(self.proc)
        self.out = bytearray()
        self.pos = 0          # read_until looks after the last marker found

    def resize(self, rows, cols):
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def read_until(self, marker, timeout=30):
        deadline = time.monotonic() + timeout
        start = self.pos
        while marker not in self.out[start:]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {marker!r} from vm-shell; it wrote {bytes(self.out)!r}")
            r, _, _ = select.select([self.master], [], [], left)
            if r:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:           # EIO: every slave fd is closed
                    chunk = b""
                if not chunk and self.proc.poll() is not None:
                    raise AssertionError(f"vm-shell exited {self.proc.returncode} before "
                                         f"{marker!r}; it wrote {bytes(self.out)!r}")
                self.out.extend(chunk)
        self.pos = self.out.index(marker, start) + len(marker)
        return bytes(self.out[start:self.pos])

    def write(self, data):
        os.write(self.master, data)

    def wait(self, timeout=30):
        rc = self.proc.wait(timeout=timeout)
        # What it wrote last.
        while select.select([self.master], [], [], 0.1)[0]:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                break
            if not chunk:
                break
            self.out.extend(chunk)
        return rc

    def close(self):
        os.close(self.master)
        os.close(self.slave)


def test_attach_replay_input_resize_and_leave(vmm_stack):
    s = started(vmm_stack)
    sh = PtyShell(s, rows=33, cols=111)
    try:
        # The notice on stderr, then the replayed boot output.
        sh.read_until(b"Ctrl-] leaves")
        sh.read_until(b"standin: boot done")
        assert b"standin: booting /boot/vmlinuz-standin" in sh.out
        # Raw mode while attached: no line editing, no signals from keys.
        lflag = termios.tcgetattr(sh.slave)[3]
        assert not lflag & (termios.ICANON | termios.ECHO | termios.ISIG)

        sh.write(b"hello console\r")
        sh.read_until(b"hello console")
        sh.write(b"size\r")
        sh.read_until(b"SIZE 33 111")
        sh.resize(50, 160)
        os.kill(sh.proc.pid, signal.SIGWINCH)
        time.sleep(0.2)
        sh.write(b"size\r")
        sh.read_until(b"SIZE 50 160")

        # Ctrl-C is a key for the console, not a signal for vm-shell.
        sh.write(b"\x03")
        time.sleep(0.2)
        assert sh.proc.poll() is None

        # What precedes Ctrl-] in the same read still reaches the console;
        # what follows does not.
        sh.write(b"last words\r" + CTRL_BRACKET + b"never\r")
        assert sh.wait() == 0
        assert b"left the console of VM 'test'" in sh.out
        assert termios.tcgetattr(sh.slave) == sh.before, "the terminal was not restored"
    finally:
        sh.close()
    # The console saw the last words, and nothing after Ctrl-].
    c = s.console()
    try:
        name, msg = c.recv()
        assert name == "console_attached"
        replay = bytearray()
        while len(replay) < msg.scrollback:
            name, m = c.recv()
            replay.extend(m.data)
        assert b"last words" in replay and b"never" not in replay
    finally:
        c.close()


def test_second_client_gets_a_clear_message(vmm_stack):
    s = started(vmm_stack)
    sh = PtyShell(s)
    try:
        sh.read_until(b"standin: boot done")
        p = s.run_tool("vm-shell", VM, timeout=30)
        assert p.returncode == 255, (p.stdout, p.stderr)
        lines = p.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"vm-shell: VM '{VM}': "), lines
        assert "another client" in lines[0] and "(UNAVAILABLE)" in lines[0], lines
        # The first one is still attached and working.
        sh.write(b"still here\r")
        sh.read_until(b"still here")
        sh.write(CTRL_BRACKET)
        assert sh.wait() == 0
    finally:
        sh.close()


def test_stdin_not_a_terminal(vmm_stack):
    """A pipe: sent as it is, and vm-shell leaves after its end once the
    console is quiet; no notice, no escape key."""
    s = started(vmm_stack)
    t0 = time.monotonic()
    p = s.run_tool("vm-shell", VM, input="hello pipe\r\x1dstill sent\r", stdin=None,
                   timeout=30)
    took = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    assert "standin: boot done" in p.stdout
    assert "hello pipe" in p.stdout and "still sent" in p.stdout
    assert took < 10, took
    # Nothing to send: the recent output, then vm-shell leaves.
    p = s.run_tool("vm-shell", VM, timeout=30)
    assert p.returncode == 0, p.stderr
    assert "standin: boot done" in p.stdout and "hello pipe" in p.stdout


def test_console_closed_when_the_vm_stops(vmm_stack):
    s = started(vmm_stack)
    sh = PtyShell(s)
    try:
        sh.read_until(b"standin: boot done")
        name, msg = s.request("host_stop")
        assert name == "host_stopped", (name, msg)
        assert sh.wait() == 0
        assert b"the console of VM 'test' was closed" in sh.out
        assert termios.tcgetattr(sh.slave) == sh.before
    finally:
        sh.close()


def test_vm_not_running(vmm_stack):
    s = vmm_stack()
    p = s.run_tool("vm-shell", VM, timeout=30)
    assert p.returncode == 255
    assert p.stderr == f"vm-shell: VM '{VM}' is not running; start it with vm-start {VM}\n"


def run_plain(tmp_path, *args, **kw):
    etc = tmp_path / "etc"
    (etc / "vms").mkdir(parents=True, exist_ok=True)
    (etc / "vms" / "work.json").write_text('{"id": 3}')
    env = dict(os.environ, QUBES_LITE_CONFIG_DIR=str(etc),
               QUBES_LITE_RUNTIME_DIR=str(tmp_path / "run"))
    return subprocess.run([VM_SHELL, *args], env=env, capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL, **kw)


def test_unknown_vm(tmp_path):
    for args in (["nosuch"], ["--ssh", "nosuch"], ["--ssh", "--root", "Bad/Name"]):
        p = run_plain(tmp_path, *args)
        assert p.returncode == 255, args
        why = (f"no {tmp_path}/etc/vms/nosuch.json" if args[-1] == "nosuch" else
               "a VM name is [a-z][a-z0-9-], at most 12 characters")
        assert p.stderr == f"vm-shell: no VM named '{args[-1]}' ({why})\n", args


def test_known_vm_not_running_without_an_agent(tmp_path):
    p = run_plain(tmp_path, "work")
    assert p.returncode == 255
    assert p.stderr == "vm-shell: VM 'work' is not running; start it with vm-start work\n"


def test_usage_and_bad_command_lines(tmp_path):
    p = run_plain(tmp_path, "--help")
    assert p.returncode == 0 and "Ctrl-]" in p.stdout and "--ssh" in p.stdout
    for args, want in ((["--root", "work"], "--root goes with --ssh"),
                       (["work", "ls"], "a command needs --ssh"),
                       ([], "no VM given")):
        p = run_plain(tmp_path, *args)
        assert p.returncode == 255 and p.stderr.startswith("vm-shell: ") and want in p.stderr, \
            (args, p.stderr)
        assert len(p.stderr.splitlines()) == 1


def test_ssh_without_a_user(tmp_path):
    """--ssh needs host.json's user (or --root)."""
    p = run_plain(tmp_path, "--ssh", "work")
    assert p.returncode == 255
    assert "no user is configured" in p.stderr and "--root" in p.stderr


# ---- a console that misbehaves (the test plays it) ---------------------------

def hostile_console(tmp_path, script):
    """Listens on <run>/work.console and runs script(conn) for the first
    client; returns the qlwire.FakePeer."""
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    return qlwire.FakePeer(str(run / "work.console"), script, once=True, timeout=10)


def attached(c):
    c.recv()                        # vm-shell's Hello
    c.send("hello", major=1, minor=0, software="hostile")
    name, msg = c.recv()
    assert name == "console_attach", name


@pytest.mark.parametrize("script,want", [
    (lambda c: (c.recv(), c.send("hello", major=1, minor=0),
                c.send("error", code=pb.ERROR_UNAVAILABLE, message="taken by pid 7")),
     "vm-shell: VM 'work': taken by pid 7 (UNAVAILABLE)\n"),
    # Not printable: the frame fails validation.
    (lambda c: (c.recv(), c.send("hello", major=1, minor=0),
                c.send("error", code=pb.ERROR_UNAVAILABLE, message="taken\x1b[2J")),
     "vm-shell: protocol error: bad frame from the console of VM 'work'"),
    (lambda c: (c.recv(), c.send("hello", major=2, minor=0)),
     "vm-shell: the console of VM 'work' speaks protocol version 2, vm-shell 1\n"),
    (lambda c: (c.recv(), c.send("hello", major=1, minor=0), c.send("started", pid=1)),
     "vm-shell: protocol error: the console sent Started instead of ConsoleAttached\n"),
    (lambda c: None, "closed the connection before Hello"),
    (lambda c: (attached(c), c.send("console_attached", scrollback=0),
                c.send("data", stream=pb.STREAM_STDERR, data=b"x"), c.recv(timeout=5)),
     "vm-shell: protocol error: unexpected Data from the console\n"),
    (lambda c: (attached(c), c.send("console_attached", scrollback=0),
                c.send_raw(b"\x7f\xff\xff\xff"), c.recv(timeout=5)),
     "vm-shell: protocol error: bad frame from the console of VM 'work'"),
], ids=["refused", "unprintable", "version", "unexpected-reply", "closed", "stderr-data", "huge-frame"])
def test_misbehaving_console(tmp_path, script, want):
    peer = hostile_console(tmp_path, script)
    p = run_plain(tmp_path, "work")
    peer.join(timeout=10)
    assert p.returncode == 255, (p.stdout, p.stderr)
    assert len(p.stderr.splitlines()) == 1, p.stderr
    assert want in p.stderr if not want.endswith("\n") else p.stderr == want, p.stderr


# ---- a console faster than our stdout -------------------------------------------

def flood(c):
    """A console that sends output as fast as it is taken, until vm-shell
    goes."""
    attached(c)
    c.send("console_attached", scrollback=0)
    chunk = b"x" * 60000
    while True:
        c.send("data", stream=pb.STREAM_STDOUT, data=chunk)


@contextlib.contextmanager
def flooded_shell(tmp_path, stdin):
    """vm-shell work against a flooding console, its stdout a pipe nobody
    reads (kept open): yields the process, killed at the end if need be."""
    sock = tmp_path / "run" / "work.console"
    if sock.exists():
        sock.unlink()
    peer = hostile_console(tmp_path, flood)
    r, w = os.pipe()
    etc = tmp_path / "etc"
    (etc / "vms").mkdir(parents=True, exist_ok=True)
    (etc / "vms" / "work.json").write_text('{"id": 3}')
    env = dict(os.environ, QUBES_LITE_CONFIG_DIR=str(etc),
               QUBES_LITE_RUNTIME_DIR=str(tmp_path / "run"))
    p = subprocess.Popen([VM_SHELL, "work"], env=env, stdin=stdin, stdout=w,
                         stderr=subprocess.PIPE)
    os.close(w)
    try:
        yield p
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(r)
        peer.close()


def test_console_flood_does_not_overrun_the_drain(tmp_path):
    """stdin at its end, the console never quiet and our stdout never read:
    vm-shell still leaves after the 5 s drain at most."""
    with flooded_shell(tmp_path, subprocess.DEVNULL) as p:
        assert p.wait(timeout=5 + 4) == 0


def test_console_flood_does_not_hide_sigterm_or_ctrl_bracket(tmp_path):
    """While output waits for our stdout, SIGTERM is still handled (128+N),
    and so is Ctrl-] on a terminal (0)."""
    with flooded_shell(tmp_path, subprocess.PIPE) as p:
        time.sleep(0.5)
        assert p.poll() is None
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=3) == 128 + signal.SIGTERM
    master, slave = os.openpty()
    try:
        with flooded_shell(tmp_path, slave) as p:
            os.close(slave)
            time.sleep(0.5)
            assert p.poll() is None
            os.write(master, CTRL_BRACKET)
            assert p.wait(timeout=3) == 0
    finally:
        os.close(master)


# ---- --ssh: a lease, and nothing of the host forwarded -------------------------

FAKE_SSH = """#!/bin/sh
printf '%s\\n' "$@" >"$QL_SSH_DIR/argv"
while [ ! -e "$QL_SSH_DIR/go" ]; do sleep 0.05; done
exit 7
"""


def test_ssh_holds_a_lease_and_forwards_nothing(stack, tmp_path):
    """vm-shell --ssh holds a lease on the VM while ssh runs (a disposable
    VM is not stopped under it), and ssh gets no agent, X11 or port
    forwarding whatever ssh_config says; ssh's exit status is vm-shell's."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(FAKE_SSH)
    (bin_dir / "ssh").chmod(0o755)
    env = dict(stack.env, PATH=f"{bin_dir}:{os.environ['PATH']}", QL_SSH_DIR=str(tmp_path))
    env.pop("QUBES_LITE_VSOCK_CID", None)
    p = subprocess.Popen([VM_SHELL, "--ssh", VM, "true"], env=env, stdin=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (tmp_path / "argv").exists(), what="ssh to run")
        assert stack.host_status().leases == 1
        argv = (tmp_path / "argv").read_text().splitlines()
        opts = {argv[i + 1] for i, a in enumerate(argv) if a == "-o"}
        assert {"ForwardAgent=no", "ForwardX11=no", "ClearAllForwardings=yes",
                "ControlMaster=no", "ControlPath=none", "PermitLocalCommand=no"} <= opts, argv
        (tmp_path / "go").touch()
        assert p.wait(timeout=30) == 7, p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    wait_for(lambda: stack.host_status().leases == 0, what="the lease to end")
