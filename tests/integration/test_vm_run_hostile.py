"""vm-run against a hung or hostile guest agent, played from Python: it
must not be kept alive for ever (nor its host-agent lease with it)."""
import signal
import socket
import subprocess
import threading
import time

import pytest

from qltest import qlwire
from qltest.host import VM
from qltest.procs import wait_for
from qltest.qlwire import pb

GIVE_UP_S = 8      # vm-run's GIVE_UP_MS
MARGIN_S = 7


class FakeGuest(qlwire.FakePeer):
    """A unix listener that sends Hello to each connection, Started (if
    asked) for an Exec and Attached for an Attach, then ignores everything
    it is sent."""

    def __init__(self, path, started, exited=False):
        self.started = started
        self.exited = exited
        self.got_exec = threading.Event()
        self.signals = []
        super().__init__(path)

    def talk(self, conn):
        conn.send_hello(software="fake guest")
        while True:
            name, msg = conn.recv(timeout=3600)
            if name == "signal":
                self.signals.append(msg)
            if name == "exec":
                if self.started:
                    conn.send("started", pid=4242)
                if self.exited:
                    # The command is over, but the stream stays open. A
                    # line on stderr in the same write: once vm-run printed
                    # it, it has read Exited too.
                    conn.sock.sendall(qlwire.encode("data", stream=pb.STREAM_STDERR,
                                                    data=b"over\n") +
                                      qlwire.encode("exited", code=0))
                self.got_exec.set()
            elif name == "attach":
                # A stream connection: taken, then never written to.
                conn.send("attached")


GIVE_UP_CASES = [
    (signal.SIGHUP, True),
    (signal.SIGTERM, True),
    (signal.SIGINT, False),   # before Started, every signal counts
]


def test_vm_run_gives_up_on_a_guest_that_ignores_signals(host_stack):
    """Each case its own host agent and fake guest, all waiting out the
    same grace at once."""
    cases = []
    try:
        for signo, started in GIVE_UP_CASES:
            s = host_stack(start_guest=False)
            cases.append((s, FakeGuest(s.guest_sock, started), signo))
        procs = []
        for s, guest, signo in cases:
            p = s.popen(VM, "sleep", "1000", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            assert guest.got_exec.wait(60)
            wait_for(lambda: s.host_status().leases == 1, what="vm-run's lease")
            procs.append(p)
        time.sleep(0.5)
        assert all(p.poll() is None for p in procs)
        t0 = time.monotonic()
        for p, (_, _, signo) in zip(procs, cases):
            p.send_signal(signo)
        for p, (s, _, signo) in zip(procs, cases):
            try:
                p.communicate(timeout=max(0, t0 + GIVE_UP_S + MARGIN_S - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"vm-run still running after the grace of signal {signo}")
            assert p.returncode == 128 + signo, signo
            assert time.monotonic() - t0 >= GIVE_UP_S - 1, signo
            wait_for(lambda: s.host_status().leases == 0, what="the lease released")
    finally:
        for _, guest, _ in cases:
            guest.close()


EXITED_GIVE_UP_S = 2   # vm-run's EXITED_GIVE_UP_MS


@pytest.mark.parametrize("signals", [
    [signal.SIGINT],
    [signal.SIGQUIT],
    [signal.SIGTERM, signal.SIGTERM],   # the second ends it at once
])
def test_signal_ends_the_wait_after_exited(host_stack, signals):
    """After Exited, a guest that keeps the stream connection open keeps
    vm-run waiting for the rest of the output, as a pipe would; SIGINT,
    SIGQUIT, SIGTERM or SIGHUP ends that wait within 2 s (a second one at
    once) with 128+N, and the lease with it."""
    s = host_stack(start_guest=False)
    guest = FakeGuest(s.guest_sock, started=True, exited=True)
    p = None
    try:
        p = s.popen(VM, "true", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert guest.got_exec.wait(60)
        assert p.stderr.readline() == b"over\n"
        time.sleep(0.1)
        assert p.poll() is None
        for k, signo in enumerate(signals):
            p.send_signal(signo)
            # Two signals sent at once may be delivered as one: the next
            # goes once vm-run forwarded this one.
            wait_for(lambda: len(guest.signals) > k, what="the signal forwarded")
        wait = 1 if len(signals) > 1 else EXITED_GIVE_UP_S + 3
        try:
            p.communicate(timeout=wait)
        except subprocess.TimeoutExpired:
            pytest.fail("vm-run still waits after the signal")
        assert p.returncode == 128 + signals[-1]
        wait_for(lambda: s.host_status().leases == 0, what="the lease released")
    finally:
        if p and p.poll() is None:
            p.kill()
            p.wait()
        guest.close()


def test_tty_escape_works_against_a_guest_that_takes_nothing(host_stack):
    """With -t the terminal is raw: Ctrl-C is a byte for the guest, not a
    signal. A guest that never sends Started (nor takes a byte of stdin)
    still cannot hold vm-run: '~.' ends it, 255, and the lease."""
    import os
    s = host_stack(start_guest=False)
    guest = FakeGuest(s.guest_sock, started=False)
    p, master, _ = s.pty_session(["-t", VM, "sh"])
    try:
        assert guest.got_exec.wait(60)
        os.write(master, b"\x03\r~.")      # Ctrl-C: nothing; Enter, ~.: leaves
        assert p.wait(timeout=5) == 255
        wait_for(lambda: s.host_status().leases == 0, what="the lease released")
    finally:
        os.close(master)
        guest.close()


def test_tty_input_left_unread_is_flushed_at_exit(host_stack):
    """Input vm-run did not read before the command exited (such as a
    terminal's answers to queries the guest sent last) is discarded when
    the terminal is restored, not left for the shell to read."""
    import fcntl
    import os
    import termios

    s = host_stack(start_guest=False)
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(s.guest_sock)
    lsock.listen(1)
    master, slave = os.openpty()
    try:
        p = subprocess.Popen(s.vm_run_args("-t", VM, "cat"), stdin=slave, stdout=slave,
                             stderr=slave, env=s.env, start_new_session=True)
        s.clients.append(p)
        lsock.settimeout(60)
        c, _ = lsock.accept()
        c.settimeout(60)
        c.sendall(qlwire.encode("hello", major=qlwire.VERSION_MAJOR,
                                minor=qlwire.VERSION_MINOR, software="fake guest")
                  + qlwire.encode("started", pid=4242))
        wait_for(lambda: not termios.tcgetattr(slave)[3] & termios.ICANON, what="raw mode")
        # More than the 256 KiB window: the guest acknowledges nothing, so
        # vm-run stops reading and the rest stays in the terminal's queue.
        window = 256 * 1024
        filler = (b"x" * 1023 + b"\n") * (window // 1024 + 2)
        writer = threading.Thread(target=lambda: os.write(master, filler), daemon=True)
        fcntl.fcntl(master, fcntl.F_SETFL, fcntl.fcntl(master, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        writer.start()
        buf = bytearray()
        got = 0
        while got < window:
            data = c.recv(1 << 20)
            assert data
            buf += data
            for name, msg in qlwire.frames(buf):
                if name == "data" and msg.stream == pb.STREAM_STDIN:
                    got += len(msg.data)
        time.sleep(0.5)
        c.sendall(qlwire.encode("exited", code=0))
        assert p.wait(timeout=30) == 0
        attrs = termios.tcgetattr(slave)
        attrs[3] &= ~termios.ICANON
        attrs[6][termios.VMIN] = 0
        attrs[6][termios.VTIME] = 0
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        left = os.read(slave, 65536)
        assert left == b"", len(left)
        c.close()
    finally:
        os.close(master)
        os.close(slave)
        lsock.close()
