"""Guest agent: idle poweroff and Shutdown (with --poweroff-command)."""
import time

from qltest.procs import wait_for
from qltest.qlwire import pb


def poweroff_args(g_dir_file, timeout):
    return ["--idle-timeout", str(timeout), "--poweroff-command", f"echo off >> {g_dir_file}"]


def test_idle_poweroff_without_sessions(guest_agent, tmp_path):
    flag = tmp_path / "poweroff"
    start = time.monotonic()
    g = guest_agent(*poweroff_args(flag, 2))
    wait_for(lambda: flag.exists(), timeout=60, what="poweroff")
    assert time.monotonic() - start >= 1.5
    time.sleep(3)
    assert flag.read_text() == "off\n"    # once
    # After poweroff was asked for, no new program starts.
    c = g.start(["true"])
    name, msg = c.recv()
    assert name == "error" and msg.code == pb.ERROR_SHUTTING_DOWN
    c.expect_closed()


def test_no_poweroff_during_a_session(guest_agent, tmp_path):
    flag = tmp_path / "poweroff"
    g = guest_agent(*poweroff_args(flag, 4))
    c = g.start(["sleep", "1000"])
    assert c.recv()[0] == "started"
    time.sleep(8)                         # twice the timeout, session live
    assert not flag.exists()
    st = g.connect()
    st.send("status_request")
    name, msg = st.recv()
    assert msg.live_sessions == 1 and msg.idle_ms == 0 and msg.idle_timeout_s == 4
    c.send("signal", signo=15)
    c.recv_until_exit()
    c.send("exit_ack")
    c.expect_closed()
    ended = time.monotonic()
    wait_for(lambda: flag.exists(), timeout=60, what="poweroff after the session")
    assert time.monotonic() - ended >= 3  # counted from the session's end


def test_control_requests_do_not_keep_it_up(guest_agent, tmp_path):
    flag = tmp_path / "poweroff"
    g = guest_agent(*poweroff_args(flag, 3))
    for _ in range(3):
        c = g.connect()
        c.send("ping", nonce=1)
        assert c.recv()[0] == "pong"
        time.sleep(0.2)
    wait_for(lambda: flag.exists(), timeout=60, what="poweroff")


def test_disabled_by_default(guest_agent, tmp_path):
    g = guest_agent("--poweroff-command", f"touch {tmp_path}/poweroff")
    time.sleep(3)
    assert not (tmp_path / "poweroff").exists()
    c = g.connect()
    c.send("status_request")
    assert c.recv()[1].idle_timeout_s == 0


def test_shutdown_request(guest_agent, tmp_path):
    flag = tmp_path / "poweroff"
    g = guest_agent("--poweroff-command", f"echo off >> {flag}")
    c = g.connect()
    c.send("shutdown")
    name, _ = c.recv()
    assert name == "shutdown_reply"
    c.expect_closed()
    wait_for(lambda: flag.exists(), timeout=30, what="poweroff")


def test_failed_poweroff_serves_again(guest_agent, tmp_path):
    """A poweroff command that fails: new sessions are served again, and
    the idle poweroff is tried again after another timeout."""
    count = tmp_path / "count"
    g = guest_agent("--idle-timeout", "2", "--poweroff-command", f"echo x >> {count}; exit 1")
    wait_for(lambda: count.exists(), timeout=60, what="first poweroff attempt")
    wait_for(lambda: len(count.read_text().split()) >= 2, timeout=60, what="second attempt")
    # A session may just meet an attempt in progress (SHUTTING_DOWN): retry.
    for _ in range(20):
        c = g.start(["echo", "up"])
        name, msg = c.recv()
        if name == "started":
            out, err, ex, _ = c.recv_until_exit()
            assert out == b"up\n"
            c.send("exit_ack")
            return
        assert name == "error" and msg.code == pb.ERROR_SHUTTING_DOWN
        time.sleep(0.2)
    raise AssertionError("never served again")
