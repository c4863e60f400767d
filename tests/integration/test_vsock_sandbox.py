"""qubes-lite-vsock in its sandbox, seen from outside (its namespaces differ
from the host's, seccomp, no_new_privs, no capabilities) and from inside
(its mount table, PID 1, only lo and down, its uid map), its allowlist, and
what each --seccomp-mode does with a forbidden call (the test build's hook:
SIGUSR2 makes it call socket(AF_INET)). The device's behaviour sandboxed
and not is test_vsock_device.py's; the sandbox mechanism's,
test_sandbox.py's."""
import os
import shutil
import signal
import subprocess
import tempfile

import pytest

from qltest import program
from qltest.procs import ns_id, proc_status, wait_for
from qltest.vsock import HOOKED, Device

SIGSYS = 31


@pytest.fixture
def tmp():
    # Short: unix socket paths hold 107 bytes.
    d = tempfile.mkdtemp(prefix="qlvs-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d)


@pytest.mark.parametrize("start", ["root", "unprivileged"])
def test_from_outside_and_inside(tmp, start):
    """Started as root it stays root outside its user namespace (the
    source port rule needs root to read as itself); started as another
    user (systemd's User=) it is that user. Either way: no capability,
    no_new_privs, seccomp, its own namespaces, PID 1 of its own."""
    if os.geteuid() != 0:
        pytest.skip("needs root (to be root, and to start it as another user)")
    uid = 0 if start == "root" else 65534
    if uid:
        os.chown(tmp, uid, uid)
    d = Device(tmp, user=uid or None)
    sup, main = d.pid, d.main_pid
    for pid in (sup, main):
        st = proc_status(pid)
        assert st["Uid"].split() == [str(uid)] * 4, (pid, st["Uid"])
        assert st["Gid"].split() == [str(uid)] * 4, (pid, st["Gid"])
        assert st["Groups"].split() == [], (pid, st["Groups"])
        assert st["Seccomp"] == "2" and st["NoNewPrivs"] == "1", pid
        for caps in ("CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"):
            assert int(st[caps], 16) == 0, (pid, caps, st[caps])
    for name in ("user", "mnt", "net", "ipc", "uts", "cgroup", "pid"):
        assert ns_id(main, name) != ns_id("self", name), name
    # The supervisor is systemd's main PID, in the host's pid namespace.
    assert ns_id(sup, "pid") == ns_id("self", "pid")
    assert proc_status(main)["NSpid"].split()[-1] == "1"

    # Inside: uid 0 is who started it, and only that uid is mapped.
    with open(f"/proc/{main}/uid_map") as f:
        assert f.read().split() == ["0", str(uid), "1"]
    # Its root: a read-only tmpfs, /proc, /tmp, three device nodes, its
    # libraries read-only, and its socket directory read-write.
    with open(f"/proc/{main}/mounts") as f:
        mounts = [line.split() for line in f]
    where = {m[1]: m for m in mounts}
    assert where["/"][2] == "tmpfs" and "ro" in where["/"][3].split(","), where["/"]
    assert where["/proc"][2] == "proc" and where["/tmp"][2] == "tmpfs"
    assert "rw" in where[tmp][3].split(","), where[tmp]
    extra = set(where) - {"/", "/proc", "/tmp", tmp, "/dev/null", "/dev/zero", "/dev/urandom"}
    for path in extra:
        assert "ro" in where[path][3].split(","), where[path]
        assert path == "/etc/ld.so.cache" or ".so" in os.path.basename(path), path
    assert len(mounts) == len(where), mounts
    if shutil.which("nsenter") and shutil.which("ip"):
        links = subprocess.run(["nsenter", f"--net=/proc/{main}/ns/net", "ip", "-o", "link"],
                               stdout=subprocess.PIPE, text=True, check=True).stdout.splitlines()
        assert len(links) == 1 and " lo: " in links[0] and "state DOWN" in links[0], links
    assert d.stop() == 0


def test_print_seccomp():
    out = subprocess.run([program("qubes-lite-vsock"), "--print-seccomp", "main"],
                         stdout=subprocess.PIPE, text=True, check=True).stdout
    count = int(out.splitlines()[-1].split(": ")[1].split()[0])
    print(f"qubes-lite-vsock's seccomp allowlist: {count} system calls")
    assert 0 < count <= 32
    calls = {line.split()[0] for line in out.splitlines()[:-1] if line.strip()}
    assert {"accept4", "connect", "socket", "recvmsg", "epoll_wait"} <= calls
    assert not calls & {"openat", "open", "execve", "execveat", "clone", "clone3", "fork",
                        "vfork", "kill", "bind", "listen", "ptrace"}, calls
    sup = subprocess.run([program("qubes-lite-vsock"), "--print-seccomp", "supervisor"],
                         stdout=subprocess.PIPE, text=True, check=True).stdout
    assert sup.splitlines()[-1].startswith("supervisor: ")
    r = subprocess.run([program("qubes-lite-vsock"), "--print-seccomp", "child"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "supervisor, main" in r.stderr, r.stderr


@pytest.mark.parametrize("mode", ["kill", "trap", "log", "disabled"])
def test_seccomp_mode(tmp, mode):
    """kill: the device dies of SIGSYS and the supervisor says so (128+31);
    trap: the call is named on stderr and it exits 159; log and disabled:
    the call works (its namespace has no network) and it serves on."""
    if not os.access(HOOKED, os.X_OK):
        pytest.fail(f"{HOOKED} is not built: run `make tests`")
    d = Device(tmp, "--seccomp-mode", mode, binary=HOOKED)
    main = d.main_pid
    assert proc_status(main)["Seccomp"] == ("0" if mode == "disabled" else "2")
    os.kill(d.pid, signal.SIGUSR2)  # the supervisor forwards it
    if mode in ("kill", "trap"):
        d.proc.wait(timeout=10)
        d.killed = True
        assert d.proc.returncode == 128 + SIGSYS, (d.proc.returncode, d.log_text())
        if mode == "trap":
            assert "seccomp: refused system call" in d.log_text(), d.log_text()
        d.stop(check=False)
        # Its sockets are left behind; the next start takes them over.
        d = Device(tmp)
    else:
        wait_for(lambda: "Test hook: socket(AF_INET) allowed" in d.log_text(), timeout=10,
                 what="the hook's call")
        assert d.alive()
    # It still answers on PATH (no guest driver: closed at once).
    s = d.client(5200)
    assert s.recv(100) == b""
    s.close()
    assert d.stop() == 0
