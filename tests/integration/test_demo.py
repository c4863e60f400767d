"""`make demo` (scripts/demo.sh) runs end to end: the guest agent root in
its own user namespace (setgroups denied there), the host agent, vm-run."""
import os
import shutil
import subprocess

import pytest

from qltest import BUILD, ROOT


def test_demo_runs():
    missing = [t for t in ("unshare", "setpriv", "script", "hostname") if not shutil.which(t)]
    if missing:
        pytest.skip(f"the demo needs {', '.join(missing)}")
    r = subprocess.run([os.path.join(ROOT, "scripts", "demo.sh")],
                       env=dict(os.environ, BUILD=os.path.relpath(BUILD, ROOT)),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    # Every step gave what it shows: sort's output through the stream
    # connection, a pty of 24x80, SIGINT's status, a live session in Status.
    assert "100000\n99999\n99998\n" in out, out
    assert "24 80\n" in out, out
    assert "exit status 130 (128 + SIGINT)" in out, out
    assert "live sessions 1," in out, out
    assert "cannot run as" not in out + r.stderr
