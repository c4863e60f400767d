"""bash completion of VM names for vm-run (host/completion.bash)."""
import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SCRIPT = os.path.join(ROOT, "host", "completion.bash")


def complete(words, tmp_path):
    """COMPREPLY for the command line `words` (the last one being completed)."""
    cfg = tmp_path / "etc"
    (cfg / "vms").mkdir(parents=True, exist_ok=True)
    for name in ("banking", "bank2", "vault"):
        (cfg / "vms" / f"{name}.json").write_text('{"id": 3}')
    line = " ".join(f"'{w}'" for w in words)
    script = (f"source {SCRIPT}\n"
              f"COMP_WORDS=({line})\n"
              f"COMP_CWORD={len(words) - 1}\n"
              f"_vm_run\n"
              "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, QUBES_LITE_CONFIG_DIR=str(cfg)))
    assert r.returncode == 0, r.stderr
    return sorted(x for x in r.stdout.splitlines() if x)


def test_vm_names(tmp_path):
    assert complete(["vm-run", "ba"], tmp_path) == ["bank2", "banking"]
    assert complete(["vm-run", ""], tmp_path) == ["bank2", "banking", "vault"]


def test_vm_name_after_options(tmp_path):
    assert complete(["vm-run", "-t", "-u", "alice", "-e", "A=1", "v"], tmp_path) == ["vault"]


def test_options(tmp_path):
    assert "--timing" in complete(["vm-run", "--ti"], tmp_path)


def test_command_after_vm(tmp_path):
    assert "true" in complete(["vm-run", "vault", "tru"], tmp_path)
