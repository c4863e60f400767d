"""qubes-lite-vsock for the tests: the device on a directory's sockets,
and a host program's connection through it.

    dev = Device(tmp)                  tmp/vhost.sock (the frontend's), tmp/vsock.sock (PATH)
    s = dev.client(5200, b"early")     a host program: its CONNECT line sent, nothing read
    s, port = dev.connect(5200)        ... and the device's "OK <port>" line read
    dev.stop()                         SIGTERM: exit 0 and no sanitizer report, or it fails
"""
import os
import re
import socket

from qltest import program
from qltest.host import VM_ID
from qltest.procs import Daemon

# The VM's id is its CID; the guest agent listens on its vsock port.
GUEST_CID = VM_ID
AGENT_PORT = 5200
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
    """qubes-lite-vsock (--no-sandbox, debug log) for guest CID cid on
    workdir/vhost.sock and workdir/vsock.sock; its log is
    workdir/device.N.log, one per start. Ready once it logs Serving."""

    def __init__(self, workdir, *extra, cid=GUEST_CID):
        self.vhost = os.path.join(workdir, "vhost.sock")
        self.path = os.path.join(workdir, "vsock.sock")
        n = sum(1 for f in os.listdir(workdir) if f.startswith("device."))
        super().__init__("qubes-lite-vsock", [
            program("qubes-lite-vsock"), "--socket", self.vhost, "--uds-path", self.path,
            "--guest-cid", str(cid), "--log-level", "debug", "--no-sandbox", *extra],
            os.path.join(workdir, f"device.{n}.log"), "Serving")
        self.killed = False

    def kill(self):
        """SIGKILL (by pid), as a crash would end it: its sockets stay."""
        self.proc.kill()
        self.proc.wait()
        self.killed = True
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
