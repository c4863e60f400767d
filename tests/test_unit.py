"""Runs every cmocka binary built by `make tests`.

Each $BUILD/tests/unit/DIR/test-* binary (a unit test of one module) and
each $BUILD/tests/integration/NAME built from tests/integration/c/NAME.c (a
C test driving a real peer program) is one test here; a failure shows the
binary's own cmocka output. BUILD (default build) is relative to the
repository root.
"""
import glob
import os
import subprocess

import pytest

from qltest import BUILD, ROOT

UNIT_DIR = os.path.join(BUILD, "tests", "unit")
SOURCES = sorted(os.path.relpath(p, os.path.join(ROOT, "tests", "unit"))[:-2]
                 for p in glob.glob(os.path.join(ROOT, "tests", "unit", "*", "test-*.c")))
PEER_SOURCES = sorted(os.path.basename(p)[:-2]
                      for p in glob.glob(os.path.join(ROOT, "tests", "integration", "c", "*.c")))
TIMEOUT = 300


@pytest.mark.parametrize("name", SOURCES)
def test_unit(name, tmp_path):
    run_cmocka(os.path.join(UNIT_DIR, name), name, tmp_path)


@pytest.mark.parametrize("name", PEER_SOURCES)
def test_c_peer(name, tmp_path):
    run_cmocka(os.path.join(BUILD, "tests", "integration", name), name, tmp_path)


def run_cmocka(binary, name, tmp_path):
    if not os.access(binary, os.X_OK):
        pytest.fail(f"{binary} is not built: run `make tests` (BUILD={BUILD})")
    try:
        proc = subprocess.run([binary], cwd=tmp_path, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace")
        pytest.fail(f"{name} did not finish in {TIMEOUT}s:\n{out}")
    out = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        pytest.fail(f"{name} exited with {proc.returncode}:\n{out}", pytrace=False)
    # cmocka prints one PASSED line per group; make sure tests actually ran.
    assert "PASSED" in out, f"{name} printed no cmocka summary:\n{out}"
