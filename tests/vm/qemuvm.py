"""Boots one throw-away qemu TCG guest and returns its serial output.

    python3 tests/vm/qemuvm.py VMLINUX INITRD [TIMEOUT]
    python3 tests/vm/qemuvm.py --shell VMLINUX INITRD
        the same guest on this terminal; after /test.sh it leaves a shell
        (`poweroff -f` or Ctrl-A X ends it)

The guest has no network device and no disk: the kernel (a PVH vmlinux),
the initramfs and the serial console are all it gets. Its /init is
expected to power off; if it has not within `timeout` seconds qemu is
killed (by its pid) and the result says so.
"""
import os
import shutil
import subprocess
import sys
import time


class QemuUnavailable(Exception):
    pass


class Result:
    def __init__(self, output, returncode, timed_out, wall):
        self.output = output          # serial console text, "\r\n" folded to "\n"
        self.returncode = returncode  # qemu's (None if killed on timeout)
        self.timed_out = timed_out
        self.wall = wall              # seconds from spawn to exit

    def lines(self):
        return self.output.splitlines()


def qemu_binary():
    q = shutil.which("qemu-system-x86_64")
    if not q:
        raise QemuUnavailable("qemu-system-x86_64 not found (apt-get install qemu-system-x86)")
    return q


def command(vmlinux, initrd, append="", memory=512):
    return [qemu_binary(), "-accel", "tcg", "-M", "pc", "-cpu", "max",
            "-m", str(memory), "-smp", "1", "-nodefaults", "-no-user-config",
            "-display", "none", "-serial", "stdio", "-no-reboot",
            "-kernel", vmlinux, "-initrd", initrd,
            "-append", ("console=ttyS0 panic=-1 quiet " + append).strip()]


def run(vmlinux, initrd, timeout=120, append="", memory=512, log=None):
    """Boots, waits for power-off or the timeout, returns a Result.

    log: a path that receives the raw console output as well.
    """
    cmd = command(vmlinux, initrd, append, memory)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    timed_out = False
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.kill()                    # this qemu only, by its pid
        out, _ = proc.communicate()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    wall = time.monotonic() - t0
    text = out.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "")
    if log:
        tmp = f"{log}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, log)
    return Result(text, None if timed_out else proc.returncode, timed_out, wall)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--shell":
        os.execv(qemu_binary(), command(sys.argv[2], sys.argv[3], "ql.shell"))
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    r = run(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 120)
    sys.stdout.write(r.output)
    print(f"[qemuvm: rc={r.returncode} timed_out={r.timed_out} wall={r.wall:.1f}s]")
    sys.exit(1 if r.timed_out or r.returncode else 0)
