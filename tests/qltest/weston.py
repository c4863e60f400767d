"""A real Wayland compositor for the tests that wait for one: Debian's
weston, headless, on a display socket in a private runtime directory.

    pytestmark = weston.needed              skipped where weston is missing
    def test_x(wayland_runtime_dir):        a fresh XDG_RUNTIME_DIR (0700)
        w = weston.start(wayland_runtime_dir)   its socket: DISPLAY in that directory
        ...
        w.stop(check=False)
"""
import os
import shutil
import tempfile

import pytest

from qltest.procs import Daemon

WESTON = shutil.which("weston")
DISPLAY = "wayland-ql"
needed = pytest.mark.skipif(not WESTON, reason="weston is not installed")


@pytest.fixture
def wayland_runtime_dir():
    """A private XDG_RUNTIME_DIR, as a user session has one; removed after."""
    d = tempfile.mkdtemp(prefix="qlw-")
    os.chmod(d, 0o700)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def start(runtime_dir):
    """weston --backend=headless on DISPLAY in runtime_dir, its log there
    too; a Daemon, not waited for (the tests wait for what they test)."""
    env = dict(os.environ, XDG_RUNTIME_DIR=runtime_dir)
    env.pop("WAYLAND_DISPLAY", None)
    env.pop("DISPLAY", None)
    return Daemon("weston", [WESTON, "--backend=headless-backend.so", f"--socket={DISPLAY}",
                             "--idle-time=0"], os.path.join(runtime_dir, "weston.log"), env=env)
