"""Guest agent: programs on a pty."""
import signal
import time

from qltest.procs import wait_for
from qltest.qlwire import pb


def collect_until(c, needle, timeout=30):
    """Reads stdout Data until needle appears; returns all output."""
    out = bytearray()
    deadline = time.monotonic() + timeout
    while needle not in out:
        name, msg = c.recv(timeout=max(0.01, deadline - time.monotonic()))
        if name == "data":
            out += msg.data
        elif name == "exited":
            raise AssertionError(f"exited before {needle!r}: {bytes(out)!r}")
    return bytes(out)


def test_pty_size_tty_and_term(guest_agent):
    g = guest_agent()
    out, err, ex, _ = g.run(["sh", "-c", "stty size; tty; echo $TERM; test -t 0 && test -t 2 && echo ok"],
                            pty={"rows": 37, "cols": 101, "term": "vt100"})
    lines = out.decode().replace("\r", "").splitlines()
    assert lines[0] == "37 101"
    assert lines[1].startswith("/dev/pts/")
    assert lines[2:] == ["vt100", "ok"]
    assert err == b""                     # a pty merges stderr into stdout
    assert ex.code == 0


def test_pty_default_term(guest_agent):
    g = guest_agent()
    out, _, _, _ = g.run(["sh", "-c", "echo $TERM"], pty={"rows": 24, "cols": 80})
    assert out.strip() == b"xterm-256color"


def test_pty_controlling_terminal_and_session(guest_agent):
    g = guest_agent()
    # ps: the program is a session leader and its own process group, with
    # the pty as its controlling terminal.
    out, _, ex, others = g.run(["sh", "-c", "ps -o pid=,pgid=,sid=,tty= -p $$"],
                               pty={"rows": 24, "cols": 80})
    pid, pgid, sid, tty = out.decode().split()
    assert pid == pgid == sid
    assert tty.startswith("pts/")


def test_pipes_own_session_and_group(guest_agent):
    g = guest_agent()
    out, _, ex, _ = g.run(["sh", "-c", "ps -o pid=,pgid=,sid= -p $$"])
    pid, pgid, sid = out.decode().split()
    assert pid == pgid == sid


def test_resize_sends_sigwinch(guest_agent):
    g = guest_agent()
    script = 'trap "stty size; exit 0" WINCH; echo ready; while :; do sleep 0.1; done'
    c = g.start(["sh", "-c", script], pty={"rows": 24, "cols": 80})
    assert c.recv()[0] == "started"
    collect_until(c, b"ready")
    c.send("resize", rows=50, cols=132)
    out, err, ex, _ = c.recv_until_exit(timeout=30)
    assert b"50 132" in out
    assert ex.code == 0
    c.send("exit_ack")
    c.expect_closed()


def test_pty_stdin_and_veof(guest_agent):
    g = guest_agent()
    # stty -echo so only wc's answer comes back; the input has no final
    # newline, so the agent sends VEOF twice.
    c = g.start(["sh", "-c", "stty -echo; echo ready; wc -c"], pty={"rows": 24, "cols": 80})
    assert c.recv()[0] == "started"
    collect_until(c, b"ready")
    c.send("data", stream=pb.STREAM_STDIN, data=b"hello\nworld")
    c.send("stdin_close")
    out, err, ex, _ = c.recv_until_exit(timeout=30)
    assert out.replace(b"\r", b"").strip() == b"11"
    assert ex.code == 0
    c.send("exit_ack")
    c.expect_closed()


def test_pty_signal_to_group(guest_agent):
    g = guest_agent()
    c = g.start(["sh", "-c", "echo ready; sleep 1000"], pty={"rows": 24, "cols": 80})
    name, st = c.recv()
    assert name == "started"
    collect_until(c, b"ready")
    # Until sleep runs (exec'd, not just forked), the shell would only note
    # the SIGINT and go on.
    children = f"/proc/{st.pid}/task/{st.pid}/children"

    def sleep_running():
        for pid in open(children).read().split():
            try:
                status = open(f"/proc/{pid}/status").read()
                if "Name:\tsleep\n" in status and "SigCgt:\t0000000000000000\n" in status:
                    return True
            except FileNotFoundError:
                pass
        return False

    wait_for(sleep_running, what="sleep started")
    c.send("signal", signo=signal.SIGINT)
    out, err, ex, _ = c.recv_until_exit(timeout=30)
    assert ex.WhichOneof("result") == "signal" and ex.signal.signo == signal.SIGINT
    c.send("exit_ack")
    c.expect_closed()


def test_pty_large_output(guest_agent):
    g = guest_agent()
    out, _, ex, _ = g.run(["sh", "-c", "stty -opost; head -c 3000000 /dev/zero | tr '\\0' 'a'"],
                          pty={"rows": 24, "cols": 80}, timeout=120)
    assert out == b"a" * 3000000
    assert ex.code == 0
