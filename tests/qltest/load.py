"""Many vm-run sessions at once through one host agent and one guest
agent, for the load test and `make bench`: every session is live at the
same time (each command waits for a line on its stdin, sent only once the
guest agent counts them all), then each must print its own line and exit
with its own status; the agents' fd count and memory are sampled
throughout and after.

`concurrent_sessions(stack, n)` returns a LoadResult, `local_sessions(n)`
the same commands run here (a benchmark's peer); `fd_limit(n)` lowers
the soft RLIMIT_NOFILE of the processes started within it (the daemons
of a stack), as a service manager's default would."""
import contextlib
import os
import resource
import subprocess
import threading
import time

from qltest.procs import fd_count, memory

# Each command reads its line, prints it and exits with a status of its own.
SCRIPT = 'read line; echo "$line"; exit "$1"'


class LoadResult:
    def __init__(self):
        self.failures = []         # (session, what went wrong)
        self.seconds = 0.0         # from the first spawn to the last exit
        self.baseline = {}         # name -> (fds, VmRSS bytes) before
        self.peak = {}             # name -> (fds, VmRSS bytes), the most seen
        self.after = {}            # name -> (fds, VmRSS bytes) once settled


@contextlib.contextmanager
def fd_limit(soft):
    """Processes started within get a soft RLIMIT_NOFILE of `soft`."""
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, old)


def _sample(pids):
    out = {}
    for name, pid in pids.items():
        try:
            out[name] = (fd_count(pid), memory(pid)["VmRSS"])
        except OSError:
            pass
    return out


def _crowd(n, argv_of, env, all_live, res):
    """Starts n commands (argv_of(i)), waits until all_live() (or one
    ended: it failed), gives each its line, checks its output and status
    into res; returns when all have exited."""
    procs = []
    t0 = time.monotonic()
    try:
        for i in range(n):
            procs.append(subprocess.Popen(argv_of(i), env=env, stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        deadline = time.monotonic() + 300
        while not all_live():
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for i, p in enumerate(procs):
            try:
                p.stdin.write(f"session {i}\n".encode())
                p.stdin.close()
            except BrokenPipeError:
                pass  # it ended already: reported below
            p.stdin = None
        for i, p in enumerate(procs):
            out, err = p.communicate(timeout=300)
            if p.returncode != i % 200 or out != f"session {i}\n".encode():
                res.failures.append((i, f"exit {p.returncode}, stdout {out[:80]!r}, "
                                        f"stderr {err[:200]!r}"))
        res.seconds = time.monotonic() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def local_sessions(n, env=None):
    """The same n commands run here, all at once: the peer of a load
    figure. Returns a LoadResult (no agents: no samples)."""
    res = LoadResult()
    _crowd(n, lambda i: ["sh", "-c", SCRIPT, "sh", str(i % 200)], env, lambda: True, res)
    return res


def concurrent_sessions(stack, n, settle=30):
    """n sessions at once (see the module's docstring). The stack's guest
    agent must count live sessions (stack.guest_status())."""
    pids = {"guest agent": stack.guest.pid, "host agent": stack.host.pid}
    res = LoadResult()
    # The baseline follows one session: the code and libraries a session
    # needs are paged in once and stay, whatever the load.
    subprocess.run(stack.vm_run_args(stack.vm, "true"), env=stack.env, stdin=subprocess.DEVNULL,
                   capture_output=True, timeout=60)
    time.sleep(0.2)
    res.baseline = _sample(pids)
    res.peak = dict(res.baseline)
    stop = threading.Event()

    def sampler():
        while not stop.is_set():
            for name, (fds, rss) in _sample(pids).items():
                pf, pr = res.peak.get(name, (0, 0))
                res.peak[name] = (max(pf, fds), max(pr, rss))
            stop.wait(0.05)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    try:
        _crowd(n, lambda i: stack.vm_run_args(stack.vm, "sh", "-c", SCRIPT, "sh", str(i % 200)),
               stack.env, lambda: stack.guest_status().live_sessions == n, res)
    finally:
        stop.set()
        th.join()
    # Settled: every session's fds closed again.
    want = {name: fds for name, (fds, _) in res.baseline.items()}
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        res.after = _sample(pids)
        if all(res.after.get(k, (None,))[0] == v for k, v in want.items()):
            break
        time.sleep(0.1)
    return res
