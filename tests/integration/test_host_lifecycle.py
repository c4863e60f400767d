"""The host agent supervising its VMM: the real host agent, the crosvm
stand-in and the real guest agent it starts (qltest.vmm). Start on the
first connection and on HostStart, READY=1, each way of stopping, a crash,
the idle backstop of disposable VMs, and --foreground.

The tests on `lifecycle_stack` run twice: against the stand-in and against
a real VM under qemu booting the guest image (each [qemu] test boots its
own VM); the tests only for qemu are its stop steps (system_powerdown,
quit, SIGKILL when qemu answers nothing), a disposable guest powering
itself off, qemu killed before its guest answered, and its vsock device
(qubes-lite-vsock) dying under a running VM."""
import os
import re
import signal
import subprocess
import time

from qltest import qlwire
from qltest.host import VM
from qltest.procs import Daemon, pid_alive, wait_for
from qltest.qlwire import pb
from qltest.vmm import KERNEL, STANDIN


ERR_CRASH = ("vm-run: the guest agent of VM 'test' closed the connection before the "
             "command exited")


def runtime_files(stack):
    return sorted(os.listdir(stack.run_dir)) if os.path.isdir(stack.run_dir) else []


# What a running VM has in the runtime directory, by VMM.
RUNNING_FILES = {
    "standin": [f"{VM}.console", f"{VM}.crosvm.sock", f"{VM}.secret", f"{VM}.sock"],
    "qemu": [f"{VM}.console", f"{VM}.qmp.sock", f"{VM}.secret", f"{VM}.sock",
             f"{VM}.vsock-vhost.sock", f"{VM}.vsock.sock"],
}


def test_first_connection_starts_the_vm(lifecycle_stack):
    s = lifecycle_stack()
    st = s.host_status()
    assert st.state == pb.VM_STATE_STOPPED and not st.running and st.leases == 0
    assert not any("READY=1" in text for _, text in s.notifications())
    p = s.vm_run("--timing", VM, "echo", "hello from the guest")
    assert p.returncode == 0, (p.stderr, s.log())
    assert p.stdout == "hello from the guest\n"
    assert "VM start" in p.stderr and "VM start took" in p.stderr
    if s.vmm == "standin":
        # The stand-in got crosvm's command line as the host agent builds it.
        argv = s.argv()
        assert argv[0] == STANDIN and argv[-1] == KERNEL
        assert argv[argv.index("--socket") + 1] == s.control_sock
        assert argv[argv.index("--vsock") + 1] == "cid=3"
        assert argv[argv.index("--serial") + 1] == "type=stdout,hardware=serial,num=1,console,stdin"
    else:
        # The guest image: the VM's name and user from the kernel command
        # line, reached through qubes-lite-vsock.
        p = s.vm_run(VM, "sh", "-c", "hostname; id -un")
        assert p.returncode == 0 and p.stdout == f"{VM}\ndaemon\n", (p.stdout, p.stderr)
    st = s.host_status()
    assert st.state == pb.VM_STATE_RUNNING and st.running and st.uptime_ms > 0
    assert st.idle_timeout_s == 0
    wait_for(lambda: any("READY=1" in text for _, text in s.notifications()), timeout=10,
             what="READY=1")
    # From the host agent, once; the VMM and its children do not get our
    # NOTIFY_SOCKET.
    ready = [pid for pid, text in s.notifications() if "READY=1" in text.split("\n")]
    assert ready == [s.host.pid], s.notifications()
    assert all(pid == s.host.pid for pid, _ in s.notifications()), s.notifications()
    # A second command finds it running: no start this time.
    p = s.vm_run("--timing", VM, "true")
    assert p.returncode == 0 and "VM start took" not in p.stderr, p.stderr
    assert runtime_files(s) == RUNNING_FILES[s.vmm]


def test_vmm_stderr_reaches_the_log(vmm_stack):
    s = vmm_stack()
    name, msg = s.request("host_start")
    assert name == "host_status" and msg.state == pb.VM_STATE_RUNNING, (name, msg)
    # The stand-in's own stderr line and the guest agent's, prefixed.
    wait_for(lambda: "crosvm: crosvm-standin: control socket" in s.log(), timeout=10,
             what="the VMM's stderr in the log")
    assert "crosvm: qubes-lite-guest-agent: Listening on" in s.log()


def test_host_start_then_stop_by_guest_poweroff(lifecycle_stack):
    s = lifecycle_stack()
    name, msg = s.request("host_start")
    assert name == "host_status", (name, msg)
    assert msg.state == pb.VM_STATE_RUNNING and msg.running and msg.vm == VM
    # Starting a running VM is no error.
    name, msg = s.request("host_start")
    assert name == "host_status" and msg.state == pb.VM_STATE_RUNNING
    pid = s.vmm_pid()
    name, msg = s.request("host_stop")
    assert name == "host_stopped", (name, msg)
    assert msg.method == pb.STOP_GUEST_POWEROFF
    assert s.wait_agent_exit() == 0
    assert not pid_alive(pid)
    assert "the guest powered off" in s.log()
    # Everything the VM had in the runtime directory is gone.
    assert runtime_files(s) == []


def test_stop_when_not_running(vmm_stack):
    s = vmm_stack()
    name, msg = s.request("host_stop")
    assert name == "host_stopped" and msg.method == pb.STOP_NOT_RUNNING, (name, msg)
    assert s.host.proc.poll() is None


def test_stop_on_the_control_socket_when_the_guest_ignores_shutdown(lifecycle_stack):
    # qemu: QMP system_powerdown, which the guest image takes as its ACPI
    # power button.
    s = lifecycle_stack(standin={"ignore_poweroff": 1}, guest={"ignore_poweroff": 1},
                        agent_args=["--shutdown-timeout", "1"])
    assert s.request("host_start")[0] == "host_status"
    t = time.monotonic()
    name, msg = s.request("host_stop")
    assert name == "host_stopped", (name, msg)
    assert msg.method == pb.STOP_VMM_STOP
    assert 900 <= msg.stop_ms < 10000 and time.monotonic() - t >= 0.9
    assert s.wait_agent_exit() == 0
    if s.vmm == "standin":
        assert "stopping on the control socket" in s.log()
    else:
        assert "asked qemu to stop (system_powerdown)" in s.log()
        assert "asked qemu to stop (quit)" not in s.log()
        assert "qemu exited with status 0" in s.log()
    assert runtime_files(s) == []


def test_qemu_quit_when_the_guest_ignores_the_power_button(vmm_stack):
    s = vmm_stack(vmm="qemu", guest={"ignore_poweroff": 1, "ignore_powerdown": 1},
                  agent_args=["--shutdown-timeout", "1", "--stop-timeout", "1"])
    assert s.request("host_start")[0] == "host_status"
    name, msg = s.request("host_stop")
    assert name == "host_stopped", (name, msg)
    assert msg.method == pb.STOP_VMM_STOP
    assert 1900 <= msg.stop_ms < 10000, msg.stop_ms
    assert s.wait_agent_exit() == 0
    log = s.log()
    assert "qemu did not stop within 1 s after system_powerdown" in log
    assert "asked qemu to stop (quit)" in log
    assert runtime_files(s) == []


def test_qemu_killed_when_it_does_not_answer(vmm_stack):
    # A qemu that is stopped (SIGSTOP) answers neither the guest's
    # Shutdown nor QMP: each step's time runs out, then SIGKILL.
    s = vmm_stack(vmm="qemu", agent_args=["--shutdown-timeout", "1", "--stop-timeout", "1"])
    assert s.request("host_start")[0] == "host_status"
    pid = s.vmm_pid()
    os.kill(pid, signal.SIGSTOP)
    name, msg = s.request("host_stop")
    assert name == "host_stopped", (name, msg)
    assert msg.method == pb.STOP_KILLED
    assert msg.stop_ms >= 2900, msg.stop_ms
    assert s.wait_agent_exit() == 0
    assert not pid_alive(pid)
    assert "qemu was killed by signal 9" in s.log()
    # qubes-lite-vsock went with it, and every socket of the VM.
    assert runtime_files(s) == []


def test_kill_when_the_vmm_ignores_stop(vmm_stack):
    # The VMM has a process of its own besides (as crosvm's device and
    # jail processes): the kill takes its whole process group.
    s = vmm_stack(standin={"ignore_poweroff": 1, "ignore_stop": 1, "stray_ms": 60000},
                  agent_args=["--shutdown-timeout", "1", "--stop-timeout", "1"])
    assert s.request("host_start")[0] == "host_status"
    pid = s.standin_pid()
    with open(s.pid_file + ".stray") as f:
        stray = int(f.read())
    try:
        assert pid_alive(stray)
        name, msg = s.request("host_stop")
        assert name == "host_stopped", (name, msg)
        assert msg.method == pb.STOP_KILLED
        assert msg.stop_ms >= 1900
        assert s.wait_agent_exit() == 0
        assert not pid_alive(pid)
        wait_for(lambda: not pid_alive(stray), timeout=5, what="the VMM's other process to die")
        assert "ignoring stop as asked" in s.log()
        assert "and its process group" in s.log()
        # The guest agent went with it.
        assert runtime_files(s) == []
    finally:
        if pid_alive(stray):
            os.kill(stray, signal.SIGKILL)


def test_sigterm_stops_the_vm(vmm_stack):
    s = vmm_stack()
    assert s.request("host_start")[0] == "host_status"
    pid = s.standin_pid()
    os.kill(s.host.pid, signal.SIGTERM)
    assert s.wait_agent_exit() == 0
    assert not pid_alive(pid)
    assert "the guest powered off" in s.log()


def test_crash_before_the_guest_answers(vmm_stack):
    s = vmm_stack(standin={"boot_ms": 5000, "crash_ms": 300})
    p = s.vm_run(VM, "true")
    assert p.returncode == 255
    lines = p.stderr.splitlines()
    assert lines[-1].startswith("vm-run: "), p.stderr
    assert "stopped before its guest agent answered" in lines[-1]
    assert "crosvm was killed by signal 11" in lines[-1], lines
    assert s.wait_agent_exit() == 0
    assert runtime_files(s) == []
    # A short run for a Type=notify unit, not a failed start.
    ready = [(pid, text) for pid, text in s.notifications() if "READY=1" in text.split("\n")]
    assert [pid for pid, _ in ready] == [s.host.pid], s.notifications()
    assert "crosvm was killed by signal 11" in ready[0][1]


def test_crash_while_running(lifecycle_stack):
    s = lifecycle_stack(standin={"crash_ms": 3000})
    # vm-run's Connect starts the VM; its command runs when the VMM crashes
    # (qemu: killed with SIGKILL).
    p = s.popen("vm-run", VM, "sleep", "30", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True)
    wait_for(lambda: s.host_status().live_sessions == 1, timeout=60, what="the session")
    if s.vmm == "qemu":
        os.kill(s.vmm_pid(), signal.SIGKILL)
    assert s.wait_agent_exit(timeout=30) == 0
    out, err = p.communicate(timeout=30)
    # The guest connection went with the VM: vm-run's own error.
    assert p.returncode == 255, (p.returncode, err)
    assert out == ""
    assert err.splitlines()[-1] == ERR_CRASH, err
    if s.vmm == "standin":
        assert "VM 'test': crosvm was killed by signal 11 (Segmentation fault)" in s.log()
    else:
        assert "VM 'test': qemu was killed by signal 9 (Killed)" in s.log()
    assert runtime_files(s) == []


def test_qemu_vsock_device_restarted(vmm_stack):
    # qubes-lite-vsock dies under a running VM: the host agent starts it
    # again and replaces qemu's device over QMP, and commands run again.
    s = vmm_stack(vmm="qemu")
    p = s.vm_run(VM, "echo", "before")
    assert p.returncode == 0 and p.stdout == "before\n", p.stderr
    pids = [int(m) for m in re.findall(r"started \S*qubes-lite-vsock \(pid (\d+)\)", s.log())]
    assert len(pids) == 1, s.log()
    os.kill(pids[0], signal.SIGKILL)
    wait_for(lambda: s.log().count("vsock device attached") == 2, timeout=60,
             what="the vsock device added again")
    assert "starting qubes-lite-vsock again" in s.log()
    p = s.vm_run(VM, "echo", "after")
    assert p.returncode == 0 and p.stdout == "after\n", (p.stderr, s.log())
    assert s.host_status().state == pb.VM_STATE_RUNNING and len(s.vmm_pids()) == 1


def test_qemu_killed_before_the_guest_answers(vmm_stack):
    s = vmm_stack(vmm="qemu")
    p = s.popen("vm-run", VM, "true", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: s.vmm_pids(), timeout=30, what="qemu to start")
    assert s.host_status().state == pb.VM_STATE_STARTING
    os.kill(s.vmm_pid(), signal.SIGKILL)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 255
    assert "stopped before its guest agent answered" in err.splitlines()[-1], err
    assert "qemu was killed by signal 9" in err.splitlines()[-1], err
    assert s.wait_agent_exit() == 0
    assert runtime_files(s) == []


def test_start_failure_is_reported(vmm_stack):
    s = vmm_stack(vm={"kernel": None})
    name, msg = s.request("host_start")
    assert name == "error" and msg.code == pb.ERROR_UNAVAILABLE, (name, msg)
    assert "'kernel'" in msg.message and "test.json" in msg.message
    p = s.vm_run(VM, "true")
    assert p.returncode == 255 and "'kernel'" in p.stderr
    assert s.host_status().state == pb.VM_STATE_STOPPED


def test_connect_no_start_does_not_start(vmm_stack):
    s = vmm_stack()
    c = qlwire.Conn.unix(s.sock)
    c.hello()
    c.send("connect", no_start=True)
    name, msg = c.recv()
    c.close()
    assert name == "error" and msg.code == pb.ERROR_UNAVAILABLE and "not running" in msg.message
    assert s.host_status().state == pb.VM_STATE_STOPPED


def test_idle_backstop_stops_a_disposable_vm(lifecycle_stack):
    # The guest image's agent would power the VM off by itself when idle:
    # told to ignore that (and Shutdown), the VM is stopped with qemu's
    # system_powerdown.
    s = lifecycle_stack(vm={"disposable": True, "idleTimeout": 1}, guest={"ignore_poweroff": 1},
                        agent_args=["--idle-grace", "1", "--shutdown-timeout", "1"])
    # A lease held longer than idleTimeout + grace keeps the VM up.
    p = s.popen("vm-run", VM, "sleep", "4", stdout=subprocess.PIPE)
    # The guest session exists only once the guest connection is handed
    # over and the command started: wait for that, not just the lease.
    wait_for(lambda: s.host_status().live_sessions == 1, timeout=30, what="the session")
    st = s.host_status()
    assert st.idle_timeout_s == 1 and st.live_sessions == 1 and st.idle_ms == 0
    time.sleep(3)
    assert s.host.proc.poll() is None and s.host_status().state == pb.VM_STATE_RUNNING
    assert p.wait(timeout=30) == 0
    ended = time.monotonic()
    # Then, without a lease, idleTimeout + grace (2 s) later the host agent
    # stops it (the guest agent here has no idle timeout of its own).
    assert s.wait_agent_exit(timeout=30) == 0
    waited = time.monotonic() - ended
    assert 1.5 <= waited < 15, waited
    log = s.log()
    assert "no lease for" in log and "stopping" in log
    if s.vmm == "standin":
        assert "the guest powered off" in log
    else:
        assert "asked qemu to stop (system_powerdown)" in log


def test_qemu_disposable_guest_powers_itself_off(vmm_stack):
    # The guest agent's own idle timeout (qubes_lite.idle) powers the VM
    # off, long before the host agent's backstop (--idle-grace 30).
    s = vmm_stack(vmm="qemu", vm={"disposable": True, "idleTimeout": 1})
    p = s.vm_run(VM, "echo", "once")
    assert p.returncode == 0 and p.stdout == "once\n", p.stderr
    ended = time.monotonic()
    assert s.wait_agent_exit(timeout=30) == 0
    assert time.monotonic() - ended < 15
    log = s.log()
    assert "no lease for" not in log
    assert "qemu exited with status 0 (the guest powered off)" in log, log
    assert runtime_files(s) == []


def test_not_disposable_stays_up(vmm_stack):
    s = vmm_stack(vm={"idleTimeout": 1}, agent_args=["--idle-grace", "0"])
    assert s.vm_run(VM, "true").returncode == 0
    time.sleep(2.5)
    assert s.host_status().state == pb.VM_STATE_RUNNING


def test_foreground_exit_status(tmp_path, vmm_stack):
    # The stack only provides the directories and the environment.
    s = vmm_stack(start=False, standin={"crash_ms": 1500})
    p = subprocess.run(s.agent_argv("--foreground"), env=s.env, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=60)
    assert p.returncode == 128 + signal.SIGSEGV, p.stderr
    # The serial console went to our stdout, not to a relay.
    assert b"standin: boot done" in p.stdout
    assert b"crosvm-standin: crashing as asked" in p.stderr


def test_foreground_serves_the_command_socket(vmm_stack):
    s = vmm_stack(start=False)
    p = subprocess.Popen(s.agent_argv("--foreground"), env=s.env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: os.path.exists(s.sock) and os.path.exists(s.guest_sock), timeout=30,
                 what="the VM")
        wait_for(lambda: s.host_status().state == pb.VM_STATE_RUNNING, timeout=30, what="running")
        r = s.vm_run(VM, "echo", "fg")
        assert r.returncode == 0 and r.stdout == "fg\n", r.stderr
        assert not os.path.exists(s.console_sock)
        name, msg = s.request("host_stop")
        assert name == "host_stopped" and msg.method == pb.STOP_GUEST_POWEROFF
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        assert b"standin: reboot: Power down" in out
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_exit_does_not_wait_for_a_stray_process_of_the_vmm(vmm_stack):
    # A process the VMM left holds its stderr pipe for 8 s after the crash.
    s = vmm_stack(standin={"crash_ms": 1000, "stray_ms": 8000})
    try:
        assert s.request("host_start")[0] == "host_status"
        wait_for(lambda: "crashing as asked" in s.log(), timeout=30, what="the crash")
        t = time.monotonic()
        assert s.wait_agent_exit(timeout=30) == 0
        assert time.monotonic() - t < 4
    finally:
        with open(s.pid_file + ".stray") as f:
            stray = int(f.read())
        if pid_alive(stray):
            os.kill(stray, signal.SIGKILL)


def test_vmm_that_cannot_be_executed(vmm_stack):
    s = vmm_stack(start=False)
    s.env["QUBES_LITE_CROSVM"] = os.path.join(s.dir, "no-such-crosvm")
    s.start_agent()
    p = s.vm_run(VM, "true")
    assert p.returncode == 255
    assert "crosvm exited with status 127" in p.stderr, p.stderr
    assert s.wait_agent_exit() == 0
    assert "cannot execute" in s.log() and "no-such-crosvm" in s.log()


def test_socket_activated_agent_with_the_vm_stopped_goes_away(vmm_stack):
    import socket as socketmod
    s = vmm_stack(start=False)
    os.makedirs(s.run_dir, mode=0o755)
    listener = socketmod.socket(socketmod.AF_UNIX, socketmod.SOCK_STREAM)
    listener.bind(s.sock)
    listener.listen(8)
    argv = [a for a in s.agent_argv() if a not in ("--listen", "unix:" + s.sock)]
    # systemd's hand-over: the socket as fd 3, LISTEN_PID the agent's own.
    script = 'export LISTEN_PID=$$ LISTEN_FDS=1; exec "$@"'
    log = open(os.path.join(s.dir, "activated.log"), "wb")
    p = subprocess.Popen(["/bin/sh", "-c", script, "sh", *argv],
                         env=dict(s.env, NOTIFY_SOCKET=s.notify_path), stdin=subprocess.DEVNULL,
                         stdout=log, stderr=subprocess.STDOUT,
                         pass_fds=(3,), preexec_fn=lambda: os.dup2(listener.fileno(), 3))
    try:
        listener.close()
        assert s.host_status().state == pb.VM_STATE_STOPPED
        t = time.monotonic()
        assert p.wait(timeout=30) == 0
        assert 8 <= time.monotonic() - t < 20
        ready = [pid for pid, text in s.notifications() if "READY=1" in text.split("\n")]
        assert ready == [p.pid], s.notifications()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        log.close()
    with open(os.path.join(s.dir, "activated.log")) as f:
        assert "nobody is connected: exiting" in f.read()


def test_second_agent_leaves_the_live_socket_alone(vmm_stack):
    s = vmm_stack()
    before = os.stat(s.sock).st_ino
    p = subprocess.run(s.agent_argv(), env=s.env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p.stderr
    assert "another process listens there" in p.stderr, p.stderr
    # The first one still has its socket, and serves on it.
    assert os.stat(s.sock).st_ino == before
    assert s.host_status().state == pb.VM_STATE_STOPPED


def test_exit_leaves_a_socket_that_replaced_ours(vmm_stack):
    import socket as socketmod
    s = vmm_stack()
    os.unlink(s.sock)
    other = socketmod.socket(socketmod.AF_UNIX, socketmod.SOCK_STREAM)
    try:
        other.bind(s.sock)
        other.listen(1)
        os.kill(s.host.pid, signal.SIGTERM)
        assert s.wait_agent_exit() == 0
        assert os.path.exists(s.sock)
        c = socketmod.socket(socketmod.AF_UNIX, socketmod.SOCK_STREAM)
        c.connect(s.sock)
        c.close()
    finally:
        other.close()


def soft_fd_limit(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError(f"no fd limit in /proc/{pid}/limits")


def test_vmm_gets_no_fd_nor_variable_of_ours(vmm_stack):
    # The host agent holds an fd that is not close-on-exec (fd 7, from a
    # shell) and variables of its own, systemd's among them; it raises its
    # soft fd limit (started at 256 here) for its clients.
    s = vmm_stack(start=False)
    s.env["QL_PRIVATE_SECRET"] = "agent only"
    argv = ["/bin/sh", "-c", 'exec 7</dev/null; ulimit -Sn 256; exec "$@"', "sh",
            *s.agent_argv()]
    s.host = Daemon("host agent", argv, os.path.join(s.dir, "host.log"), "serving",
                    env=dict(s.env, NOTIFY_SOCKET=s.notify_path, LISTEN_FDNAMES="x",
                             JOURNAL_STREAM="1:2", WATCHDOG_USEC="1000000"))
    assert os.path.exists(f"/proc/{s.host.pid}/fd/7")
    name, msg = s.request("host_start")
    assert name == "host_status", (name, msg)
    with open(os.path.join(s.dir, "fds")) as f:
        assert sorted(int(x) for x in f.read().split()) == [0, 1, 2]
    # Nor our raised fd limit: the VMM has the one we were started with.
    assert soft_fd_limit(s.host.pid) > 256
    assert soft_fd_limit(s.standin_pid()) == 256
    with open(os.path.join(s.dir, "environ")) as f:
        env = dict(line.split("=", 1) for line in f.read().splitlines())
    assert env["PATH"] == os.environ["PATH"]
    allowed = {"PATH", "TZ", "RUST_BACKTRACE", "XDG_RUNTIME_DIR", "WAYLAND_DISPLAY", "DISPLAY",
               "PULSE_SERVER", "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"}
    extra = {k for k in env if k not in allowed and not k.startswith("QL_STANDIN_")}
    assert extra == set(), env
    # Its stderr here is a pipe, not the journal: no JOURNAL_STREAM.
    assert "JOURNAL_STREAM" not in env


def test_a_guest_that_never_answers_is_stopped(vmm_stack):
    # The guest agent would start only after 10 minutes; --guest-timeout
    # bounds the start, then the VM is stopped (its VMM does not take the
    # stop command while it boots, so it is killed).
    s = vmm_stack(standin={"boot_ms": 600000},
                  agent_args=["--guest-timeout", "2", "--stop-timeout", "1"])
    t = time.monotonic()
    name, msg = s.request("host_start")
    assert name == "error" and msg.code == pb.ERROR_SHUTTING_DOWN, (name, msg)
    assert msg.message == f"VM '{VM}' is stopping (the guest agent never answered within 2 s)"
    assert s.wait_agent_exit(timeout=30) == 0
    assert time.monotonic() - t < 10
    assert "never answered within 2 s, stopping it" in s.log()
    assert runtime_files(s) == []


def test_a_hung_stop_command_is_killed(vmm_stack):
    # The guest ignores Shutdown, `crosvm stop` hangs, the VMM is killed;
    # the stop command must not outlive its step.
    s = vmm_stack(standin={"ignore_poweroff": 1, "stop_hang": 1},
                  agent_args=["--shutdown-timeout", "1", "--stop-timeout", "1"])
    assert s.request("host_start")[0] == "host_status"
    name, msg = s.request("host_stop")
    assert name == "host_stopped" and msg.method == pb.STOP_KILLED, (name, msg)
    with open(s.pid_file + ".stop") as f:
        stop_pid = int(f.read())
    try:
        wait_for(lambda: not pid_alive(stop_pid), timeout=5, what="the stop command to die")
        assert s.wait_agent_exit() == 0
        assert f"killing crosvm's stop command (pid {stop_pid})" in s.log()
    finally:
        if pid_alive(stop_pid):
            os.kill(stop_pid, signal.SIGKILL)


def test_runtime_dir_is_checked_before_a_start(vmm_stack):
    # The command socket elsewhere (as under socket activation, where the
    # agent creates no socket): the runtime directory, where the console
    # and control sockets go, is still checked before the VM starts.
    s = vmm_stack(start=False)
    os.makedirs(s.run_dir)
    os.chmod(s.run_dir, 0o777)
    other = os.path.join(s.dir, "cmd")
    os.makedirs(other, mode=0o755)
    s.sock = os.path.join(other, VM + ".sock")
    s.start_agent()
    name, msg = s.request("host_start")
    assert name == "error" and msg.code == pb.ERROR_UNAVAILABLE, (name, msg)
    assert msg.message == (f"cannot start VM '{VM}': {s.run_dir} must be a directory owned by "
                           f"uid {os.geteuid()} that only it may write to"), msg.message
    assert not os.path.exists(s.argv_file)
    assert s.host_status().state == pb.VM_STATE_STOPPED
    os.chmod(s.run_dir, 0o755)


def test_a_command_racing_a_stop_starts_the_vm_again(vmm_stack):
    # vm-stop, then vm-run while the VM is still stopping: the command
    # waits for the stop and runs in a fresh start of the VM.
    s = vmm_stack(standin={"ignore_poweroff": 1}, agent_args=["--shutdown-timeout", "2"])
    assert s.request("host_start")[0] == "host_status"
    first = s.standin_pid()
    stop = s.popen("vm-stop", VM, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: s.host_status().state == pb.VM_STATE_STOPPING, timeout=10, what="stopping")
    p = s.vm_run(VM, "echo", "after the stop")
    assert p.returncode == 0, (p.stderr, s.log())
    assert p.stdout == "after the stop\n"
    out, err = stop.communicate(timeout=30)
    assert stop.returncode == 0 and "stopped on request" in out, (out, err)
    assert not pid_alive(first) and s.standin_pid() != first
    assert s.host.proc.poll() is None
    assert s.host_status().state == pb.VM_STATE_RUNNING
    assert "starting it again for 1 waiting client(s)" in s.log()


def test_sigterm_fails_commands_that_wait_on_a_stopping_vm(vmm_stack):
    s = vmm_stack(standin={"ignore_poweroff": 1}, agent_args=["--shutdown-timeout", "2"])
    assert s.request("host_start")[0] == "host_status"
    os.kill(s.host.pid, signal.SIGTERM)
    wait_for(lambda: s.host_status().state == pb.VM_STATE_STOPPING, timeout=10, what="stopping")
    p = s.vm_run(VM, "true")
    assert p.returncode == 255
    assert p.stderr.splitlines()[-1] == (f"vm-run: VM '{VM}': VM '{VM}' is stopping and its host "
                                         f"agent exits (SHUTTING_DOWN)"), p.stderr
    assert s.wait_agent_exit() == 0


def test_a_start_rereads_the_configuration(vmm_stack):
    """The VM's file is read again at every start: an edit after the host
    agent started is what the VM starts with, and a file that no longer
    loads refuses the start with its reason, as --check words it."""
    s = vmm_stack()
    s.write_json(f"vms/{VM}.json", {"id": 3, "name": VM, "kernel": KERNEL, "memory": 0})
    name, msg = s.request("host_start")
    assert name == "error" and msg.code == pb.ERROR_UNAVAILABLE, (name, msg)
    assert f"{VM}.json: key 'memory'" in msg.message, msg.message
    assert s.host_status().state == pb.VM_STATE_STOPPED
    s.write_json(f"vms/{VM}.json", {"id": 3, "name": VM, "kernel": KERNEL, "memory": 777})
    name, msg = s.request("host_start")
    assert name == "host_status" and msg.state == pb.VM_STATE_RUNNING, (name, msg)
    assert "size=777" in s.argv(), s.argv()


def test_sighup_rereads_the_configuration(vmm_stack):
    """SIGHUP reads the configuration again and reports a broken file in
    --check's words; the agent goes on serving (it used to die of it)."""
    s = vmm_stack()
    s.write_json(f"vms/{VM}.json", {"id": 3, "name": VM, "kernel": KERNEL, "memory": 0})
    s.host.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: f"{VM}.json: key 'memory'" in s.log(), what="the problem in the log")
    s.write_json(f"vms/{VM}.json", {"id": 3, "name": VM, "kernel": KERNEL, "memory": 555})
    s.host.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: f"Configuration of VM '{VM}' read again" in s.log(), what="the reload")
    assert s.host.proc.poll() is None
    assert s.host_status().state == pb.VM_STATE_STOPPED
