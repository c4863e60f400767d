"""Processes a test starts, waits for and stops (always by pid), and what
/proc says about them.

    d = Daemon("host agent", argv, log_path, ready_text="serving", env=env)
    d.stop()                      SIGTERM; must exit 0 with no sanitizer report
    wait_for(lambda: ..., what="...")
"""
import json
import os
import signal
import subprocess
import time

from qltest import sanitizer_reports


class ProcError(AssertionError):
    """A process a test drives did not do what it should (exited, never
    answered, timed out); the message carries the end of its output."""


def wait_for(pred, timeout=60, interval=0.05, what="condition"):
    """Polls pred until it returns something true; returns that value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval)


def tail(path, n=30):
    """The last n lines of a log file ("" if it cannot be read)."""
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def stop_proc(proc, timeout=5.0):
    """SIGTERM to a process we started, SIGKILL after timeout; returns its
    exit status (None if it never started)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class Daemon:
    """A long-running program of ours, started with its output in a log
    file; ready once ready_text shows in the log (not waited for if None)."""

    def __init__(self, name, args, log_path, ready_text=None, env=None, preexec=None,
                 user=None, ready_timeout=60):
        self.name = name
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, preexec_fn=preexec,
                                     **({} if user is None else
                                        dict(user=user, group=user, extra_groups=[])))
        self.pid = self.proc.pid
        if ready_text is None:
            return
        try:
            wait_for(lambda: ready_text in self.log_text() or self.proc.poll() is not None,
                     timeout=ready_timeout, what=f"{name} to be ready")
        except TimeoutError:
            self.stop(check=False)
            raise
        if self.proc.poll() is not None:
            text = self.log_text()
            self.log.close()
            raise RuntimeError(f"{name} exited at start-up ({self.proc.returncode}): {text}")

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def alive(self):
        return self.proc.poll() is None

    def stop(self, check=True, timeout=30):
        """SIGTERM, SIGKILL after timeout. check: it must have exited on
        SIGTERM with status 0 and no sanitizer report in its log."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait()
                if check:
                    raise AssertionError(f"{self.name} did not exit on SIGTERM")
        if not self.log.closed:
            self.log.close()
        if check:
            text = self.log_text()
            assert self.proc.returncode == 0, \
                f"{self.name} exited with {self.proc.returncode}:\n{text[-4000:]}"
            assert not sanitizer_reports(text), text[-8000:]
        return self.proc.returncode


# ---- /proc ------------------------------------------------------------------

def pid_alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except FileNotFoundError:
        return False


def pid_exists(pid):
    """True while pid exists, a zombie not yet reaped included."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def children_of(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def proc_status(pid):
    """/proc/PID/status as {field: text}."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k] = v.strip()
    return fields


def catches(pid, signo):
    """True once pid has a handler for signal signo (SigCgt)."""
    try:
        return bool(int(proc_status(pid)["SigCgt"], 16) & (1 << (signo - 1)))
    except (OSError, KeyError):
        return False


def ns_pid(pid):
    """pid's number in its own (innermost) pid namespace, or None."""
    try:
        return int(proc_status(pid)["NSpid"].split()[-1])
    except (OSError, KeyError):
        return None


def ns_id(pid, name):
    """Which namespace of kind name (net, pid, user, ...) pid is in."""
    return os.readlink(f"/proc/{pid}/ns/{name}")


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def socket_fds(pid):
    """How many of pid's fds are sockets."""
    n = 0
    for f in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{f}").startswith("socket:"):
                n += 1
        except FileNotFoundError:
            pass
    return n


def memory(pid):
    """VmRSS, VmHWM and VmRSS's parts of pid, in bytes: RssAnon (the
    process's own memory, without the shared libraries' pages), RssFile
    (its program and libraries), RssShmem (shared memory it touched, e.g.
    a guest's RAM mapped from a memfd)."""
    st = proc_status(pid)
    return {k: int(st[k].split()[0]) * 1024
            for k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem") if k in st}


def private_memory(pid):
    """(all private, private in mappings that are not shared) in bytes,
    from /proc/PID/smaps: Private_Clean + Private_Dirty. Guest memory and
    rings are MAP_SHARED mappings ('s' in the permissions)."""
    total = own = 0
    shared = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(None, 5)
            if len(head) >= 5 and "-" in head[0] and len(head[1]) == 4:
                shared = head[1][3] == "s"
                continue
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                kb = int(line.split()[1]) * 1024
                total += kb
                if not shared:
                    own += kb
    return total, own


def context_switches(pid):
    """Voluntary + nonvoluntary context switches of every thread of pid."""
    n = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches:",
                                        "nonvoluntary_ctxt_switches:")):
                        n += int(line.split()[1])
        except FileNotFoundError:
            pass                       # a thread that just ended
    return n


def cpu_seconds(pid):
    """User + system CPU time pid has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_as_nobody(fn):
    """Runs fn() in a child with uid/gid 65534; returns its exit status."""
    pid = os.fork()
    if pid == 0:
        try:
            drop_to()
            fn()
            os._exit(0)
        except BaseException:         # noqa: B902 - report anything
            import traceback
            traceback.print_exc()
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def call_as_nobody(fn):
    """fn() in a forked child with uid/gid 65534; what it returned (it
    travels as JSON), or "raised <exception>" when it raised."""
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rd)
        try:
            drop_to()
            os.write(wr, json.dumps(fn()).encode())
        except BaseException as e:    # noqa: B902 - the parent reports it
            os.write(wr, json.dumps(f"raised {e!r}").encode())
        finally:
            os._exit(0)
    os.close(wr)
    try:
        with os.fdopen(rd, "rb") as f:
            return json.loads(f.read())
    finally:
        os.waitpid(pid, 0)


def drop_to(uid=65534, gid=65534):
    """Becomes uid/gid (nobody, 65534, by default) with no supplementary
    groups: in a forked child, or as a subprocess's preexec_fn."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
