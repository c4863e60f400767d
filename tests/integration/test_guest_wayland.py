"""Guest agent: Exec's wait_wayland against a real (headless) weston."""
import errno
import os
import time

import pytest

from qltest import weston
from qltest.procs import wait_for

pytestmark = weston.needed
DISPLAY = weston.DISPLAY


def test_waits_until_weston_answers(guest_agent, wayland_runtime_dir):
    g = guest_agent("--wayland-timeout", "120")
    env = [f"XDG_RUNTIME_DIR={wayland_runtime_dir}".encode(), f"WAYLAND_DISPLAY={DISPLAY}".encode()]
    c = g.start(["sh", "-c", 'test -S "$XDG_RUNTIME_DIR/$WAYLAND_DISPLAY" && echo up'],
                env=env, wait_wayland=True)
    # No compositor yet: the program must not have started.
    c.sock.settimeout(2)
    with pytest.raises(TimeoutError):
        c.recv(timeout=2)
    w = weston.start(wayland_runtime_dir)
    try:
        out, err, ex, others = c.recv_until_exit(timeout=120)
        assert [n for n, _ in others] == ["started"]
        assert out == b"up\n", err
        assert ex.WhichOneof("result") == "code" and ex.code == 0
        c.send("exit_ack")
        c.expect_closed()
        # Once it runs, no wait at all.
        start = time.monotonic()
        out, err, ex, _ = g.run(["true"], env=env, wait_wayland=True)
        assert ex.code == 0, err
    finally:
        w.stop(check=False)


def test_times_out_without_compositor(guest_agent, wayland_runtime_dir):
    g = guest_agent("--wayland-timeout", "2")
    env = [f"XDG_RUNTIME_DIR={wayland_runtime_dir}".encode(), f"WAYLAND_DISPLAY={DISPLAY}".encode()]
    start = time.monotonic()
    out, err, ex, others = g.run(["true"], env=env, wait_wayland=True, timeout=120)
    assert time.monotonic() - start >= 1.5
    assert others == []
    assert ex.WhichOneof("result") == "start_errno" and ex.start_errno == errno.ETIMEDOUT
    assert err.startswith(f"qubes-lite: Wayland display {DISPLAY} is not answering".encode()), err


def test_socket_without_compositor_behind_it(guest_agent, wayland_runtime_dir):
    """A stale socket file (nobody listening) is not a ready display."""
    import socket
    s = socket.socket(socket.AF_UNIX)
    s.bind(os.path.join(wayland_runtime_dir, DISPLAY))
    s.close()
    g = guest_agent("--wayland-timeout", "1")
    env = [f"XDG_RUNTIME_DIR={wayland_runtime_dir}".encode(), f"WAYLAND_DISPLAY={DISPLAY}".encode()]
    out, err, ex, others = g.run(["true"], env=env, wait_wayland=True, timeout=120)
    assert ex.start_errno == errno.ETIMEDOUT


def test_client_gone_while_waiting(guest_agent, wayland_runtime_dir):
    g = guest_agent("--wayland-timeout", "120", "--kill-grace", "1")
    env = [f"XDG_RUNTIME_DIR={wayland_runtime_dir}".encode(), f"WAYLAND_DISPLAY={DISPLAY}".encode()]
    g.run(["true"])                       # warm up lazily made fds
    before = g.settled_fd_count()
    c = g.start(["true"], env=env, wait_wayland=True)
    time.sleep(0.5)
    c.close()
    wait_for(lambda: g.fd_count() == before, timeout=30, what="session gone")
