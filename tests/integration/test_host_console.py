"""The serial console relay of the host agent: the pty it owns for the
VMM (the crosvm stand-in echoes what it reads there), the 64 KiB
scrollback, one interactive client at a time, window sizes, and a client
that does not read. Then the same relay in front of a real VM's serial
console under qemu: the boot replayed, the guest image's root shell
answering what is typed."""
import os
import pwd
import stat
import time

from qltest import qlwire
from qltest.host import VM
from qltest.procs import wait_for
from qltest.qlwire import pb
from qltest.vmm import console_read_until

SCROLLBACK = 64 * 1024


def started(vmm_stack, **kw):
    s = vmm_stack(**kw)
    name, msg = s.request("host_start")
    assert name == "host_status" and msg.state == pb.VM_STATE_RUNNING, (name, msg, s.log())
    return s


def attach(s, rows=0, cols=0):
    c = s.console(rows=rows, cols=cols)
    name, msg = c.recv()
    assert name == "console_attached", (name, msg)
    n = msg.scrollback
    got = bytearray()
    while len(got) < n:
        name, m = c.recv()
        assert name == "data" and m.stream == pb.STREAM_STDOUT, (name, m)
        got.extend(m.data)
    assert len(got) == n
    return c, bytes(got)


def test_replay_keeps_the_last_64k(vmm_stack):
    # 100 KiB of boot output before anyone attaches.
    s = started(vmm_stack, standin={"banner": 100 * 1024})
    st = os.stat(s.console_sock)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    # The configured user's vm-shell may connect.
    assert st.st_uid == pwd.getpwnam("daemon").pw_uid
    c, replay = attach(s)
    try:
        assert len(replay) == SCROLLBACK
        assert replay.endswith(b"standin: boot done\r\n")
        # The oldest lines fell out: the first one is gone, a late one is there.
        assert b"boot line 00000000" not in replay
        assert b"boot line 00001500" in replay
    finally:
        c.close()


def test_short_boot_is_replayed_whole(vmm_stack):
    s = started(vmm_stack)
    c, replay = attach(s)
    try:
        assert replay.startswith(b"standin: booting /boot/vmlinuz-standin\r\n")
        assert replay.endswith(b"standin: boot done\r\n")
    finally:
        c.close()


def test_input_is_echoed_and_resize_reaches_the_pty(vmm_stack):
    s = started(vmm_stack)
    c, _ = attach(s, rows=33, cols=111)
    try:
        c.send("data", stream=pb.STREAM_STDIN, data=b"hello console\r")
        console_read_until(c, b"hello console")
        c.send("data", stream=pb.STREAM_STDIN, data=b"size\r")
        console_read_until(c, b"SIZE 33 111")
        c.send("resize", rows=50, cols=160)
        c.send("data", stream=pb.STREAM_STDIN, data=b"size\r")
        console_read_until(c, b"SIZE 50 160")
    finally:
        c.close()
    # The echo is in the scrollback for the next client.
    c, replay = attach(s)
    c.close()
    assert b"hello console" in replay and b"SIZE 50 160" in replay


def test_qemu_console_replay_and_input(vmm_stack):
    s = started(vmm_stack, vmm="qemu")
    c, replay = attach(s, rows=33, cols=111)
    try:
        # The boot as the guest printed it, before anyone attached.
        assert b"qubes-lite-init" in replay, replay[-2000:]
        c.send("data", stream=pb.STREAM_STDIN, data=b"\recho console-$((6*7))\r")
        console_read_until(c, b"console-42", timeout=60)
        # A serial line carries no window size: a resize changes the
        # relay's pty only, and the shell goes on.
        c.send("resize", rows=50, cols=160)
        c.send("data", stream=pb.STREAM_STDIN, data=b"echo again-$((6*8))\r")
        console_read_until(c, b"again-48", timeout=60)
    finally:
        c.close()
    c, replay = attach(s)
    c.close()
    assert b"console-42" in replay and b"again-48" in replay


def test_second_client_is_refused(vmm_stack):
    s = started(vmm_stack)
    c, _ = attach(s)
    try:
        d = s.console()
        name, msg = d.recv()
        assert name == "error" and msg.code == pb.ERROR_UNAVAILABLE, (name, msg)
        assert "in use" in msg.message and VM in msg.message
        d.expect_closed()
        # The first one is still served.
        c.send("data", stream=pb.STREAM_STDIN, data=b"still here\r")
        console_read_until(c, b"still here")
    finally:
        c.close()
    # Once it left, the next one gets in.
    wait_for(lambda: "detached" in s.log(), timeout=10, what="the detach")
    c, _ = attach(s)
    c.close()


def test_a_stuck_client_does_not_block_the_vm(vmm_stack):
    s = started(vmm_stack)
    stuck, _ = attach(s)
    stuck.sock.setsockopt(qlwire.socket.SOL_SOCKET, qlwire.socket.SO_RCVBUF, 4096)
    # 4 MiB of output while the client reads nothing.
    stuck.send("data", stream=pb.STREAM_STDIN, data=b"flood 4194304\r")
    wait_for(lambda: "crosvm-standin: flood done" in s.log(), timeout=60,
             what="the VMM to write all of it")
    # The host agent still serves everyone meanwhile.
    p = s.vm_run(VM, "echo", "ok")
    assert p.returncode == 0 and p.stdout == "ok\n"
    assert "does not keep up" in s.log()
    stuck.close()
    wait_for(lambda: "detached" in s.log(), timeout=10, what="the detach")
    c, replay = attach(s)
    c.close()
    assert b"FLOOD-END" in replay and len(replay) == SCROLLBACK


def test_console_is_gone_with_the_vm(vmm_stack):
    s = started(vmm_stack)
    c, _ = attach(s)
    name, msg = s.request("host_stop")
    assert name == "host_stopped"
    # The last output reaches the attached client, then it is closed.
    out = console_read_until(c, b"Power down")
    assert b"Power down" in out
    c.expect_closed()
    assert s.wait_agent_exit() == 0
    assert not os.path.exists(s.console_sock)


def test_protocol_errors(vmm_stack):
    s = started(vmm_stack)
    c = s.console(hello=False)
    c.hello()
    c.send("data", stream=pb.STREAM_STDIN, data=b"x")
    name, msg = c.recv()
    assert name == "error" and msg.code == pb.ERROR_PROTOCOL, (name, msg)
    c.expect_closed()
    c.close()
    time.sleep(0.1)
    c, _ = attach(s)
    c.close()


def test_an_attached_console_is_a_lease(vmm_stack):
    # Someone typing on a disposable VM's console keeps it up as a command
    # would: the idle backstop waits for the console to go.
    s = started(vmm_stack, vm={"disposable": True, "idleTimeout": 1},
                agent_args=["--idle-grace", "1"])
    c, _ = attach(s)
    try:
        wait_for(lambda: s.host_status().leases == 1, timeout=10, what="the console's lease")
        time.sleep(3)
        assert s.host.proc.poll() is None and s.host_status().state == pb.VM_STATE_RUNNING
    finally:
        c.close()
    wait_for(lambda: s.host_status().leases == 0, timeout=10, what="the lease to end")
    ended = time.monotonic()
    assert s.wait_agent_exit(timeout=30) == 0
    assert 1.5 <= time.monotonic() - ended < 10
    assert "no lease for" in s.log()
