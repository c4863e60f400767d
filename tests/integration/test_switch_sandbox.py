"""vm-switch in its sandbox, seen from the host: every process in its own
namespaces, under seccomp, with no_new_privs, no capabilities and no uid 0;
and a child that makes a forbidden call dies, is restarted, and its VM is
served again. (The sandbox itself is tested in depth by test_sandbox.py;
the whole vm-switch suite runs with and without it through qltest.switch.)"""
import os
import pwd
import shutil
import signal
import subprocess
import time

import pytest

from qltest import program
from qltest.procs import catches, children_of, ns_id, pid_alive, proc_status, wait_for
from qltest.switch import (BURST, C1_MAC, HOOKED, ROUTER_MAC, SANDBOX_USER, needs_testpmd,
                           switch_in_tmp)


@pytest.fixture
def sw():
    """A Switch in its sandbox only."""
    yield from switch_in_tmp(sandbox=True)


@pytest.mark.parametrize("start", ["root-user", "unprivileged"])
def test_processes_from_outside(sw, start):
    """Started as root with --user, or already unprivileged (systemd's
    DynamicUser=): the same sandbox either way."""
    if start == "unprivileged" and os.geteuid() != 0:
        pytest.skip("the tests run unprivileged already: covered by root-user")
    s = sw.start_vms("router", "c1", unprivileged=start == "unprivileged")
    sup = sw.proc.pid
    main = sw.main_pid()
    kids = [s["router"]["pid"], s["c1"]["pid"]]
    assert sorted(children_of(main)) == sorted(kids)
    # A child locks itself down once its SETUP is read, which may come
    # just after it shows up in the counters.
    wait_for(lambda: all(proc_status(p)["Seccomp"] == "2" for p in kids), timeout=10,
             what="the children's lock-down after SETUP")
    uid = pwd.getpwnam(SANDBOX_USER).pw_uid if os.geteuid() == 0 else os.geteuid()
    for pid in [sup, main] + kids:
        st = proc_status(pid)
        assert st["Uid"].split() == [str(uid)] * 4, (pid, st["Uid"])
        assert "0" not in st["Gid"].split(), (pid, st["Gid"])
        assert st["Seccomp"] == "2", pid
        assert st["NoNewPrivs"] == "1", pid
        for caps in ("CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"):
            assert int(st[caps], 16) == 0, (pid, caps, st[caps])
        for name in ("user", "mnt", "net", "ipc", "uts", "cgroup"):
            assert ns_id(pid, name) != ns_id("self", name), (pid, name)
    # The supervisor is systemd's main PID, in the host's pid namespace;
    # the switch itself is PID 1 of its own.
    assert ns_id(sup, "pid") == ns_id("self", "pid")
    for pid in [main] + kids:
        assert ns_id(pid, "pid") != ns_id("self", "pid")
    assert proc_status(main)["NSpid"].split()[-1] == "1"
    # The main process and the children share their own root; the
    # supervisor kept a copy of the host's.
    assert ns_id(main, "mnt") == ns_id(kids[0], "mnt") != ns_id(sup, "mnt")
    if os.geteuid() == 0 and shutil.which("nsenter") and shutil.which("ip"):
        links = subprocess.run(["nsenter", f"--net=/proc/{main}/ns/net", "ip", "-o", "link"],
                               stdout=subprocess.PIPE, text=True, check=True).stdout.splitlines()
        assert len(links) == 1 and " lo: " in links[0] and "state DOWN" in links[0], links
    # What the switch creates belongs to its user.
    assert os.stat(os.path.join(sw.socket_dir, "router.sock")).st_uid == uid
    assert os.stat(sw.stats_path()).st_uid == uid


def test_print_seccomp():
    out = subprocess.run([program("vm-switch"), "--print-seccomp", "child"],
                         stdout=subprocess.PIPE, text=True, check=True).stdout
    count = int(out.splitlines()[-1].split(": ")[1].split()[0])
    print(f"vm-switch children's seccomp allowlist: {count} system calls")
    assert 0 < count <= 30
    assert "accept4" in out and "socket " not in out and "openat" not in out


@needs_testpmd
def test_forbidden_call_kills_only_that_child(sw):
    """The test build's children make a forbidden call (socket(AF_INET)) on
    SIGUSR1: the filter kills the child, the main process restarts it on
    the same socket, and a new frontend is served both ways."""
    if not os.access(HOOKED, os.X_OK):
        pytest.fail(f"{HOOKED} is not built: run `make tests`")
    sw.start_vms("router", "c1", binary=HOOKED)
    r, a = sw.serve(router=C1_MAC, c1=ROUTER_MAC)
    a.send(1)
    r.wait_rx(BURST)

    s = sw.stats()
    victim, router = s["c1"]["pid"], s["router"]["pid"]
    os.kill(victim, signal.SIGUSR1)
    sw.wait_log("killed by signal 31")
    s = sw.wait_stats(lambda s: s["c1"]["pid"] not in (0, victim) and s["c1"]["restarts"] == 1,
                      what="c1's child restarted")
    assert not pid_alive(victim)
    assert s["router"]["pid"] == router and s["router"]["restarts"] == 0
    new = s["c1"]["pid"]
    assert proc_status(new)["Seccomp"] == "2"

    # The old frontend lost its backend; a new one is served by the new child.
    a.kill()
    a2 = sw.pmd("c1", C1_MAC, ROUTER_MAC)
    a2.start_rx()
    sw.wait_stats(lambda s: s["c1"]["state"] == "serving", what="c1 served again")
    before = r.rx_packets()
    a2.send(1)
    r.wait_rx(before + BURST)
    r.set_peer(C1_MAC)
    r.send_until(a2)


def test_forbidden_call_allowed_without_filter(sw):
    """The same trigger with --seccomp-mode disabled: the call just works
    and the child lives on, so it is the filter that killed it above."""
    if not os.access(HOOKED, os.X_OK):
        pytest.fail(f"{HOOKED} is not built: run `make tests`")
    s = sw.start_vms("router", binary=HOOKED, extra=["--seccomp-mode", "disabled"])
    victim = s["router"]["pid"]
    assert proc_status(victim)["Seccomp"] == "0"
    # The counters name a child as soon as it is forked; its hook is set
    # once it runs, and SIGUSR1 before that would end it by default.
    wait_for(lambda: catches(victim, signal.SIGUSR1), timeout=10, what="the child's hook")
    os.kill(victim, signal.SIGUSR1)
    time.sleep(1.5)
    assert pid_alive(victim)
    assert sw.stats()["router"]["restarts"] == 0
