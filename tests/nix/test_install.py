"""`make install`: every program in BINDIR, the systemd generator in
system-generators (finding the host agent beside its real path), and one
bash completion file for every vm-* command."""
import os
import subprocess

from qltest import BIN, BUILD, ROOT

PROGRAMS = ["qubes-lite-generator", "qubes-lite-guest-agent", "qubes-lite-host-agent",
            "qubes-lite-init", "qubes-lite-vsock", "qubes-lite-vsock-proxy", "vm-list", "vm-run",
            "vm-shell",
            "vm-start", "vm-start-debug", "vm-stop", "vm-switch"]
COMMANDS = ["vm-list", "vm-run", "vm-shell", "vm-start", "vm-start-debug", "vm-stop"]


def install(dest, *args):
    p = subprocess.run(["make", "--no-print-directory", "-C", ROOT, "install",
                        f"DESTDIR={dest}", f"BUILD={BUILD}", *args],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr


def test_make_install_prefix_usr(tmp_path):
    dest = tmp_path / "root"
    install(dest, "PREFIX=/usr")
    usr = dest / "usr"
    assert sorted(os.listdir(usr / "bin")) == PROGRAMS
    for name in PROGRAMS:
        path = usr / "bin" / name
        assert path.is_file() and not path.is_symlink(), path
        assert os.access(path, os.X_OK), path
        assert path.read_bytes() == open(os.path.join(BIN, name), "rb").read(), name

    gen = usr / "lib" / "systemd" / "system-generators" / "qubes-lite-generator"
    assert os.listdir(gen.parent) == ["qubes-lite-generator"]
    # A relative link, right in the staging tree and once installed.
    assert os.readlink(gen) == "../../../bin/qubes-lite-generator"
    assert os.path.realpath(gen) == str(usr / "bin" / "qubes-lite-generator")
    assert os.access(gen, os.X_OK)

    comp = usr / "share" / "bash-completion" / "completions"
    assert sorted(os.listdir(comp)) == COMMANDS
    assert (comp / "vm-run").read_text() == open(os.path.join(ROOT, "host", "cli",
                                                              "completion.bash")).read()
    for c in COMMANDS:
        if c != "vm-run":
            assert os.readlink(comp / c) == "vm-run", c
        # bash-completion sources the file named after the command: each
        # one registers a completion for that command.
        r = subprocess.run(["bash", "-c", f"source {comp / c} && complete -p {c}"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and f" {c}" in r.stdout, (c, r.stdout, r.stderr)

    # Run through its system-generators link, the installed generator
    # names the installed host agent in the units it writes.
    etc = tmp_path / "etc"
    (etc / "vms").mkdir(parents=True)
    (etc / "vms" / "vault.json").write_text('{"id": 13, "kernel": "/k"}')
    out = tmp_path / "units"
    out.mkdir()
    r = subprocess.run([str(gen), str(out)], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, QUBES_LITE_CONFIG_DIR=str(etc)))
    assert r.returncode == 0, r.stderr
    service = (out / "qubes-lite-vault-vm.service").read_text()
    assert f"ExecStart={usr}/bin/qubes-lite-host-agent --vm vault\n" in service, service


def test_make_install_other_dirs(tmp_path):
    dest = tmp_path / "root"
    install(dest, "PREFIX=/opt/ql", "BINDIR=/opt/ql/sbin",
            "COMPLETIONDIR=/etc/bash_completion.d")
    assert sorted(os.listdir(dest / "opt/ql/sbin")) == PROGRAMS
    gen = dest / "opt/ql/lib/systemd/system-generators/qubes-lite-generator"
    assert os.readlink(gen) == "../../../sbin/qubes-lite-generator"
    assert os.access(gen, os.X_OK)
    assert sorted(os.listdir(dest / "etc/bash_completion.d")) == COMMANDS

