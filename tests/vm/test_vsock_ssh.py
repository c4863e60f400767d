"""qubes-lite-vsock-proxy and vm-shell --ssh over real AF_VSOCK, inside one
qemu TCG guest.

The guest (guest-ssh.sh as /test.sh) holds the proxy, vm-shell, Debian's
socat, sshd and ssh. The proxy is checked alone against socat listening
on vsock (bytes both ways, half-close, the peer closing first, refusal,
usage), then `vm-shell --ssh` logs in through it to an sshd that socat
starts per connection on vsock port 22 (sshd cannot listen on vsock
itself), with the CID pointed at the loopback CID 1 by
QUBES_LITE_VSOCK_CID. Keys are made here with ssh-keygen for this run.
One `QL-CHECK <name> PASS|FAIL|SKIP <detail>` line per check; each is its
own test here.

Skipped (with the reason) when qemu, busybox-static, the Debian kernel
package, or openssh and socat cannot be had; failed when the programs under
test were not built.
"""
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time

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
PROGRAMS = ["qubes-lite-vsock-proxy", "vm-shell"]
PEERS = {"sshd": "/usr/sbin/sshd", "ssh": "/usr/bin/ssh", "socat": "/usr/bin/socat",
         "ssh-keygen": "/usr/bin/ssh-keygen"}

CHECKS = [
    "proxy-both-ways",       # a few MiB there and back through cat, checksummed
    "proxy-half-close",      # the end of stdin reaches the peer, whose answer still comes
    "proxy-peer-close",      # the peer closing ends the proxy while stdin stays open
    "proxy-refused",         # nobody listening: exit 1 with one clear line
    "proxy-usage",           # bad command lines: exit 2
    "ssh-root-command",      # vm-shell --ssh --root: output and exit status
    "ssh-configured-user",   # vm-shell --ssh: host.json's user
    "ssh-stdin",             # stdin reaches the remote command
    "ssh-no-proxy-left",     # ssh's end ends the proxy
    "ssh-unknown-vm",        # one clear line, 255
    "no-sanitizer-reports",
]
CHECK_RE = re.compile(r"^QL-CHECK (\S+) (PASS|FAIL|SKIP) ?(.*)$")
SANITIZER_ENV = ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS")

PASSWD = """root:x:0:0:root:/root:/bin/sh
sshd:x:100:65534::/run/sshd:/bin/false
nobody:x:65534:65534:nobody:/:/bin/sh
"""
SSHD_CONFIG = """HostKey /etc/ssh/host_ed25519
AuthorizedKeysFile /etc/ssh/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PidFile none
UseDNS no
"""


class Run:
    error = None
    result = None
    checks = {}
    log = None
    logs_shown = False


def _keygen(path):
    subprocess.run([PEERS["ssh-keygen"], "-q", "-t", "ed25519", "-N", "", "-C", "ql-test",
                    "-f", path], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def vm():
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
    absent = [p for p in PEERS.values() if not os.access(p, os.X_OK)]
    if absent:
        pytest.skip(f"the ssh test needs openssh-server, openssh-client and socat: "
                    f"{', '.join(absent)} missing")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ql-ssh-keys-") as keys:
        try:
            host_key = os.path.join(keys, "host_ed25519")
            user_key = os.path.join(keys, "id_ed25519")
            _keygen(host_key)
            _keygen(user_key)
            env = "".join(f"export {k}={shlex.quote(os.environ[k])}\n"
                          for k in SANITIZER_ENV + ("QL_CMD_TIMEOUT", "QL_STDIN_MIB")
                          if os.environ.get(k))
            initrd = os.path.join(WORK, f"ssh-test.{os.getpid()}.cpio.gz")
            vminitramfs.build(
                initrd, kernel, os.path.join(HERE, "guest-ssh.sh"),
                [os.path.join(BIN, p) for p in PROGRAMS] +
                [PEERS["sshd"], PEERS["ssh"], PEERS["socat"]],
                files={
                    "/etc/ql-test.env": env.encode(),
                    "/etc/passwd": PASSWD.encode(),
                    "/etc/ssh/sshd_config": SSHD_CONFIG.encode(),
                    "/etc/ssh/host_ed25519": host_key,           # 0600, kept by the copy
                    "/etc/ssh/authorized_keys": user_key + ".pub",
                    "/root/.ssh/id_ed25519": user_key,
                    "/etc/qubes-lite/host.json": b'{"user": "nobody"}',
                    "/etc/qubes-lite/vms/test.json": b'{"id": 3, "name": "test"}',
                })
        except (subprocess.SubprocessError, RuntimeError, vminitramfs.InitramfsError) as e:
            run.error = f"building the guest image failed: {e}"
            return run
    build_s = time.monotonic() - t0
    run.log = os.path.join(WORK, "ssh-test.console.log")
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
    sys.stderr.write(f"vm: image built in {build_s:.1f}s, guest ran "
                     f"{run.result.wall:.1f}s, console in {run.log}\n")
    return run


def _fail_context(vm):
    r = vm.result
    state = "timed out (qemu killed)" if r.timed_out else f"qemu exited {r.returncode}"
    text = f"guest {state} after {r.wall:.1f}s; console: {vm.log}"
    if not vm.logs_shown:
        vm.logs_shown = True
        logs = [l for l in r.lines() if l.startswith("QL-LOG ")]
        text += "\n" + ("\n".join(logs[-120:]) if logs
                        else "last console lines:\n" + "\n".join(r.output.splitlines()[-40:]))
    return text


def test_guest_runs_the_checks(vm):
    if vm.error:
        pytest.fail(vm.error, pytrace=False)
    assert not vm.result.timed_out, _fail_context(vm)
    assert "QL-VM-DONE" in vm.result.output, _fail_context(vm)
    assert not [l for l in vm.result.lines() if l.startswith("QL-VM-INSMOD-FAIL")]


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
    """Every check the guest script ran is one this file knows (a setup
    failure reports itself as an unknown check)."""
    if vm.error:
        pytest.fail(vm.error, pytrace=False)
    assert set(vm.checks) <= set(CHECKS), \
        {k: vm.checks[k] for k in set(vm.checks) - set(CHECKS)}
