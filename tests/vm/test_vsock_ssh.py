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
import subprocess
import tempfile

import pytest

from qltest import qemu
from qltest.vmcheck import CheckRun
from qltest.vsock import SSH_PEERS, SSHD_CONFIG

HERE = os.path.dirname(os.path.abspath(__file__))
PROGRAMS = ["qubes-lite-vsock-proxy", "vm-shell"]
PEERS = SSH_PEERS

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
PASSWD = """root:x:0:0:root:/root:/bin/sh
sshd:x:100:65534::/run/sshd:/bin/false
nobody:x:65534:65534:nobody:/:/bin/sh
"""


def _keygen(path):
    subprocess.run([PEERS["ssh-keygen"], "-q", "-t", "ed25519", "-N", "", "-C", "ql-test",
                    "-f", path], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def vm():
    run = CheckRun("ssh-test", PROGRAMS)
    if run.error:
        return run
    kern = qemu.guest_kernel_or_skip()
    absent = [p for p in PEERS.values() if not os.access(p, os.X_OK)]
    if absent:
        pytest.skip(f"the ssh test needs openssh-server, openssh-client and socat: "
                    f"{', '.join(absent)} missing")
    with tempfile.TemporaryDirectory(prefix="ql-ssh-keys-") as keys:
        host_key = os.path.join(keys, "host_ed25519")
        user_key = os.path.join(keys, "id_ed25519")
        try:
            _keygen(host_key)
            _keygen(user_key)
        except subprocess.SubprocessError as e:
            run.error = f"building the guest image failed: {e}"
            return run
        run.boot(kern, os.path.join(HERE, "guest-ssh.sh"),
                 [PEERS["sshd"], PEERS["ssh"], PEERS["socat"]],
                 files={
                     "/etc/passwd": PASSWD.encode(),
                     "/etc/ssh/sshd_config": SSHD_CONFIG.encode(),
                     "/etc/ssh/host_ed25519": host_key,           # 0600, kept by the copy
                     "/etc/ssh/authorized_keys": user_key + ".pub",
                     "/root/.ssh/id_ed25519": user_key,
                     "/etc/qubes-lite/host.json": b'{"user": "nobody"}',
                     "/etc/qubes-lite/vms/test.json": b'{"id": 3, "name": "test"}',
                 })
    return run


def test_guest_runs_the_checks(vm):
    vm.require()
    assert not vm.result.timed_out, vm.fail_context()
    assert "QL-VM-DONE" in vm.result.output, vm.fail_context()
    assert not vm.insmod_failures()


@pytest.mark.parametrize("name", CHECKS)
def test_check(vm, name):
    vm.verdict(name)


def test_no_unexpected_checks(vm):
    """Every check the guest script ran is one this file knows (a setup
    failure reports itself as an unknown check)."""
    vm.only(CHECKS)
