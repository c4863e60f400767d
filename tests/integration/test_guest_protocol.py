"""Guest agent: the protocol's edges: bad frames, order, versions, peers,
control requests."""
import os
import socket
import struct
import time

import pytest

from qltest import qlwire
from qltest.procs import drop_to, run_as_nobody, wait_for
from qltest.qlwire import pb


@pytest.fixture
def bystander(guest_agent):
    """An agent, and a session (cat) that must keep working throughout."""
    g = guest_agent()
    c = g.start(["cat"], stdin_window=1 << 20)
    assert c.recv()[0] == "started"
    yield g
    c.send("data", stream=pb.STREAM_STDIN, data=b"still here\n")
    got = {}
    while len(got) < 2:
        name, msg = c.recv()
        got[name] = msg
    assert got["data"].data == b"still here\n"
    assert got["stdin_ack"].bytes == 11
    c.send("stdin_close")
    out, err, ex, _ = c.recv_until_exit()
    assert ex.code == 0
    c.send("exit_ack")
    c.expect_closed()


def test_oversized_frame(bystander):
    c = bystander.connect()
    c.send_raw(struct.pack(">I", qlwire.FRAME_MAX + 1))
    msg = c.expect_error(pb.ERROR_TOO_LARGE)


def test_oversized_frame_before_hello(bystander):
    c = bystander.connect(hello=False)
    name, _ = c.recv()
    assert name == "hello"
    c.send_raw(struct.pack(">I", 0xFFFFFFFF) + b"x" * 100)
    c.expect_error(pb.ERROR_TOO_LARGE)


def test_undecodable_frame(bystander):
    c = bystander.connect()
    garbage = b"\xff\xff\xff\xff\x0f" * 10
    c.send_raw(struct.pack(">I", len(garbage)) + garbage)
    c.expect_error(pb.ERROR_PROTOCOL)


def test_empty_envelope(bystander):
    c = bystander.connect()
    c.send_raw(struct.pack(">I", 0))
    c.expect_error(pb.ERROR_PROTOCOL)


def test_invalid_exec(bystander):
    c = bystander.connect()
    c.send("exec", argv=[])
    c.expect_error(pb.ERROR_INVALID)


def test_invalid_exec_bad_pty(bystander):
    c = bystander.connect()
    c.send("exec", argv=[b"true"], pty={"rows": 0, "cols": 80})
    c.expect_error(pb.ERROR_INVALID)


def test_exec_before_hello(bystander):
    c = bystander.connect(hello=False)
    assert c.recv()[0] == "hello"
    c.send("exec", argv=[b"true"])
    c.expect_error(pb.ERROR_PROTOCOL)


def test_data_before_exec(bystander):
    c = bystander.connect()
    c.send("data", stream=pb.STREAM_STDIN, data=b"x")
    c.expect_error(pb.ERROR_PROTOCOL)


def test_two_requests(bystander):
    c = bystander.connect()
    c.send("exec", argv=[b"sleep", b"1000"])
    assert c.recv()[0] == "started"
    c.send("exec", argv=[b"true"])
    c.expect_error(pb.ERROR_PROTOCOL)


def test_exit_ack_before_exit(bystander):
    c = bystander.connect()
    c.send("exec", argv=[b"sleep", b"1000"])
    assert c.recv()[0] == "started"
    c.send("exit_ack")
    c.expect_error(pb.ERROR_PROTOCOL)


def test_stdout_data_from_client(bystander):
    c = bystander.connect()
    c.send("exec", argv=[b"cat"])
    assert c.recv()[0] == "started"
    c.send("data", stream=pb.STREAM_STDOUT, data=b"x")
    c.expect_error(pb.ERROR_INVALID)


def test_stdin_window_exceeded(bystander):
    c = bystander.connect()
    c.send("exec", argv=[b"sleep", b"1000"], stdin_window=1000)
    assert c.recv()[0] == "started"
    c.send("data", stream=pb.STREAM_STDIN, data=b"x" * 1001)
    c.expect_error(pb.ERROR_PROTOCOL)


def test_data_after_stdin_close(bystander):
    c = bystander.connect()
    c.send("exec", argv=[b"sleep", b"1000"])
    assert c.recv()[0] == "started"
    c.send("stdin_close")
    c.send("data", stream=pb.STREAM_STDIN, data=b"x")
    c.expect_error(pb.ERROR_PROTOCOL)


def test_wrong_hello_major(bystander):
    c = bystander.connect(hello=False)
    name, msg = c.recv()
    assert name == "hello" and msg.major == qlwire.VERSION_MAJOR
    c.send("hello", major=qlwire.VERSION_MAJOR + 1, minor=0, software="future")
    c.expect_error(pb.ERROR_VERSION)


def test_newer_minor_is_fine(bystander):
    c = bystander.connect(hello=False)
    assert c.recv()[0] == "hello"
    c.send("hello", major=qlwire.VERSION_MAJOR, minor=99, software="newer")
    c.send("ping", nonce=5)
    assert c.recv() [1].nonce == 5


def test_protocol_error_kills_its_program(guest_agent, tmp_path):
    g = guest_agent("--kill-grace", "1")
    c = g.start(["sleep", "1000"])
    name, st = c.recv()
    assert name == "started"
    c.send("exec", argv=[b"true"])
    c.expect_error(pb.ERROR_PROTOCOL)
    wait_for(lambda: not os.path.exists(f"/proc/{st.pid}"), what="program gone")


def test_hello_timeout(bystander):
    c = bystander.connect(hello=False, timeout=60)
    assert c.recv()[0] == "hello"
    start = time.monotonic()
    c.expect_error(pb.ERROR_PROTOCOL, timeout=60)
    assert time.monotonic() - start > 5


def test_client_hangs_up_mid_frame(bystander):
    c = bystander.connect()
    c.send_raw(struct.pack(">I", 1000) + b"\x12")
    c.close()


def test_refused_peer(bystander):
    g = bystander
    os.chmod(g.dir, 0o755)
    os.chmod(g.sock, 0o777)

    def client():
        c = qlwire.Conn.unix(g.sock, timeout=30)
        name, msg = c.recv()
        assert name == "error" and msg.code == pb.ERROR_DENIED, (name, msg)
        c.expect_closed()

    assert run_as_nobody(client) == 0
    # Root is still served.
    c = g.connect()
    c.send("ping", nonce=1)
    assert c.recv()[0] == "pong"


def test_allowed_uid(guest_agent):
    g = guest_agent("--allow-uid", "65534")
    os.chmod(g.dir, 0o755)
    os.chmod(g.sock, 0o777)

    def client():
        c = qlwire.Conn.unix(g.sock, timeout=30)
        c.hello()
        c.send("exec", argv=[b"id", b"-u"], user="nobody")
        out, err, ex, _ = c.recv_until_exit()
        assert out == b"65534\n" and ex.code == 0, (out, err)
        c.send("exit_ack")
        c.expect_closed()

    assert run_as_nobody(client) == 0


def test_ping(guest_agent):
    g = guest_agent()
    c = g.connect()
    c.send("ping", nonce=0xDEADBEEFCAFE)
    name, msg = c.recv()
    assert name == "pong" and msg.nonce == 0xDEADBEEFCAFE
    assert c.expect_closed() == []


def test_status(guest_agent):
    g = guest_agent("--idle-timeout", "3600")
    c = g.connect()
    c.send("status_request")
    name, st = c.recv()
    assert name == "status"
    assert st.live_sessions == 0 and st.idle_timeout_s == 3600
    assert st.uptime_ms > 0
    c.expect_closed()

    run = g.start(["sleep", "1000"])
    assert run.recv()[0] == "started"
    c = g.connect()
    c.send("status_request")
    name, st = c.recv()
    assert st.live_sessions == 1 and st.idle_ms == 0
    run.send("signal", signo=9)
    run.recv_until_exit()
    run.send("exit_ack")
    time.sleep(0.3)
    c = g.connect()
    c.send("status_request")
    name, st = c.recv()
    assert st.live_sessions == 0 and st.idle_ms >= 200


def test_many_bad_peers_at_once(bystander):
    """A crowd of broken peers: each gets its Error; the agent serves on."""
    conns = []
    for i in range(50):
        c = bystander.connect()
        conns.append(c)
        c.send_raw(struct.pack(">I", 3) + b"\xff\xff\xff")
    for c in conns:
        c.expect_error(pb.ERROR_PROTOCOL)


def test_large_exec_frame_is_fine(guest_agent):
    """An Exec close to the 1 MiB frame limit is served."""
    g = guest_agent()
    env = [f"QL_{i}={'v' * 200}".encode() for i in range(4000)]
    frame = qlwire.encode("exec", argv=[b"sh", b"-c", b'echo "$QL_3999" | wc -c'], env=env)
    assert 700 * 1024 < len(frame) <= qlwire.FRAME_MAX + 4
    c = g.connect()
    c.send_raw(frame)
    c.send("stdin_close")
    out, err, ex, _ = c.recv_until_exit()
    assert out == b"201\n" and ex.code == 0, err
    c.send("exit_ack")
    c.expect_closed()


def test_refused_peers_take_no_slots(bystander):
    """Refused connections are closed at once: a peer that may reach the
    socket but not use it cannot fill the agent's connection slots."""
    import resource
    import select

    g = bystander
    os.chmod(g.dir, 0o755)
    os.chmod(g.sock, 0o777)
    before = g.fd_count()
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(ready_r)
            os.close(done_w)
            resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
            drop_to()
            held = []
            for _ in range(1100):
                # Plain blocking sockets: select() stops at fd 1024.
                sk = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sk.settimeout(30)
                sk.connect(g.sock)
                data = b""
                while chunk := sk.recv(4096):
                    data += chunk
                name, msg = next(qlwire.frames(bytearray(data)))
                assert name == "error", (name, msg)
                assert msg.code == pb.ERROR_DENIED, msg
                held.append(sk)         # keep our end open
            os.write(ready_w, b"1")
            os.read(done_r, 1)
            status = 0
        except BaseException:           # noqa: B902 - report anything
            import traceback
            traceback.print_exc()
        os._exit(status)
    os.close(ready_w)
    os.close(done_r)
    try:
        r, _, _ = select.select([ready_r], [], [], 120)
        assert r and os.read(ready_r, 1) == b"1", "the refused client failed"
        during = g.fd_count()
        # All 1100 are still open on the client side; the agent holds none.
        assert during <= before + 2, (before, during)
        c = g.connect()
        c.send("ping", nonce=7)
        name, msg = c.recv()
        assert name == "pong" and msg.nonce == 7
    finally:
        os.close(done_w)
        _, status = os.waitpid(pid, 0)
        os.close(ready_r)
    assert os.waitstatus_to_exitcode(status) == 0


def test_frame_over_the_decode_budget_is_a_protocol_error(bystander):
    """A frame under the size limit whose decoding would take more memory
    than the per-frame budget is the peer's fault: Error(PROTOCOL), as the
    host agent says, not INTERNAL."""
    c = bystander.connect()
    # Exec (field 1 of Exec: argv) with ~500,000 empty entries: each costs
    # the decoder far more than its two bytes on the wire.
    exec_body = b"\x0a\x00" * ((qlwire.FRAME_MAX - 64) // 2)
    tag = (pb.Envelope.DESCRIPTOR.fields_by_name["exec"].number << 3) | 2

    def varint(n):
        out = b""
        while True:
            b = n & 0x7f
            n >>= 7
            if n:
                out += bytes([b | 0x80])
            else:
                return out + bytes([b])
    body = varint(tag) + varint(len(exec_body)) + exec_body
    assert len(body) <= qlwire.FRAME_MAX
    c.send_raw(struct.pack(">I", len(body)) + body)
    c.expect_error(pb.ERROR_PROTOCOL)
