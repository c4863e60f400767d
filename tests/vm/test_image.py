"""The guest image (`make image`, rootfs/) booted under qemu TCG the way
the host agent boots a VM: the PVH vmlinux, initrd.img, and the VM's
settings as qubes_lite.* parameters on the kernel command line.

  - `make image` (the README's command) builds $BUILD/rootfs/vmlinux, an
    ELF with the PVH entry note, and initrd.img holding /init, the guest
    agent with its libraries and the modules in load order, and no test
    payload; a second run works with the network cut off (apt and any
    download pointed at a closed port on loopback).
  - That image boots: /init says the agent started, the root shell on the
    serial console runs what is typed, and qemu's system_powerdown (the
    ACPI power button) powers the VM off cleanly: qemu exits 0 by itself.
  - The test payload image (mkimage.py --test-payload: vsock_loopback, the
    real host agent and vm-run inside, rootfs/test-payload.sh run by /init
    as a service) with a VM's settings: vm-run reaches the guest agent
    through the host agent over vsock on CID 1; host name, default user,
    home, the agent's command line, address, route and DNS are those of
    the command line; an orphan is adopted and reaped by PID 1, no zombie
    is left; a killed agent is started again. The VM's secret comes as
    qemu's `-fw_cfg name=opt/qubes-lite/secret,file=F` (as the host agent
    gives it to its VMM): /init reads it over fw_cfg's I/O ports into a
    root-only file, the same bytes, and the guest agent asks for it; host
    agents without it or with a wrong one are refused. Then nothing runs,
    and the agent's idle timeout powers the VM off: qemu exits 0, no panic.
  - Bad parameters: one line each on the console, and the VM still boots.
    That VM has no secret (no fw_cfg file): /init says so in one line, and
    its guest agent refuses every connection (fail closed).

Boot to "guest agent answers" (host wall clock from qemu's start to the
payload's line, and guest uptime) is printed, not asserted. Skipped (with
the reason) when qemu, busybox-static or the Debian kernel cannot be had;
failed when the programs are not built. Consoles stay in $BUILD/rootfs-test/.
Environment: BUILD (default build), QL_VM_TIMEOUT (seconds per guest, 120).
"""
import gzip
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

import mkimage
from qltest import BIN, BUILD, ROOT
from qltest import qemu as qemuvm

WORK = os.path.join(BUILD, "rootfs-test")
TIMEOUT = float(os.environ.get("QL_VM_TIMEOUT", "120"))
PROGRAMS = ["qubes-lite-init", "qubes-lite-guest-agent", "qubes-lite-host-agent", "vm-run"]

MAC = "52:54:00:3c:00:03"
# What the host agent writes for VM id 3 on 172.16.200.0/24 (DESIGN.md's
# derived values: the VM is <base>.<id>, the host's TAP <base>.<id-1>, /31).
SETTINGS = ("qubes_lite.name=banking qubes_lite.idle=2 qubes_lite.user=alice "
            "qubes_lite.ip=172.16.200.3/31 qubes_lite.gw=172.16.200.2 "
            f"qubes_lite.mac={MAC} qubes_lite.dns=172.16.200.2")
BAD = {
    "qubes_lite.idle=soon": "qubes_lite.idle=soon: not a number of seconds",
    "qubes_lite.ip=300.1.2.3/31": "qubes_lite.ip=300.1.2.3/31: not an IPv4 address",
    "qubes_lite.user=Bob": "qubes_lite.user=Bob: not a user name",
    "qubes_lite.colour=blue": "qubes_lite.colour: unknown parameter; ignored",
}
PANIC = re.compile(r"Kernel panic|Attempted to kill init|BUG:|Oops")


def _require_programs():
    missing = [p for p in PROGRAMS if not os.access(os.path.join(BIN, p), os.X_OK)]
    if missing:
        pytest.fail(f"not built: {', '.join(missing)} in {BIN} (run make)", pytrace=False)


def _kernel_or_skip():
    try:
        qemuvm.qemu_binary()
        mkimage.static_busybox()
        return mkimage.ensure_kernel()
    except (qemuvm.QemuUnavailable, mkimage.ImageError) as e:
        pytest.skip(f"the image needs qemu, busybox-static and the Debian kernel: {e}")


class Vm:
    """One qemu guest on the image, its serial console on our pipes (what
    the guest prints arrives line by line with the time it arrived; what
    we write is typed on the console) and QMP on a unix socket."""

    def __init__(self, name, image, append, nic=False, secret=None):
        os.makedirs(WORK, exist_ok=True)
        self.name = name
        self.qmp_path = os.path.join(WORK, f"{name}.qmp")
        self.log = os.path.join(WORK, f"{name}.console.log")
        extra = ["-qmp", f"unix:{self.qmp_path},server=on,wait=off"]
        if secret is not None:
            # What the host agent gives its VMM: only the file's path.
            path = os.path.join(WORK, f"{name}.secret")
            if os.path.exists(path):
                os.unlink(path)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(secret)
            extra += ["-fw_cfg", f"name=opt/qubes-lite/secret,file={path}"]
        if nic:
            # A NIC on a hub of its own: nothing it sends goes anywhere.
            extra += ["-netdev", "hubport,id=n0,hubid=0",
                      "-device", f"virtio-net-pci,netdev=n0,mac={MAC}"]
        self.argv = qemuvm.command(image.vmlinux, image.initrd, append, 512,
                                   extra)
        self.lines = []                  # (seconds since start, line)
        self.cond = threading.Condition()
        self.proc = None
        self.t0 = None

    def start(self):
        if os.path.exists(self.qmp_path):
            os.unlink(self.qmp_path)
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self):
        with open(self.log, "wb") as log:
            for raw in self.proc.stdout:
                log.write(raw)
                log.flush()
                line = raw.decode("utf-8", "replace").rstrip("\r\n").replace("\r", "")
                with self.cond:
                    self.lines.append((time.monotonic() - self.t0, line))
                    self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def text(self):
        with self.cond:
            return "\n".join(l for _, l in self.lines)

    def tail(self, n=40):
        with self.cond:
            return "\n".join(l for _, l in self.lines[-n:])

    def wait_for(self, pattern, timeout=TIMEOUT):
        """(arrival time, match) of the first console line matching."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, l in self.lines:
                    m = rx.search(l)
                    if m:
                        return t, m
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    state = "qemu exited" if self.proc.poll() is not None else "timed out"
                    pytest.fail(f"{self.name}: no console line /{pattern}/ ({state}); "
                                f"console {self.log}:\n{self.tail()}", pytrace=False)
                self.cond.wait(min(left, 0.2))

    def type(self, text):
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def qmp(self, command):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(self.qmp_path)
        with s, s.makefile("rw") as f:
            json.loads(f.readline())                       # the greeting
            for cmd in ("qmp_capabilities", command):
                f.write(json.dumps({"execute": cmd}) + "\n")
                f.flush()
                while True:                                # events may come first
                    reply = json.loads(f.readline())
                    if "return" in reply or "error" in reply:
                        break
                if "error" in reply:
                    raise RuntimeError(f"QMP {cmd}: {reply['error']}")

    def wait_exit(self, timeout=TIMEOUT):
        """qemu's exit status; None when it had to be killed."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()                               # this qemu, by its pid
            self.proc.wait()


# ---- make image ----------------------------------------------------------------

class Made:
    pass


def _make_image(env=None):
    t0 = time.monotonic()
    r = subprocess.run(["make", "--no-print-directory", "image"], cwd=ROOT, env=env,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True)
    return r, time.monotonic() - t0


@pytest.fixture(scope="module")
def made():
    _require_programs()
    kernel = _kernel_or_skip()
    m = Made()
    m.kernel = kernel
    m.first, m.first_s = _make_image()
    # Offline: whatever would download goes to a closed port on loopback.
    env = dict(os.environ, http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9",
               HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")
    m.second, m.second_s = _make_image(env)
    m.dir = os.path.join(BUILD, "rootfs")
    m.vmlinux = os.path.join(m.dir, "vmlinux")
    m.initrd = os.path.join(m.dir, "initrd.img")
    sys.stderr.write(f"image: make image {m.first_s:.1f} s, again offline {m.second_s:.1f} s\n")
    return m


def test_make_image_builds(made):
    assert made.first.returncode == 0, made.first.stdout + made.first.stderr
    assert mkimage.has_pvh_entry(made.vmlinux), f"{made.vmlinux}: no PVH entry note"
    assert os.path.getsize(made.initrd) > 0


def test_make_image_again_offline(made):
    assert made.second.returncode == 0, made.second.stdout + made.second.stderr
    assert "fetching" not in made.second.stderr, made.second.stderr


def _cpio_names(path):
    """Names in a gzipped newc archive."""
    with gzip.open(path) as f:
        data = f.read()
    names, pos = [], 0
    while True:
        assert data[pos:pos + 6] == b"070701", f"bad cpio header at {pos}"
        size = int(data[pos + 54:pos + 62], 16)
        namesize = int(data[pos + 94:pos + 102], 16)
        name = data[pos + 110:pos + 110 + namesize - 1].decode()
        if name == "TRAILER!!!":
            return names
        names.append(name)
        pos += 110 + namesize
        pos += -pos % 4
        pos += size + (-size % 4)


def test_image_contents(made):
    names = set(_cpio_names(made.initrd))
    release = made.kernel.release
    for want in ["init", "dev/console", "bin/busybox", "bin/sh", "sbin/poweroff",
                 "usr/bin/qubes-lite-guest-agent", "etc/passwd", "etc/qubes-lite/modules",
                 f"lib/modules/{release}/kernel/drivers/net/virtio_net.ko",
                 f"lib/modules/{release}/kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko",
                 f"lib/modules/{release}/kernel/drivers/block/virtio_blk.ko"]:
        assert want in names, f"{want} not in {made.initrd}"
    for lib in mkimage.shared_libs(os.path.join(BIN, "qubes-lite-guest-agent")):
        assert lib.lstrip("/") in names, f"the agent's {lib} is missing"
    for test_only in ["usr/bin/vm-run", "usr/bin/qubes-lite-host-agent",
                      f"lib/modules/{release}/kernel/net/vmw_vsock/vsock_loopback.ko"]:
        assert test_only not in names, f"{test_only}: test payload in the image"
    assert not [n for n in names if n.startswith("etc/qubes-lite/init.d/")]


def test_image_boots_console_and_power_button(made):
    """The image of `make image` itself: no payload, a console shell, and
    qemu's system_powerdown."""
    assert made.first.returncode == 0
    image = mkimage.Image(made.vmlinux, made.initrd, made.kernel, [], 0)
    vm = Vm("console", image, "qubes_lite.name=work").start()
    try:
        vm.wait_for(r"qubes-lite-init: work: guest agent started at [\d.]+ s$")
        vm.wait_for(r"^work:~# ")
        vm.type("echo QL-$((6*7)) $(hostname) $(cat /proc/1/comm)\n")
        vm.wait_for(r"^QL-42 work init$")
        vm.qmp("system_powerdown")
        rc = vm.wait_exit()
        assert rc == 0, f"qemu: {rc}\n{vm.tail()}"
        vm.wait_for(r"qubes-lite-init: Power button: powering off", 1)
        vm.wait_for(r"reboot: Power down", 1)
        assert not PANIC.search(vm.text()), vm.tail()
    finally:
        vm.kill()


# ---- the test payload image ------------------------------------------------------

@pytest.fixture(scope="module")
def payload_image():
    _require_programs()
    kernel = _kernel_or_skip()
    t0 = time.monotonic()
    try:
        image = mkimage.build_image(WORK, BIN, kernel, **mkimage.test_payload(BIN))
    except mkimage.ImageError as e:
        pytest.fail(f"building the test image failed: {e}", pytrace=False)
    sys.stderr.write(f"image: test image {image.size / 1e6:.1f} MB in "
                     f"{time.monotonic() - t0:.1f} s\n")
    return image


def _boot_report(vm):
    t, m = vm.wait_for(r"QL-IMAGE agent-(answers|silent) uptime=([\d.]+)")
    if m.group(1) != "answers":
        pytest.fail(f"{vm.name}: the guest agent never answered:\n{vm.tail()}", pytrace=False)
    sys.stderr.write(f"image: {vm.name}: guest agent answers {t:.2f} s after qemu started "
                     f"(guest uptime {m.group(2)} s)\n")
    return t


class Settled:
    pass


@pytest.fixture(scope="module")
def settings_vm(payload_image):
    """A VM with every setting, left to its idle poweroff."""
    s = Settled()
    s.secret = os.urandom(32)
    vm = Vm("settings", payload_image, SETTINGS, nic=True, secret=s.secret).start()
    s.vm = vm
    try:
        s.answered = _boot_report(vm)
        vm.wait_for(r"QL-IMAGE done")
        s.rc = vm.wait_exit()
    finally:
        vm.kill()
    s.facts = {}
    for _, line in vm.lines:
        m = re.match(r"QL-IMAGE fact (\S+) ?(.*)$", line)
        if m:
            s.facts[m.group(1)] = m.group(2)
    return s


FACTS = {
    "hostname": "banking",
    "etc-hostname": "banking",
    "user": "alice",
    "uid": "1000",
    "home": "/home/alice",
    "addresses": "lo 127.0.0.1/8 eth0 172.16.200.3/31",
    "default-route": "default via 172.16.200.2 dev eth0",
    "resolv-conf": "nameserver 172.16.200.2",
    "orphan-ppid": "1",
    "orphan-reaped": "yes",
    "zombies": "0",
}


@pytest.mark.parametrize("fact", sorted(FACTS))
def test_settings(settings_vm, fact):
    got = settings_vm.facts.get(fact)
    assert got == FACTS[fact], f"{fact}: {got!r}\n{settings_vm.vm.tail()}"


def test_agent_command_line(settings_vm):
    got = settings_vm.facts.get("agent-cmdline", "")
    assert got == ("/usr/bin/qubes-lite-guest-agent --listen vsock::5200 --poweroff-command "
                   "/sbin/poweroff --idle-timeout 2 --default-user alice --secret-file "
                   "/run/qubes-lite/secret --allow-local-cid"), got


def test_secret_from_fw_cfg(settings_vm):
    """/init's copy of the fw_cfg file: the host's bytes, root's alone."""
    facts = settings_vm.facts
    assert facts.get("secret-sha256") == hashlib.sha256(settings_vm.secret).hexdigest(), \
        settings_vm.vm.tail()
    assert facts.get("secret-modes") == "400 root 700 root", facts.get("secret-modes")
    assert settings_vm.secret.hex() not in settings_vm.vm.text()


@pytest.mark.parametrize("host_agent", ["nosecret", "wrong"])
def test_host_agent_without_the_secret_refused(settings_vm, host_agent):
    """A host agent that passes the guest agent's peer check (vsock, a
    reserved port) without the VM's secret, or with a wrong one, gets
    nothing: vm-run through it is denied by the guest agent."""
    got = settings_vm.facts.get(f"{host_agent}-refused", "")
    assert got.startswith("yes: vm-run: the guest agent of VM ") and "(DENIED)" in got, got


def test_agent_restarted(settings_vm):
    got = settings_vm.facts.get("agent-restarted", "")
    assert got.startswith("yes"), f"{got!r}\n{settings_vm.vm.tail()}"
    settings_vm.vm.wait_for(r"qubes-lite-init: The guest agent was killed by signal 9 \(KILL\); "
                            r"restarting it", 1)


def test_idle_poweroff(settings_vm):
    vm = settings_vm.vm
    assert settings_vm.rc == 0, f"qemu: {settings_vm.rc} (None: killed)\n{vm.tail()}"
    vm.wait_for(r"qubes-lite-guest-agent: Powering off: idle timeout", 1)
    vm.wait_for(r"qubes-lite-init: SIGUSR2 from pid \d+: powering off", 1)
    vm.wait_for(r"reboot: Power down", 1)
    assert not PANIC.search(vm.text()), vm.tail()
    assert "killing them" not in vm.text(), vm.tail()      # everyone went on SIGTERM


def test_bad_parameters_and_no_secret(payload_image):
    """Bad parameters; and no fw_cfg file with the secret, so the guest
    agent refuses every connection (which is also its answer that it
    runs), and the console says why."""
    vm = Vm("bad-params", payload_image, " ".join(BAD)).start()
    try:
        vm.wait_for(r"QL-IMAGE no-secret$")
        t, m = vm.wait_for(r"QL-IMAGE agent-refuses uptime=[\d.]+ tries=\d+: (.*)$")
        assert m.group(1).startswith("vm-run: the guest agent of VM 'image' denied access"), \
            m.group(1)
        vm.wait_for(r"QL-IMAGE done")
        text = vm.text()
        lines = [l for l in text.splitlines() if "No VM secret" in l]
        assert len(lines) == 1 and lines[0].endswith(
            "qubes-lite-init: No VM secret: fw_cfg file opt/qubes-lite/secret: the VMM gave no "
            "such file; the guest agent will refuse every connection"), lines
        assert "every connection will be refused" in text, vm.tail()
        for word, report in BAD.items():
            lines = [l for l in text.splitlines() if report in l]
            assert len(lines) == 1, f"{word}: {lines}\n{vm.tail()}"
            assert lines[0].startswith("qubes-lite-init: "), lines[0]
        vm.qmp("system_powerdown")
        assert vm.wait_exit() == 0, vm.tail()
        assert not PANIC.search(vm.text()), vm.tail()
    finally:
        vm.kill()
