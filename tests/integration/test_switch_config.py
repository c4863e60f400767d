"""vm-switch's configuration directory, watched while it runs: adding,
changing and removing <vm>.conf starts, restarts and stops that VM's child
only; bad files are reported by name and ignored; one router per network.
No frontend is needed for any of it."""
import os
import socket
import subprocess
import time

from qltest import program
from qltest.procs import pid_alive, wait_for
from qltest.switch import C1_MAC, C2_MAC, ROUTER_MAC


def pids(stats):
    return {vm: v["pid"] for vm, v in stats.items()}


def test_add_change_remove(switch_run):
    sw = switch_run
    before = pids(sw.start_vms("router", "c1"))
    assert os.path.exists(sw.sock("router")) and os.path.exists(sw.sock("c1"))

    # Added: its child and its socket, nobody else touched.
    sw.write_conf("c2", C2_MAC)
    s = sw.wait_running(["c2"])
    assert os.path.exists(sw.sock("c2"))
    assert {k: s[k]["pid"] for k in before} == before
    c2_pid = s["c2"]["pid"]

    # Changed: that child only is started again, on the same socket.
    sw.write_conf("c2", "52:54:00:5a:00:13")
    s = sw.wait_stats(lambda s: s["c2"]["pid"] not in (0, c2_pid), what="c2 restarted")
    assert not pid_alive(c2_pid)
    assert {k: s[k]["pid"] for k in before} == before
    assert s["c2"]["restarts"] == 0  # a restart on request is not a crash
    # Rewritten with the same content: nothing happens.
    c2_pid = s["c2"]["pid"]
    sw.write_conf("c2", "52:54:00:5a:00:13")
    time.sleep(1.5)
    assert sw.stats()["c2"]["pid"] == c2_pid

    # Removed: child stopped, socket gone, the others untouched.
    sw.remove_conf("c2")
    s = sw.wait_stats(lambda s: "c2" not in s, what="c2 removed")
    assert not os.path.exists(sw.sock("c2"))
    wait_for(lambda: not pid_alive(c2_pid), timeout=10, what="c2's child to exit")
    assert pids(s) == before


def test_bad_files_reported_and_ignored(switch_run):
    sw = switch_run
    sw.write_conf("router", ROUTER_MAC, "router")
    sw.write_conf("c1", C1_MAC)
    sw.write_conf("junk", None, text="mac=52:54:00:5a:00:20\nmtu=1500\n")
    sw.start()
    before = pids(sw.wait_running(["router", "c1"]))
    sw.wait_log('junk.conf:2: unknown key "mtu"')

    sw.write_conf("multi", None, text="mac=01:00:5e:00:00:01\n")
    sw.wait_log("multi.conf:1:")
    sw.write_conf("Bad_Name", C2_MAC)
    sw.wait_log("Bad_Name.conf: not a VM name")
    # Same MAC as c1: refused by name.
    sw.write_conf("twin", C1_MAC)
    sw.wait_log("twin.conf: mac is c1's already: ignored")
    # A running VM whose file turns bad keeps what it had.
    sw.write_conf("c1", None, text="mac=nonsense\n")
    sw.wait_log("c1.conf:1:")
    time.sleep(1.5)
    s = sw.stats()
    assert set(s) == {"router", "c1"}
    assert pids(s) == before
    assert "ignored" in sw.log_text()


def test_one_router_per_network(switch_run):
    sw = switch_run
    sw.start_vms("router", "c1")
    sw.write_conf("r2", "52:54:00:5a:00:21", "router")
    sw.wait_log("r2.conf: role=router, but router is this network's router "
                 "(exactly one per network): ignored")
    assert "r2" not in sw.stats()
    # The first router leaves: the one refused before takes its place.
    sw.remove_conf("router")
    s = sw.wait_running(["r2"])
    assert "router" not in s and s["r2"]["role"] == "router"


def test_command_line():
    vs = program("vm-switch")
    out = subprocess.run([vs, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--config-dir" in out.stdout
    for args, msg in (([], "--socket-dir is required"),
                      (["--socket-dir", "/tmp"], "--config-dir is required"),
                      (["--bogus"], "unknown option '--bogus'"),
                      (["--socket-dir", "/tmp", "--config-dir", "/tmp", "--log-level", "loud"],
                       "unknown log level 'loud'"),
                      (["--socket-dir", "/tmp", "--config-dir", "/tmp", "--seccomp-mode", "x"],
                       "unknown seccomp mode 'x'")):
        out = subprocess.run([vs, *args], capture_output=True, text=True)
        assert out.returncode == 2, (args, out)
        assert msg in out.stderr, (args, out.stderr)
    out = subprocess.run([vs, "--socket-dir", "/nonexistent", "--config-dir", "/nonexistent"],
                         capture_output=True, text=True)
    assert out.returncode == 1
    assert "cannot open the configuration directory /nonexistent" in out.stderr


def test_stats_command(switch_run):
    sw = switch_run
    sw.start_vms("router")
    out = subprocess.run([program("vm-switch"), "--stats", "--socket-dir", sw.socket_dir],
                         capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.startswith("vm=router pid=") and "state=waiting" in out.stdout


def test_ready_notification(switch_run):
    """READY=1 on $NOTIFY_SOCKET once the children are started."""
    sw = switch_run
    sw.write_conf("router", ROUTER_MAC, "router")
    sw.write_conf("c1", C1_MAC)
    path = os.path.join(sw.base, "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as ns:
        ns.bind(path)
        os.chmod(path, 0o777)  # the sandboxed switch runs as another user
        ns.settimeout(20)
        sw.start(env={"NOTIFY_SOCKET": path})
        assert ns.recv(64) == b"READY=1"
    s = sw.stats()
    assert s["router"]["pid"] > 0 and s["c1"]["pid"] > 0


def test_stats_command_without_switch(tmp_path):
    out = subprocess.run([program("vm-switch"), "--stats", "--socket-dir", str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 1
    assert "vm-switch.stats" in out.stderr and "is vm-switch running there?" in out.stderr


def test_removals_do_not_reread_running_vms(switch_run):
    """Removing a file that is no VM's (not a .conf, or a .conf of no VM)
    touches nothing, and the removal of one VM's file does not re-read the
    files of the VMs still running: a file being rewritten (open, not yet
    closed) is read when its own event says it is done."""
    sw = switch_run
    sw.write_conf("router", ROUTER_MAC, "router")
    sw.write_conf("c1", C1_MAC)
    sw.write_conf("c2", C2_MAC)
    for junk in ("notes.txt", "zz.conf"):
        with open(os.path.join(sw.config_dir, junk), "w") as f:
            f.write("not a VM\n")
    sw.start()
    before = pids(sw.wait_running(["router", "c1", "c2"]))
    path = os.path.join(sw.config_dir, "c1.conf")
    f = open(path, "w")  # truncated, new content written but not closed
    try:
        f.write("mac=52:54:00:5a:00:12\n")
        f.flush()
        os.unlink(os.path.join(sw.config_dir, "notes.txt"))
        os.unlink(os.path.join(sw.config_dir, "zz.conf"))
        sw.remove_conf("c2")
        s = sw.wait_stats(lambda s: "c2" not in s, what="c2 removed")
        time.sleep(1.5)
        s = sw.stats()
        assert s["c1"]["pid"] == before["c1"], sw.log_text()
        assert s["router"]["pid"] == before["router"]
        assert "c1: configuration changed" not in sw.log_text()
    finally:
        f.close()
    s = sw.wait_stats(lambda s: s["c1"]["pid"] not in (0, before["c1"]), what="c1 restarted")
    assert "c1: configuration changed" in sw.log_text()
