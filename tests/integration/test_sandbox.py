"""vm-switch's sandbox, through the real code.

- try-syscall runs each system call class under each role's seccomp filter
  in each mode: what the role needs works, everything else fails the way
  the mode says (killed by SIGSYS, SIGSYS delivered, allowed and logged,
  no filter).
- sandbox-driver has vm-switch's process shape around the real sandbox
  (supervisor outside, main process as PID 1, a child re-executed from a
  descriptor after pivot_root that locks itself down): what it sees from
  inside, and what the host sees of its processes from outside.
"""
import functools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile

import pytest

from qltest import BUILD
from qltest.procs import children_of, drop_to, ns_id, proc_status, wait_for

HELPERS = os.path.join(BUILD, "tests", "sandbox")
TRY = os.path.join(HELPERS, "try-syscall")
DRIVER = os.path.join(HELPERS, "sandbox-driver")
MODES = ["kill", "trap", "log", "disabled"]
IS_ROOT = os.geteuid() == 0
USER = "nobody"

# System call numbers (x86_64) of the calls each class is refused at.
NR = {
    "msg-fds": 47, "mmap-exec": 9, "mprotect-exec": 10, "epoll": 233, "fork": 56,
    "clone-newuser": 56, "clone3": 435, "unshare": 272, "socket-unix": 41,
    "socket-inet": 41, "socket-netlink": 41, "socketpair": 53, "open-read": 257,
    "open-write": 257, "open-creat": 257, "execveat": 322, "execve": 59, "ptrace": 101,
    "mount": 165, "kill": 62, "inotify": 294, "memfd": 319, "eventfd": 290, "setns": 308,
    "bpf": 321,
}
# The supervisor sends (sendto) but never receives with descriptors.
NR_SUPERVISOR = dict(NR, **{"msg-fds": 46})

# What each role must be able to do, and what it must not.
ALLOWED = {
    "child": ["read", "write", "msg-fds", "mmap-shared", "epoll", "fstat", "close",
              "clock-gettime"],
    # The main process re-executes its children, whose dynamic loader maps
    # code: executable mappings stay allowed until a child locks down.
    # It writes its counters file in the socket directory: opens are not
    # restricted by flags; the mount namespace has nothing else writable.
    "main": ["read", "write", "msg-fds", "mmap-shared", "mmap-exec", "mprotect-exec", "epoll",
             "fstat", "close", "clock-gettime", "fork", "socket-unix", "socketpair",
             "open-read", "open-write", "execveat", "kill", "inotify", "memfd", "eventfd"],
    "supervisor": ["read", "write", "mmap-shared", "fstat", "close", "clock-gettime", "kill",
                   "socket-unix"],
}
FORBIDDEN = {
    "child": ["mmap-exec", "mprotect-exec", "fork", "clone-newuser", "clone3", "unshare",
              "socket-unix", "socket-inet", "socket-netlink", "socketpair", "open-read",
              "open-write", "open-creat", "execveat", "execve", "ptrace", "mount", "kill",
              "inotify", "memfd", "eventfd", "setns", "bpf"],
    "main": ["clone-newuser", "unshare", "socket-inet", "socket-netlink", "execve", "ptrace",
             "mount", "setns", "bpf"],
    "supervisor": ["msg-fds", "mmap-exec", "mprotect-exec", "epoll", "fork", "clone-newuser",
                   "clone3", "unshare", "socket-inet", "socket-netlink", "socketpair",
                   "open-read", "open-write", "open-creat", "execveat", "execve", "ptrace",
                   "mount", "inotify", "memfd", "eventfd", "setns", "bpf"],
}
# clone3's flags are out of seccomp's reach: the main refuses it with
# ENOSYS in every mode, so that glibc falls back to clone().
MAIN_ENOSYS = ["clone3"]


def unprivileged():
    """preexec_fn dropping to USER when the tests run as root."""
    if not IS_ROOT:
        return None
    pw = pwd.getpwnam(USER)
    return functools.partial(drop_to, pw.pw_uid, pw.pw_gid)


def need(path):
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is not built: run `make tests`")


def try_calls(role, mode, calls):
    need(TRY)
    proc = subprocess.run([TRY, role, mode] + calls, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=120,
                          preexec_fn=unprivileged(), cwd="/")
    assert proc.returncode == 0, proc.stderr
    got = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert sorted(got) == sorted(set(calls)), proc.stdout
    return got


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("role", ["child", "main", "supervisor"])
def test_filter(role, mode):
    allowed, forbidden = ALLOWED[role], FORBIDDEN[role]
    enosys = MAIN_ENOSYS if role == "main" else []
    got = try_calls(role, mode, allowed + forbidden + enosys)
    for call in allowed:
        assert got[call] == "ok", f"{role}/{mode}: {call} needed but {got[call]}"
    for call in enosys:
        want = "ok" if mode == "disabled" else "errno:ENOSYS"
        assert got[call] == want, f"{role}/{mode}: {call}: {got[call]}"
    if mode in ("log", "disabled"):
        # The call runs: its result is the kernel's, the same as without
        # any filter (log mode only leaves an audit record).
        bare = try_calls(role, "disabled", forbidden)
        for call in forbidden:
            assert not got[call].startswith(("signal:", "trapped:")), f"{role}/{mode}: {call}"
            if role == "child" and mode == "log" and call in MAIN_ENOSYS:
                # A child's filter is stacked on the main's, whose ENOSYS
                # takes precedence over logging.
                assert got[call] == "errno:ENOSYS"
                continue
            assert got[call] == bare[call], f"{role}/{mode}: {call}: {got[call]} vs {bare[call]}"
        return
    for call in forbidden:
        if mode == "kill":
            want = "signal:SYS"
        else:
            want = f"trapped:{(NR_SUPERVISOR if role == 'supervisor' else NR)[call]}"
        assert got[call] == want, f"{role}/{mode}: {call} should fail as {want}, got {got[call]}"


def test_child_allowlist_count():
    need(DRIVER)
    out = subprocess.run([DRIVER, "--print-seccomp", "child"], stdout=subprocess.PIPE,
                         text=True, check=True).stdout
    last = out.splitlines()[-1]
    count = int(last.split(": ")[1].split()[0])
    print(f"children's seccomp allowlist: {count} system calls")
    assert 0 < count <= 30, out


# ---- the sandbox around a process ----------------------------------------

def userns_available():
    try:
        with open("/proc/sys/user/max_user_namespaces") as f:
            return int(f.read()) > 0
    except OSError:
        return False


pytestmark_ns = pytest.mark.skipif(not userns_available(),
                                   reason="user namespaces are disabled on this kernel")


@pytest.fixture
def dirs():
    """A config and a socket directory the unprivileged user can reach."""
    top = tempfile.mkdtemp(prefix="qlsbx.", dir="/tmp")
    os.chmod(top, 0o755)
    config = os.path.join(top, "config")
    sock = os.path.join(top, "sock")
    os.mkdir(config, 0o755)
    os.mkdir(sock, 0o755)
    with open(os.path.join(config, "a.conf"), "w") as f:
        f.write("mac=52:54:00:12:34:56\n")
    os.chmod(os.path.join(config, "a.conf"), 0o644)
    if IS_ROOT:
        pw = pwd.getpwnam(USER)
        os.chown(sock, pw.pw_uid, pw.pw_gid)
    yield top, config, sock
    shutil.rmtree(top, ignore_errors=True)


def starts():
    """How the switch may be started: as root told which user to become,
    or already unprivileged (systemd's DynamicUser=, a user's shell)."""
    return ["root-user", "unprivileged"] if IS_ROOT else ["unprivileged"]


def driver_cmd(how, config, sock, command, *extra):
    need(DRIVER)
    args = [DRIVER, "--config-dir", config, "--socket-dir", sock] + list(extra)
    if how == "root-user":
        args += ["--user", USER]
    return args + [command], (unprivileged() if how == "unprivileged" else None)


def outside_uid():
    return pwd.getpwnam(USER).pw_uid if IS_ROOT else os.geteuid()


def parse_facts(out):
    facts = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        facts.setdefault(key, []).append(value)
    return facts


@pytestmark_ns
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("how", starts())
def test_inside(dirs, how, mode):
    top, config, sock = dirs
    cmd, pre = driver_cmd(how, config, sock, "inspect", "--seccomp-mode", mode)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=60, preexec_fn=pre, cwd="/")
    assert proc.returncode == 0, proc.stderr
    f = parse_facts(proc.stdout)
    uid = outside_uid()
    assert f["pid"] == ["1"]
    assert f["uid_map"] == [f"0 {uid} 1"]
    assert f["hostname"] == ["vm-switch"]
    # Only the loopback interface (it stays down: see test_outside).
    assert f["netdev"] == ["lo"]
    # Only our own processes: the main process and its child.
    procs = sorted(f["proc"])
    assert procs == ["1 sandbox-driver", "2 sandbox-driver"], procs
    # The child was re-executed from a descriptor after pivot_root, got its
    # memfd over SCM_RIGHTS, locked down and answered.
    assert f["child"] == ["ok pid=2 shm=ringdata", "status 0"]
    assert f["config"] == ["a.conf"]
    # The mount table: our tmpfs root and exactly what it was given. No
    # mount of the host's is visible; the program's own files are bound
    # read-only at their paths.
    mounts = dict(m.split(" ", 1) for m in f["mount"])
    fixed = {"/", "/proc", "/tmp", "/dev/null", "/dev/zero", "/dev/urandom", "/config", sock}
    assert fixed <= set(mounts), mounts
    assert "ro" in mounts["/"].split(",")
    assert "ro" in mounts["/config"].split(",")
    assert "rw" in mounts[sock].split(",")
    for point, opts in mounts.items():
        if point in fixed:
            continue
        assert "ro" in opts.split(","), (point, opts)
        name = os.path.basename(point)
        assert point == "/etc/ld.so.cache" or ".so" in name, point
        assert os.path.isfile(point), point
    host = set()
    with open("/proc/self/mountinfo") as mi:
        for line in mi:
            host.add(line.split()[4])
    assert not (host - fixed) & set(mounts), (host - fixed) & set(mounts)
    top_entries = set(f["root"])
    assert top_entries <= {"config", "dev", "proc", "tmp", "etc", "lib", "lib64", "usr",
                           sock.split("/")[1]}, top_entries


@pytest.fixture
def notify_socket(dirs):
    """A socket standing in for systemd's NOTIFY_SOCKET."""
    top = dirs[0]
    path = os.path.join(top, "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    os.chmod(path, 0o777)
    s.settimeout(30)
    yield path, s
    s.close()


@pytestmark_ns
@pytest.mark.parametrize("how", starts())
def test_outside(dirs, notify_socket, how):
    top, config, sock = dirs
    npath, nsock = notify_socket
    cmd, pre = driver_cmd(how, config, sock, "serve")
    env = dict(os.environ, NOTIFY_SOCKET=npath)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=pre, env=env, cwd="/")
    try:
        assert proc.stdout.readline().startswith("child ok"), proc.stderr.read()
        assert proc.stdout.readline() == "ready\n"
        # The supervisor relays the main process's READY=1 to "systemd".
        assert nsock.recv(256) == b"READY=1"
        sup = proc.pid
        wait_for(lambda: len(children_of(sup)) == 1, timeout=10, what="main process")
        main = children_of(sup)[0]
        wait_for(lambda: len(children_of(main)) == 1, timeout=10, what="child")
        child = children_of(main)[0]
        uid = outside_uid()
        for pid in (sup, main, child):
            st = proc_status(pid)
            assert st["Uid"].split() == [str(uid)] * 4, (pid, st["Uid"])
            assert st["Gid"].split()[0] != "0", (pid, st["Gid"])
            assert st["Seccomp"] == "2", pid
            assert st["NoNewPrivs"] == "1", pid
            assert int(st["CapEff"], 16) == 0, pid
            assert int(st["CapPrm"], 16) == 0, pid
            assert int(st["CapBnd"], 16) == 0, pid
            for name in ("user", "mnt", "net", "ipc", "uts", "cgroup"):
                assert ns_id(pid, name) != ns_id("self", name), (pid, name)
        # The supervisor stays in the host's pid namespace (systemd's main
        # PID); the main process and child are in a new one.
        assert ns_id(sup, "pid") == ns_id("self", "pid")
        assert ns_id(sup, "pid_for_children") != ns_id("self", "pid")
        for pid in (main, child):
            assert ns_id(pid, "pid") != ns_id("self", "pid")
        # Only the main process has its own root: the supervisor keeps a
        # copy of the host's mount table.
        assert ns_id(main, "mnt") == ns_id(child, "mnt") != ns_id(sup, "mnt")
        # The network namespace: a loopback interface, down, and nothing else.
        if IS_ROOT and shutil.which("nsenter") and shutil.which("ip"):
            links = subprocess.run(["nsenter", f"--net=/proc/{main}/ns/net", "ip", "-o", "link"],
                                   stdout=subprocess.PIPE, text=True, check=True).stdout
            lines = links.splitlines()
            assert len(lines) == 1 and " lo: " in lines[0] and "state DOWN" in lines[0], links
        # The socket directory is the one writable place, and what is
        # created there belongs to the unprivileged user.
        st = os.stat(os.path.join(sock, "driver.sock"))
        assert st.st_uid == uid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, proc.stderr.read()
        assert nsock.recv(256) == b"STOPPING=1"
        assert proc.stdout.read() == "child status 0\n"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytestmark_ns
def test_main_killed_by_signal_is_mirrored(dirs):
    top, config, sock = dirs
    cmd, pre = driver_cmd(starts()[0], config, sock, "serve")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=pre, cwd="/")
    try:
        assert proc.stdout.readline().startswith("child ok"), proc.stderr.read()
        assert proc.stdout.readline() == "ready\n"
        main = children_of(proc.pid)[0]
        child = children_of(main)[0]
        os.kill(main, signal.SIGKILL)
        # 128 + SIGKILL, and the kernel took the child down with PID 1.
        assert proc.wait(timeout=20) == 128 + signal.SIGKILL
        wait_for(lambda: not os.path.exists(f"/proc/{child}"), timeout=10, what="child gone")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.skipif(not IS_ROOT, reason="needs root to show that root is refused")
def test_root_needs_user(dirs):
    top, config, sock = dirs
    proc = subprocess.run([DRIVER, "--config-dir", config, "--socket-dir", sock, "inspect"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    assert proc.returncode == 1
    assert "sandbox" in proc.stderr and proc.stdout == ""


def test_no_sandbox(dirs):
    top, config, sock = dirs
    need(DRIVER)
    proc = subprocess.run([DRIVER, "--no-sandbox", "--config-dir", config, "--socket-dir", sock,
                           "inspect"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=30, preexec_fn=unprivileged(), cwd="/")
    assert proc.returncode == 0, proc.stderr
    f = parse_facts(proc.stdout)
    assert f["pid"] != ["1"]
    assert f["config"] == ["a.conf"]
    assert f["child"][0].startswith("ok pid=")
