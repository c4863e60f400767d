"""qubes-lite-host-agent with the test playing the client: exact message
sequences, the guest socket handed over with SCM_RIGHTS, leases, refusals."""
import os
import resource
import socket
import stat
import struct
import subprocess

import pytest

from qltest import program, qlwire
from qltest.host import VM
from qltest.procs import socket_fds, wait_for
from qltest.qlwire import pb


def test_connect_hands_over_a_guest_connection(stack):
    c, [g] = stack.connect_guest()
    try:
        gc = qlwire.Conn(g)
        gc.hello()
        gc.send("exec", argv=[b"echo", b"via fd"])
        gc.send("stdin_close")
        out, err, exited, _ = gc.recv_until_exit(timeout=60)
        assert out == b"via fd\n"
        assert exited.WhichOneof("result") == "code" and exited.code == 0
        gc.send("exit_ack")
    finally:
        g.close()
        c.close()


def test_the_host_agent_keeps_no_copy_of_the_guest_socket(stack):
    pid = stack.host.pid
    # Only the listening socket once nobody is connected.
    wait_for(lambda: socket_fds(pid) == 1, what="only the listening socket")
    conns = [stack.connect_guest() for _ in range(5)]
    # Each lease costs the host agent one fd, the client connection; its
    # copy of the guest connection is closed right after the hand-over.
    wait_for(lambda: socket_fds(pid) == 1 + 5, what="one socket per lease")
    for c, [g] in conns:
        g.close()
        c.close()
    wait_for(lambda: socket_fds(pid) == 1, what="the host agent to close the leases")


def test_host_status_and_leases(stack):
    st = stack.host_status()
    assert st.vm == VM
    assert st.leases == 0
    c1, [g1] = stack.connect_guest()
    c2, [g2] = stack.connect_guest()
    g1.close()
    g2.close()
    # The lease is the host-agent connection, not the guest one.
    st = stack.host_status()
    assert st.leases == 2
    assert st.running is True
    assert st.idle_ms == 0
    c1.close()
    wait_for(lambda: stack.host_status().leases == 1, what="one lease")
    c2.close()
    wait_for(lambda: stack.host_status().leases == 0, what="no lease")


def test_host_status_closes_the_connection(stack):
    c = stack.connect_host()
    c.send("host_status_request")
    name, _ = c.recv()
    assert name == "host_status"
    assert c.expect_closed() == []
    c.close()


def test_version_mismatch(stack):
    c = stack.connect_host(hello=False)
    c.send("hello", major=99, minor=0, software="future")
    frames = c.expect_closed()
    names = [n for n, _ in frames]
    assert names == ["hello", "error"], frames
    assert frames[1][1].code == pb.ERROR_VERSION
    c.close()
    assert stack.host_status().vm == VM


def test_out_of_order_and_garbage(stack):
    c = stack.connect_host(hello=False)
    c.send("connect")                      # before Hello
    frames = c.expect_closed()
    assert [n for n, _ in frames] == ["hello", "error"]
    assert frames[1][1].code == pb.ERROR_PROTOCOL
    c.close()

    c = stack.connect_host()
    c.send("exec", argv=[b"true"])         # not a host-agent request
    frames = c.expect_closed()
    assert [n for n, _ in frames] == ["error"]
    assert frames[0][1].code == pb.ERROR_PROTOCOL
    c.close()

    c = stack.connect_host()
    c.send_raw(struct.pack(">I", 5) + b"\xff\xff\xff\xff\xff")
    frames = c.expect_closed()
    assert [n for n, _ in frames] == ["error"]
    c.close()

    c = stack.connect_host()
    c.send_raw(struct.pack(">I", 2 << 20))
    frames = c.expect_closed()
    assert [n for n, _ in frames] == ["error"]
    assert frames[0][1].code == pb.ERROR_TOO_LARGE
    c.close()

    # Everyone else is still served.
    c, [g] = stack.connect_guest()
    g.close()
    c.close()


def test_message_during_a_lease_ends_it(stack):
    c, [g] = stack.connect_guest()
    g.close()
    c.send("connect")
    frames = c.expect_closed()
    assert [n for n, _ in frames] == ["error"]
    c.close()
    wait_for(lambda: stack.host_status().leases == 0, what="no lease")


def test_guest_unreachable_is_unavailable(host_stack):
    s = host_stack(start_guest=False, guest_timeout=1)
    c = s.connect_host()
    c.send("connect")
    name, msg = c.recv(timeout=60)
    assert name == "error"
    assert msg.code == pb.ERROR_UNAVAILABLE
    assert "did not answer" in msg.message and "guest agent" in msg.message
    c.expect_closed()
    c.close()


def test_client_gone_while_waiting(host_stack):
    s = host_stack(start_guest=False)
    c = s.connect_host()
    c.send("connect")
    wait_for(lambda: s.host_status().leases == 1, what="a waiting lease")
    c.close()
    wait_for(lambda: s.host_status().leases == 0, what="no lease")


def test_refused_peer_gets_denied(host_stack):
    s = host_stack(dir_mode=0o755)
    os.chmod(s.run_dir, 0o755)
    os.chmod(s.sock, 0o666)
    script = (
        "import socket, struct, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        f"s.connect({s.sock!r})\n"
        "buf = b''\n"
        "while True:\n"
        "    d = s.recv(4096)\n"
        "    if not d: break\n"
        "    buf += d\n"
        "sys.stdout.buffer.write(buf)\n"
    )
    r = subprocess.run(["/usr/bin/python3", "-c", script], user=65534, group=65534,
                       extra_groups=[], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rest = bytearray(r.stdout)
    [(name, msg)] = qlwire.frames(rest)
    assert name == "error"
    assert msg.code == pb.ERROR_DENIED
    assert not rest


def test_configured_user_is_accepted(host_stack):
    s = host_stack(user="nobody", dir_mode=0o755)
    os.chmod(s.run_dir, 0o755)
    st = os.stat(s.sock)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == 65534
    # The guest agent sees the host agent (root) as its peer, whoever the
    # client is: the host agent is the one that connected.
    r = s.vm_run(VM, "echo", "ok", user=65534, group=65534, extra_groups=[])
    assert r.returncode == 0, r
    assert r.stdout == b"ok\n"


def test_socket_is_owned_by_the_configured_user(stack):
    st = os.stat(stack.sock)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == 1                  # daemon


def test_default_socket_path(host_stack, tmp_path):
    s = host_stack()
    env = dict(s.env, QUBES_LITE_RUNTIME_DIR=str(tmp_path / "rt"))
    p = subprocess.Popen([program("qubes-lite-host-agent"), "--vm", VM, "--no-vmm",
                          "--guest", "unix:" + s.guest_sock], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: (tmp_path / "rt" / "test.sock").exists() or p.poll() is not None,
                 what="the default socket")
        assert p.poll() is None
        env2 = dict(s.env, QUBES_LITE_RUNTIME_DIR=str(tmp_path / "rt"))
        r = subprocess.run([program("vm-run"), VM, "echo", "default"], env=env2,
                           capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
        assert r.returncode == 0, r
        assert r.stdout == b"default\n"
    finally:
        p.terminate()
        assert p.wait(timeout=60) == 0


def test_no_vmm_refuses_start_and_stop(stack):
    for req in ("host_start", "host_stop"):
        c = stack.connect_host()
        c.send(req)
        name, msg = c.recv()
        c.close()
        assert name == "error" and msg.code == pb.ERROR_UNAVAILABLE, (name, msg)
        assert "--no-vmm" in msg.message


def test_bad_configuration_names_file_and_key(host_stack):
    s = host_stack()
    s.write_json("vms/test.json", {"id": 4, "name": "test"})
    r = subprocess.run([program("qubes-lite-host-agent"), "--vm", VM, "--no-vmm",
                        "--listen", "unix:" + os.path.join(s.dir, "other.sock")],
                       env=s.env, capture_output=True, timeout=60)
    assert r.returncode != 0
    err = r.stderr.decode()
    assert "vms/test.json" in err and "'id'" in err and "odd" in err, err


def test_help(stack):
    r = subprocess.run([program("qubes-lite-host-agent"), "--help"], capture_output=True,
                       timeout=60)
    assert r.returncode == 0
    assert b"--vm NAME" in r.stdout


def test_out_of_fds_pauses_accepting_then_recovers(host_stack):
    s = host_stack()
    s.host.stop()

    def few_fds():
        resource.setrlimit(resource.RLIMIT_NOFILE, (16, 16))

    s.start_host(preexec=few_fds)
    held = []
    try:
        # More leases than the host agent has fds for: the last ones wait
        # in the listen backlog.
        for _ in range(20):
            c = qlwire.Conn.unix(s.sock, timeout=60)
            c.send("hello", major=1, minor=0, software="t")
            c.send("connect")
            held.append(c)
        wait_for(lambda: "pausing" in s.host.log_text(), what="the host agent to pause")
    finally:
        for c in held:
            c.close()
    # Everyone gone: accepting resumes and status works again.
    wait_for(lambda: s.host_status().leases == 0, what="the host agent to recover")
    r = s.vm_run(VM, "echo", "ok")
    assert r.returncode == 0, r


def test_systemd_socket_and_ready_notification(host_stack):
    """Socket activation: the listening socket comes as fd 3 (LISTEN_FDS),
    and READY=1 goes to NOTIFY_SOCKET once the agent serves."""
    s = host_stack()
    lpath = os.path.join(s.dir, "activated.sock")
    npath = os.path.join(s.dir, "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(lpath)
    listener.listen(16)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(npath)
    notify.settimeout(60)
    lfd = listener.fileno()
    env = dict(s.env, LISTEN_FDS="1", NOTIFY_SOCKET=npath)
    agent = program("qubes-lite-host-agent")
    # A small launcher puts the socket on fd 3 and execs the agent with
    # its own pid as LISTEN_PID, as systemd would.
    launcher = ("import os, sys\n"
                "os.dup2(int(sys.argv[1]), 3)\n"
                "os.environ['LISTEN_PID'] = str(os.getpid())\n"
                "os.execv(sys.argv[2], sys.argv[2:])\n")
    p = subprocess.Popen(["/usr/bin/python3", "-c", launcher, str(lfd), agent, "--vm", VM,
                          "--no-vmm", "--guest", "unix:" + s.guest_sock],
                         env=env, pass_fds=(lfd,), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    try:
        try:
            msg = notify.recv(4096)
        except TimeoutError:
            p.kill()
            raise AssertionError(p.communicate()[0])
        assert b"READY=1" in msg.split(b"\n")
        env2 = dict(s.env, QUBES_LITE_RUNTIME_DIR=s.dir)
        r = subprocess.run([program("vm-run"), "activated", "true"], env=env2,
                           capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
        # "activated" is not a configured VM but its socket exists: vm-run
        # goes by the socket.
        assert r.returncode == 0, r
        # The socket file is systemd's: the agent leaves it in place.
        p.terminate()
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0, out
        assert os.path.exists(lpath)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        listener.close()
        notify.close()


@pytest.mark.parametrize("kind", ["world-writable", "group-writable", "symlink", "other-owner"])
def test_unsafe_runtime_directory_is_refused(host_stack, tmp_path, kind):
    """The socket's directory must be a directory of ours that nobody else
    may write to: otherwise someone could swap the socket, or have the
    agent chown something else through a symlink."""
    s = host_stack()
    rt = tmp_path / "rt"
    if kind == "symlink":
        target = tmp_path / "elsewhere"
        target.mkdir(mode=0o700)
        rt.symlink_to(target)
    else:
        rt.mkdir()
        os.chmod(rt, {"world-writable": 0o1777, "group-writable": 0o770}.get(kind, 0o755))
        if kind == "other-owner":
            os.chown(rt, 65534, 65534)
    p = subprocess.Popen([program("qubes-lite-host-agent"), "--vm", VM, "--no-vmm",
                          "--listen", "unix:" + str(rt / "test.sock"),
                          "--guest", "unix:" + s.guest_sock], env=s.env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        pytest.fail(f"the host agent serves from an unsafe directory ({kind})")
    assert p.returncode != 0
    assert str(rt).encode() in out, out
    assert not (tmp_path / "elsewhere" / "test.sock").exists()
