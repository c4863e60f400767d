"""vm-run without -t: the program's stdin and stdout are a stream connection
(Connect with streams=1, Exec with a key on the first guest connection,
Attach on the second), which vm-run joins to its own stdin and stdout: by
splice() where the fds allow, by read/write otherwise (regular files). Exit
statuses are those of the relay; -t keeps the pty relay."""
import hashlib
import os
import signal
import subprocess
import threading
import time

import pytest

from qltest.host import VM
from qltest.procs import pid_alive, wait_for


def write_random_file(path, size):
    """size bytes (a multiple of 1 MiB) of varied data; returns their sha256."""
    h = hashlib.sha256()
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(size >> 20):
            chunk = block[i:] + block[:i]
            h.update(chunk)
            f.write(chunk)
    return h.hexdigest()


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@pytest.mark.parametrize("stdin_kind,stdout_kind",
                         [("file", "file"), ("file", "pipe"), ("pipe", "file")])
def test_regular_files_and_pipes(stack, tmp_path, stdin_kind, stdout_kind):
    size = 8 << 20
    src, dst = tmp_path / "in", tmp_path / "out"
    want = write_random_file(src, size)
    kw = {}
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        if stdin_kind == "file":
            kw["stdin"] = fin
        else:
            kw["input"] = src.read_bytes()
        if stdout_kind == "file":
            kw["stdout"] = fout
        r = stack.vm_run(VM, "cat", timeout=300, **kw)
    assert r.returncode == 0, r.stderr
    assert r.stderr == b""
    if stdout_kind == "file":
        assert os.path.getsize(dst) == size
        assert file_sha256(dst) == want
    else:
        assert len(r.stdout) == size
        assert hashlib.sha256(r.stdout).hexdigest() == want


def test_stdout_appended_to_a_file(stack, tmp_path):
    dst = tmp_path / "out"
    dst.write_bytes(b"before\n")
    with open(dst, "ab") as fout:
        r = stack.vm_run(VM, "echo", "after", stdout=fout)
    assert r.returncode == 0, r
    assert dst.read_bytes() == b"before\nafter\n"


def test_stdin_file_read_from_its_offset(stack, tmp_path):
    src = tmp_path / "in"
    src.write_bytes(b"skip me\nkeep me\n")
    with open(src, "rb") as fin:
        fin.seek(len(b"skip me\n"))
        r = stack.vm_run(VM, "cat", stdin=fin)
    assert r.returncode == 0, r
    assert r.stdout == b"keep me\n"


def test_64mib_through_cat_via_pipes(stack):
    total = 64 << 20
    block = os.urandom(1 << 20)
    sent = hashlib.sha256()
    p = stack.popen(VM, "cat", stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE)
    errors = []

    def writer():
        try:
            for i in range(total >> 20):
                chunk = block[i:] + block[:i]
                sent.update(chunk)
                p.stdin.write(chunk)
            p.stdin.close()
        except BaseException as e:    # noqa: B902 - reported below
            errors.append(e)
    t = threading.Thread(target=writer)
    t.start()
    got = hashlib.sha256()
    n = 0
    while chunk := p.stdout.read1(1 << 20):
        got.update(chunk)
        n += len(chunk)
    t.join(timeout=600)
    err = p.stderr.read()
    assert p.wait(timeout=600) == 0, err
    assert not errors, errors
    assert n == total
    assert got.hexdigest() == sent.hexdigest()
    assert err == b""


def bash(stack, script, timeout=120):
    return subprocess.run(["bash", "-c", script], env=stack.env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)


def test_endless_input_into_a_program_that_stops_reading(stack):
    vm_run = stack.vm_run_args()[0]
    r = bash(stack, f'yes | {vm_run} {VM} head -c 1; echo " ${{PIPESTATUS[*]}}"')
    # vm-run ends with the program's status; yes then dies of SIGPIPE.
    assert r.stdout == b"y 141 0\n", r
    assert r.stderr == b""
    stack.wait_live_sessions(0)


def test_endless_output_into_a_reader_that_leaves(stack):
    vm_run = stack.vm_run_args()[0]
    r = bash(stack, f'{vm_run} {VM} yes | head -c 1; echo " ${{PIPESTATUS[*]}}"')
    # Like a local `yes | head -c 1`: vm-run dies of SIGPIPE.
    assert r.stdout == b"y 141 0\n", r
    assert r.stderr == b""
    stack.wait_live_sessions(0)


def test_killed_by_sigpipe_when_the_reader_left(stack):
    rfd, wfd = os.pipe()
    os.close(rfd)
    try:
        p = stack.popen(VM, "yes", stdout=wfd, stderr=subprocess.PIPE)
    finally:
        os.close(wfd)
    err = p.stderr.read()
    assert p.wait(timeout=120) == -signal.SIGPIPE, err
    assert err == b""
    stack.wait_live_sessions(0)


def test_program_sees_a_socket(stack):
    r = stack.vm_run(VM, "stat", "-L", "-c", "%F", "/proc/self/fd/0", "/proc/self/fd/1")
    assert r.returncode == 0, r
    assert r.stdout == b"socket\nsocket\n"
    r = stack.vm_run(VM, "stat", "-L", "-c", "%F", "/proc/self/fd/1")
    assert (r.returncode, r.stdout) == (0, b"socket\n"), r


def test_program_sees_a_socket_whatever_vm_run_has(stack, tmp_path):
    # Regular files on vm-run's side: still the stream connection inside.
    src, dst = tmp_path / "in", tmp_path / "out"
    src.write_bytes(b"x\n")
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        r = stack.vm_run(VM, "stat", "-L", "-c", "%F", "/proc/self/fd/0", "/proc/self/fd/1",
                         stdin=fin, stdout=fout)
    assert r.returncode == 0, r
    assert dst.read_bytes() == b"socket\nsocket\n"


def test_stdout_closed_early_then_stderr(stack):
    r = stack.vm_run(VM, "sh", "-c", "echo first; exec >&-; sleep 0.5; echo err >&2; exit 4")
    assert r.returncode == 4, r
    assert r.stdout == b"first\n"
    assert r.stderr == b"err\n"


def test_stdin_and_stdout_closed_early_then_stderr(stack):
    # The stream connection reaches its end long before the program does:
    # vm-run still waits for the exit status and the last stderr.
    r = stack.vm_run(VM, "sh", "-c",
                     "echo first; exec >&- <&-; sleep 1; echo err >&2; exit 4",
                     input=b"unread\n")
    assert r.returncode == 4, r
    assert r.stdout == b"first\n"
    assert r.stderr == b"err\n"


def test_background_child_holding_stdout_is_waited_for(stack):
    # As with the relay: the output ends when the last holder of stdout
    # closes it, not when the program exits.
    r = stack.vm_run(VM, "sh", "-c", "(sleep 2; echo late) 2>/dev/null & echo early")
    assert r.returncode == 0, r
    assert r.stdout == b"early\nlate\n"
    assert r.stderr == b""


def test_background_child_holding_stdout_keeps_vm_run_running(stack, tmp_path):
    gate = tmp_path / "gate"
    script = (f"(while [ ! -e {gate} ]; do sleep 0.05; done; echo late) 2>/dev/null & "
              "echo $$")
    p = stack.popen(VM, "sh", "-c", script, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    shell = int(p.stdout.readline())
    # The shell is gone (the agents run here, so its pid is ours to see);
    # the child keeps stdout, so vm-run goes on.
    wait_for(lambda: not pid_alive(shell), what="the shell's exit")
    time.sleep(0.5)
    assert p.poll() is None, "vm-run ended while the program's stdout was still open"
    gate.write_text("")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert out == b"late\n"


def test_stdin_eof_reaches_the_program(stack):
    r = stack.vm_run(VM, "sh", "-c", "wc -c; echo done", input=b"x" * 100000)
    assert r.returncode == 0, r
    assert r.stdout.split() == [b"100000", b"done"]


def test_no_stdin(stack):
    r = stack.vm_run(VM, "cat")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")


@pytest.mark.parametrize("script,status", [
    ("echo out; echo err >&2; exit 3", 3),
    ("exit 255", 255),
    ("kill -TERM $$", 128 + signal.SIGTERM),
    ("kill -KILL $$", 128 + signal.SIGKILL),
])
def test_exit_statuses(stack, script, status):
    r = stack.vm_run(VM, "sh", "-c", script)
    assert r.returncode == status, r
    if status == 3:
        assert (r.stdout, r.stderr) == (b"out\n", b"err\n")


def test_missing_program_is_127(stack):
    r = stack.vm_run(VM, "no-such-program-ql", input=b"ignored\n")
    assert r.returncode == 127, r
    assert r.stdout == b""
    assert r.stderr == b"qubes-lite: no-such-program-ql: command not found\n"


def test_not_executable_is_126(stack):
    r = stack.vm_run(VM, "/etc/passwd")
    assert r.returncode == 126, r
    assert r.stdout == b""
    assert r.stderr == b"qubes-lite: /etc/passwd: Permission denied\n"


def test_sigint_is_forwarded(stack):
    p = stack.popen(VM, "sh", "-c", "echo ready; exec sleep 100", stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE)
    assert p.stdout.readline() == b"ready\n"
    os.kill(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGINT, err
    assert out == b""


def test_tty_still_uses_a_pty(stack):
    status, out = stack.run_on_pty(["-t", VM, "sh", "-c",
                                    "tty; stat -L -c %F /proc/self/fd/0 /proc/self/fd/1"])
    assert status == 0, out
    text = out.decode(errors="replace").replace("\r", "")
    assert "/dev/pts/" in text, text
    assert text.count("character special file\n") == 2, text
    assert "socket" not in text, text


def test_terminal_without_tty_option(stack):
    # A terminal on vm-run's side but no -t: the program still gets the
    # stream connection, and its output reaches the terminal (no splice
    # to or from a tty).
    status, out = stack.run_on_pty([VM, "sh", "-c", "stat -L -c %F /proc/self/fd/1; echo out"])
    assert status == 0, out
    assert out.replace(b"\r", b"") == b"socket\nout\n"


def test_nonblocking_stdout_pipe_with_a_slow_reader(stack):
    total = 4 << 20
    rfd, wfd = os.pipe()
    os.set_blocking(wfd, False)
    try:
        p = stack.popen(VM, "head", "-c", str(total), "/dev/zero", stdout=wfd,
                        stderr=subprocess.PIPE)
    finally:
        os.close(wfd)
    n = 0
    nonzero = 0
    reads = 0
    while chunk := os.read(rfd, 65536):
        n += len(chunk)
        nonzero += len(chunk) - chunk.count(0)
        reads += 1
        if reads % 8 == 0:
            time.sleep(0.01)            # a slow reader: vm-run's writes hit EAGAIN
    os.close(rfd)
    err = p.stderr.read()
    assert p.wait(timeout=300) == 0, err
    assert (n, nonzero, err) == (total, 0, b"")


def test_nonblocking_stdin_pipe_with_a_slow_writer(stack):
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    try:
        p = stack.popen(VM, "sh", "-c", "wc -c; echo done", stdin=rfd, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE)
    finally:
        os.close(rfd)
    for i in range(20):
        os.write(wfd, b"z" * 1000)
        time.sleep(0.02)                # vm-run's reads find the pipe empty
    os.close(wfd)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert out.split() == [b"20000", b"done"]


def test_ends_with_the_program_while_stdin_stays_open(stack):
    # Nobody ever closes vm-run's stdin: the program's end is what counts.
    p = stack.popen(VM, "echo", "hi", stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE)
    try:
        assert p.wait(timeout=120) == 0, p.stderr.read()
        assert p.stdout.read() == b"hi\n"
    finally:
        p.stdin.close()


def test_large_stdin_file_into_a_program_that_reads_little(stack, tmp_path):
    src = tmp_path / "in"
    write_random_file(src, 64 << 20)
    with open(src, "rb") as fin:
        r = stack.vm_run(VM, "head", "-c", "10", stdin=fin)
    assert r.returncode == 0, r
    assert r.stdout == src.read_bytes()[:10]
    assert r.stderr == b""
    with open(src, "rb") as fin:
        r = stack.vm_run(VM, "true", stdin=fin)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")


def test_output_flows_while_stdin_is_never_read(stack):
    # The program closes its stdin and writes a lot; vm-run has endless
    # input for it: pushing stdin must not stop the output.
    with open("/dev/zero", "rb") as zero:
        r = stack.vm_run(VM, "sh", "-c", "exec <&-; head -c 10485760 /dev/zero | tr '\\0' o",
                         stdin=zero, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"o" * (10 << 20)


def test_stdout_and_stderr_interleaved_in_bulk(stack, tmp_path):
    # One process writing both in turns: vm-run must keep reading both.
    script = ("import os\n"
              "def w(fd, b):\n"
              "    while b:\n"
              "        b = b[os.write(fd, b):]\n"
              "for i in range(320):\n"
              "    w(1, b'o' * 65536)\n"
              "    w(2, b'e' * 65536)\n")
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "wb") as fout, open(err, "wb") as ferr:
        r = stack.vm_run(VM, "python3", "-c", script, stdout=fout, stderr=ferr, timeout=300)
    assert r.returncode == 0, err.read_bytes()[-2000:]
    assert out.read_bytes() == b"o" * (320 * 65536)
    assert err.read_bytes() == b"e" * (320 * 65536)
