"""qubes-lite-vsock between a real qemu guest and the real agents.

One qemu TCG guest boots for the module with a `vhost-user-vsock-pci`
device (guest memory a shared memfd) whose backend is
$BUILD/bin/qubes-lite-vsock, and the guest's own virtio vsock driver
(vmw_vsock_virtio_transport) talks to it. Inside, the real guest agent
listens on vsock port 5200 (no --allow-local-cid: it accepts CID 2 from a
reserved port only). Outside, the real host agent reaches it with
`--no-vmm --guest hvsock:PATH:5200`, and vm-run goes through the host
agent as it would to a VM with the kernel's vhost-vsock.

The VM has its secret as the host agent gives it to a VMM (qemu's
`-fw_cfg name=opt/qubes-lite/secret,file=F`); the guest agent reads it
from fw_cfg itself (`--secret-fw-cfg`, the I/O ports) and the host agent
from its runtime directory. A root program on PATH passes the peer check
(a reserved port), as a host process holding CAP_NET_BIND_SERVICE would
on the kernel's vsock, and still gets nothing without the secret.

The guest, its device and the agents are qltest.vsock's VsockGuest (how
qemu's vhost-user-vsock is attached, over QMP, is told there).

The tests run in file order; the last kills the device with SIGKILL.
Skipped (with the reason) when qemu, busybox-static or the Debian kernel
cannot be had. Logs stay in the directory named on failure. Environment:
BUILD, QL_VM_TIMEOUT (boot, default 120 s).
"""
import hashlib
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import termios
import threading
import time

import pytest

from qltest import KeptOnFailure, program, qemu, qlwire
from qltest.procs import call_as_nobody, wait_for
from qltest.vsock import GUEST_CID, SSH_PEERS, VsockGuest, ssh_image_parts

MIB = 1 << 20


@pytest.fixture(scope="module")
def vm(request):
    for p in ("qubes-lite-vsock", "qubes-lite-guest-agent", "qubes-lite-host-agent", "vm-run"):
        try:
            program(p)
        except FileNotFoundError as e:
            pytest.fail(str(e), pytrace=False)
    kern = qemu.guest_kernel_or_skip()
    # Short, and open to uid 65534, who is refused at PATH's permissions.
    work = KeptOnFailure(request, "ql-vsock-dev.", "vsock device VM", dir="/tmp")
    os.chmod(work.path, 0o755)
    st = VsockGuest(work.path, secret=os.urandom(32))
    st.error = None
    try:
        # sshd and socat in the image, for ssh through the proxy.
        ssh, st.no_ssh = ssh_image_parts(work.path)
        binaries, files, st.ssh_key = ssh or ((), None, None)
        st.boot(kern, st.image(kern, files=files, binaries=binaries))
        st.start_host_agent()
    except Exception as e:  # noqa: B902 - every test reports it
        st.error = f"setting up failed: {e}"
    yield st
    failures = st.stop()
    work.finish(ok=not failures and not st.error)
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


def hello(c, secret):
    """Our Hello, with `secret` when not None, and the guest agent's."""
    fields = dict(major=qlwire.VERSION_MAJOR, minor=qlwire.VERSION_MINOR, software="test")
    if secret is not None:
        fields["secret"] = secret
    c.send("hello", **fields)
    name, msg = c.recv(timeout=30)
    assert name == "hello" and not msg.secret, (name, msg)


def test_guest_agent_through_the_device(vm):
    """A root program on PATH reaches the guest agent from a port below
    1024, with the VM's secret: the agent answers Ping."""
    up(vm)
    s, port = vm.hvsock()
    assert port < 1024
    c = qlwire.Conn(s)
    hello(c, vm.secret)
    c.send("ping", nonce=7)
    name, msg = c.recv(timeout=30)
    assert name == "pong" and msg.nonce == 7, (name, msg)
    c.close()


@pytest.mark.parametrize("offered", ["none", "wrong"])
def test_reserved_port_without_the_secret_refused(vm, offered):
    """From a port below 1024 (the peer check passed) but without the
    secret fw_cfg gave the guest, or with a wrong one: Error(DENIED)."""
    up(vm)
    s, port = vm.hvsock()
    assert port < 1024
    c = qlwire.Conn(s)
    hello(c, None if offered == "none" else bytes(b ^ 0x5a for b in vm.secret))
    c.send("ping", nonce=9)
    frames = c.expect_closed(timeout=30)
    assert [n for n, _ in frames] == ["error"], frames
    assert frames[0][1].code == qlwire.pb.ERROR_DENIED, frames
    reason = "no secret" if offered == "none" else "a wrong secret"
    log = vm.guest.check("cat /tmp/guest-agent.log")
    assert f"its Hello carries {reason}" in log, log


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
    assert call_as_nobody(connect) == "EACCES"

    def refused():
        s, port = vm.hvsock()
        # Refused at once: one Error, then the end.
        frames = qlwire.Conn(s).expect_closed(timeout=30)
        return [port, [n for n, _ in frames], [m.code for n, m in frames if n == "error"]]
    os.chmod(vm.path, 0o666)
    try:
        got = call_as_nobody(refused)
    finally:
        os.chmod(vm.path, 0o600)
    assert isinstance(got, list), got
    port, names, codes = got
    assert port > 1023
    assert "error" in names and qlwire.pb.ERROR_DENIED in codes, (names, codes)


def test_ssh_through_the_proxy(vm):
    """ssh with `qubes-lite-vsock-proxy hvsock:PATH:22` as its
    ProxyCommand logs in to the guest's sshd (vsock port 22) through the
    device: the remote command's output and exit status come back."""
    up(vm)
    if vm.no_ssh:
        pytest.skip(vm.no_ssh)
    vm.start_sshd()
    proxy = f"{program('qubes-lite-vsock-proxy')} hvsock:{vm.path}:22"
    r = subprocess.run(
        [SSH_PEERS["ssh"], "-F", "/dev/null", "-o", f"ProxyCommand={proxy}",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-i", vm.ssh_key, "-l", "root",
         "qubes-lite-test", 'echo "hi from $(id -un)"; cat; exit 3'],
        input=b"stdin through\n", capture_output=True, timeout=120)
    assert r.returncode == 3, (r.returncode, r.stderr, vm.guest.sh("cat /tmp/sshd.log")[1])
    assert r.stdout == b"hi from root\nstdin through\n", r.stdout


def test_vm_shell_ssh_through_the_device(vm, tmp_path):
    """vm-shell --ssh to a VM whose vsock is the device: ssh goes through
    the proxy to hvsock:<runtime dir>/<vm>.vsock.sock:22 (where the host
    agent has qemu's device put its socket) while vm-shell holds a lease;
    the key comes from the user's ssh-agent, which the VM does not get."""
    up(vm)
    if vm.no_ssh:
        pytest.skip(vm.no_ssh)
    vm.start_sshd()
    runtime_sock = os.path.join(vm.host.run_dir, "test.vsock.sock")
    os.symlink(vm.path, runtime_sock)
    agent_sock = str(tmp_path / "agent.sock")
    agent = subprocess.Popen([SSH_PEERS["ssh-agent"], "-D", "-a", agent_sock],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: os.path.exists(agent_sock), timeout=30, what="ssh-agent's socket")
        env = dict(vm.host.env, SSH_AUTH_SOCK=agent_sock)
        subprocess.run([SSH_PEERS["ssh-add"], "-q", vm.ssh_key], env=env, check=True,
                       capture_output=True, timeout=30)
        # One word: ssh hands the remote shell its words joined by spaces.
        p = subprocess.Popen([program("vm-shell"), "--ssh", "test",
                              'echo "hi from $(id -un) ${SSH_AUTH_SOCK:-without an agent}";'
                              " cat; exit 4"],
                             env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        # The lease is held while ssh runs.
        wait_for(lambda: vm.host.host_status().leases >= 1, timeout=60, what="vm-shell's lease")
        out, err = p.communicate(b"stdin through\n", timeout=120)
        assert p.returncode == 4, (p.returncode, err, vm.guest.sh("cat /tmp/sshd.log")[1])
        assert out == b"hi from root without an agent\nstdin through\n", (out, err)
        wait_for(lambda: vm.host.host_status().leases == 0, timeout=30, what="the lease released")
    finally:
        os.unlink(runtime_sock)
        agent.terminate()
        agent.wait(timeout=30)


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
        r = vm.host.vm_run("test", *argv)
        assert r.returncode == want, (argv, r.returncode, r.stderr)
    r = vm.host.vm_run("test", "sh", "-c", "echo out; echo err >&2")
    assert (r.stdout, r.stderr) == (b"out\n", b"err\n")


def test_64mib_each_way(vm):
    up(vm)
    data = os.urandom(64 * MIB)
    r = vm.host.vm_run("test", "sha256sum", input=data, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
    r = vm.host.vm_run("test", "sh", "-c", "yes qubes-lite-vsock | head -c 67108864", timeout=600)
    assert r.returncode == 0, r.stderr
    want = (b"qubes-lite-vsock\n" * (64 * MIB // 17 + 1))[:64 * MIB]
    assert len(r.stdout) == 64 * MIB
    assert hashlib.sha256(r.stdout).digest() == hashlib.sha256(want).digest()


def test_stdin_end(vm):
    up(vm)
    r = vm.host.vm_run("test", "sh", "-c", "cat; echo done", input=b"abc")
    assert r.returncode == 0 and r.stdout == b"abcdone\n", r


def test_pty_and_resize(vm):
    up(vm)
    import fcntl
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))

    def ctty():
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    p = subprocess.Popen(vm.host.vm_run_args("-t", "test", "sh", "-c",
                                             "stty size; read x; stty size; tty"),
                         stdin=slave, stdout=slave, stderr=slave, env=vm.host.env,
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
    p = vm.host.popen("test", "sh", "-c", "echo ready; exec sleep 300",
                        stdout=subprocess.PIPE)
    assert p.stdout.readline() == b"ready\n"
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=60) == 128 + signal.SIGINT


def test_100_concurrent_sessions(vm):
    up(vm)
    procs = [vm.host.popen("test", "echo", f"session-{i}", stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE) for i in range(100)]
    for i, p in enumerate(procs):
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, (i, err)
        assert out == f"session-{i}\n".encode()


def test_killed_client_leaves_nothing(vm):
    up(vm)
    g = vm.guest
    p = vm.host.popen("test", "sh", "-c", "echo ready; exec sleep 1201",
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
    hello(direct, vm.secret)
    direct.send("exec", argv=[b"sleep", b"1202"])
    assert direct.recv(timeout=30)[0] == "started"
    p = vm.host.popen("test", "sh", "-c", "echo ready; exec sleep 1203",
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline() == b"ready\n"
    ps = g.check("ps")
    assert "sleep 1202" in ps and "sleep 1203" in ps, ps

    vm.device.kill()
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
    vm.add_device()
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
    hello(c, vm.secret)
    c.send("ping", nonce=8)
    assert c.recv(timeout=30)[0] == "pong"
    c.close()
    deadline = time.monotonic() + 60
    while True:
        r = vm.host.vm_run("test", "echo", "after the restart")
        if r.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert r.returncode == 0 and r.stdout == b"after the restart\n", r.stderr
