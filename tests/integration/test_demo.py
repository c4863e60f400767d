"""`make demo` (scripts/demo.sh) runs end to end: two real VMs under qemu
booting the guest image, a host agent for each, and every step's output
as the demo shows it."""
import os
import re
import subprocess

from qltest import BUILD, ROOT
from qltest.vmm import qemu_image


def test_demo_runs():
    img = qemu_image()
    r = subprocess.run([os.path.join(ROOT, "scripts", "demo.sh")],
                       env=dict(os.environ, BUILD=os.path.relpath(BUILD, ROOT),
                                IMAGE=os.path.dirname(img.vmlinux)),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    out = r.stdout
    assert r.returncode == 0, out[-4000:] + r.stderr[-3000:]
    assert "failed" not in out, out
    steps = out.split("\n==> ")[1:]
    assert len(steps) == 11, out

    def step(i, *lines):
        for line in lines:
            assert re.search(line, steps[i], re.M), f"step {i}: no {line!r} in:\n{steps[i]}"

    step(0, r"^work +stopped", r"^scratch +stopped")
    # The VM starts, and --timing shows it with its parts.
    step(1, r"^Linux work ", r"^vm-run: waiting for VM 'work' to start",
         r"^vm-run:   VM start +[0-9.]+ ms \(VM start took [0-9.]+ ms\)$",
         r"^vm-run:   guest agent ready ", r"^vm-run:   exit +[0-9.]+ ms$")
    # The guest agent's wait is the part of the start after the VM ran,
    # not the whole start again.
    took = float(re.search(r"\(VM start took ([0-9.]+) ms\)", steps[1]).group(1))
    waited = float(re.search(r"\(host agent waited ([0-9.]+) ms for it\)", steps[1]).group(1))
    assert waited < took, steps[1]
    step(2, r"^HELLO FROM THE HOST$")
    step(3, r"^7$")
    step(4, r"^/dev/pts/[0-9]+$")
    step(5, r"^130$")
    step(6, r"^work +running ", r"^scratch +stopped")
    step(7, r"^BusyBox v", r"qubes-lite-guest-agent: Listening on vsock",
         r"^\([0-9]+ bytes replayed\)$")
    step(8, r"^used once$", r"^scratch +running .* off in [0-9]+s$",
         r"a few seconds later\n(.*\n)*scratch +stopped")
    step(9, r"^VM 'work' stopped", r"^work +stopped")
    assert out.rstrip().endswith("Done: every step did what it should"), out
