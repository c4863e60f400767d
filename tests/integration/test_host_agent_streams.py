"""qubes-lite-host-agent: Connect with streams. The reply to Connect{streams:
1} carries two guest connections in one SCM_RIGHTS message: the control
connection, then the stream one; each is greeted by the guest agent."""
import os
import socket

import pytest

from qltest import qlwire
from qltest.procs import socket_fds, wait_for
from qltest.qlwire import pb


def test_connect_with_a_stream_hands_over_two_guest_connections(stack):
    c, (ctl, strm) = stack.connect_guest(streams=1)
    try:
        for s in (ctl, strm):
            assert s.family == socket.AF_UNIX and s.type == socket.SOCK_STREAM
            # Each is a connection of its own to the guest agent.
            assert s.getpeername() == stack.guest_sock
        a, b = qlwire.Conn(ctl), qlwire.Conn(strm)
        a.hello()
        b.hello()
        key = os.urandom(16)
        a.send("exec", argv=[b"sh", b"-c", b'read x; echo "out:$x"; echo err >&2; exit 6'],
               stream_key=key)
        b.send("attach", key=key)
        name, msg = b.recv(timeout=60)
        assert name == "attached", (name, msg)
        assert a.recv(timeout=60)[0] == "started"
        strm.sendall(b"via the stream\n")
        strm.shutdown(socket.SHUT_WR)
        out = bytearray(b.buf)
        strm.settimeout(60)
        while chunk := strm.recv(65536):
            out += chunk
        assert bytes(out) == b"out:via the stream\n"
        out, err, ex, others = a.recv_until_exit(timeout=60)
        assert (out, err, others) == (b"", b"err\n", [])
        assert ex.WhichOneof("result") == "code" and ex.code == 6
        a.send("exit_ack")
        assert a.expect_closed() == []
    finally:
        ctl.close()
        strm.close()
        c.close()


def test_the_host_agent_keeps_no_copy_of_either_connection(stack):
    pid = stack.host.pid
    wait_for(lambda: socket_fds(pid) == 1, what="only the listening socket")
    leases = [stack.connect_guest(streams=1) for _ in range(3)]
    # One socket per lease (the client's); both guest connections are gone
    # from the host agent after the hand-over.
    wait_for(lambda: socket_fds(pid) == 1 + 3, what="one socket per lease")
    assert stack.host_status().leases == 3
    for c, socks in leases:
        for s in socks:
            s.close()
        c.close()
    wait_for(lambda: socket_fds(pid) == 1, what="the host agent to close the leases")


def test_without_streams_one_connection_as_before(stack):
    c = stack.connect_host()
    try:
        c.send("connect")
        name, msg, fds, carriers = qlwire.recv_frame_with_fds(c.sock)
        assert name == "connected" and len(fds) == 1, (name, fds)
        g = qlwire.Conn(socket.socket(fileno=fds[0]))
        g.hello()
        g.close()
        c2 = stack.connect_host()
        c2.send("connect", streams=0)
        name, msg, fds, carriers = qlwire.recv_frame_with_fds(c2.sock)
        assert name == "connected" and len(fds) == 1, (name, fds)
        os.close(fds[0])
        c2.close()
    finally:
        c.close()


@pytest.mark.parametrize("streams", [2, 1000])
def test_more_than_one_stream_is_invalid(stack, streams):
    c = stack.connect_host()
    c.send("connect", streams=streams)
    name, msg, fds, carriers = qlwire.recv_frame_with_fds(c.sock)
    for fd in fds:
        os.close(fd)
    assert name == "error" and msg.code == pb.ERROR_INVALID, (name, msg)
    assert fds == []
    assert c.expect_closed() == []
    c.close()
    wait_for(lambda: stack.host_status().leases == 0, what="no lease")
    # Others are still served.
    c, socks = stack.connect_guest(streams=1)
    for s in socks:
        s.close()
    c.close()


def test_streams_for_a_guest_that_comes_late(host_stack):
    s = host_stack(start_guest=False)
    c = s.connect_host()
    try:
        c.send("connect", streams=1)
        wait_for(lambda: s.host_status().leases == 1, what="a waiting lease")
        s.start_guest()
        name, msg, fds, carriers = qlwire.recv_frame_with_fds(c.sock, timeout=120)
        assert name == "connected" and len(fds) == 2 and carriers == 1, (name, msg, fds)
        for fd in fds:
            g = qlwire.Conn(socket.socket(fileno=fd))
            g.hello()
            g.close()
    finally:
        c.close()


def test_streams_from_an_unreachable_guest_is_unavailable(host_stack):
    s = host_stack(start_guest=False, guest_timeout=1)
    c = s.connect_host()
    c.send("connect", streams=1)
    name, msg, fds, carriers = qlwire.recv_frame_with_fds(c.sock)
    for fd in fds:
        os.close(fd)
    assert name == "error" and msg.code == pb.ERROR_UNAVAILABLE, (name, msg)
    assert fds == []
    c.expect_closed()
    c.close()
