"""vm-start, vm-stop, vm-list and vm-start-debug against the real host
agent supervising the crosvm stand-in (qltest.vmm); vm-list's states and
vm-start-debug also against a real VM under qemu."""
import json
import re
import os
import signal
import subprocess
import time

from qltest import program, qlwire
from qltest.host import VM
from qltest.procs import wait_for
from qltest.qlwire import pb
from qltest.vmm import VMM_ENV_ARGS

COMMANDS = ("vm-start", "vm-stop", "vm-list", "vm-start-debug")


def test_help():
    for cmd in COMMANDS:
        p = subprocess.run([program(cmd), "--help"], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0 and p.stdout.startswith(f"Usage: {cmd}"), (cmd, p)


def test_unknown_vm_is_one_line(vmm_stack):
    s = vmm_stack(start=False)
    for cmd in ("vm-start", "vm-stop", "vm-start-debug"):
        p = s.run_tool(cmd, "nosuch")
        # vm-start-debug's own errors are 255, apart from the VMM's status.
        assert p.returncode == (255 if cmd == "vm-start-debug" else 1), (cmd, p)
        assert p.stdout == ""
        lines = p.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{cmd}: no VM named 'nosuch'"), (cmd, lines)


def test_vm_start_and_stop(vmm_stack):
    s = vmm_stack(standin={"boot_ms": 1500})
    p = s.run_tool("vm-start", VM)
    assert p.returncode == 0, p.stderr
    # It waited more than a second: one progress line.
    assert p.stderr == f"vm-start: waiting for VM '{VM}' to start...\n"
    assert s.host_status().state == pb.VM_STATE_RUNNING
    p = s.run_tool("vm-start", VM)
    assert p.returncode == 0 and p.stderr == ""
    p = s.run_tool("vm-stop", VM)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"VM '{VM}' stopped: the guest powered off ("), p.stdout
    assert s.wait_agent_exit() == 0
    # Nobody listens any more: not running, not an error.
    p = s.run_tool("vm-stop", VM)
    assert p.returncode == 0 and p.stdout == f"VM '{VM}' is not running\n", p


def test_vm_stop_not_running_with_an_agent(vmm_stack):
    s = vmm_stack()
    p = s.run_tool("vm-stop", VM)
    assert p.returncode == 0 and p.stdout == f"VM '{VM}' is not running\n", p


def test_vm_stop_says_how(vmm_stack):
    s = vmm_stack(standin={"ignore_poweroff": 1, "ignore_stop": 1},
                  agent_args=["--shutdown-timeout", "1", "--stop-timeout", "1"])
    assert s.run_tool("vm-start", VM).returncode == 0
    p = s.run_tool("vm-stop", VM)
    assert p.returncode == 0, p.stderr
    assert "killed" in p.stdout, p.stdout
    assert p.stderr == f"vm-stop: stopping VM '{VM}'...\n"


def test_vm_start_reports_the_failure(vmm_stack):
    s = vmm_stack(standin={"boot_ms": 5000, "crash_ms": 200})
    p = s.run_tool("vm-start", VM)
    assert p.returncode == 1
    last = p.stderr.splitlines()[-1]
    assert last.startswith(f"vm-start: VM '{VM}': ") and "killed by signal 11" in last, p.stderr


def test_vm_list(lifecycle_stack):
    s = lifecycle_stack(vm={"disposable": True, "idleTimeout": 300})
    s.write_json("vms/other.json", {"id": 5, "name": "other", "kernel": "/k"})
    p = s.run_tool("vm-list")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "UPTIME", "LEASES", "SESSIONS", "IDLE"]
    rows = {l.split()[0]: l.split() for l in lines[1:]}
    assert rows["other"][1] == "stopped" and rows[VM][1] == "stopped"

    p = s.run_tool("vm-start", VM)
    assert p.returncode == 0, p.stderr
    held = s.popen("vm-run", VM, "sleep", "60")
    wait_for(lambda: s.host_status().live_sessions == 1, timeout=30, what="the session")
    p = s.run_tool("vm-list", "--json")
    assert p.returncode == 0, p.stderr
    by = {v["name"]: v for v in json.loads(p.stdout)}
    assert by["other"] == {"name": "other", "state": "stopped"}
    t = by[VM]
    assert t["state"] == "running" and t["leases"] == 1 and t["live_sessions"] == 1
    assert t["idle_timeout_s"] == 300 and t["idle_left_s"] is None
    p = s.run_tool("vm-list")
    row = [l for l in p.stdout.splitlines() if l.startswith(VM)][0]
    assert row.split()[1:2] == ["running"] and "in use (300s)" in row, row

    os.kill(held.pid, signal.SIGKILL)
    held.wait()
    wait_for(lambda: s.host_status().leases == 0, timeout=30, what="the lease to end")
    wait_for(lambda: s.host_status().live_sessions == 0, timeout=30, what="the session to end")
    p = s.run_tool("vm-list", "--json")
    t = {v["name"]: v for v in json.loads(p.stdout)}[VM]
    assert t["leases"] == 0 and 295 <= t["idle_left_s"] <= 300, t
    p = s.run_tool("vm-list")
    row = [l for l in p.stdout.splitlines() if l.startswith(VM)][0]
    assert re.search(r"off in (4m5\ds|5m00s)$", row), row


def test_vm_list_empty(vmm_stack):
    s = vmm_stack(start=False)
    os.unlink(os.path.join(s.etc, "vms", f"{VM}.json"))
    p = s.run_tool("vm-list", "--json")
    assert p.returncode == 0 and json.loads(p.stdout) == []


def test_vm_start_debug(vmm_stack):
    s = vmm_stack(start=False, standin={"crash_ms": 2000})
    p = subprocess.run([program("vm-start-debug"), VM, "--guest", "unix:" + s.guest_sock, *VMM_ENV_ARGS],
                       env=s.env, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    # The VMM's exit status, its console and stderr on ours.
    assert p.returncode == 128 + signal.SIGSEGV, p.stderr
    assert b"standin: boot done" in p.stdout
    assert b"crashing as asked" in p.stderr
    assert s.argv()[-1] == "/boot/vmlinuz-standin"


def test_exit_statuses_of_failures(vmm_stack):
    """What --help and the READMEs say: vm-list fails with 1, vm-start-debug
    with 1 when the host agent it runs refuses, 255 for its own errors."""
    s = vmm_stack(start=False)
    p = s.run_tool("vm-list", "extra")
    assert p.returncode == 1 and p.stderr == "vm-list: unexpected argument 'extra' (see --help)\n"
    p = s.run_tool("vm-start-debug", VM, "--no-such-agent-option")
    assert p.returncode == 1, p
    assert "qubes-lite-host-agent" in p.stderr and "vm-start-debug:" not in p.stderr
    p = s.run_tool("vm-start-debug", "-x")
    assert p.returncode == 255 and p.stderr.startswith("vm-start-debug: unknown option '-x'"), p


def test_vm_start_debug_clean_exit_and_vm_run(lifecycle_stack):
    s = lifecycle_stack(start=False)
    p = subprocess.Popen([program("vm-start-debug"), VM, *s.guest_args(), *VMM_ENV_ARGS],
                         env=s.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        wait_for(lambda: os.path.exists(s.sock), timeout=30, what="the socket")
        r = s.vm_run(VM, "echo", "debug")
        assert r.returncode == 0 and r.stdout == "debug\n", r.stderr
        # While it runs, a second one is refused.
        q = s.run_tool("vm-start-debug", VM)
        assert q.returncode == 255
        assert q.stderr == f"vm-start-debug: VM '{VM}' is running: stop it first (vm-stop {VM})\n"
        assert s.run_tool("vm-stop", VM).returncode == 0
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        if s.vmm == "qemu":
            # qemu in the foreground: its serial console on our stdout.
            assert b"qubes-lite-init" in out, out[-2000:]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_vm_start_debug_leaves_a_listening_agent_alone(vmm_stack):
    # The VM is stopped but its host agent (or systemd's socket unit)
    # listens: the foreground agent must not take the socket over.
    s = vmm_stack()
    before = os.stat(s.sock).st_ino
    p = s.run_tool("vm-start-debug", VM, "--guest", "unix:" + s.guest_sock, timeout=60)
    assert p.returncode == 255, p
    assert p.stderr == (f"vm-start-debug: the host agent of VM '{VM}' (or its socket unit) "
                        f"listens on its socket: stop it first "
                        f"(systemctl stop qubes-lite-{VM}.socket)\n"), p.stderr
    assert not os.path.exists(s.argv_file)
    assert os.stat(s.sock).st_ino == before
    assert s.host_status().state == pb.VM_STATE_STOPPED


def list_state(s):
    p = s.run_tool("vm-list", "--json")
    assert p.returncode == 0, p.stderr
    return {v["name"]: v for v in json.loads(p.stdout)}[VM]["state"]


def test_vm_list_starting_and_stopping(vmm_stack):
    s = vmm_stack(standin={"boot_ms": 3000, "ignore_poweroff": 1},
                  agent_args=["--shutdown-timeout", "3"])
    start = s.popen("vm-start", VM, stderr=subprocess.PIPE)
    wait_for(lambda: list_state(s) == "starting", timeout=10, what="starting")
    assert start.wait(timeout=30) == 0
    assert list_state(s) == "running"
    stop = s.popen("vm-stop", VM, stdout=subprocess.PIPE)
    wait_for(lambda: list_state(s) == "stopping", timeout=10, what="stopping")
    out, _ = stop.communicate(timeout=30)
    assert stop.returncode == 0 and b"stopped on request" in out, out
    assert s.wait_agent_exit() == 0
    assert list_state(s) == "stopped"


def fake_agent(path, reply):
    """A host agent that answers one client: Hello, then `reply(conn, name,
    msg)` for its request. Returns the qlwire.FakePeer."""
    os.makedirs(os.path.dirname(path), exist_ok=True)

    def talk(c):
        c.send_hello(software="fake")
        name, _ = c.recv(timeout=30)
        assert name == "hello"
        name, msg = c.recv(timeout=30)
        reply(c, name, msg)
    return qlwire.FakePeer(path, talk, once=True)


def test_vm_start_wants_the_vm_running(vmm_stack):
    # A HostStatus that says anything but running is no success.
    s = vmm_stack(start=False)

    def reply(c, name, msg):
        assert name == "host_start", name
        c.send("host_status", vm=VM, state=pb.VM_STATE_STOPPED)

    peer = fake_agent(s.sock, reply)
    try:
        p = s.run_tool("vm-start", VM, timeout=60)
        assert p.returncode == 1, p
        assert p.stderr == f"vm-start: VM '{VM}' is stopped, not running\n", p.stderr
    finally:
        peer.close()
        peer.join(timeout=30)


def test_vm_stop_gives_up_after_its_timeout(vmm_stack):
    # A host agent that takes HostStop and never answers.
    s = vmm_stack(start=False)

    def reply(c, name, msg):
        assert name == "host_stop", name
        time.sleep(20)

    peer = fake_agent(s.sock, reply)
    try:
        start = time.monotonic()
        p = s.run_tool("vm-stop", "--timeout", "2", VM, timeout=60)
        assert 1.9 <= time.monotonic() - start < 10
        assert p.returncode == 1, p
        assert p.stderr.splitlines()[-1] == (f"vm-stop: VM '{VM}' did not stop within 2 s (its "
                                             f"host agent may still be at it)"), p.stderr
    finally:
        peer.close()
