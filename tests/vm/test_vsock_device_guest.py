"""qubes-lite-vsock between a real qemu guest and the real agents.

One qemu TCG guest boots for the module with a `vhost-user-vsock-pci`
device (guest memory a shared memfd) whose backend is
$BUILD/bin/qubes-lite-vsock, and the guest's own virtio vsock driver
(vmw_vsock_virtio_transport) talks to it. Inside, the real guest agent
listens on vsock port 5200 (no --allow-local-cid: it accepts CID 2 from a
reserved port only). Outside, the real host agent reaches it with
`--no-vmm --guest hvsock:PATH:5200`, and vm-run goes through the host
agent as it would to a VM with the kernel's vhost-vsock.

qemu 7.2's vhost-user-vsock sets itself up only when its chardev is
connected and never again after: the guest is started paused (-S) with
the chardev on `reconnect=1`, the device is added over QMP once the
chardev connected, then the guest runs; after the device is killed and
started again, `device_del` and `device_add` attach the new one (the guest
drops its vsock connections as the device goes).

The tests run in file order; the last kills the device with SIGKILL.
Skipped (with the reason) when qemu, busybox-static or the Debian kernel
cannot be had. Logs stay
in the directory named on failure. Environment: BUILD, QL_VM_TIMEOUT
(boot, default 120 s).
"""
import hashlib
import json
import os
import pty
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

import qemuvm  # noqa: E402
import qlwire  # noqa: E402
import vminitramfs  # noqa: E402
import vmkernel  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
BUILD = os.path.join(ROOT, os.environ.get("BUILD", "build"))
BIN = os.path.join(BUILD, "bin")
GUEST_CID = 3
AGENT_PORT = 5200
MODULES = ["virtio_pci", "vsock", "vmw_vsock_virtio_transport"]
SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "runtime error:")
MIB = 1 << 20


class Qmp:
    """Just enough QMP: commands, and waiting for an event."""

    def __init__(self, path, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.sock.settimeout(60)
        self.f = self.sock.makefile("rwb")
        self.events = []
        json.loads(self.f.readline())
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        self.f.write(json.dumps({"execute": name, "arguments": args}).encode() + b"\n")
        self.f.flush()
        while True:
            m = json.loads(self.f.readline())
            if "event" in m:
                self.events.append(m)
            else:
                return m

    def wait_event(self, name):
        while True:
            for e in self.events:
                if e["event"] == name:
                    self.events.remove(e)
                    return e
            self.events.append(json.loads(self.f.readline()))

    def add_vsock(self, timeout=30):
        """device_add, again until the chardev has (re)connected."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.cmd("device_add", driver="vhost-user-vsock-pci", chardev="vs", id="vsock0")
            if "error" not in r:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"device_add: {r['error']['desc']}")
            time.sleep(0.2)


def vmhelper():
    """tests/vm/vmhelper.c, static, into the work directory the VM tests
    share ($BUILD/vm), when out of date."""
    src = os.path.join(HERE, "vmhelper.c")
    out = os.path.join(BUILD, "vm", "vmhelper")
    if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(src):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        tmp = f"{out}.{os.getpid()}.tmp"
        subprocess.run([os.environ.get("CC", "gcc"), "-O2", "-static", "-o", tmp, src],
                       check=True, capture_output=True)
        os.replace(tmp, out)
    return out


class Stack:
    error = None

    def __init__(self, workdir):
        self.dir = workdir
        self.vhost = os.path.join(workdir, "vhost.sock")
        self.path = os.path.join(workdir, "vsock.sock")
        self.etc = os.path.join(workdir, "etc")
        self.run = os.path.join(workdir, "run")
        self.agent_sock = os.path.join(self.run, "test.sock")
        self.device = None
        self.host_agent = None
        self.guest = None
        self.qmp = None
        self.logs = []
        self.env = dict(os.environ, QUBES_LITE_CONFIG_DIR=self.etc,
                        QUBES_LITE_RUNTIME_DIR=self.run)

    def _spawn(self, name, args):
        n = sum(1 for l in self.logs if os.path.basename(l).startswith(name))
        log = os.path.join(self.dir, f"{name}.{n}.log")
        self.logs.append(log)
        with open(log, "wb") as f:
            return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=f,
                                    stderr=subprocess.STDOUT, env=self.env)

    def log_text(self, log):
        with open(log, "rb") as f:
            return f.read().decode(errors="replace")

    def start_device(self):
        self.device = self._spawn("device", [
            os.path.join(BIN, "qubes-lite-vsock"), "--socket", self.vhost, "--uds-path",
            self.path, "--guest-cid", str(GUEST_CID), "--no-sandbox", "--log-level", "debug"])
        log = self.logs[-1]
        deadline = time.monotonic() + 30
        while "Serving" not in self.log_text(log):
            assert self.device.poll() is None, self.log_text(log)
            assert time.monotonic() < deadline, "the device did not start"
            time.sleep(0.05)

    def boot(self, kernel, initrd, extra=(), timeout=None):
        """The device, then the guest with the device attached over QMP,
        then the guest agent in it. extra: more qemu options."""
        self.start_device()
        g = qemuvm.Guest("guest", kernel.vmlinux, initrd, self.dir, memory=256)
        qmp_path = os.path.join(self.dir, "qmp.sock")
        # Before -kernel: paused, a QMP socket, the chardev the device is
        # added on (it reconnects by itself once a second).
        g.argv[-6:-6] = ["-S", "-qmp", f"unix:{qmp_path},server=on,wait=off",
                         "-chardev", f"socket,id=vs,path={self.vhost},reconnect=1", *extra]
        self.guest = g.start()
        self.qmp = Qmp(qmp_path)
        self.qmp.add_vsock()
        self.qmp.cmd("cont")
        g.wait_ready(timeout or float(os.environ.get("QL_VM_TIMEOUT", "120")))
        g.check("qubes-lite-guest-agent --listen vsock::5200 --kill-grace 2 --log-level debug "
                ">/tmp/guest-agent.log 2>&1 &")
        deadline = time.monotonic() + 30
        while True:  # until the guest agent accepts through the device
            try:
                self.hvsock()[0].close()
                return
            except (AssertionError, OSError):
                assert time.monotonic() < deadline, "the guest agent never answered"
                time.sleep(0.2)

    def start_host_agent(self):
        os.makedirs(os.path.join(self.etc, "vms"), exist_ok=True)
        os.makedirs(self.run, mode=0o755, exist_ok=True)
        with open(os.path.join(self.etc, "host.json"), "w") as f:
            json.dump({"user": "root"}, f)
        with open(os.path.join(self.etc, "vms", "test.json"), "w") as f:
            json.dump({"id": GUEST_CID, "name": "test"}, f)
        self.host_agent = self._spawn("host-agent", [
            os.path.join(BIN, "qubes-lite-host-agent"), "--vm", "test", "--no-vmm",
            "--listen", "unix:" + self.agent_sock, "--guest", f"hvsock:{self.path}:{AGENT_PORT}",
            "--guest-timeout", "60", "--log-level", "debug"])
        deadline = time.monotonic() + 30
        while not os.path.exists(self.agent_sock):
            assert self.host_agent.poll() is None, self.log_text(self.logs[-1])
            assert time.monotonic() < deadline, "the host agent did not listen"
            time.sleep(0.05)

    def vm_run(self, *args, timeout=120, **kw):
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        if "input" not in kw:
            kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run([os.path.join(BIN, "vm-run"), *map(str, args)], env=self.env,
                              timeout=timeout, **kw)

    def vm_run_popen(self, *args, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen([os.path.join(BIN, "vm-run"), *map(str, args)], env=self.env,
                                **kw)

    def hvsock(self, port=AGENT_PORT):
        """A host program's connection to the guest's port, past the OK line."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        s.connect(self.path)
        s.sendall(b"CONNECT %d\n" % port)
        line = b""
        while not line.endswith(b"\n"):
            c = s.recv(1)
            assert c, f"closed after {line!r}"
            line += c
        m = re.fullmatch(rb"OK (\d+)\n", line)
        assert m, line
        return s, int(m.group(1))

    def stop(self):
        failures = []
        for name, proc in (("host agent", self.host_agent), ("device", self.device)):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    if proc.wait(timeout=30) != 0:
                        failures.append(f"{name} exited {proc.returncode}")
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    failures.append(f"{name} did not stop on SIGTERM")
        if self.guest is not None:
            self.guest.stop()
        return failures


@pytest.fixture(scope="module")
def vm(request):
    missing = [p for p in ("qubes-lite-vsock", "qubes-lite-guest-agent",
                           "qubes-lite-host-agent", "vm-run")
               if not os.access(os.path.join(BIN, p), os.X_OK)]
    if missing:
        pytest.fail(f"not built: {', '.join(missing)} (run make)", pytrace=False)
    try:
        qemuvm.qemu_binary()
        vminitramfs.static_busybox()
        kernel = vmkernel.ensure_kernel()
    except (qemuvm.QemuUnavailable, vminitramfs.BusyboxUnavailable,
            vmkernel.KernelUnavailable) as e:
        pytest.skip(f"VM tests need qemu, busybox-static and the Debian kernel: {e}")
    workdir = tempfile.mkdtemp(prefix="ql-vsock-dev.", dir="/tmp")
    os.chmod(workdir, 0o755)
    st = Stack(workdir)
    failed_before = request.session.testsfailed
    try:
        initrd = os.path.join(workdir, "guest.cpio.gz")
        vminitramfs.build(initrd, kernel, os.path.join(HERE, "guest-ctl.sh"),
                          [vmhelper(), os.path.join(BIN, "qubes-lite-guest-agent")],
                          modules=MODULES)
        st.boot(kernel, initrd)
        st.start_host_agent()
    except Exception as e:  # noqa: B902 - every test reports it
        st.error = f"setting up failed: {e}"
    yield st
    failures = st.stop()
    logs = {os.path.basename(l): st.log_text(l) for l in st.logs}
    for name, text in logs.items():
        for mark in SANITIZER_MARKS:
            if mark in text:
                failures.append(f"{name}: sanitizer report:\n{text[-4000:]}")
    if request.session.testsfailed == failed_before and not failures and not st.error:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        sys.stderr.write(f"\nvsock device VM logs: {workdir}\n")
    assert not failures, "\n".join(failures)


def up(vm):
    if vm.error:
        pytest.fail(vm.error, pytrace=False)
    return vm


# ---- the device and the guest's driver ----------------------------------------------


def test_guest_driver_on_the_device(vm):
    """The guest's CID comes from the device's config space; its driver
    runs with MSI-X: vhost-user-vsock-pci needs no vectors=0 under TCG."""
    g = up(vm).guest
    assert g.check("vmhelper cid") == str(GUEST_CID)
    irqs = g.check("cat /proc/interrupts")
    assert re.search(r"PCI-MSI.*virtio\d+-(virtqueues|input|output)", irqs), irqs


def test_guest_agent_through_the_device(vm):
    """A root program on PATH reaches the guest agent from a port below
    1024: the agent answers Ping."""
    up(vm)
    s, port = vm.hvsock()
    assert port < 1024
    c = qlwire.Conn(s)
    c.hello()
    c.send("ping", nonce=7)
    name, msg = c.recv(timeout=30)
    assert name == "pong" and msg.nonce == 7, (name, msg)
    c.close()


def as_nobody(fn):
    """fn() in a child as uid and gid 65534; what it returns (JSON), or
    the exception it raised, as text."""
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rd)
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            os.write(wr, json.dumps(fn()).encode())
        except BaseException as e:  # noqa: B902 - the parent reports it
            os.write(wr, json.dumps(f"raised {e!r}").encode())
        finally:
            os._exit(0)
    os.close(wr)
    try:
        return json.loads(os.read(rd, 4096))
    finally:
        os.close(rd)
        os.waitpid(pid, 0)


def test_other_users_refused(vm):
    """PATH is 0600: another uid cannot connect. Opened to it, it gets a
    port above 1023, and the guest agent refuses it as it refuses an
    unprivileged host process on the kernel's vsock."""
    up(vm)
    assert os.stat(vm.path).st_mode & 0o777 == 0o600

    def connect():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(vm.path)
            return "connected"
        except PermissionError:
            return "EACCES"
    assert as_nobody(connect) == "EACCES"

    def refused():
        s, port = vm.hvsock()
        # Refused at once: one Error, then the end.
        frames = qlwire.Conn(s).expect_closed(timeout=30)
        return [port, [n for n, _ in frames], [m.code for n, m in frames if n == "error"]]
    os.chmod(vm.path, 0o666)
    try:
        got = as_nobody(refused)
    finally:
        os.chmod(vm.path, 0o600)
    assert isinstance(got, list), got
    port, names, codes = got
    assert port > 1023
    assert "error" in names and qlwire.pb.ERROR_DENIED in codes, (names, codes)


def test_guest_connects_to_host(vm):
    """Guest to CID 2 port P reaches the listener on PATH_P; a port nobody
    listens on is refused at once (ECONNRESET)."""
    g = up(vm).guest
    lsn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsn.bind(f"{vm.path}_7000")
    lsn.listen()
    lsn.settimeout(30)

    def echo():
        c, _ = lsn.accept()
        c.settimeout(30)
        data = b""
        while True:
            k = c.recv(4096)
            if not k:
                break
            data += k
        c.sendall(data)
        c.close()
    t = threading.Thread(target=echo, daemon=True)
    t.start()
    try:
        assert g.check("vmhelper echo-client 2 7000 from-the-guest") == "from-the-guest"
        t.join(10)
    finally:
        lsn.close()
        os.unlink(f"{vm.path}_7000")
    # The device's RST, not a timeout (that would be ETIMEDOUT).
    rc, out = g.sh("vmhelper probe 2 7001 -t 5")
    assert rc == 1 and "PROBE connect-failed Connection reset by peer" in out, out


# ---- vm-run through the host agent --------------------------------------------------


def test_exit_statuses(vm):
    up(vm)
    cases = [(["true"], 0), (["false"], 1), (["sh", "-c", "exit 7"], 7),
             (["no-such-program"], 127), (["sh", "-c", "kill -TERM $$"], 143)]
    for argv, want in cases:
        r = vm.vm_run("test", *argv)
        assert r.returncode == want, (argv, r.returncode, r.stderr)
    r = vm.vm_run("test", "sh", "-c", "echo out; echo err >&2")
    assert (r.stdout, r.stderr) == (b"out\n", b"err\n")


def test_64mib_each_way(vm):
    up(vm)
    data = os.urandom(64 * MIB)
    r = vm.vm_run("test", "sha256sum", input=data, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
    r = vm.vm_run("test", "sh", "-c", "yes qubes-lite-vsock | head -c 67108864", timeout=600)
    assert r.returncode == 0, r.stderr
    want = (b"qubes-lite-vsock\n" * (64 * MIB // 17 + 1))[:64 * MIB]
    assert len(r.stdout) == 64 * MIB
    assert hashlib.sha256(r.stdout).digest() == hashlib.sha256(want).digest()


def test_stdin_end(vm):
    up(vm)
    r = vm.vm_run("test", "sh", "-c", "cat; echo done", input=b"abc")
    assert r.returncode == 0 and r.stdout == b"abcdone\n", r


def test_pty_and_resize(vm):
    up(vm)
    import fcntl
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))

    def ctty():
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    p = subprocess.Popen([os.path.join(BIN, "vm-run"), "-t", "test", "sh", "-c",
                          "stty size; read x; stty size; tty"],
                         stdin=slave, stdout=slave, stderr=slave, env=vm.env,
                         preexec_fn=ctty)
    os.close(slave)
    out = b""

    def read_until(pattern, timeout=60):
        nonlocal out
        deadline = time.monotonic() + timeout
        while not re.search(pattern, out):
            left = deadline - time.monotonic()
            assert left > 0, out
            r, _, _ = select.select([master], [], [], left)
            if r:
                try:
                    out += os.read(master, 4096)
                except OSError:
                    break
    try:
        read_until(rb"24 80")
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
        time.sleep(1)  # the resize travels before the line does
        os.write(master, b"\r")
        read_until(rb"40 100\s+/dev/pts/")
        assert p.wait(timeout=60) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)


def test_signal_forwarded(vm):
    up(vm)
    p = vm.vm_run_popen("test", "sh", "-c", "echo ready; exec sleep 300",
                        stdout=subprocess.PIPE)
    assert p.stdout.readline() == b"ready\n"
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=60) == 128 + signal.SIGINT


def test_100_concurrent_sessions(vm):
    up(vm)
    procs = [vm.vm_run_popen("test", "echo", f"session-{i}", stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE) for i in range(100)]
    for i, p in enumerate(procs):
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, (i, err)
        assert out == f"session-{i}\n".encode()


def test_killed_client_leaves_nothing(vm):
    up(vm)
    g = vm.guest
    p = vm.vm_run_popen("test", "sh", "-c", "echo ready; exec sleep 1201",
                        stdout=subprocess.PIPE)
    assert p.stdout.readline() == b"ready\n"
    assert "sleep 1201" in g.check("ps")
    p.kill()
    p.wait()
    deadline = time.monotonic() + 30
    while "sleep 1201" in g.check("ps"):
        assert time.monotonic() < deadline, "the program outlived its client"
        time.sleep(0.5)


# ---- the device killed and started again ------------------------------------------------


def test_device_killed_and_restarted(vm):
    g = up(vm).guest
    # Sessions in flight: one straight to the guest agent through PATH, and
    # one of vm-run through the host agent.
    s, _ = vm.hvsock()
    direct = qlwire.Conn(s)
    direct.hello()
    direct.send("exec", argv=[b"sleep", b"1202"])
    assert direct.recv(timeout=30)[0] == "started"
    p = vm.vm_run_popen("test", "sh", "-c", "echo ready; exec sleep 1203",
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline() == b"ready\n"
    ps = g.check("ps")
    assert "sleep 1202" in ps and "sleep 1203" in ps, ps

    vm.device.kill()
    vm.device.wait()
    # The sessions end, with a clear error for vm-run.
    direct.expect_closed(timeout=30)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 255 and err.startswith(b"vm-run: "), (p.returncode, err)

    # Started again on the same sockets: qemu's chardev reconnects, the
    # device is attached anew. The guest drops its vsock connections as
    # the old device goes: the programs of the lost sessions are ended.
    vm.start_device()
    vm.qmp.cmd("device_del", id="vsock0")
    vm.qmp.wait_event("DEVICE_DELETED")
    vm.qmp.add_vsock()
    deadline = time.monotonic() + 30
    while re.search(r"sleep 120[23]", g.check("ps")):
        assert time.monotonic() < deadline, "a lost session's program still runs"
        time.sleep(0.5)
    # The guest finds the new device (PCI hotplug) and its CID again.
    deadline = time.monotonic() + 60
    while g.check("vmhelper cid") != str(GUEST_CID):
        assert time.monotonic() < deadline, "the guest did not find the new device"
        time.sleep(0.5)
    # New sessions work: straight, and through the same host agent.
    c = qlwire.Conn(vm.hvsock()[0])
    c.hello()
    c.send("ping", nonce=8)
    assert c.recv(timeout=30)[0] == "pong"
    c.close()
    deadline = time.monotonic() + 60
    while True:
        r = vm.vm_run("test", "echo", "after the restart")
        if r.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert r.returncode == 0 and r.stdout == b"after the restart\n", r.stderr
