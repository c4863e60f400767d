"""Only the host agent reaches a guest agent: the VM's secret.

A peer that passes the guest agent's peer check (here: a unix peer of an
allowed uid, as a host process with CAP_NET_BIND_SERVICE passes the vsock
one) but lacks the secret, or has a wrong one, is refused in its Hello;
the host agent, which made the secret and handed it to its VMM, is served.
"""
import os
import re
import stat
import subprocess

import pytest

from qltest import program, qlwire
from qltest.guest import without_port_access
from qltest.host import VM
from qltest.procs import wait_for
from qltest.qlwire import pb

SECRET_SIZE = 32


def write_secret(path, data=None, mode=0o600):
    data = os.urandom(SECRET_SIZE) if data is None else data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    return data


def hello(conn, secret):
    """Our Hello (with `secret` when not None) and the guest agent's."""
    fields = dict(major=qlwire.VERSION_MAJOR, minor=qlwire.VERSION_MINOR, software="test")
    if secret is not None:
        fields["secret"] = secret
    conn.send("hello", **fields)
    name, msg = conn.recv()
    assert name == "hello" and not msg.secret, (name, msg)


@pytest.fixture
def secret_agent(guest_agent, tmp_path):
    """A guest agent with --secret-file, and that secret."""
    path = str(tmp_path / "secret")
    secret = write_secret(path)
    return guest_agent("--secret-file", path), secret


@pytest.mark.parametrize("offered", ["none", "wrong", "short"])
def test_peer_without_the_secret_is_refused(secret_agent, offered):
    agent, secret = secret_agent
    c = agent.connect(hello=False)
    if offered == "short":
        # Not a secret at all: the validator refuses the frame.
        c.send("hello", major=qlwire.VERSION_MAJOR, minor=qlwire.VERSION_MINOR,
               secret=secret[:16])
        name, msg = c.recv()
        assert name == "hello"
        c.expect_error(pb.ERROR_INVALID)
        return
    wrong = bytes(b ^ 1 for b in secret) if offered == "wrong" else None
    hello(c, wrong)
    c.send("ping", nonce=7)
    c.expect_error(pb.ERROR_DENIED)
    log = agent.log_text()
    reason = "no secret" if offered == "none" else "a wrong secret"
    assert f"its Hello carries {reason} (1 refused so far)" in log, log
    # Never logged: not the one offered, not the right one.
    for s in (secret, wrong):
        if s:
            assert s.hex() not in log and s.hex().upper() not in log


def test_peer_with_the_secret_is_served_and_refusals_are_counted(secret_agent):
    agent, secret = secret_agent
    for _ in range(2):
        c = agent.connect(hello=False)
        hello(c, None)
        c.send("ping", nonce=1)
        c.expect_error(pb.ERROR_DENIED)
    c = agent.connect(hello=False)
    hello(c, secret)
    c.send("ping", nonce=42)
    name, msg = c.recv()
    assert name == "pong" and msg.nonce == 42
    assert "(2 refused so far)" in agent.log_text()
    # A handed-over connection: the host agent's Hello, then its client's
    # own (without a secret), then the request.
    c = agent.connect(hello=False)
    hello(c, secret)
    c.send_hello()
    out, err, exited, _ = agent_run(c, ["echo", "hi"])
    assert out == b"hi\n" and exited.code == 0
    # A third Hello is one too many.
    c = agent.connect(hello=False)
    hello(c, secret)
    c.send_hello()
    c.send_hello()
    c.expect_error(pb.ERROR_PROTOCOL)


def agent_run(conn, argv):
    conn.send("exec", argv=[a.encode() for a in argv])
    name, msg = conn.recv()
    assert name == "started", (name, msg)
    return conn.recv_until_exit()


def test_missing_secret_file_refuses_everyone(guest_agent, tmp_path):
    agent = guest_agent("--secret-file", str(tmp_path / "absent"))
    assert "every connection will be refused" in agent.log_text()
    c = agent.connect(hello=False)
    hello(c, os.urandom(SECRET_SIZE))
    c.send("ping", nonce=1)
    c.expect_error(pb.ERROR_DENIED)
    # --no-secret: a test asks for none explicitly.
    agent = guest_agent("--secret-file", str(tmp_path / "absent"), "--no-secret")
    c = agent.connect(hello=False)
    hello(c, None)
    c.send("ping", nonce=2)
    assert c.recv()[0] == "pong"


def refused_with_any_secret(agent):
    c = agent.connect(hello=False)
    hello(c, os.urandom(SECRET_SIZE))
    c.send("ping", nonce=1)
    c.expect_error(pb.ERROR_DENIED)
    c = agent.connect(hello=False)
    hello(c, None)
    c.send("ping", nonce=2)
    c.expect_error(pb.ERROR_DENIED)


def test_no_secret_option_refuses_everyone(guest_agent):
    """Fail closed: an agent told nothing of a secret serves no one."""
    agent = guest_agent(no_secret=False)
    assert ("No --secret-file, --secret-fw-cfg or --no-secret: every connection will be "
            "refused") in agent.log_text()
    refused_with_any_secret(agent)


def test_secret_fw_cfg_without_ports_refuses_everyone(guest_agent):
    """--secret-fw-cfg where fw_cfg cannot be read (here: no I/O ports for
    us, or a kernel without ioperm; this machine is not the VM) finds no
    secret: everyone is refused."""
    agent = guest_agent("--secret-fw-cfg", preexec=without_port_access)
    assert re.search(r"--secret-fw-cfg: no secret: fw_cfg file opt/qubes-lite/secret: "
                     r"(Operation not permitted|Function not implemented); every "
                     r"connection will be refused", agent.log_text())
    refused_with_any_secret(agent)


def test_one_secret_only(tmp_path):
    p = subprocess.run([program("qubes-lite-guest-agent"), "--listen",
                        "unix:" + str(tmp_path / "s"), "--secret-fw-cfg", "--secret-file",
                        str(tmp_path / "absent")], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "one secret only" in p.stderr, p.stderr


@pytest.mark.parametrize("mode,size,why", [
    (0o640, SECRET_SIZE, "readable by nobody else"),
    (0o604, SECRET_SIZE, "readable by nobody else"),
    (0o600, SECRET_SIZE - 1, "not a regular file of 32 bytes"),
    (0o600, SECRET_SIZE + 1, "not a regular file of 32 bytes"),
])
def test_bad_secret_file_is_refused_at_start(tmp_path, mode, size, why):
    path = str(tmp_path / "secret")
    write_secret(path, os.urandom(size), mode)
    p = subprocess.run([program("qubes-lite-guest-agent"), "--listen",
                        "unix:" + str(tmp_path / "s"), "--secret-file", path],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and why in p.stderr, p.stderr
    link = str(tmp_path / "link")
    os.symlink("secret", link)
    os.chmod(path, 0o600)
    p = subprocess.run([program("qubes-lite-guest-agent"), "--listen",
                        "unix:" + str(tmp_path / "s"), "--secret-file", link],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "--secret-file" in p.stderr, p.stderr


def test_host_agent_hands_its_secret_to_the_vm(vmm_stack):
    """The whole path with the crosvm stand-in: the host agent makes the
    secret, names its file in crosvm's --fw-cfg (never its bytes), the
    stand-in gives that file to the guest agent as the guest's init does;
    vm-run through the host agent works, a direct peer without it is
    refused, and the file goes with the VM."""
    s = vmm_stack()
    p = s.vm_run(VM, "echo", "through the host agent")
    assert p.returncode == 0 and p.stdout == "through the host agent\n", (p.stderr, s.log())
    path = os.path.join(s.run_dir, VM + ".secret")
    st = os.lstat(path)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid() and st.st_size == SECRET_SIZE
    with open(path, "rb") as f:
        secret = f.read()
    argv = s.argv()
    assert argv[argv.index("--fw-cfg") + 1] == "name=opt/qubes-lite/secret,path=" + path
    # Not in the VMM's command line nor its environment.
    for text in ("\n".join(argv), open(os.path.join(s.dir, "environ"), errors="replace").read()):
        assert secret.hex() not in text
    assert secret not in open(os.path.join(s.dir, "argv"), "rb").read()
    assert secret not in open(os.path.join(s.dir, "environ"), "rb").read()
    # A peer that passes the guest agent's uid check, without the secret.
    c = qlwire.Conn.unix(s.guest_sock)
    hello(c, None)
    c.send("ping", nonce=3)
    c.expect_error(pb.ERROR_DENIED)
    # Status and Ping from the host agent still carry it.
    assert s.host_status().state == pb.VM_STATE_RUNNING
    name, msg = s.request("host_stop")
    assert name == "host_stopped", (name, msg)
    wait_for(lambda: not os.path.exists(path), timeout=10, what="the secret removed")
