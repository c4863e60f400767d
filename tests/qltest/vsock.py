"""qubes-lite-vsock for the tests: the device on a directory's sockets, a
host program's connection through it, and a qemu guest whose
vhost-user-vsock device it is, with the real agents on both sides.

    dev = Device(tmp)                  tmp/vhost.sock (the frontend's), tmp/vsock.sock (PATH),
                                       sandboxed (sandbox=False: --no-sandbox)
    s = dev.client(5200, b"early")     a host program: its CONNECT line sent, nothing read
    s, port = dev.connect(5200)        ... and the device's "OK <port>" line read
    dev.stop()                         SIGTERM: exit 0 and no sanitizer report, or it fails

    vm = VsockGuest(workdir, secret=s) secret: the VM's (32 bytes), or None: none asked
    vm.boot(kern, vm.image(kern))      the device, the guest with it, the guest agent in it
    vm.start_host_agent()              vm.host: a qltest.host.HostStack on hvsock:PATH:5200
    vm.host.vm_run("test", "true")
    failures = vm.stop()

    parts, why = ssh_image_parts(keydir)   binaries and files for vm.image(): an sshd
    vm.start_sshd()                    ... on the guest's vsock port 22 (socat, sshd -i)

qemu 7.2's vhost-user-vsock sets itself up only when its chardev is
connected, and never again after: the guest starts paused (-S) with the
chardev on `reconnect=1`, the device is added over QMP once the chardev
has connected, then the guest runs. After the device is killed and
started again, `device_del` and add_device() attach the new one.

With a secret, it reaches the guest as the host agent hands it to its
VMM, as qemu's `-fw_cfg name=opt/qubes-lite/secret,file=FILE`, and the
guest agent reads it there itself (`--secret-fw-cfg`); the host agent
finds it where it keeps a VM's secret, RUNTIME_DIR/<vm>.secret.
"""
import os
import re
import socket
import subprocess

from qltest import BUILD, initramfs, program, qemu, sanitizer_reports
from qltest.host import VM, VM_ID, HostStack
from qltest.procs import Daemon, children_of, pid_alive, wait_for

# The test build of the device: on SIGUSR2 it makes a call its filter forbids.
HOOKED = os.path.join(BUILD, "tests", "switch", "qubes-lite-vsock")
# The VM's id is its CID; the guest agent listens on its vsock port.
GUEST_CID = VM_ID
AGENT_PORT = 5200
FW_CFG_SECRET = "opt/qubes-lite/secret"
# The guest's side: its own virtio vsock driver on a PCI device.
MODULES = ["virtio_pci", "vsock", "vmw_vsock_virtio_transport"]
OK_LINE = re.compile(rb"OK (\d+)\n")


def read_line(s):
    """Bytes from s up to and with the first newline, or what came before
    the end."""
    line = b""
    while not line.endswith(b"\n"):
        c = s.recv(1)
        if not c:
            break
        line += c
    return line


class Device(Daemon):
    """qubes-lite-vsock (debug log) for guest CID cid on workdir/vhost.sock
    and workdir/vsock.sock, in its sandbox or with --no-sandbox; its log is
    workdir/device.N.log, one per start. Ready once it logs Serving.
    binary: another build of it (the test build with its hook, HOOKED);
    user: a uid to start it as (as systemd's User= would)."""

    def __init__(self, workdir, *extra, cid=GUEST_CID, sandbox=True, binary=None, user=None):
        self.vhost = os.path.join(workdir, "vhost.sock")
        self.path = os.path.join(workdir, "vsock.sock")
        self.sandbox = sandbox
        n = sum(1 for f in os.listdir(workdir) if f.startswith("device."))
        super().__init__("qubes-lite-vsock", [
            binary or program("qubes-lite-vsock"), "--socket", self.vhost,
            "--uds-path", self.path, "--guest-cid", str(cid), "--log-level", "debug",
            *([] if sandbox else ["--no-sandbox"]), *extra],
            os.path.join(workdir, f"device.{n}.log"), "Serving", user=user)
        self.killed = False

    @property
    def main_pid(self):
        """The device itself: sandboxed, the supervisor's one child (PID 1
        of its own namespace); otherwise the process started."""
        if not self.sandbox:
            return self.pid
        kids = children_of(self.pid)
        assert len(kids) == 1, f"the supervisor's children: {kids}"
        return kids[0]

    def kill(self):
        """SIGKILL (by pid), as a crash would end it: its sockets stay.
        Sandboxed, that is the supervisor's; the device, its child, is
        killed by the kernel as its parent goes (PR_SET_PDEATHSIG), a
        moment later: the sockets are left once it is gone too."""
        device = self.main_pid if self.sandbox and self.proc.poll() is None else None
        self.proc.kill()
        self.proc.wait()
        self.killed = True
        if device is not None:
            wait_for(lambda: not pid_alive(device), timeout=30,
                     what="the sandboxed device killed with its supervisor")
        self.stop(check=False)

    def client(self, port, data=b"", timeout=10):
        """A host program's connection to the guest's port: the CONNECT
        line (and data) sent, nothing read yet."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(self.path)
        s.sendall(b"CONNECT %d\n" % port + data)
        return s

    def connect(self, port=AGENT_PORT, timeout=30):
        """(socket, the host port the guest sees) past the device's OK line;
        AssertionError when the device refused."""
        s = self.client(port, timeout=timeout)
        line = read_line(s)
        m = OK_LINE.fullmatch(line)
        if not m:
            s.close()
        assert m, f"the device answered {line!r}"
        return s, int(m.group(1))


# An sshd for the guest: what it takes from the host, and its settings.
SSH_PEERS = {"sshd": "/usr/sbin/sshd", "ssh": "/usr/bin/ssh", "socat": "/usr/bin/socat",
             "ssh-keygen": "/usr/bin/ssh-keygen", "ssh-agent": "/usr/bin/ssh-agent",
             "ssh-add": "/usr/bin/ssh-add"}
SSHD_CONFIG = """HostKey /etc/ssh/host_ed25519
AuthorizedKeysFile /etc/ssh/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PidFile none
UseDNS no
"""


def ssh_image_parts(keydir):
    """(binaries, files, the client's key) that give a VsockGuest image an
    sshd taking that key for root, keys made in keydir; None (and the
    reason) when openssh or socat is missing here."""
    absent = [p for p in SSH_PEERS.values() if not os.access(p, os.X_OK)]
    if absent:
        return None, f"openssh-server, openssh-client and socat needed: {', '.join(absent)}"
    keys = {}
    for name in ("host_ed25519", "id_ed25519"):
        keys[name] = os.path.join(keydir, name)
        subprocess.run([SSH_PEERS["ssh-keygen"], "-q", "-t", "ed25519", "-N", "", "-C",
                        "ql-test", "-f", keys[name]], check=True, capture_output=True,
                       timeout=60)
    files = {
        "/etc/passwd": (initramfs.PASSWD + "sshd:x:100:65534::/run/sshd:/bin/false\n").encode(),
        "/etc/ssh/sshd_config": SSHD_CONFIG.encode(),
        "/etc/ssh/host_ed25519": keys["host_ed25519"],
        "/etc/ssh/authorized_keys": keys["id_ed25519"] + ".pub",
    }
    return ([SSH_PEERS["sshd"], SSH_PEERS["socat"]], files, keys["id_ed25519"]), None


class VsockGuest:
    """A guest (qemu.Guest, 256 MiB) whose vsock device is qubes-lite-vsock
    (sandboxed unless sandbox=False), the guest agent inside on AGENT_PORT
    (without --allow-local-cid: it accepts CID 2 from a reserved port
    only), and on request the host agent outside reaching it through the
    device. Everything lives in workdir, which should be short (unix
    socket paths) and open to others (0755: a test opens PATH to uid
    65534)."""

    def __init__(self, workdir, sandbox=True, secret=None):
        self.dir = workdir
        self.sandbox = sandbox
        self.secret = secret
        self.qmp_path = os.path.join(workdir, "qmp.sock")
        self.devices = []      # every device started, the killed ones too
        self.guest = None
        self.qmp = None
        self.host = None

    @property
    def device(self):
        return self.devices[-1] if self.devices else None

    @property
    def path(self):
        """The device's unix socket for host programs (PATH)."""
        return os.path.join(self.dir, "vsock.sock")

    def image(self, kern, modules=(), files=None, binaries=()):
        """The guest's initramfs: guest-ctl.sh as /test.sh, vmhelper, the
        guest agent and binaries, MODULES and modules; files as
        initramfs.build takes them."""
        out = os.path.join(self.dir, "guest.cpio.gz")
        initramfs.build(out, kern, qemu.GUEST_CTL,
                        [initramfs.vmhelper(), program("qubes-lite-guest-agent"), *binaries],
                        modules=[*MODULES, *modules], files=files)
        return out

    def start_sshd(self):
        """sshd in the guest (an image with ssh_image_parts()'), started by
        socat per connection on vsock port 22, as tests/vm/guest-ssh.sh
        does (sshd cannot listen on vsock itself)."""
        self.guest.check("mkdir -p /run/sshd && chmod 755 /run/sshd && "
                         "(socat VSOCK-LISTEN:22,reuseaddr,fork "
                         "EXEC:'/bin/sshd -i -e -f /etc/ssh/sshd_config' "
                         "2>/tmp/sshd.log &)")

        def listening():
            try:
                self.hvsock(22)[0].close()
                return True
            except (AssertionError, OSError):
                return False
        wait_for(listening, timeout=30, interval=0.2, what="socat on the guest's vsock port 22")

    def start_device(self):
        self.devices.append(Device(self.dir, sandbox=self.sandbox))
        return self.device

    def add_device(self):
        self.qmp.device_add(driver="vhost-user-vsock-pci", chardev="vs", id="vsock0")

    def boot(self, kern, initrd, extra=(), timeout=None):
        """The device, then the guest with the device attached over QMP,
        then the guest agent in it, answering through the device.
        extra: more qemu options."""
        vhost = self.start_device().vhost
        secret_args = "--no-secret"
        if self.secret is not None:
            path = self.write_secret(os.path.join(self.dir, "fw_cfg.secret"))
            extra = ["-fw_cfg", f"name={FW_CFG_SECRET},file={path}", *extra]
            secret_args = "--secret-fw-cfg"
        self.guest = qemu.Guest("guest", kern.vmlinux, initrd, self.dir, memory=256, extra=[
            "-S", "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
            "-chardev", f"socket,id=vs,path={vhost},reconnect=1", *extra])
        self.guest.start()
        self.qmp = qemu.Qmp(self.qmp_path)
        self.add_device()
        self.qmp.cmd("cont")
        self.guest.wait_ready(timeout or float(os.environ.get("QL_VM_TIMEOUT", "120")))
        self.guest.check(f"qubes-lite-guest-agent --listen vsock::{AGENT_PORT} --kill-grace 2 "
                         f"{secret_args} --log-level debug >/tmp/guest-agent.log 2>&1 &")

        def answers():
            try:
                self.hvsock()[0].close()
                return True
            except (AssertionError, OSError):
                return False
        wait_for(answers, timeout=30, interval=0.2, what="the guest agent through the device")

    def start_host_agent(self):
        """The host agent (--no-vmm) for VM "test" with --guest
        hvsock:PATH:AGENT_PORT, configured user root; vm-run through it."""
        if self.secret is not None:
            run = os.path.join(self.dir, "run")
            os.makedirs(run, mode=0o700, exist_ok=True)
            self.write_secret(os.path.join(run, f"{VM}.secret"))
        self.host = HostStack(user="root", start_guest=False, vm=VM, base=self.dir,
                              guest_addr=f"hvsock:{self.path}:{AGENT_PORT}")
        return self.host

    def write_secret(self, path):
        """The secret in a new file at path, 0600; returns path."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.secret)
        return path

    def hvsock(self, port=AGENT_PORT):
        """A host program's connection to the guest's port: (socket, host port)."""
        return self.device.connect(port)

    def stop(self):
        """Stops everything by pid; returns what went wrong (a daemon that
        did not exit 0 on SIGTERM, a sanitizer report in any device's log)."""
        failures = []
        if self.host is not None:
            failures += self.host.stop_processes(self.host.host)
        for d in self.devices:
            try:
                d.stop(check=not d.killed)
            except AssertionError as e:
                failures.append(str(e))
            if d.killed and sanitizer_reports(d.log_text()):
                failures.append(f"{d.log_path}: sanitizer report:\n{d.log_text()[-4000:]}")
        if self.guest is not None:
            self.guest.stop()
        if self.qmp is not None:
            self.qmp.close()
        return failures
