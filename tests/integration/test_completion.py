"""bash completion of the vm-* commands (host/cli/completion.bash): each
command's options and VM names, and commands after the VM where it takes
one. Each case runs the function `complete -p` names for the command."""
import os
import re
import subprocess

import pytest

from qltest import program

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SCRIPT = os.path.join(ROOT, "host", "cli", "completion.bash")


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
              # The function registered for the command: `complete -F f cmd`.
              f"fn=$(complete -p {words[0]} | sed -n 's/.* -F \\([^ ]*\\) .*/\\1/p')\n"
              "[ -n \"$fn\" ] || { echo no completion for the command >&2; exit 1; }\n"
              "$fn\n"
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
    assert complete(["vm-run", "--ra"], tmp_path) == ["--raw-output"]


def test_command_after_vm(tmp_path):
    assert "true" in complete(["vm-run", "vault", "tru"], tmp_path)


@pytest.mark.parametrize("cmd", ["vm-start", "vm-stop", "vm-start-debug", "vm-shell"])
def test_vm_name_commands(cmd, tmp_path):
    assert complete([cmd, "ba"], tmp_path) == ["bank2", "banking"]
    assert complete([cmd, "--help", "va"], tmp_path) == ["vault"]
    assert "--help" in complete([cmd, "--he"], tmp_path)
    # One VM name, nothing after it (vm-shell without --ssh included).
    assert complete([cmd, "vault", ""], tmp_path) == []


def test_vm_shell_options(tmp_path):
    assert complete(["vm-shell", "--"], tmp_path) == ["--help", "--root", "--ssh", "--user"]
    assert complete(["vm-shell", "--ssh", "--root", "b"], tmp_path) == ["bank2", "banking"]
    assert complete(["vm-shell", "--ssh", "--user", "b"], tmp_path) == []
    assert complete(["vm-shell", "--ssh", "-u", "bob", "b"], tmp_path) == ["bank2", "banking"]


def test_vm_shell_ssh_command(tmp_path):
    assert "true" in complete(["vm-shell", "--ssh", "vault", "tru"], tmp_path)
    assert "true" in complete(["vm-shell", "--ssh", "--root", "vault", "tru"], tmp_path)
    assert complete(["vm-shell", "vault", "tru"], tmp_path) == []


def test_vm_list(tmp_path):
    assert complete(["vm-list", "--h"], tmp_path) == ["--help"]
    assert complete(["vm-list", "--"], tmp_path) == ["--help", "--json"]
    assert complete(["vm-list", "ba"], tmp_path) == []


def test_vm_stop_timeout(tmp_path):
    assert complete(["vm-stop", "--ti"], tmp_path) == ["--timeout"]
    # Its argument is seconds: nothing to offer, and it is not the VM.
    assert complete(["vm-stop", "--timeout", ""], tmp_path) == []
    assert complete(["vm-stop", "--timeout", "30", "va"], tmp_path) == ["vault"]
    assert complete(["vm-stop", "--timeout", "30", "vault", ""], tmp_path) == []
    # Only vm-stop has it.
    assert complete(["vm-start", "--ti"], tmp_path) == []


def test_vm_run_option_arguments(tmp_path):
    assert complete(["vm-run", "-w", ""], tmp_path) == []
    assert complete(["vm-run", "--workdir", "/tmp", "--user", "bob", "ba"], tmp_path) == \
        ["bank2", "banking"]
    assert "true" in complete(["vm-run", "-e", "A=1", "vault", "tru"], tmp_path)


HELP_OPTION = re.compile(r"^\s+(?:-\w, )?(--[a-z][a-z-]*)", re.M)


@pytest.mark.parametrize("cmd", ["vm-run", "vm-start", "vm-stop", "vm-start-debug", "vm-shell",
                                 "vm-list"])
def test_offers_every_option_of_help(cmd, tmp_path):
    """The long options in the command's --help table are offered, and
    nothing else is."""
    out = subprocess.run([program(cmd), "--help"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    documented = sorted(set(HELP_OPTION.findall(out)))
    assert "--help" in documented, out
    offered = [w for w in complete([cmd, "--"], tmp_path) if w.startswith("--")]
    assert offered == documented
