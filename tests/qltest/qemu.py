"""Boots throw-away qemu TCG guests.

    cd tests && python3 -m qltest.qemu VMLINUX INITRD [TIMEOUT]
    cd tests && python3 -m qltest.qemu --shell VMLINUX INITRD
        the same guest on this terminal; after /test.sh it leaves a shell
        (`poweroff -f` or Ctrl-A X ends it)

guest_kernel() is the one check of whether a guest can run here (qemu,
busybox-static for the initramfs, the Debian kernel package): it returns
the kernel or raises Unavailable with the reason.

run(): the guest has no network device and no disk: the kernel (a PVH
vmlinux), the initramfs and the serial console are all it gets. Its /init
is expected to power off; if it has not within `timeout` seconds qemu is
killed (by its pid) and the result says so.

Guest: a guest that runs while the caller drives it. Its memory is a
shared memfd (what a vhost-user backend maps), it has one virtio-net NIC
per vhost-user socket given (qemu connects as the frontend and reconnects
every second when the backend goes away), the kernel console goes to a
log file, and a second serial port carries commands to guest-ctl.sh (the
guest's /test.sh) and their output back; net_image() builds its initramfs.

Qmp: qemu's monitor protocol on a unix socket (`-qmp unix:PATH,server=on,
wait=off`): commands, their answers, and waiting for an event.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time

import mkimage
from qltest import TESTS, initramfs
from qltest.procs import tail

GUEST_CTL = os.path.join(TESTS, "vm", "guest-ctl.sh")
PING_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) packets received")


class Unavailable(Exception):
    """A guest cannot run here: qemu, busybox-static or the kernel is missing."""


class QemuUnavailable(Exception):
    pass


class Result:
    def __init__(self, output, returncode, timed_out, wall):
        self.output = output          # serial console text, "\r\n" folded to "\n"
        self.returncode = returncode  # qemu's (None if killed on timeout)
        self.timed_out = timed_out
        self.wall = wall              # seconds from spawn to exit

    def lines(self):
        return self.output.splitlines()


def qemu_binary():
    q = shutil.which("qemu-system-x86_64")
    if not q:
        raise QemuUnavailable("qemu-system-x86_64 not found (apt-get install qemu-system-x86)")
    return q


def guest_kernel():
    """The kernel to boot, once qemu and a static busybox are known to be
    there; Unavailable with the reason otherwise."""
    try:
        qemu_binary()
        initramfs.static_busybox()
        return mkimage.ensure_kernel()
    except (QemuUnavailable, mkimage.ImageError) as e:
        raise Unavailable(f"VM tests need qemu, busybox-static and the Debian kernel: {e}")


def guest_kernel_or_skip():
    """guest_kernel() for a test: skipped, with the reason, where no guest
    can run."""
    import pytest
    try:
        return guest_kernel()
    except Unavailable as e:
        pytest.skip(str(e))


def net_image(kern, out):
    """The initramfs of a Guest: guest-ctl.sh as /test.sh, virtio-net."""
    initramfs.build(out, kern, GUEST_CTL, modules=initramfs.NET_MODULES)
    return out


def ping_counts(out):
    """(transmitted, received) from busybox ping's summary; None without one."""
    m = PING_SUMMARY.search(out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def command(vmlinux, initrd, append="", memory=512, extra=()):
    return [qemu_binary(), "-accel", "tcg", "-M", "pc", "-cpu", "max",
            "-m", str(memory), "-smp", "1", "-nodefaults", "-no-user-config",
            "-display", "none", "-serial", "stdio", "-no-reboot", *extra,
            "-kernel", vmlinux, "-initrd", initrd,
            # no_timer_check, as the host agent writes it: a TCG guest on a
            # loaded machine may panic in its IO-APIC timer check.
            "-append", ("console=ttyS0 panic=-1 quiet no_timer_check " + append).strip()]


def run(vmlinux, initrd, timeout=120, append="", memory=512, log=None):
    """Boots, waits for power-off or the timeout, returns a Result.

    log: a path that receives the raw console output as well.
    """
    cmd = command(vmlinux, initrd, append, memory)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    timed_out = False
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.kill()                    # this qemu only, by its pid
        out, _ = proc.communicate()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    wall = time.monotonic() - t0
    text = out.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "")
    if log:
        tmp = f"{log}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, log)
    return Result(text, None if timed_out else proc.returncode, timed_out, wall)


class GuestError(Exception):
    pass


def vhost_user_nic(index, sock, mac):
    """qemu options of one virtio-net NIC backed by the vhost-user socket
    sock. vectors=0: legacy interrupts, since qemu 7.2 under TCG crashes in
    vhost_net_start when the guest enables MSI-X. reconnect=1: when the
    backend goes away, qemu tries the socket again every second and
    restarts the device on the new connection."""
    return ["-chardev", f"socket,id=vu{index},path={sock},reconnect=1",
            "-netdev", f"vhost-user,chardev=vu{index},id=net{index}",
            "-device", f"virtio-net-pci,netdev=net{index},mac={mac},vectors=0"]


class Guest:
    """One guest booted in the background and driven over its second serial
    port; see the module's docstring. nics: [(vhost-user socket, mac)]."""

    def __init__(self, name, vmlinux, initrd, workdir, nics=(), memory=256, append="",
                 extra=()):
        """extra: more qemu options (devices, -S, -qmp)."""
        self.name = name
        self.console = os.path.join(workdir, f"{name}.console.log")
        self.ctl_path = os.path.join(workdir, f"{name}.ctl")
        options = ["-object", f"memory-backend-memfd,id=mem,size={memory}M,share=on",
                 "-numa", "node,memdev=mem",
                 "-chardev", f"socket,id=ctl,path={self.ctl_path},server=on,wait=off",
                 "-serial", "chardev:ctl"]
        for i, (sock, mac) in enumerate(nics):
            options += vhost_user_nic(i, sock, mac)
        self.argv = command(vmlinux, initrd, append, memory, [*options, *extra])
        self.proc = None
        self.sock = None
        self.lines = []               # everything read from the control port
        self.cond = threading.Condition()
        self.eof = False
        self.next_id = 1
        self.t0 = None

    def start(self):
        if os.path.exists(self.ctl_path):
            os.unlink(self.ctl_path)
        self.t0 = time.monotonic()
        with open(self.console, "wb") as f:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=f,
                                         stderr=subprocess.STDOUT)
        # At once: what the guest writes to the port while no one is
        # connected is lost (its ready line among it).
        self._connect(time.monotonic() + 30)
        return self

    def _connect(self, deadline):
        while True:
            if self.proc.poll() is not None:
                raise GuestError(f"{self.name}: qemu exited {self.proc.returncode}: "
                                 + self.console_tail())
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(self.ctl_path)
                break
            except OSError:
                s.close()
            if time.monotonic() > deadline:
                raise GuestError(f"{self.name}: no control socket {self.ctl_path}")
            time.sleep(0.05)
        self.sock = s
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self):
        buf = b""
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                with self.cond:
                    self.eof = True
                    self.cond.notify_all()
                return
            buf += data
            *done, buf = buf.split(b"\n")
            with self.cond:
                self.lines += [l.decode("utf-8", "replace").rstrip("\r") for l in done]
                self.cond.notify_all()

    def _wait_line(self, pred, deadline, what):
        with self.cond:
            while True:
                for i, l in enumerate(self.lines):
                    if pred(l):
                        return i
                left = deadline - time.monotonic()
                if left <= 0 or self.eof or self.proc.poll() is not None:
                    state = ("qemu exited" if self.proc.poll() is not None else
                             "control port closed" if self.eof else "timed out")
                    raise GuestError(f"{self.name}: {what}: {state}\n" + self.console_tail())
                self.cond.wait(min(left, 0.2))

    def wait_ready(self, timeout=120):
        """Waits until guest-ctl.sh runs; returns the seconds since start."""
        deadline = time.monotonic() + timeout
        self._wait_line(lambda l: l == "QL-CTL-READY", deadline, "waiting for the guest")
        return time.monotonic() - self.t0

    def send(self, cmd):
        """Starts cmd (one line of sh) in the guest; returns its id for wait()."""
        if "\n" in cmd:
            raise ValueError("one line only")
        i = str(self.next_id)
        self.next_id += 1
        self.sock.sendall(f"{i} {cmd}\n".encode())
        return i

    def wait(self, i, timeout=60):
        """(exit status, output) of the command with id i."""
        rc_prefix, out_prefix = f"QL-RC {i} ", f"QL-OUT {i} "
        k = self._wait_line(lambda l: l.startswith(rc_prefix), time.monotonic() + timeout,
                            f"command {i}")
        with self.cond:
            out = [l[len(out_prefix):] for l in self.lines[:k] if l.startswith(out_prefix)]
            rc = int(self.lines[k][len(rc_prefix):])
            self.lines = [l for l in self.lines[:k]
                          if not l.startswith(out_prefix)] + self.lines[k + 1:]
        return rc, "\n".join(out)

    def sh(self, cmd, timeout=60):
        return self.wait(self.send(cmd), timeout)

    def check(self, cmd, timeout=60):
        """Output of cmd; GuestError when it fails."""
        rc, out = self.sh(cmd, timeout)
        if rc != 0:
            raise GuestError(f"{self.name}: `{cmd}` exited {rc}:\n{out}")
        return out

    def wait_reachable(self, addr, tries=20):
        """Pings addr once a second until it answers (the first probe pays
        for ARP): the number of failed probes, or None if it never did."""
        rc, out = self.sh(f"i=0; while ! ping -c 1 -W 1 {addr} >/dev/null; do i=$((i+1)); "
                          f"[ $i -ge {tries} ] && exit 1; done; echo $i", timeout=tries * 3 + 30)
        return int(out.strip().splitlines()[-1]) if rc == 0 else None

    def console_tail(self, n=30):
        return tail(self.console, n)

    def stop(self, timeout=10):
        """Asks the guest to power off; kills this qemu (by its pid) if it
        has not within timeout. Returns qemu's exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None and self.sock is not None:
            try:
                self.send("quit")
                self.proc.wait(timeout)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.sock is not None:
            self.sock.close()
        return self.proc.returncode


class Qmp:
    """Just enough QMP: commands, and waiting for an event. Connects to
    qemu's -qmp socket (again until qemu has made it) and leaves the
    capabilities negotiation behind."""

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
        """Runs a command; returns qemu's answer ({"return": ...} or
        {"error": ...}). Events that come first are kept for wait_event()."""
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

    def device_add(self, timeout=30, **props):
        """device_add, again until qemu takes it (a vhost-user device is
        refused until its chardev has connected)."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.cmd("device_add", **props)
            if "error" not in r:
                return
            if time.monotonic() > deadline:
                raise GuestError(f"device_add {props}: {r['error']['desc']}")
            time.sleep(0.2)

    def close(self):
        self.f.close()
        self.sock.close()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--shell":
        os.execv(qemu_binary(), command(sys.argv[2], sys.argv[3], "ql.shell"))
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    r = run(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 120)
    sys.stdout.write(r.output)
    print(f"[qltest.qemu: rc={r.returncode} timed_out={r.timed_out} wall={r.wall:.1f}s]")
    sys.exit(1 if r.timed_out or r.returncode else 0)
