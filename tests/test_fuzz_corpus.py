"""Replays every fuzz target over its committed seed corpus.

The targets are what `make fuzz-list` names (a tests/fuzz/fuzz-*.c each,
and one per message built from tests/fuzz/message.c). `make fuzz-build`
builds them with clang and libFuzzer into $BUILD/fuzz/; each target then
runs once over every file of tests/fuzz/corpus/<target>/ (`-runs=0`), and
any crash, sanitizer report, leak or oracle failure fails that target's
test. Without clang or libFuzzer
this fails (`make test` installs them), never skips.
"""
import os
import shutil
import subprocess

import pytest

from qltest import BUILD, BUILD_REL, ROOT

FUZZ_DIR = os.path.join(BUILD, "fuzz")
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")
FUZZ_CC = os.environ.get("FUZZ_CC", "clang")


def make(*args, timeout=900):
    env = dict(os.environ, BUILD=BUILD_REL)
    env.pop("MAKEFLAGS", None)
    return subprocess.run(["make", "--no-print-directory", *args, f"BUILD={BUILD_REL}"],
                          cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)


TARGETS = make("-s", "fuzz-list", timeout=60).stdout.decode().split()


@pytest.fixture(scope="module")
def fuzz_build():
    """Builds every fuzz target once for this module."""
    if shutil.which(FUZZ_CC) is None:
        pytest.fail(f"{FUZZ_CC} not found: the fuzz targets need clang with libFuzzer "
                    "(Debian: clang libclang-rt-14-dev; `make deps` installs them)",
                    pytrace=False)
    proc = make("fuzz-build")
    out = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        hint = ""
        if "fuzzer" in out and ("cannot find" in out or "not found" in out):
            hint = ("\nlibFuzzer's runtime is missing (Debian: libclang-rt-14-dev; "
                    "`make deps` installs it)")
        pytest.fail(f"make fuzz-build failed:\n{out}{hint}", pytrace=False)
    return FUZZ_DIR


def test_every_target_has_a_corpus():
    assert TARGETS, "`make fuzz-list` named no fuzz target"
    for t in TARGETS:
        d = os.path.join(CORPUS, t)
        assert os.path.isdir(d) and os.listdir(d), \
            f"{t} has no seed corpus in {d} (tests/fuzz/gen-corpus.py writes them)"


@pytest.mark.parametrize("target", TARGETS)
def test_replay_corpus(target, fuzz_build, tmp_path):
    binary = os.path.join(fuzz_build, target)
    corpus = os.path.join(CORPUS, target)
    if not os.path.isdir(corpus) or not os.listdir(corpus):
        pytest.fail(f"{target} has no seed corpus in {corpus}")
    # libFuzzer does not count empty files (it always runs the empty input).
    seeds = [f for f in os.listdir(corpus) if os.path.getsize(os.path.join(corpus, f)) > 0]
    # -runs=0: run every input of the corpus once, fuzz nothing. Crash
    # artifacts go to the temporary directory, never into the corpus.
    cmd = [binary, "-runs=0", f"-artifact_prefix={tmp_path}/", corpus]
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "abort_on_error=0:detect_leaks=1")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    out = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        pytest.fail(f"{target} failed on its corpus (exit {proc.returncode}):\n{out}",
                    pytrace=False)
    assert "INITED" in out or "Done" in out, f"{target} did not replay its corpus:\n{out}"
    # libFuzzer reports the number of inputs it read; all seeds must count.
    assert f"{len(seeds)} files found" in out, \
        f"{target}: expected {len(seeds)} seed files to be read:\n{out}"
