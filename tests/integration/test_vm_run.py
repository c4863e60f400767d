"""vm-run end to end: vm-run -> qubes-lite-host-agent -> qubes-lite-guest-agent,
all real programs, over unix sockets in a temporary directory."""
import fcntl
import hashlib
import os
import signal
import struct
import subprocess
import termios
import time

from qltest.host import VM
from qltest.procs import wait_for


def lines(b):
    return b.decode(errors="replace").splitlines()


def test_output_and_exit_code(stack):
    r = stack.vm_run(VM, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert r.returncode == 3, r
    assert r.stdout == b"out\n"
    assert r.stderr == b"err\n"


def test_options_after_the_command_belong_to_it(stack):
    r = stack.vm_run(VM, "echo", "-t", "-e", "x", "--timing")
    assert r.returncode == 0, r
    assert r.stdout == b"-t -e x --timing\n"
    assert r.stderr == b""


def test_missing_program_is_127(stack):
    r = stack.vm_run(VM, "no-such-program-here")
    assert r.returncode == 127, r
    assert b"no-such-program-here" in r.stderr


def test_not_executable_is_126(stack):
    r = stack.vm_run(VM, "/etc/passwd")
    assert r.returncode == 126, r
    assert b"/etc/passwd" in r.stderr


def test_killed_by_signal_is_128_plus_n(stack):
    r = stack.vm_run(VM, "sh", "-c", "kill -TERM $$")
    assert r.returncode == 128 + signal.SIGTERM, r
    r = stack.vm_run(VM, "sh", "-c", "kill -KILL $$")
    assert r.returncode == 128 + signal.SIGKILL, r


def test_stdin_from_a_pipe(stack):
    r = stack.vm_run(VM, "cat", input=b"hello\nworld\n")
    assert r.returncode == 0, r
    assert r.stdout == b"hello\nworld\n"


def test_stdin_eof_reaches_the_program(stack):
    # The program only finishes once it has seen the end of its input.
    r = stack.vm_run(VM, "sh", "-c", "wc -c; echo done", input=b"x" * 1000)
    assert r.returncode == 0, r
    assert r.stdout.split() == [b"1000", b"done"]


def test_empty_stdin(stack):
    r = stack.vm_run(VM, "cat")
    assert r.returncode == 0, r
    assert r.stdout == b""


def test_100_mib_through_cat(stack, tmp_path):
    src = tmp_path / "in"
    dst = tmp_path / "out"
    h = hashlib.sha256()
    block = os.urandom(1 << 20)
    with open(src, "wb") as f:
        for i in range(100):
            chunk = block[i:] + block[:i]
            h.update(chunk)
            f.write(chunk)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        r = stack.vm_run(VM, "cat", stdin=fin, stdout=fout, timeout=600)
    assert r.returncode == 0, r
    assert os.path.getsize(dst) == 100 << 20
    h2 = hashlib.sha256()
    with open(dst, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h2.update(chunk)
    assert h2.hexdigest() == h.hexdigest()


def test_large_output_with_small_input(stack):
    r = stack.vm_run(VM, "head", "-c", str(20 << 20), "/dev/zero", timeout=600)
    assert r.returncode == 0, r
    assert len(r.stdout) == 20 << 20


def test_tty_has_the_window_size_and_a_pty(stack):
    status, out = stack.run_on_pty(["-t", VM, "sh", "-c", "stty size; tty; echo $TERM"])
    assert status == 0, out
    text = out.decode(errors="replace").replace("\r", "")
    assert "33 101\n" in text, text
    assert "/dev/pts/" in text, text
    assert "xterm-256color" in text, text


def test_without_tty_there_is_no_terminal(stack):
    r = stack.vm_run(VM, "tty")
    assert r.returncode == 1, r
    assert b"not a tty" in r.stdout


# A title change, a clear screen and a colour, on stdout and stderr, around
# text (é in UTF-8) that must pass.
HOSTILE_OUTPUT = ["sh", "-c", r"printf '\033]0;pwned\007A\033[2J\303\251\n'; "
                  r"printf '\033[31mE\233\n' >&2"]


def test_control_sequences_to_a_terminal_are_filtered(stack):
    """Without -t, a guest's output to a terminal has its control
    sequences replaced (ESC and the C1 CSI become '_'), as qvm-run does;
    stdout and stderr each."""
    status, out = stack.run_on_pty([VM, *HOSTILE_OUTPUT])
    assert status == 0, out
    assert b"\x1b" not in out and b"\x9b" not in out and b"\x07" not in out, out
    assert b"_]0;pwned_A_[2J\xc3\xa9\r\n" in out, out
    assert b"_[31mE_\r\n" in out, out


def test_control_sequences_pass_with_raw_output_or_tty_or_a_pipe(stack):
    """--raw-output and -t pass them as they are, and so does a pipe."""
    for args in (["--raw-output"], ["-t"]):
        status, out = stack.run_on_pty([*args, VM, *HOSTILE_OUTPUT])
        assert status == 0, out
        assert b"\x1b]0;pwned\x07A\x1b[2J\xc3\xa9" in out, (args, out)
        assert b"\x1b[31mE\x9b" in out, (args, out)
    r = stack.vm_run(VM, *HOSTILE_OUTPUT)
    assert r.stdout == b"\x1b]0;pwned\x07A\x1b[2J\xc3\xa9\n", r
    assert r.stderr == b"\x1b[31mE\x9b\n", r


def test_tty_restores_the_terminal(stack):
    master, slave = os.openpty()
    before = termios.tcgetattr(slave)
    p = subprocess.Popen(stack.vm_run_args("-t", VM, "true"), stdin=slave, stdout=slave,
                         stderr=slave, env=stack.env, start_new_session=True)
    stack.clients.append(p)
    assert p.wait(timeout=60) == 0
    after = termios.tcgetattr(slave)
    os.close(slave)
    os.close(master)
    assert before == after


def test_sigint_is_forwarded(stack):
    p = stack.popen(VM, "sleep", "100", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stack.wait_live_sessions(1)
    os.kill(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGINT, err
    assert out == b""


def test_sigterm_is_forwarded_and_can_be_handled(stack):
    script = "trap 'echo got TERM; exit 42' TERM; echo ready; while :; do sleep 0.1; done"
    p = stack.popen(VM, "sh", "-c", script, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline() == b"ready\n"
    os.kill(p.pid, signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 42, err
    assert out == b"got TERM\n"


def test_env_workdir_and_user(stack):
    r = stack.vm_run("-e", "FOO=bar baz", "-e", "EMPTY=", "-w", "/tmp", "-u", "nobody", VM,
                     "sh", "-c", 'echo "$FOO"; echo "[$EMPTY]"; pwd; id -un')
    assert r.returncode == 0, r
    assert lines(r.stdout) == ["bar baz", "[]", "/tmp", "nobody"]


def test_unknown_vm(stack):
    r = stack.vm_run("nosuchvm", "true")
    assert r.returncode == 255
    assert lines(r.stderr) == [f"vm-run: no VM named 'nosuchvm' (no {stack.etc}/vms/nosuchvm.json)"]
    r = stack.vm_run("../etc/x", "true")
    assert r.returncode == 255
    assert lines(r.stderr) == ["vm-run: no VM named '../etc/x' (a VM name is [a-z][a-z0-9-], "
                               "at most 12 characters)"]


def test_usage_errors(stack):
    r = stack.vm_run()
    assert r.returncode == 255
    assert len(lines(r.stderr)) == 1 and lines(r.stderr)[0].startswith("vm-run: ")
    r = stack.vm_run(VM)
    assert r.returncode == 255
    assert len(lines(r.stderr)) == 1
    r = stack.vm_run("--no-such-option", VM, "true")
    assert r.returncode == 255
    assert len(lines(r.stderr)) == 1
    r = stack.vm_run("--help")
    assert r.returncode == 0
    assert b"Usage: vm-run" in r.stdout


def test_host_agent_not_running(host_stack):
    s = host_stack()
    s.host.stop()
    r = s.vm_run(VM, "true")
    assert r.returncode == 255
    err = lines(r.stderr)
    assert len(err) == 1, err
    assert err[0].startswith("vm-run: cannot reach the host agent of VM 'test'"), err
    # What to do about it, not only "No such file or directory".
    assert err[0].endswith(": nothing listens there (No such file or directory); start its "
                           "socket unit (systemctl start qubes-lite-test.socket) or run it "
                           "with vm-start-debug test"), err


def test_guest_agent_down(host_stack):
    s = host_stack(start_guest=False, guest_timeout=2)
    r = s.vm_run(VM, "true")
    assert r.returncode == 255, r
    err = [l for l in lines(r.stderr) if "waiting for VM" not in l]
    assert len(err) == 1, r.stderr
    assert err[0].startswith("vm-run: "), err
    assert "guest agent" in err[0] and "did not answer" in err[0], err
    # The host agent is still serving.
    st = s.host_status()
    assert st.running is False
    assert st.leases == 0


def test_waits_for_a_guest_that_comes_late(host_stack):
    s = host_stack(start_guest=False)
    p = s.popen(VM, "echo", "late", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # vm-run has asked (a lease), and has waited over a second before the
    # guest agent exists.
    wait_for(lambda: s.host_status().leases == 1, what="vm-run's Connect")
    time.sleep(2)
    s.start_guest()
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert out == b"late\n"
    assert lines(err) == ["vm-run: waiting for VM 'test' to start..."]


def test_refused_peer(host_stack):
    # The socket's mode keeps other users out in the first place; open it
    # up so that the host agent's own check (SO_PEERCRED) is what refuses.
    s = host_stack(dir_mode=0o755)
    os.chmod(s.run_dir, 0o755)
    os.chmod(s.sock, 0o666)
    r = s.vm_run(VM, "true", user=65534, group=65534, extra_groups=[])
    assert r.returncode == 255, r
    err = lines(r.stderr)
    assert len(err) == 1, err
    assert err[0].startswith("vm-run: ") and "DENIED" in err[0], err
    # The refusal did not disturb anyone else.
    assert s.vm_run(VM, "true").returncode == 0


def test_leases_are_counted(stack):
    n = 3
    procs = [stack.popen(VM, "sleep", "100") for _ in range(n)]
    # Live in the guest: every vm-run has sent Exec and handles signals.
    stack.wait_live_sessions(n)
    wait_for(lambda: stack.host_status().leases == n, what=f"{n} leases")
    st = stack.host_status()
    assert st.vm == VM
    assert st.running is True
    assert st.idle_ms == 0
    for p in procs:
        os.kill(p.pid, signal.SIGTERM)
    for p in procs:
        assert p.wait(timeout=60) == 128 + signal.SIGTERM
    wait_for(lambda: stack.host_status().leases == 0, what="no leases")
    first = stack.host_status().idle_ms
    time.sleep(0.2)
    assert stack.host_status().idle_ms > first


def test_timing(stack):
    r = stack.vm_run("--timing", VM, "echo", "hi")
    assert r.returncode == 0, r
    assert r.stdout == b"hi\n"
    text = r.stderr.decode()
    for what in ("connect", "VM start", "guest agent ready", "exec", "first byte", "exit"):
        assert what in text, text


def test_many_sessions_at_once(stack):
    procs = [stack.popen(VM, "sh", "-c", f"sleep 0.5; echo {i}", stdout=subprocess.PIPE)
             for i in range(8)]
    for i, p in enumerate(procs):
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        assert out == f"{i}\n".encode()


def test_stdout_closed_early(stack):
    # vm-run ends like a local program in a pipeline whose reader left.
    p = subprocess.Popen(f"{stack.vm_run_args(VM, 'yes')[0]} {VM} yes | head -n 3",
                         shell=True, stdout=subprocess.PIPE, env=stack.env)
    out, _ = p.communicate(timeout=120)
    assert out == b"y\ny\ny\n"
    stack.wait_live_sessions(0)


def test_signal_is_not_stuck_behind_unread_stdin(stack):
    # The program never reads its stdin, so the stdin window fills up;
    # the signal still gets through.
    with open("/dev/zero", "rb") as zero:
        p = stack.popen(VM, "sleep", "100", stdin=zero, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE)
        stack.wait_live_sessions(1)
        time.sleep(0.5)
        os.kill(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGINT, err


def test_signal_is_forwarded_while_stdout_is_blocked(stack):
    # Nobody reads vm-run's stdout: its writes block, signals still go out.
    p = stack.popen(VM, "yes", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stack.wait_live_sessions(1)
    time.sleep(1)
    os.kill(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGINT, err
    assert out.startswith(b"y\ny\n")


def test_window_size_changes_are_forwarded(stack):
    script = "trap 'stty size' WINCH; echo ready; while :; do sleep 0.1; done"
    p, master, read_until = stack.pty_session(["-t", VM, "sh", "-c", script], size=(20, 70))
    try:
        read_until(b"ready")
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 41, 132, 0, 0))
        os.kill(p.pid, signal.SIGWINCH)
        read_until(b"41 132")
        os.kill(p.pid, signal.SIGTERM)
        assert p.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        os.close(master)


def test_tty_escape_ends_the_session(stack):
    """With -t, '~.' after Enter ends the session whatever the command
    does (here: one that ignores every signal), with 255."""
    p, master, read_until = stack.pty_session(
        ["-t", VM, "sh", "-c", "trap '' INT HUP TERM QUIT; echo ready; exec sleep 1000"])
    try:
        read_until(b"ready")
        os.write(master, b"\r~.")
        assert p.wait(timeout=5) == 255
        assert b"vm-run: left the session of VM 'test' (~.)" in read_until(b"(~.)")
    finally:
        os.close(master)
    stack.wait_live_sessions(0)


def test_tty_escape_is_for_a_terminal_only(stack):
    """With -t but stdin a pipe, '~.' is data like any other, as with ssh."""
    r = stack.vm_run("-t", VM, "sh", "-c", "read x; echo \"got:$x\"", input=b"~.x\n")
    assert r.returncode == 0, r
    assert b"got:~.x" in r.stdout, r


def test_tty_escape_off_and_mid_line(stack):
    """'~.' mid-line is sent as typed; with --no-escape at a line start too."""
    script = "echo ready; read x; echo \"got:$x\"; read y; echo \"got:$y\""
    p, master, read_until = stack.pty_session(["-t", "--no-escape", VM, "sh", "-c", script])
    try:
        read_until(b"ready")
        os.write(master, b"a~.b\r")
        read_until(b"got:a~.b")
        os.write(master, b"~.c\r")
        read_until(b"got:~.c")
        assert p.wait(timeout=30) == 0
    finally:
        os.close(master)


def test_guest_agent_gone_before_exit(stack):
    p = stack.popen(VM, "sleep", "100", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stack.wait_live_sessions(1)
    stack.guest.stop()
    out, err = p.communicate(timeout=120)
    assert p.returncode == 255, err
    err = lines(err)
    assert len(err) == 1, err
    assert err[0].startswith("vm-run: ") and "guest agent" in err[0], err


def test_guest_agent_error_is_one_line(stack):
    # The guest agent refuses what fails its validation (here a user name
    # the protocol does not allow); vm-run reports it in one line.
    r = stack.vm_run("-u", "bad name", VM, "true")
    assert r.returncode == 255, r
    err = lines(r.stderr)
    assert len(err) == 1, err
    assert err[0].startswith("vm-run: the guest agent of VM 'test'"), err


def test_many_clients_wait_for_a_late_guest(host_stack):
    s = host_stack(start_guest=False)
    n = 5
    procs = [s.popen(VM, "echo", str(i), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(n)]
    wait_for(lambda: s.host_status().leases == n, what=f"{n} waiting clients")
    s.start_guest()
    for i, p in enumerate(procs):
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert out == f"{i}\n".encode()
    wait_for(lambda: s.host_status().leases == 0, what="no lease")


def test_whole_stack_unprivileged(host_stack):
    # Both agents and vm-run as nobody: nothing needs root in a temporary
    # directory (the guest agent is told to accept its own uid).
    nobody = 65534
    s = host_stack(run_as=nobody, guest_args=["--allow-uid", str(nobody)])
    r = s.vm_run(VM, "sh", "-c", "id -u; echo err >&2; exit 5", user=nobody, group=nobody,
                 extra_groups=[])
    assert r.returncode == 5, r
    assert r.stdout == b"65534\n"
    assert r.stderr == b"err\n"


def test_200_concurrent_sessions_under_a_low_fd_limit(host_stack):
    """200 sessions live at once through one host agent and one guest
    agent started, as a service manager would, with a soft limit of 256
    fds: each gets its own output and status, and both agents' fd counts
    return to what they were (memory: make bench)."""
    from qltest.load import concurrent_sessions, fd_limit
    with fd_limit(256):
        s = host_stack()
    res = concurrent_sessions(s, 200)
    assert res.failures == [], res.failures[:5]
    for name, (fds, _) in res.baseline.items():
        assert res.after[name][0] == fds, (name, res.baseline, res.after)
    # The agent raised its own limit, not its programs'.
    r = s.vm_run(VM, "sh", "-c", "ulimit -Sn")
    assert r.stdout == b"256\n", r
