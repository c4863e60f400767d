"""The first hour: what a new user runs into first, each mistake answered
with one clear line and the documented exit status (the README's vm-run,
vm-list, --check, systemd and Configuration sections)."""
import json
import os
import subprocess

import pytest

from qltest import program
from qltest.host import VM
from qltest.procs import drop_to


# ---- vm-run -w ----------------------------------------------------------------

def test_vm_run_bad_directory_is_126(stack):
    """A directory that does not exist is 126 (could not be started), as
    the README says, not 127 (not found): the command is there."""
    r = stack.vm_run("-w", "/nonexistent", VM, "true")
    assert r.returncode == 126, r
    assert b"/nonexistent" in r.stderr
    r = stack.vm_run("-w", "/etc/passwd", VM, "true")
    assert r.returncode == 126, r


def test_vm_run_missing_program_stays_127(stack):
    r = stack.vm_run("-w", "/", VM, "no-such-program-here")
    assert r.returncode == 127, r
    r = stack.vm_run("-w", "/", VM, "/no/such/program")
    assert r.returncode == 127, r


# ---- one convention for errors ----------------------------------------------
#
# Every program: a bad command line is one line "program: what is wrong" on
# stderr and its documented status; --help prints the usage on stdout.

# Each program's status for a bad command line (the README's tables).
USAGE_STATUS = {
    "vm-run": 255, "vm-shell": 255, "vm-start-debug": 255,
    "vm-start": 1, "vm-stop": 1, "vm-list": 1,
    "qubes-lite-host-agent": 1, "qubes-lite-generator": 2, "qubes-lite-vsock-proxy": 2,
}
BAD_COMMAND_LINES = [(p, a) for p in USAGE_STATUS for a in (["--bogus"], ["-Z"])] + [
    ("vm-stop", ["--timeout"]),
    ("vm-stop", ["--timeout", "soon", "x"]),
    ("vm-run", ["-u"]),
    ("vm-start", ["a", "b"]),
    ("vm-list", ["extra"]),
    ("qubes-lite-host-agent", ["--vm"]),
    ("qubes-lite-host-agent", ["--check", "extra"]),
    ("qubes-lite-generator", []),
    ("qubes-lite-generator", ["a", "b"]),
    ("qubes-lite-vsock-proxy", []),
    ("qubes-lite-vsock-proxy", ["1", "2", "3"]),
    ("qubes-lite-vsock-proxy", ["one", "22"]),
]


def config_env(tmp_path, vms=None, host=None):
    """A configuration directory (etc/, with vms/) and the environment that
    points every program at it."""
    etc = tmp_path / "etc"
    (etc / "vms").mkdir(parents=True, exist_ok=True)
    if host is not None:
        (etc / "host.json").write_text(json.dumps(host))
    for name, vm in (vms or {}).items():
        (etc / "vms" / f"{name}.json").write_text(vm if isinstance(vm, str) else json.dumps(vm))
    env = dict(os.environ, QUBES_LITE_CONFIG_DIR=str(etc),
               QUBES_LITE_RUNTIME_DIR=str(tmp_path / "run"))
    env.pop("QUBES_LITE_LOG_LEVEL", None)
    return env


def run(name, *args, env=None, timeout=30, cwd=None):
    return subprocess.run([program(name), *args], env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout, cwd=cwd)


def one_line(p, name):
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{name}: "), p.stderr
    return lines[0]


@pytest.mark.parametrize("name,args", BAD_COMMAND_LINES,
                         ids=[f"{p}{''.join(' ' + a for a in args)}" for p, args in BAD_COMMAND_LINES])
def test_bad_command_line_is_one_line(tmp_path, name, args):
    env = config_env(tmp_path)
    p = run(name, *args, env=env, cwd=tmp_path)
    line = one_line(p, name)
    assert p.returncode == USAGE_STATUS[name], (p.returncode, line)
    assert p.stdout == ""
    # Not getopt's words, nor our path.
    assert program(name) not in line and "invalid option --" not in line


@pytest.mark.parametrize("name", list(USAGE_STATUS))
def test_help_is_usage_on_stdout(tmp_path, name):
    p = run(name, "--help", env=config_env(tmp_path))
    assert p.returncode == 0 and p.stderr == "", p
    assert p.stdout.startswith("Usage: "), p.stdout


@pytest.mark.parametrize("name,status", [("vm-start", 1), ("vm-stop", 1), ("vm-run", 255),
                                         ("vm-shell", 255), ("vm-start-debug", 255)])
@pytest.mark.parametrize("vm", ["../x", "Bad", "nosuch"])
def test_unknown_vm_names_what_a_name_is(tmp_path, name, status, vm):
    args = [vm, "true"] if name == "vm-run" else [vm]
    p = run(name, *args, env=config_env(tmp_path))
    line = one_line(p, name)
    assert p.returncode == status
    assert f"no VM named '{vm}'" in line and "NAME" not in line, line
    if vm == "nosuch":
        assert f"{tmp_path}/etc/vms/nosuch.json" in line, line
    else:
        assert "[a-z][a-z0-9-]" in line, line


def test_bind_vfio_errors_are_prefixed(tmp_path):
    env = config_env(tmp_path, host={"isolatedPciDevices": ["01:00.0", "02:00.0"]})
    env["QUBES_LITE_SYSFS_ROOT"] = str(tmp_path / "sys")
    p = run("qubes-lite-host-agent", "--bind-vfio", env=env)
    assert p.returncode == 1
    lines = p.stderr.splitlines()
    assert len(lines) == 2, p.stderr
    assert all(l.startswith("qubes-lite-host-agent: ") for l in lines), lines


def test_check_lines_are_prefixed(tmp_path):
    env = config_env(tmp_path, vms={"a": {"id": 4, "kernel": "/k"}})
    p = run("qubes-lite-host-agent", "--check", env=env)
    assert p.returncode == 1
    lines = p.stderr.splitlines()
    assert len(lines) == 2 and "'id'" in lines[0], lines
    assert all(l.startswith("qubes-lite-host-agent: ") for l in lines), lines


def test_generator_bad_directory_is_one_line(tmp_path):
    env = config_env(tmp_path, vms={"a": {"id": 3, "kernel": "/k"}, "b": {"id": 5, "kernel": "/k"},
                                    "c": {"id": 7, "kernel": "/k", "vmNetwork": {"n": {"router": True}}}})
    p = run("qubes-lite-generator", str(tmp_path / "no" / "such" / "dir"), env=env)
    line = one_line(p, "qubes-lite-generator")
    assert p.returncode == 1
    assert str(tmp_path / "no" / "such" / "dir") in line
    f = tmp_path / "afile"
    f.write_text("")
    p = run("qubes-lite-generator", str(f), env=env)
    one_line(p, "qubes-lite-generator")
    assert p.returncode == 1


# ---- a configuration directory that is not there ------------------------------

@pytest.mark.parametrize("what", ["missing", "a file"])
@pytest.mark.parametrize("name,args,status", [
    ("qubes-lite-host-agent", ["--check"], 1),
    ("vm-list", [], 1),
    ("qubes-lite-generator", ["OUT"], 1),
])
def test_missing_configuration_directory_fails(tmp_path, what, name, args, status):
    env = config_env(tmp_path)
    etc = tmp_path / "nosuch"
    if what == "a file":
        etc.write_text("")
    env["QUBES_LITE_CONFIG_DIR"] = str(etc)
    (tmp_path / "out").mkdir()
    args = [str(tmp_path / "out") if a == "OUT" else a for a in args]
    p = run(name, *args, env=env)
    line = one_line(p, name)
    assert p.returncode == status, p
    assert str(etc) in line and "QUBES_LITE_CONFIG_DIR" in line, line
    assert p.stdout == ""
    assert list((tmp_path / "out").iterdir()) == []


def test_unreadable_configuration_directory_fails(tmp_path):
    """Unreadable for the user who runs the command (nobody here)."""
    env = config_env(tmp_path, vms={"a": {"id": 3, "kernel": "/k"}})
    os.chmod(tmp_path, 0o755)
    os.chmod(tmp_path / "etc", 0o700)
    p = subprocess.run([program("vm-list")], env=env, capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=30, preexec_fn=drop_to)
    line = one_line(p, "vm-list")
    assert p.returncode == 1 and str(tmp_path / "etc") in line, line


# ---- vm-list and a VM whose file is broken -------------------------------------

@pytest.mark.parametrize("json_flag", [False, True])
def test_vm_list_reports_a_broken_vm(tmp_path, json_flag):
    env = config_env(tmp_path, vms={"good": {"id": 3, "kernel": "/k"}, "broken": '{"id": 5,',
                                    "wrong": {"id": 4, "kernel": "/k"}})
    p = run("vm-list", *(["--json"] if json_flag else []), env=env)
    assert p.returncode == 1, p
    lines = p.stderr.splitlines()
    assert len(lines) == 2, lines
    assert all(l.startswith("vm-list: ") for l in lines), lines
    assert any("broken.json" in l for l in lines) and any("wrong.json" in l for l in lines)
    if json_flag:
        rows = {r["name"]: r["state"] for r in json.loads(p.stdout)}
    else:
        rows = dict(l.split()[:2] for l in p.stdout.splitlines()[1:])
    assert rows == {"broken": "invalid", "good": "stopped", "wrong": "invalid"}, p.stdout


# ---- two routers ----------------------------------------------------------------

def test_second_router_is_reported_at_the_router(tmp_path):
    """A network with two routers is reported at the second router's file
    (in file order), naming the first; not at a client's that comes first."""
    env = config_env(tmp_path, vms={
        "a-client": {"id": 3, "kernel": "/k", "vmNetwork": {"lan": {}}},
        "r1": {"id": 5, "kernel": "/k", "vmNetwork": {"lan": {"router": True}}},
        "r2": {"id": 7, "kernel": "/k", "vmNetwork": {"lan": {"router": True}}},
        "r3": {"id": 9, "kernel": "/k", "vmNetwork": {"lan": {"router": True}}},
    })
    p = run("qubes-lite-host-agent", "--check", "--config-only", env=env)
    assert p.returncode == 1
    lines = [l for l in p.stderr.splitlines() if "key '" in l]
    etc = tmp_path / "etc" / "vms"
    assert lines == [
        f"qubes-lite-host-agent: {etc}/r2.json: key 'vmNetwork.lan.router': network 'lan' "
        f"already has a router, VM 'r1' ({etc}/r1.json)",
        f"qubes-lite-host-agent: {etc}/r3.json: key 'vmNetwork.lan.router': network 'lan' "
        f"already has a router, VM 'r1' ({etc}/r1.json)",
    ], p.stderr
