"""Fixtures for the host agent supervising a VMM: the real host agent, the
crosvm stand-in (tests/helpers/crosvm-standin.c, the one stand-in the
tests use: crosvm is not packaged here) and, started by the stand-in, the
real guest agent.

`vmm_stack(vm={...}, agent_args=[...], standin={...})` builds a VmmStack in
a fresh temporary directory:

    etc/host.json, etc/vms/test.json   (kernel set, so that it can start)
    run/test.sock                      the host agent's socket (--listen)
    run/test.console, run/test.crosvm.sock   while the VMM runs
    guest.sock                         the guest agent, started by the stand-in
    notify.sock                        NOTIFY_SOCKET, read by the test
    argv, standin.pid                  what the stand-in records
    fds, environ                       the stand-in's open fds and environment

and starts the host agent (without --no-vmm). On teardown the host agent
is stopped (SIGTERM stops the VM) and must exit 0 without a sanitizer
report; a stand-in still running after that fails the test.

`vmm_stack(vmm="qemu", guest={...})` is the same stack with a real VM:
host.json says "vmm": "qemu", the VM boots the guest image under qemu
(TCG here), its vsock device is qubes-lite-vsock started by the host
agent, which reaches the guest agent at its default hvsock address. The
image (`qemu_image()`, built once per run into $BUILD/qemu-vm) is `make
image`'s with a poweroff command that a VM's kernel command line can turn
off; `guest` asks the VM to misbehave as `standin` asks the stand-in:

    ignore_poweroff    the guest agent's Shutdown (and idle poweroff) do nothing
    ignore_powerdown   no ACPI power button: qemu's system_powerdown does nothing

`lifecycle_stack` is `vmm_stack` parametrised: each test that uses it runs
against the stand-in and against qemu.
"""
import os
import re
import signal
import socket
import struct
import subprocess
import time

import pytest

from qltest import BUILD, made, program, qlwire, qemu
from qltest.host import VM, StackDir
from qltest.procs import Daemon, pid_alive, wait_for

STANDIN = os.path.join(BUILD, "tests", "helpers", "crosvm-standin")
# The host agent gives the VMM a minimal environment: the stand-in's
# settings and the sanitizers' go through --vmm-env.
VMM_ENV_ARGS = ("--vmm-env", "QL_STANDIN_*", "--vmm-env", "ASAN_OPTIONS", "--vmm-env",
                "UBSAN_OPTIONS", "--vmm-env", "LSAN_OPTIONS")
KERNEL = "/boot/vmlinuz-standin"


# The test image's poweroff command: the image's own, unless the VM's
# kernel command line says to ignore it.
IGNORE_POWEROFF = "qltest.ignore_poweroff=1"
POWEROFF_SCRIPT = f"""case " $(cat /proc/cmdline) " in
*" {IGNORE_POWEROFF} "*) echo "qltest: ignoring poweroff as asked"; exit 0 ;;
esac
exec /sbin/poweroff
""".encode()
GUEST_PARAMS = {"ignore_poweroff": IGNORE_POWEROFF,
                # The image's init reads the power button of the ACPI
                # button driver; without the driver no button is pressed.
                "ignore_powerdown": "module_blacklist=button"}
_image = []


def qemu_image():
    """The test image (an mkimage.Image), built on first use; the test is
    skipped, with the reason, where qemu or the kernel cannot be had."""
    import mkimage
    if not _image:
        try:
            qemu.qemu_binary()
            mkimage.static_busybox()
            kernel = mkimage.ensure_kernel()
        except (qemu.QemuUnavailable, mkimage.ImageError) as e:
            _image.append(e)
        else:
            _image.append(mkimage.build_image(
                os.path.join(BUILD, "qemu-vm"), os.path.join(BUILD, "bin"), kernel,
                files={"/etc/qltest-poweroff": POWEROFF_SCRIPT},
                agent_args=["--poweroff-command", "/bin/sh /etc/qltest-poweroff"],
                compress="none"))
    if isinstance(_image[0], Exception):
        pytest.skip(f"a qemu VM needs qemu, busybox-static and the Debian kernel: {_image[0]}")
    return _image[0]


class VmmStack(StackDir):
    def __init__(self, vm=None, agent_args=(), standin=None, user="daemon", start=True,
                 vmm="standin", guest=None):
        self.vmm = vmm
        if vmm == "qemu":
            img = qemu_image()
            params = [GUEST_PARAMS[k] for k, v in (guest or {}).items() if v]
            vm = dict({"kernel": img.vmlinux, "initramfs": img.initrd, "gpu": False,
                       "memory": 256, "cpus": 1, "kernelParams": params}, **(vm or {}))
        elif not os.access(STANDIN, os.X_OK):
            raise FileNotFoundError(f"{STANDIN} not built (run make tests)")
        super().__init__("qlv-", user, dict({"kernel": KERNEL}, **(vm or {})))
        self.console_sock = os.path.join(self.run_dir, VM + ".console")
        self.control_sock = os.path.join(self.run_dir, VM + ".crosvm.sock")
        if vmm == "qemu":
            self.write_json("host.json", {"user": user, "vmm": "qemu"})
            self.control_sock = os.path.join(self.run_dir, VM + ".qmp.sock")
        self.argv_file = os.path.join(self.dir, "argv")
        self.pid_file = os.path.join(self.dir, "standin.pid")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify_path = os.path.join(self.dir, "notify.sock")
        self.notify.bind(self.notify_path)
        self.notify.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.notify.setblocking(False)
        self.notes = []
        self.env.pop("JOURNAL_STREAM", None)
        self.env.update({
            "QUBES_LITE_CROSVM": STANDIN,
            "QL_STANDIN_GUEST_AGENT": program("qubes-lite-guest-agent"),
            "QL_STANDIN_GUEST_SOCKET": self.guest_sock,
            "QL_STANDIN_ARGV": self.argv_file,
            "QL_STANDIN_PIDFILE": self.pid_file,
            "QL_STANDIN_FDS": os.path.join(self.dir, "fds"),
            "QL_STANDIN_ENVIRON": os.path.join(self.dir, "environ"),
            "QUBES_LITE_VSOCK": program("qubes-lite-vsock"),
        })
        for k, v in (standin or {}).items():
            self.env["QL_STANDIN_" + k.upper()] = str(v)
        self.agent_args = list(agent_args)
        self.host = None
        if start:
            self.start_agent()

    def agent_argv(self, *extra):
        return [program("qubes-lite-host-agent"), "--vm", VM, "--listen", "unix:" + self.sock,
                *self.guest_args(), "--log-level", "debug", *VMM_ENV_ARGS, *self.agent_args,
                *extra]

    def guest_args(self):
        """The host agent's --guest: the stand-in's guest agent's socket; none
        for qemu, whose guest agent is where the host agent says."""
        return ["--guest", "unix:" + self.guest_sock] if self.vmm == "standin" else []

    def start_agent(self, *extra):
        env = dict(self.env, NOTIFY_SOCKET=self.notify_path)
        self.host = Daemon("host agent", self.agent_argv(*extra),
                           os.path.join(self.dir, "host.log"), "serving", env=env)

    def log(self):
        return self.host.log_text()

    def notifications(self):
        """(sender pid, text) of every sd_notify message so far."""
        creds_size = struct.calcsize("3i")
        while True:
            try:
                data, anc, _, _ = self.notify.recvmsg(4096, socket.CMSG_SPACE(creds_size))
            except BlockingIOError:
                return self.notes
            pid = None
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", payload[:creds_size])[0]
            self.notes.append((pid, data.decode()))

    def standin_pid(self):
        with open(self.pid_file) as f:
            return int(f.read())

    def vmm_pids(self):
        """The pids of every VMM the host agent started so far, in order."""
        if self.vmm == "standin":
            return [self.standin_pid()] if os.path.exists(self.pid_file) else []
        log = os.path.join(self.dir, "host.log")
        if not os.path.exists(log):
            return []
        with open(log, errors="replace") as f:
            return [int(m) for m in re.findall(r"started \S*qemu-system-x86_64 \(pid (\d+)\)",
                                               f.read())]

    def vmm_pid(self):
        """The pid of the VMM the host agent started last."""
        pids = self.vmm_pids()
        assert pids, self.log()
        return pids[-1]

    def argv(self):
        with open(self.argv_file) as f:
            return f.read().splitlines()

    # ---- clients -----------------------------------------------------------

    def run_tool(self, name, *args, timeout=120, **kw):
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run([program(name), *[str(a) for a in args]], env=self.env,
                              timeout=timeout, text=True, **kw)

    def vm_run(self, *args, **kw):
        return self.run_tool("vm-run", *args, **kw)

    def popen(self, name, *args, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen([program(name), *[str(a) for a in args]], env=self.env, **kw)
        self.clients.append(p)
        return p

    def console(self, rows=0, cols=0, hello=True):
        c = qlwire.Conn.unix(self.console_sock, timeout=30)
        if hello:
            c.hello()
            c.send("console_attach", rows=rows, cols=cols)
        return c

    # ---- teardown ------------------------------------------------------------

    def wait_agent_exit(self, timeout=60):
        self.host.proc.wait(timeout=timeout)
        return self.host.proc.returncode

    def stop(self):
        errors = self.stop_processes(self.host)
        for pid in self.vmm_pids():
            try:
                wait_for(lambda: not pid_alive(pid), timeout=10, what="the VMM to exit")
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                errors.append(f"the VMM (pid {pid}) outlived the host agent")
        self.notify.close()
        self.finish(errors)


def console_read_until(conn, marker, timeout=30):
    """Reads console Data until marker is in it; returns the bytes."""
    out = bytearray()
    deadline = time.monotonic() + timeout
    while marker not in out:
        name, msg = conn.recv(timeout=max(0.01, deadline - time.monotonic()))
        assert name == "data", (name, msg)
        assert msg.stream == qlwire.pb.STREAM_STDOUT
        out.extend(msg.data)
    return bytes(out)


@pytest.fixture
def vmm_stack():
    """vmm_stack(vm={...}, agent_args=[...], standin={...}): a VmmStack."""
    yield from made(VmmStack)


@pytest.fixture(params=["standin", "qemu"])
def lifecycle_stack(request):
    """vmm_stack on the stand-in, then on qemu: lifecycle_stack(standin={...},
    guest={...}, ...) passes each VMM only its own misbehaviours."""
    kind = request.param

    def make_one(standin=None, guest=None, **kw):
        if kind == "standin":
            return VmmStack(standin=standin, **kw)
        return VmmStack(vmm="qemu", guest=guest, **kw)
    yield from made(make_one)
