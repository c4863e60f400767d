"""qubes-lite-generator's units under a live systemd: Debian's systemd as
PID 1 of a fresh pid, mount, net, uts, ipc and cgroup namespace, the
programs installed (`make install`) in that namespace's /usr/local, the
generator in /run/systemd/system-generators, and /etc/qubes-lite (a
private overlay of /etc) holding one qemu VM on a vmNetwork. The tests
share that one manager and drive it as a user would, through nsenter:
vm-run on the idle socket starts the VM's service after its network's
switch, vm-stop ends it and the socket takes the next client, and the
host agent's records are in the journal with the VM's name."""
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from qltest import BUILD, ROOT, SANITIZED, KeptOnFailure
from qltest.procs import children_of, wait_for
from qltest.vmm import qemu_image

VM = "test"
NET = "lan"
SOCKET = f"qubes-lite-{VM}.socket"
SERVICE = f"qubes-lite-{VM}-vm.service"
SWITCH = f"vm-switch-{NET}.service"

# Inside the new namespaces, as their PID 1's parent: the tree made
# private, the installed programs over /usr/local, the configuration in
# /etc/qubes-lite (an overlay keeps the machine's /etc untouched), /run
# and /tmp private, then systemd in our place.
INNER = """#!/bin/sh
set -e
top=$1
mount --make-rprivate /
mount --bind "$top/root/usr/local" /usr/local
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$top/etc-upper,workdir=$top/etc-work" /etc
mkdir -p /etc/qubes-lite
mount --bind "$top/etc" /etc/qubes-lite
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/lock /run/systemd/system /run/systemd/system-generators
ln -s /usr/local/lib/systemd/system-generators/qubes-lite-generator \
    /run/systemd/system-generators/qubes-lite-generator
export container=qltest
exec /lib/systemd/systemd --unit=basic.target
"""


class Manager:
    """systemd as PID 1 of its own namespaces; run() runs a command in
    all of them."""

    def __init__(self, top):
        self.top = top
        self.log = open(os.path.join(top, "systemd.log"), "wb")
        inner = os.path.join(top, "inner.sh")
        with open(inner, "w") as f:
            f.write(INNER)
        os.chmod(inner, 0o755)
        self.outer = subprocess.Popen(
            ["unshare", "-pmfnuiC", "--mount-proc", "--kill-child", inner, top],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        self.pid = None
        try:
            wait_for(self._find_pid, timeout=10, what="systemd to start")
            wait_for(lambda: self.run("systemctl", "is-system-running").stdout.strip()
                     in ("running", "degraded"), timeout=30, what="systemd to be running")
        except BaseException:
            self.stop()
            raise

    def _find_pid(self):
        if self.outer.poll() is not None:
            raise AssertionError(f"unshare exited with {self.outer.returncode}: "
                                 + open(self.log.name, errors="replace").read())
        kids = children_of(self.outer.pid)
        if kids:
            self.pid = kids[0]
            with open(f"/proc/{self.pid}/comm") as f:
                return f.read().strip() == "systemd"
        return False

    def run(self, *argv, timeout=60, check=False):
        p = subprocess.run(["nsenter", "-t", str(self.pid), "-a", *argv],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                                 "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"})
        assert not check or p.returncode == 0, (argv, p.returncode, p.stdout, p.stderr)
        return p

    def show(self, unit, prop):
        return self.run("systemctl", "show", "-P", prop, unit, check=True).stdout.strip()

    def journal(self, *args):
        return self.run("journalctl", "--no-pager", *args).stdout

    def stop(self):
        # SIGKILL to PID 1 ends the whole pid namespace: the VM with it.
        if self.pid is not None:
            os.kill(self.pid, signal.SIGKILL)
        try:
            self.outer.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.outer.kill()
            self.outer.wait()
        self.log.close()


def install(dest):
    args = ["make", "--no-print-directory", "-C", ROOT, "install", f"DESTDIR={dest}",
            "PREFIX=/usr/local", f"BUILD={BUILD}"]
    if SANITIZED:
        args.append("SAN=1")
    p = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.fixture(scope="module")
def systemd(request):
    if os.geteuid() != 0:
        pytest.skip("systemd as PID 1 of new namespaces needs root")
    if not os.access("/lib/systemd/systemd", os.X_OK) or not shutil.which("nsenter"):
        pytest.skip("needs systemd (/lib/systemd/systemd) and nsenter")
    img = qemu_image()
    kept = KeptOnFailure(request, "qlsd-", "systemd units", dir=os.path.join(BUILD))
    top = kept.path
    os.chmod(top, 0o755)
    for d in ("etc/vms", "etc-upper", "etc-work"):
        os.makedirs(os.path.join(top, d))
    install(os.path.join(top, "root"))
    with open(os.path.join(top, "etc", "host.json"), "w") as f:
        json.dump({"user": "daemon", "vmm": "qemu"}, f)
    with open(os.path.join(top, "etc", "vms", f"{VM}.json"), "w") as f:
        json.dump({"id": 3, "name": VM, "kernel": img.vmlinux, "initramfs": img.initrd,
                   "gpu": False, "memory": 256, "cpus": 1,
                   "vmNetwork": {NET: {"router": True}}}, f)
    m = Manager(top)
    ok = False
    try:
        yield m
        ok = True
    finally:
        if not ok or request.session.testsfailed != kept.failed_before:
            with open(os.path.join(top, "journal.txt"), "w") as f:
                f.write(m.journal("-o", "short-monotonic"))
        m.stop()
        kept.finish(ok)


def unit_files(m):
    out = m.run("systemctl", "list-unit-files", "--no-legend", "qubes-lite-*", "vm-switch-*",
                check=True).stdout
    return {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip()}


def test_units_are_generated_and_the_socket_listens(systemd):
    files = unit_files(systemd)
    assert set(files) == {SOCKET, SERVICE, SWITCH}, files
    assert files[SOCKET] == "generated", files
    assert systemd.show(SOCKET, "ActiveState") == "active"
    assert systemd.show(SOCKET, "SubState") == "listening"
    assert systemd.show(SOCKET, "Listen") == f"/run/qubes-lite/{VM}.sock (Stream)"
    assert systemd.show(SERVICE, "ActiveState") == "inactive"
    # The generator had nothing to complain about.
    assert "qubes-lite-generator" not in systemd.journal("-b"), systemd.journal("-b")


def vm_run(m, *argv, timeout=180):
    return m.run("vm-run", VM, *argv, timeout=timeout)


def test_vm_run_starts_the_vm_after_its_switch(systemd):
    t0 = time.monotonic()
    p = vm_run(systemd, "echo", "hi")
    assert (p.returncode, p.stdout) == (0, "hi\n"), p.stderr
    print(f"vm-run on the idle socket: {time.monotonic() - t0:.1f} s")
    # The VM runs on: its host agent is the service, active and running.
    assert systemd.show(SERVICE, "ActiveState") == "active"
    assert systemd.show(SERVICE, "SubState") == "running"
    assert systemd.show(SOCKET, "SubState") == "running"
    # The network's switch came up before the VM's service, pulled in by it.
    assert systemd.show(SWITCH, "ActiveState") == "active"
    switch_up = int(systemd.show(SWITCH, "ActiveEnterTimestampMonotonic"))
    vm_starting = int(systemd.show(SERVICE, "InactiveExitTimestampMonotonic"))
    assert 0 < switch_up <= vm_starting, (switch_up, vm_starting)
    assert SWITCH in systemd.show(SERVICE, "After").split()
    assert SWITCH in systemd.show(SERVICE, "Wants").split()
    # A second command goes to the same VM.
    p = vm_run(systemd, "cat", "/proc/sys/kernel/hostname")
    assert p.returncode == 0, p.stderr
    assert systemd.show(SERVICE, "NRestarts") == "0"


def test_vm_stop_ends_the_service_and_the_socket_takes_the_next(systemd):
    if systemd.show(SERVICE, "ActiveState") != "active":
        assert vm_run(systemd, "true").returncode == 0
    p = systemd.run("vm-stop", VM, timeout=120)
    assert p.returncode == 0, (p.stdout, p.stderr)
    # The agent exits 0 once its VM has stopped: inactive, not failed.
    wait_for(lambda: systemd.show(SERVICE, "ActiveState") == "inactive", timeout=60,
             what="the VM's service to end")
    assert systemd.show(SERVICE, "Result") == "success"
    assert systemd.show(SERVICE, "ExecMainStatus") == "0"
    assert systemd.show(SOCKET, "SubState") == "listening"
    assert not systemd.run("pgrep", "-x", "qemu-system-x86").stdout
    # The next client starts a fresh agent and VM.
    p = vm_run(systemd, "echo", "again")
    assert (p.returncode, p.stdout) == (0, "again\n"), p.stderr
    assert systemd.show(SERVICE, "ActiveState") == "active"


def test_the_host_agents_records_carry_the_vm_name(systemd):
    if systemd.show(SERVICE, "InactiveExitTimestampMonotonic") == "0":
        assert vm_run(systemd, "true").returncode == 0
    records = [json.loads(line) for line in
               systemd.journal("-o", "json", f"QUBES_LITE_VM={VM}").splitlines() if line]
    assert records, systemd.journal("-u", SERVICE)
    units = {r.get("_SYSTEMD_UNIT") for r in records}
    assert SERVICE in units, units
    texts = [r["MESSAGE"] for r in records if r.get("_SYSTEMD_UNIT") == SERVICE]
    assert any("started" in t and "qemu" in t for t in texts), texts
