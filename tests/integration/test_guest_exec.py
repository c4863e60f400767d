"""Guest agent: running programs, exit paths, stdio, environment, users."""
import errno
import os
import resource
import signal
import tempfile

import pytest

from qltest import qlwire
from qltest.guest import stream
from qltest.procs import drop_to, pid_alive, wait_for
from qltest.qlwire import pb


def test_exit_code(guest_agent):
    g = guest_agent()
    c = g.start(["sh", "-c", "echo out; echo err >&2; exit 7"])
    name, msg = c.recv()
    assert name == "started" and msg.pid > 0
    out, err, ex, others = c.recv_until_exit()
    assert (out, err) == (b"out\n", b"err\n")
    assert ex.WhichOneof("result") == "code" and ex.code == 7
    c.send("exit_ack")
    c.expect_closed()


def test_exit_zero_no_output(guest_agent):
    g = guest_agent()
    out, err, ex, others = g.run(["true"])
    assert (out, err) == (b"", b"")
    assert ex.WhichOneof("result") == "code" and ex.code == 0
    assert [n for n, _ in others] == ["started"]


def test_exit_signal(guest_agent):
    g = guest_agent()
    out, err, ex, _ = g.run(["sh", "-c", "ulimit -c 0; kill -TERM $$"])
    assert ex.WhichOneof("result") == "signal"
    assert ex.signal.signo == signal.SIGTERM and not ex.signal.core_dumped


def test_exit_signal_core_dumped(guest_agent):
    with open("/proc/sys/kernel/core_pattern") as f:
        pattern = f.read().strip()
    if pattern.startswith("|") or "/" in pattern:
        pytest.skip(f"core_pattern {pattern!r} does not write into the cwd")
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    if hard != resource.RLIM_INFINITY and hard < 1 << 20:
        pytest.skip("core dumps are limited by the hard rlimit")
    g = guest_agent()
    d = tempfile.mkdtemp(prefix="qlg-core-")
    try:
        out, err, ex, _ = g.run(["sh", "-c", "ulimit -c unlimited; kill -SEGV $$"], cwd=d.encode())
        assert ex.WhichOneof("result") == "signal"
        assert ex.signal.signo == signal.SIGSEGV
        assert ex.signal.core_dumped
    finally:
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
        os.rmdir(d)


def test_command_not_found_127(guest_agent):
    g = guest_agent()
    c = g.start(["no-such-command-ql"])
    out, err, ex, others = c.recv_until_exit()
    assert others == []                   # no Started for a program that never ran
    assert err == b"qubes-lite: no-such-command-ql: command not found\n"
    assert ex.WhichOneof("result") == "start_errno" and ex.start_errno == errno.ENOENT
    c.send("exit_ack")
    c.expect_closed()


def test_missing_path_127(guest_agent):
    g = guest_agent()
    out, err, ex, others = g.run(["/nonexistent/ql/prog"])
    assert ex.start_errno == errno.ENOENT
    assert err == b"qubes-lite: /nonexistent/ql/prog: No such file or directory\n"


def test_not_executable_126(guest_agent, tmp_path):
    g = guest_agent()
    p = tmp_path / "notexec"
    p.write_text("#!/bin/sh\necho no\n")
    p.chmod(0o644)
    out, err, ex, others = g.run([str(p)])
    assert ex.WhichOneof("result") == "start_errno" and ex.start_errno == errno.EACCES
    assert err == f"qubes-lite: {p}: Permission denied\n".encode()
    assert out == b""


def test_bad_cwd(guest_agent):
    g = guest_agent()
    out, err, ex, _ = g.run(["true"], cwd=b"/nonexistent-ql-dir")
    # A directory that is not there goes as ENOTDIR (ENOENT is a missing
    # program, 127); the line keeps the real reason.
    assert ex.WhichOneof("result") == "start_errno" and ex.start_errno == errno.ENOTDIR
    assert err.startswith(b"qubes-lite: cd: /nonexistent-ql-dir: No such file or directory")


def test_path_lookup_uses_request_path(guest_agent, tmp_path):
    g = guest_agent()
    prog = tmp_path / "ql-hello"
    prog.write_text("#!/bin/sh\necho found \"$@\"\n")
    prog.chmod(0o755)
    out, err, ex, _ = g.run(["ql-hello", "a b"], env=[f"PATH={tmp_path}:/usr/bin:/bin".encode()])
    assert (out, ex.code) == (b"found a b\n", 0), err


def test_argv_not_through_a_shell(guest_agent):
    g = guest_agent()
    out, err, ex, _ = g.run(["echo", "$HOME", "`id`", "a;b"])
    assert out == b"$HOME `id` a;b\n"


def test_environment_and_cwd(guest_agent):
    g = guest_agent()
    script = 'echo "$HOME|$USER|$LOGNAME|$SHELL|$XDG_RUNTIME_DIR|$FOO|$USER_OVERRIDE"; pwd; id -u'
    out, err, ex, _ = g.run(["sh", "-c", script], cwd=b"/tmp",
                            env=[b"FOO=bar=baz", b"USER_OVERRIDE=x"])
    assert ex.code == 0, err
    lines = out.decode().splitlines()
    home, user, logname, shell, xdg, foo, over = lines[0].split("|")
    assert user == logname == "root" and home == "/root"
    assert shell and xdg == "/run/user/0"
    assert (foo, over) == ("bar=baz", "x")
    assert lines[1:] == ["/tmp", "0"]


def test_request_env_overrides_login_env(guest_agent):
    g = guest_agent()
    out, _, ex, _ = g.run(["sh", "-c", 'echo "$HOME $XDG_RUNTIME_DIR"'],
                          env=[b"HOME=/elsewhere", b"XDG_RUNTIME_DIR=/tmp/x"])
    assert out == b"/elsewhere /tmp/x\n"


def test_default_cwd_is_home(guest_agent):
    g = guest_agent()
    out, _, ex, _ = g.run(["pwd"])
    assert out == b"/root\n"


def test_user_nobody(guest_agent):
    g = guest_agent()
    out, err, ex, _ = g.run(["sh", "-c", 'id -u; id -g; echo "$USER $HOME $XDG_RUNTIME_DIR"; pwd'],
                            user="nobody")
    assert ex.code == 0, err
    assert out.decode().splitlines() == ["65534", "65534", "nobody /nonexistent /run/user/65534", "/"]


def test_numeric_user(guest_agent):
    g = guest_agent()
    out, err, ex, _ = g.run(["id", "-u"], user="65534")
    assert out == b"65534\n", err


def test_default_user_option(guest_agent):
    g = guest_agent("--default-user", "nobody")
    out, _, _, _ = g.run(["id", "-un"])
    assert out == b"nobody\n"
    out, _, _, _ = g.run(["id", "-un"], user="root")
    assert out == b"root\n"


def test_unknown_user(guest_agent):
    g = guest_agent()
    out, err, ex, _ = g.run(["true"], user="no-such-user-ql")
    assert ex.WhichOneof("result") == "start_errno" and ex.start_errno not in (0, errno.ENOENT)
    assert b"no-such-user-ql" in err


def test_unprivileged_agent_cannot_switch_user(guest_agent):
    # The agent itself runs as nobody; the client (root) is allowed.
    g = guest_agent(preexec=drop_to, dir_mode=0o777)
    out, err, ex, others = g.run(["id", "-u"], user="root")
    assert ex.WhichOneof("result") == "start_errno" and ex.start_errno == errno.EPERM
    assert b"qubes-lite: cannot run as root: Operation not permitted" in err
    # Its own user is fine.
    out, err, ex, _ = g.run(["id", "-u"])
    assert out == b"65534\n", err


def test_explicit_stdin_close(guest_agent):
    g = guest_agent()
    data = b"x" * 300000
    out, err, ex, _ = g.run(["wc", "-c"], stdin=data)
    assert out.strip() == b"300000" and ex.code == 0


def test_stdin_close_without_data(guest_agent):
    g = guest_agent()
    out, _, ex, _ = g.run(["wc", "-c"])
    assert out.strip() == b"0"


def test_stdin_acks_match_window(guest_agent):
    g = guest_agent()
    c = g.start(["cat"], stdin_window=200000)
    block = os.urandom(1 << 16)
    sent, got, err, ex, acks = stream(c, 3 * 1024 * 1024, block, window=200000)
    assert sent == got and ex.code == 0
    assert acks == 3 * 1024 * 1024
    c.send("exit_ack")
    c.expect_closed()


@pytest.mark.parametrize("window", [256 * 1024, 64 * 1024 + 7])
def test_100mib_through_cat(guest_agent, window):
    g = guest_agent()
    c = g.start(["cat"], stdin_window=window)
    block = os.urandom(1 << 20) + b"tail"
    sent, got, err, ex, acks = stream(c, 100 * 1024 * 1024, block, window=window)
    assert err == b""
    assert sent == got
    assert ex.WhichOneof("result") == "code" and ex.code == 0
    c.send("exit_ack")
    c.expect_closed()


def test_output_memory_stays_flat_with_slow_reader(guest_agent):
    """A program writing much more than the client reads: the agent holds
    only a bounded amount (RSS stays small) and loses nothing."""
    g = guest_agent()
    total = 64 * 1024 * 1024
    c = g.start(["head", "-c", str(total), "/dev/zero"])
    c.sock.settimeout(120)
    got = 0
    peak = 0
    buf = bytearray()
    reads = 0
    import time
    while True:
        data = c.sock.recv(256 * 1024)
        assert data
        buf += data
        reads += 1
        if reads % 16 == 0:
            time.sleep(0.01)              # a slow reader
            peak = max(peak, g.rss_kib())
        done = False
        for name, msg in qlwire.frames(buf):
            if name == "data":
                got += len(msg.data)
            elif name == "exited":
                done = True
        if done:
            break
    assert got == total
    # Bounded: well under the output size (sanitizer builds are bigger).
    limit = 64 * 1024 if "san" in os.environ.get("BUILD", "") else 6 * 1024
    assert peak < limit, peak
    c.send("exit_ack")
    c.expect_closed()


def test_signal_forwarded_to_group(guest_agent, tmp_path):
    g = guest_agent()
    pids = tmp_path / "pids"
    script = f"sleep 1000 & echo $! > {pids}.tmp; sleep 1000 & echo $! >> {pids}.tmp; " \
             f"mv {pids}.tmp {pids}; echo ready; wait"
    c = g.start(["sh", "-c", script])
    assert c.recv()[0] == "started"
    name, msg = c.recv()
    assert (name, msg.data) == ("data", b"ready\n")
    children = [int(x) for x in pids.read_text().split()]
    assert all(pid_alive(p) for p in children)
    c.send("signal", signo=signal.SIGTERM)
    out, err, ex, _ = c.recv_until_exit(timeout=30)
    assert ex.WhichOneof("result") == "signal" and ex.signal.signo == signal.SIGTERM
    wait_for(lambda: not any(pid_alive(p) for p in children), timeout=30, what="children gone")
    c.send("exit_ack")
    c.expect_closed()


def test_signal_not_stuck_behind_unread_stdin(guest_agent):
    """The program never reads stdin; the client fills its window; a Signal
    still gets through."""
    g = guest_agent()
    c = g.start(["sleep", "1000"], stdin_window=1024 * 1024)
    assert c.recv()[0] == "started"
    for _ in range(16):
        c.send("data", stream=pb.STREAM_STDIN, data=b"z" * 65536)
    c.send("signal", signo=signal.SIGINT)
    out, err, ex, _ = c.recv_until_exit(timeout=30)
    assert ex.signal.signo == signal.SIGINT
    c.send("exit_ack")
    c.expect_closed()


@pytest.mark.parametrize("ignore_hup", [False, True])
def test_disconnect_kills_whole_group(guest_agent, tmp_path, ignore_hup):
    g = guest_agent("--kill-grace", "1")
    pids = tmp_path / "pids"
    trap = 'trap "" HUP; ' if ignore_hup else ""
    # Three processes in the group: the shell, a sleep, and a subshell with
    # a sleep of its own (the subshell writes its line asynchronously).
    script = (f"{trap}(sleep 1000 & echo $! >> {pids}; sleep 1000) & "
              f"sleep 1000 & echo $! >> {pids}; echo $$ >> {pids}; echo ready; wait")
    c = g.start(["sh", "-c", script])
    assert c.recv()[0] == "started"
    name, msg = c.recv()
    assert msg.data == b"ready\n"
    wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 3, what="pid file")
    procs = [int(x) for x in pids.read_text().split()]
    assert all(pid_alive(p) for p in procs)
    c.close()
    wait_for(lambda: not any(pid_alive(p) for p in procs), timeout=30, what="group gone")
    # The session no longer counts as live.
    c2 = g.connect()
    c2.send("status_request")
    name, st = c2.recv()
    assert name == "status" and st.live_sessions == 0


def test_many_concurrent_sessions_and_fds(guest_agent):
    g = guest_agent()
    g.run(["true"])                       # the event loop's timer fds are made lazily
    before = g.settled_fd_count()
    conns = []
    try:
        for i in range(200):
            conns.append(g.start(["cat"]))
        for c in conns:
            assert c.recv(timeout=60)[0] == "started"
        st = g.connect()
        st.send("status_request")
        name, msg = st.recv()
        assert name == "status" and msg.live_sessions == 200
        st.close()
        for i, c in enumerate(conns):
            c.send("data", stream=pb.STREAM_STDIN, data=f"session {i}\n".encode())
            c.send("stdin_close")
        for i, c in enumerate(conns):
            out, err, ex, _ = c.recv_until_exit(timeout=60)
            assert out == f"session {i}\n".encode() and ex.code == 0
            c.send("exit_ack")
        for c in conns:
            c.expect_closed(timeout=60)
    finally:
        for c in conns:
            c.close()
    wait_for(lambda: g.fd_count() == before, timeout=30, what=f"fd count back to {before}")


def test_signal_after_leader_exit_reaches_the_group(guest_agent):
    """The shell is gone but a background child holds stdout open: a
    Signal still reaches the group, and then Exited comes."""
    g = guest_agent()
    c = g.start(["sh", "-c", "sleep 1000 & echo started"])
    name, st = c.recv()
    assert name == "started"
    name, msg = c.recv()
    assert msg.data == b"started\n"
    wait_for(lambda: not pid_alive(st.pid), what="the shell's exit")
    c.send("signal", signo=signal.SIGTERM)
    out, err, ex, _ = c.recv_until_exit(timeout=30)
    assert ex.WhichOneof("result") == "code" and ex.code == 0   # the shell's own status
    c.send("exit_ack")
    c.expect_closed()


def test_agent_exit_leaves_nothing_running(guest_agent):
    g = guest_agent()
    c = g.start(["sh", "-c", "sleep 1000 & sleep 1000"])
    name, st = c.recv()
    assert name == "started"
    g.stop()                              # SIGTERM; must exit 0
    # The whole group gets the signal at once, but each member dies in its
    # own time: wait for all of them, not just the leader.
    wait_for(lambda: not pid_alive(st.pid) and not _group_alive(st.pid),
             what="the program's whole process group gone")


def _group_alive(pgid):
    return any(pid_alive(int(p)) for p in os.listdir("/proc")
               if p.isdigit() and _pgid(int(p)) == pgid)


def _pgid(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[2])
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


def test_disconnect_noticed_while_unwindowed_stdin_is_full(guest_agent):
    """Without a window the agent stops reading the connection once 256 KiB
    of stdin wait for the program; a client that goes away then must still
    end the session: the program is killed and the session is not live."""
    g = guest_agent("--kill-grace", "1")
    c = g.start(["sleep", "320"], stdin_window=0)
    name, msg = c.recv()
    assert name == "started"
    pid = msg.pid
    for _ in range(9):
        c.send("data", stream=pb.STREAM_STDIN, data=b"z" * 65536)
    c.close()
    wait_for(lambda: not pid_alive(pid), timeout=15, what="the program gone")
    c2 = g.connect()
    c2.send("status_request")
    name, st = c2.recv()
    assert name == "status" and st.live_sessions == 0


def test_stdin_acks_bounded_when_client_does_not_read(guest_agent):
    """Many one-byte stdin chunks to a program that reads them at once,
    from a client that reads nothing back: the agent keeps at most one
    StdinAck queued (it adds up the bytes), not one per write."""
    import time
    g = guest_agent()
    n = 1 << 20
    c = g.start(["sh", "-c", "exec cat >/dev/null"], stdin_window=n)
    name, msg = c.recv()
    assert name == "started"
    pid = msg.pid
    base = g.rss_kib()
    frame = qlwire.encode("data", stream=pb.STREAM_STDIN, data=b"x")
    c.sock.settimeout(300)
    c.sock.sendall(frame * n + qlwire.encode("stdin_close"))
    wait_for(lambda: not pid_alive(pid), timeout=300, what="cat done")
    time.sleep(0.2)
    grown = g.rss_kib() - base
    if "san" not in os.environ.get("BUILD", ""):
        assert grown < 2048, grown   # one ack per write: about 8 MiB
    buf = bytearray(c.buf)
    c.buf = b""
    acks = ack_frames = 0
    done = False
    while not done:
        data = c.sock.recv(1 << 20)
        assert data
        buf += data
        for name, msg in qlwire.frames(buf):
            if name == "stdin_ack":
                acks += msg.bytes
                ack_frames += 1
            elif name == "exited":
                assert msg.code == 0
                done = True
    assert acks == n
    assert ack_frames < n // 16, ack_frames
    c.send("exit_ack")
    c.expect_closed()


def test_queued_stdin_memory_is_about_the_window(guest_agent):
    """A window's worth of one-byte stdin chunks for a program that does
    not read them: what the agent holds is about the window, not a decoded
    frame (some hundred bytes) per byte."""
    g = guest_agent()
    window = 512 * 1024
    c = g.start(["sleep", "1000"], stdin_window=window)
    assert c.recv()[0] == "started"
    import threading
    base = g.rss_kib()
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.wait(0.01):
            peak[0] = max(peak[0], g.rss_kib())
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        frame = qlwire.encode("data", stream=pb.STREAM_STDIN, data=b"z")
        c.sock.settimeout(120)
        c.sock.sendall(frame * window)
        # A Signal is handled after all the Data before it.
        c.send("signal", signo=signal.SIGTERM)
        out, err, ex, _ = c.recv_until_exit(timeout=120)
    finally:
        done.set()
        sampler.join()
    assert ex.signal.signo == signal.SIGTERM
    grown = max(peak[0], g.rss_kib()) - base
    if "san" not in os.environ.get("BUILD", ""):
        assert grown < 3 * 1024, grown   # a frame per byte: about 60 MiB
    c.send("exit_ack")
    c.expect_closed()
