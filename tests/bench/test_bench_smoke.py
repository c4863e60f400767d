"""The benchmark still runs: `bench.py --quick` against the real programs.

No timing is asserted here (figures belong to `make bench`); this only
keeps the harness from rotting: every row is produced, with numbers, and
the ssh peer (or the guests of the vm-switch ping figure, of the vsock
device's figures, or the qemu VMs of the cold start and of the warm
figures beside ssh) either runs or says why it was skipped.
"""
import json
import math
import os
import re
import subprocess
import sys

from qltest import TESTS

HERE = os.path.dirname(os.path.abspath(__file__))


def test_bench_quick(tmp_path):
    out = tmp_path / "bench.json"
    p = subprocess.run([sys.executable, os.path.join(HERE, "bench.py"), "--quick",
                        "--json", str(out)], env=dict(os.environ, PYTHONPATH=TESTS),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "| figure" in p.stdout
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 26, rows   # 9 agents, 8 vm-switch, 6 vsock device, 3 qemu VM
    for r in rows:
        if r["figure"].startswith("qemu VM") and "raw" not in r:
            # No qemu, kernel or openssh here: the row says skipped, and why.
            assert re.search(r"^note: qemu VM: .* skipped", p.stdout, re.M), p.stdout
            continue
        if r["figure"].startswith("vsock device") and "raw" not in r:
            # No guest here: every vsock row says skipped, and why.
            assert "vsock device figures skipped" in p.stdout, p.stdout
            continue
        if r["met"] is None and r["goal"] != "—":  # only the ssh peer may be skipped
            assert "ssh" in r["figure"], r
            assert "ssh peer skipped" in p.stdout, p.stdout
            continue
        if "raw" not in r:                       # guests need the kernel package
            assert "guest ping skipped" in p.stdout, p.stdout
            continue
        assert r["met"] is None or isinstance(r["met"], bool), r
        vals = [v for k, v in r["raw"].items() if k.startswith(("ours_", "peer_"))]
        assert len(vals) == 2 and all(math.isfinite(v) and v >= 0 for v in vals), r
