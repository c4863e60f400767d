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

import pytest

from qltest import initramfs, qemu
from qltest.vmcheck import CheckRun

HERE = os.path.dirname(os.path.abspath(__file__))
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


@pytest.fixture(scope="module")
def vm():
    run = CheckRun("vsock-test", PROGRAMS)
    if run.error:
        return run
    kern = qemu.guest_kernel_or_skip()
    try:
        helper = initramfs.vmhelper()
    except initramfs.InitramfsError as e:
        run.error = f"building the guest image failed: {e}"
        return run
    run.boot(kern, os.path.join(HERE, "guest-vsock.sh"), [helper])
    return run


def test_guest_boots_and_powers_off(vm):
    vm.require()
    out = vm.result.output
    assert "QL-VM-MODS" in out, vm.fail_context()
    bad = vm.insmod_failures()
    assert not bad, bad
    assert not vm.result.timed_out, vm.fail_context()
    assert "QL-VM-DONE" in out, vm.fail_context()
    assert vm.result.returncode == 0, vm.fail_context()


@pytest.mark.parametrize("name", CHECKS)
def test_check(vm, name):
    vm.verdict(name)


def test_no_unexpected_checks(vm):
    """Every check the guest script ran is one this file knows."""
    vm.only(CHECKS)
