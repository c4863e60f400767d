"""How the benchmarks time a command: one spawn to its exit (timed_run), a
stream through it between the same generator and sink (timed_pipe), and
the cleanup of what they started (kill). A command that fails raises
MeasureError with its exit status and stderr: a figure is never taken
from a failed run."""
import os
import subprocess
import time

from figures import MIB


class MeasureError(Exception):
    pass


def kill(*procs):
    """Kills what is still running of the processes we started, by pid, and
    closes our ends of their pipes."""
    for p in procs:
        if p is None:
            continue
        if p.poll() is None:
            p.kill()
            p.wait()
        for f in (p.stdout, p.stderr):
            if f:
                f.close()

def timed_run(argv, env):
    """Wall time of one posix_spawn-and-wait of argv, stdio on /dev/null:
    the least a launcher can pay, the same for every side."""
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        actions = [(os.POSIX_SPAWN_DUP2, null, fd) for fd in (0, 1, 2)]
        t0 = time.perf_counter()
        pid = os.posix_spawnp(argv[0], argv, env, file_actions=actions)
        _, status = os.waitpid(pid, 0)
        dt = time.perf_counter() - t0
    finally:
        os.close(null)
    if os.waitstatus_to_exitcode(status) != 0:
        p = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True)
        raise MeasureError(f"{' '.join(argv)}: exit {os.waitstatus_to_exitcode(status)}: "
                           f"{p.stderr.decode(errors='replace').strip()}")
    return dt

def count_sink(fd, bufsize=1 * MIB):
    """Reads fd to EOF; returns the number of bytes."""
    buf = bytearray(bufsize)
    total = 0
    while True:
        n = os.readv(fd, [buf])
        if n == 0:
            return total
        total += n


def timed_pipe(middle, size, env):
    """`head -c size /dev/zero | middle | sink`: (seconds, bytes counted)."""
    t0 = time.perf_counter()
    gen = subprocess.Popen(["head", "-c", str(size), "/dev/zero"], stdout=subprocess.PIPE)
    mid = None
    try:
        mid = subprocess.Popen(middle, stdin=gen.stdout, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env)
        gen.stdout.close()
        n = count_sink(mid.stdout.fileno())
        err = mid.stderr.read()
        mid.wait()
        gen.wait()
        dt = time.perf_counter() - t0
    finally:
        kill(mid, gen)
    if mid.returncode != 0 or gen.returncode != 0 or n != size:
        raise MeasureError(f"{' '.join(middle)}: exit {mid.returncode}, {n} of {size} bytes: "
                           f"{err.decode(errors='replace').strip()}")
    return dt, n
