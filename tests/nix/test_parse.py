"""Every .nix file of the project parses (nix-instantiate --parse), and a
broken one does not: the check can fail."""
import os
import subprocess

import pytest

from qltest import ROOT, nix
from qltest.nix import NIX, need_nix, nix_env


def nix_files():
    found = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in (".git", "build", "result")]
        found += [os.path.relpath(os.path.join(dirpath, f), ROOT)
                  for f in filenames if f.endswith(".nix")]
    return sorted(found)


FILES = nix_files()


def parse(path):
    need_nix()
    return subprocess.run([NIX, "--parse", path], capture_output=True, text=True,
                          env=nix_env(), timeout=60)


def test_the_files_are_there():
    for f in ("flake.nix", "nix/module.nix", "nix/package.nix", "nix/lib.nix", "nix/checks.nix",
              "rootfs/guest.nix", "tests/nix/stub.nix", "tests/nix/examples.nix"):
        assert f in FILES, f


@pytest.mark.parametrize("path", FILES)
def test_parses(path):
    p = parse(os.path.join(ROOT, path))
    assert p.returncode == 0, p.stderr


def test_a_syntax_error_is_reported(tmp_path):
    bad = tmp_path / "bad.nix"
    bad.write_text("{ a = ; }\n")
    p = parse(str(bad))
    assert p.returncode != 0
    assert "syntax error" in p.stderr


def test_without_nixpkgs_lib_the_tests_skip_saying_why(monkeypatch):
    """No <nixpkgs/lib> in NIX_PATH and no copy beside the repository: the
    evaluation tests are skipped with the reason, never passed."""
    monkeypatch.setenv("NIX_PATH", "")
    monkeypatch.setattr(nix, "FALLBACK_LIB", "/nonexistent/nixpkgs-lib/lib")
    nix._find_lib.cache_clear()
    try:
        with pytest.raises(pytest.skip.Exception) as e:
            nix.nixpkgs_lib()
        assert "<nixpkgs/lib> is not in NIX_PATH" in str(e.value)
        assert "/nonexistent/nixpkgs-lib/lib does not exist" in str(e.value)
    finally:
        nix._find_lib.cache_clear()
