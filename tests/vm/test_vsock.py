"""The agents over real AF_VSOCK, inside one qemu TCG guest.

One guest boots per session (module fixture) with the real
qubes-lite-guest-agent, qubes-lite-host-agent and vm-run from $BUILD/bin
in its initramfs. guest-vsock.sh runs there as /test.sh: the guest agent
listens on vsock::5200 with --allow-local-cid, the host agent reaches it
over vsock:1:5200 (vsock_loopback), and vm-run goes through the host
agent. The script prints one `QL-CHECK <name> PASS|FAIL|SKIP <detail>` line
per check; each expected name below is its own test here.

Skipped (with the reason) when qemu, busybox-static or the Debian kernel
package cannot be had; failed when the programs under test were not built.
Environment: BUILD (default build), QL_VM_TIMEOUT (seconds for the whole
guest run, default 180), QL_CMD_TIMEOUT (seconds per command in the guest,
default 30), QL_STDIN_MIB (stdin check size, default 4), ASAN_OPTIONS,
UBSAN_OPTIONS and LSAN_OPTIONS (passed into the guest).
"""
import os
import re
import shlex
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import qemuvm  # noqa: E402
import vminitramfs  # noqa: E402
import vmkernel  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
BUILD = os.path.join(ROOT, os.environ.get("BUILD", "build"))
BIN = os.path.join(BUILD, "bin")
WORK = os.path.join(BUILD, "vm")
PROGRAMS = ["qubes-lite-guest-agent", "qubes-lite-host-agent", "vm-run"]

CHECKS = [
    "vsock-local-cid",         # the guest sees CID 1 (no G2H transport)
    "vsock-loopback",          # a plain echo over CID 1 (vmhelper)
    "guest-agent-ping",        # the guest agent answers Ping from a reserved port
    "host-agent-listening",
    "echo",
    "exit-code",
    "missing-program",
    "stderr",
    "stdin-checksum",
    "stream-socket",           # without -t, fds 0 and 1 are the stream connection
    "stream-pipes",            # pipes on both sides of vm-run, checksummed
    "signal",
    "run-as-user",
    "pty",
    "stdout-bulk",             # a few MiB of output back through vm-run
    "signal-forward",          # SIGINT to vm-run reaches the program
    "disconnect-cleanup",      # killing vm-run ends the program in the guest
    "denied-unreserved-port",  # uid 65534 from port 40000 gets Error(DENIED)
    "denied-local-cid-probe",  # without --allow-local-cid, CID 1 gets Error(DENIED)
    "denied-local-cid",        # ... and vm-run through it exits 255 saying so
    "still-serving",
    "clean-exit",              # every daemon exits 0 on SIGTERM
    "no-sanitizer-reports",
]
CHECK_RE = re.compile(r"^QL-CHECK (\S+) (PASS|FAIL|SKIP) ?(.*)$")
SANITIZER_ENV = ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS")


class Run:
    error = None        # set: every check fails with this
    result = None       # qemuvm.Result
    checks = {}         # name -> (PASS|FAIL|SKIP, detail)
    log = None
    build_s = 0.0
    logs_shown = False


def build_helper():
    """tests/vm/vmhelper.c -> $BUILD/vm/vmhelper, static, when out of date."""
    src = os.path.join(HERE, "vmhelper.c")
    out = os.path.join(WORK, "vmhelper")
    if os.path.exists(out) and os.path.getmtime(out) >= os.path.getmtime(src):
        return out
    os.makedirs(WORK, exist_ok=True)
    cc = os.environ.get("CC", "gcc")
    tmp = f"{out}.{os.getpid()}.tmp"     # concurrent runs share $BUILD/vm
    r = subprocess.run([cc, "-O2", "-static", "-Wall", "-Wextra", "-Werror",
                        "-o", tmp, src], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"building {out} with {cc} -static failed:\n{r.stderr}")
    os.replace(tmp, out)
    return out


def _tail(text, n=40):
    return "\n".join(text.splitlines()[-n:])


@pytest.fixture(scope="module")
def vm():
    import time
    run = Run()
    missing = [p for p in PROGRAMS if not os.access(os.path.join(BIN, p), os.X_OK)]
    if missing:
        run.error = (f"not built: {', '.join(os.path.join(BIN, p) for p in missing)} "
                     "(run make)")
        return run
    try:
        qemuvm.qemu_binary()
        vminitramfs.static_busybox()
        kernel = vmkernel.ensure_kernel()
    except (qemuvm.QemuUnavailable, vminitramfs.BusyboxUnavailable,
            vmkernel.KernelUnavailable) as e:
        pytest.skip(f"VM tests need qemu, busybox-static and the Debian kernel: {e}")
    t0 = time.monotonic()
    try:
        helper = build_helper()
        env = "".join(f"export {k}={shlex.quote(os.environ[k])}\n"
                      for k in SANITIZER_ENV if os.environ.get(k))
        for k in ("QL_CMD_TIMEOUT", "QL_STDIN_MIB"):
            if os.environ.get(k):
                env += f"export {k}={shlex.quote(os.environ[k])}\n"
        initrd = os.path.join(WORK, f"vsock-test.{os.getpid()}.cpio.gz")
        vminitramfs.build(initrd, kernel, os.path.join(HERE, "guest-vsock.sh"),
                          [helper] + [os.path.join(BIN, p) for p in PROGRAMS],
                          files={"/etc/ql-test.env": env.encode()})
    except (RuntimeError, vminitramfs.InitramfsError) as e:
        run.error = f"building the guest image failed: {e}"
        return run
    run.build_s = time.monotonic() - t0
    run.log = os.path.join(WORK, "vsock-test.console.log")
    try:
        run.result = qemuvm.run(kernel.vmlinux, initrd,
                                timeout=float(os.environ.get("QL_VM_TIMEOUT", "180")),
                                log=run.log)
    finally:
        os.unlink(initrd)
    for line in run.result.lines():
        m = CHECK_RE.match(line.strip())
        if m:
            run.checks[m.group(1)] = (m.group(2), m.group(3))
    sys.stderr.write(f"vm: image built in {run.build_s:.1f}s, guest ran "
                     f"{run.result.wall:.1f}s, console in {run.log}\n")
    return run


def _fail_context(vm):
    """Where to look; the daemons' logs (or the console's end) only once."""
    r = vm.result
    state = "timed out (qemu killed)" if r.timed_out else f"qemu exited {r.returncode}"
    text = f"guest {state} after {r.wall:.1f}s; console: {vm.log}"
    if not vm.logs_shown:
        vm.logs_shown = True
        logs = [l for l in r.lines() if l.startswith("QL-LOG ")]
        text += "\n" + ("\n".join(logs[-120:]) if logs
                        else "last console lines:\n" + _tail(r.output))
    return text


def test_guest_boots_and_powers_off(vm):
    if vm.error:
        pytest.fail(vm.error, pytrace=False)
    out = vm.result.output
    assert "QL-VM-MODS" in out, _fail_context(vm)
    bad = [l for l in vm.result.lines() if l.startswith("QL-VM-INSMOD-FAIL")]
    assert not bad, bad
    assert not vm.result.timed_out, _fail_context(vm)
    assert "QL-VM-DONE" in out, _fail_context(vm)
    assert vm.result.returncode == 0, _fail_context(vm)


@pytest.mark.parametrize("name", CHECKS)
def test_check(vm, name):
    if vm.error:
        pytest.fail(vm.error, pytrace=False)
    if name not in vm.checks:
        pytest.fail(f"check {name} did not report\n{_fail_context(vm)}", pytrace=False)
    verdict, detail = vm.checks[name]
    if verdict == "SKIP":
        pytest.skip(f"{name}: {detail}")
    if verdict != "PASS":
        pytest.fail(f"{name}: {detail}\n{_fail_context(vm)}", pytrace=False)


def test_no_unexpected_checks(vm):
    """Every check the guest script ran is one this file knows."""
    if vm.error:
        pytest.fail(vm.error, pytrace=False)
    assert set(vm.checks) <= set(CHECKS), sorted(set(vm.checks) - set(CHECKS))
