"""vm-run's stream connection at its edges: output that outlasts the
command, signals and a killed vm-run then, a stdin that is a socket, a
closed fd 0, and a guest agent that predates stream connections."""
import os
import signal
import socket
import subprocess
import threading
import time

from qltest import qlwire
from qltest.host import VM
from qltest.procs import pid_exists, wait_for
from qltest.qlwire import pb


def leave_a_holder(stack, tmp):
    """vm-run of a command that exits at once, leaving a sleep that holds
    its stdout: (vm-run, the sleep's pid)."""
    pidfile = os.path.join(tmp, "holder.pid")
    p = stack.popen(VM, "sh", "-c", f"sleep 67 2>/dev/null & echo $! > {pidfile}; echo hi",
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline() == b"hi\n"
    wait_for(lambda: os.path.exists(pidfile) and open(pidfile).read().strip(),
             what="the holder's pid")
    pid = int(open(pidfile).read())
    assert pid_exists(pid)
    return p, pid


def test_output_outlasting_the_command_keeps_the_session_live(stack, tmp_path):
    p, pid = leave_a_holder(stack, str(tmp_path))
    # The command (sh) is gone; its stdout is not: vm-run waits as it would
    # on a pipe, and the guest counts the session as live meanwhile.
    time.sleep(1)
    assert p.poll() is None
    assert stack.guest_status().live_sessions == 1
    # A signal still reaches the group: the holder dies, stdout ends, and
    # vm-run exits with the command's status.
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert out == b""
    wait_for(lambda: not pid_exists(pid), what="the holder killed by the forwarded SIGTERM")
    wait_for(lambda: stack.guest_status().live_sessions == 0, what="the session over")


def test_killed_vm_run_gets_leftovers_hung_up(stack, tmp_path):
    p, pid = leave_a_holder(stack, str(tmp_path))
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    # The client is gone before acknowledging the exit: SIGHUP, then SIGKILL
    # after the grace (2 s in these stacks). Nothing is left running.
    wait_for(lambda: not pid_exists(pid), timeout=30, what="the holder hung up")
    wait_for(lambda: stack.guest_status().live_sessions == 0, what="the session over")


def test_stdin_socket_short_sends_do_not_wait_for_more_stdin(stack):
    """stdin a socket (read and write, not splice): what a full stream
    connection did not take goes as soon as it has room, not when stdin
    next has data. The writer keeps its end open and waits for the answer."""
    size = 1024 * 1024
    ours, theirs = socket.socketpair()
    p = stack.popen(VM, "sh", "-c", f"sleep 0.5; head -c {size} | wc -c", stdin=theirs,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    theirs.close()
    writer = threading.Thread(target=ours.sendall, args=(b"x" * size,), daemon=True)
    writer.start()
    try:
        answer = []
        reader = threading.Thread(target=lambda: answer.append(p.stdout.readline()), daemon=True)
        reader.start()
        reader.join(60)
        assert answer == [f"{size}\n".encode()], "the last stdin bytes stayed in vm-run"
    finally:
        ours.close()
    p.wait(timeout=30)
    assert p.returncode == 0


def test_closed_stdin_fd_is_empty_stdin(stack):
    # Without a placeholder vm-run's first socket became fd 0 and was read
    # as stdin: the command never saw its end.
    r = subprocess.run(stack.vm_run_args(VM, "sh", "-c", "cat; echo rc=$?"), env=stack.env,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                       preexec_fn=lambda: os.close(0))
    assert r.returncode == 0, r
    assert r.stdout == b"rc=0\n"


def answer_exec(c, code):
    """What both fake guests answer an Exec: Started, one Data(stdout)
    "relayed", Exited(code)."""
    c.send("started", pid=4242)
    c.send("data", stream=pb.STREAM_STDOUT, data=b"relayed\n")
    c.send("exited", code=code)


class OldGuest(qlwire.FakePeer):
    """A guest agent of protocol 1.0: Hello 1.0 first; an Exec gets
    Started, one Data(stdout) and Exited(0); what it does not know (Attach)
    gets Error(PROTOCOL), as the real 1.0 agent answered."""

    def __init__(self, path):
        self.execs, self.attaches = [], 0
        super().__init__(path)

    def talk(self, c):
        try:
            c.send_hello(1, 0, software="agent 1.0")
            while True:
                name, msg = c.recv(timeout=60)
                if name == "exec":
                    self.execs.append(msg)
                    answer_exec(c, 0)
                elif name == "attach":
                    self.attaches += 1
                    c.send("error", code=pb.ERROR_PROTOCOL, message="undecodable frame")
                    return
                elif name == "exit_ack":
                    return
        finally:
            c.close()


def test_guest_agent_older_than_streams_gets_everything_relayed(host_stack):
    s = host_stack(start_guest=False)
    guest = OldGuest(s.guest_sock)
    try:
        r = s.vm_run(VM, "cat", input=b"", timeout=60)
        assert r.returncode == 0, r
        assert r.stdout == b"relayed\n"
        assert guest.attaches == 0
        assert len(guest.execs) == 1 and guest.execs[0].stream_key == b""
    finally:
        guest.close()


class SilentStreamGuest(qlwire.FakePeer):
    """A guest that says Hello on the Exec's connection (the host agent's
    first) and nothing on the stream connection; an Exec gets Started,
    one Data(stdout) and Exited(3)."""

    def __init__(self, path):
        self.n, self.execs = 0, []
        self.lock = threading.Lock()
        super().__init__(path)

    def talk(self, c):
        with self.lock:
            first, self.n = self.n == 0, self.n + 1
        try:
            if not first:
                c.recv(timeout=60)  # whatever comes; never a Hello
                return
            c.send_hello(software="silent stream")
            while True:
                name, msg = c.recv(timeout=60)
                if name == "exec":
                    self.execs.append(msg)
                    answer_exec(c, 3)
                elif name == "exit_ack":
                    return
        finally:
            c.close()


def test_no_hello_on_the_stream_connection_is_bounded(host_stack):
    """The stream connection's Hello is waited for 3 s at most (it was a
    blocking read without a limit): then that connection is dropped and
    everything relayed on the Exec's."""
    s = host_stack(start_guest=False)
    guest = SilentStreamGuest(s.guest_sock)
    try:
        t0 = time.monotonic()
        r = s.vm_run(VM, "true", timeout=8)
        assert r.returncode == 3, r
        assert r.stdout == b"relayed\n"
        assert len(guest.execs) == 1 and guest.execs[0].stream_key == b""
        assert time.monotonic() - t0 < 7
    finally:
        guest.close()
