"""vm-run --wait-wayland: the command starts only once the VM's Wayland
display answers (a real headless weston plays the compositor), and
without the option it starts at once."""
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from hostfix import VM

WESTON = shutil.which("weston")
pytestmark = pytest.mark.skipif(not WESTON, reason="weston is not installed")
DISPLAY = "wayland-ql"


@pytest.fixture
def runtime_dir():
    d = tempfile.mkdtemp(prefix="qlw-")
    os.chmod(d, 0o700)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def env_args(runtime_dir):
    return ["-e", f"XDG_RUNTIME_DIR={runtime_dir}", "-e", f"WAYLAND_DISPLAY={DISPLAY}"]


def test_without_a_display_the_command_is_not_started(host_stack, runtime_dir):
    s = host_stack(guest_args=["--wayland-timeout", "1"])
    r = s.vm_run("--wait-wayland", *env_args(runtime_dir), VM, "echo", "ran")
    assert r.returncode == 126, r
    assert r.stdout == b""
    assert b"Wayland" in r.stderr or b"wayland" in r.stderr, r.stderr
    # Without the option the same command runs at once.
    r = s.vm_run(*env_args(runtime_dir), VM, "echo", "ran")
    assert (r.returncode, r.stdout) == (0, b"ran\n"), r


def test_the_command_starts_once_the_compositor_answers(host_stack, runtime_dir):
    s = host_stack(guest_args=["--wayland-timeout", "120"])
    p = s.popen("--wait-wayland", *env_args(runtime_dir), VM, "sh", "-c",
                'test -S "$XDG_RUNTIME_DIR/$WAYLAND_DISPLAY" && echo up',
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1)
    assert p.poll() is None, "vm-run ended before any compositor ran"
    env = dict(os.environ, XDG_RUNTIME_DIR=runtime_dir)
    env.pop("WAYLAND_DISPLAY", None)
    env.pop("DISPLAY", None)
    with open(os.path.join(runtime_dir, "weston.log"), "wb") as log:
        weston = subprocess.Popen([WESTON, "--backend=headless-backend.so", f"--socket={DISPLAY}",
                                   "--idle-time=0"], env=env, stdout=log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        out, err = p.communicate(timeout=120)
        assert (p.returncode, out) == (0, b"up\n"), err
    finally:
        if weston.poll() is None:
            os.kill(weston.pid, signal.SIGTERM)
            try:
                weston.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(weston.pid, signal.SIGKILL)
                weston.wait()
