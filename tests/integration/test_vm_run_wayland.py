"""vm-run --wait-wayland: the command starts only once the VM's Wayland
display answers (a real headless weston plays the compositor), and
without the option it starts at once."""
import subprocess
import time

from qltest import weston
from qltest.host import VM

pytestmark = weston.needed
DISPLAY = weston.DISPLAY


def env_args(wayland_runtime_dir):
    return ["-e", f"XDG_RUNTIME_DIR={wayland_runtime_dir}", "-e", f"WAYLAND_DISPLAY={DISPLAY}"]


def test_without_a_display_the_command_is_not_started(host_stack, wayland_runtime_dir):
    s = host_stack(guest_args=["--wayland-timeout", "1"])
    r = s.vm_run("--wait-wayland", *env_args(wayland_runtime_dir), VM, "echo", "ran")
    assert r.returncode == 126, r
    assert r.stdout == b""
    assert b"Wayland" in r.stderr or b"wayland" in r.stderr, r.stderr
    # Without the option the same command runs at once.
    r = s.vm_run(*env_args(wayland_runtime_dir), VM, "echo", "ran")
    assert (r.returncode, r.stdout) == (0, b"ran\n"), r


def test_the_command_starts_once_the_compositor_answers(host_stack, wayland_runtime_dir):
    s = host_stack(guest_args=["--wayland-timeout", "120"])
    p = s.popen("--wait-wayland", *env_args(wayland_runtime_dir), VM, "sh", "-c",
                'test -S "$XDG_RUNTIME_DIR/$WAYLAND_DISPLAY" && echo up',
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1)
    assert p.poll() is None, "vm-run ended before any compositor ran"
    w = weston.start(wayland_runtime_dir)
    try:
        out, err = p.communicate(timeout=120)
        assert (p.returncode, out) == (0, b"up\n"), err
    finally:
        w.stop(check=False)
