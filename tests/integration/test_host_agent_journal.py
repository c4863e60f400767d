"""qubes-lite-host-agent's records when its stderr is the journal: they go
to journald's socket (here a socket of the test's, in a private mount
namespace) with the VM's name as QUBES_LITE_VM."""
import os
import subprocess

import pytest

from qltest import program

# Runs in its own mount namespace: journald's socket is ours there. Runs
# the command given with its stderr a file that JOURNAL_STREAM names, then
# prints the first datagram that reached the socket.
JOURNAL = r"""
import os, socket, subprocess, sys
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run"], check=True)
os.makedirs("/run/systemd/journal")
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("/run/systemd/journal/socket")
with open(sys.argv[1], "wb") as err:
    st = os.fstat(err.fileno())
    env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
    subprocess.run(sys.argv[2:], stderr=err, stdout=subprocess.DEVNULL, env=env, timeout=60)
s.settimeout(10)
sys.stdout.buffer.write(s.recv(1 << 16))
"""


def fields(record):
    out = {}
    for line in record.decode(errors="replace").splitlines():
        name, sep, value = line.partition("=")
        if sep:
            out[name] = value
    return out


def test_records_carry_the_vm_name(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs a mount namespace of its own (root)")
    env = dict(os.environ, QUBES_LITE_CONFIG_DIR=str(tmp_path))
    (tmp_path / "vms").mkdir()
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "/usr/bin/python3",
                        "-c", JOURNAL, str(tmp_path / "stderr"), program("qubes-lite-host-agent"),
                        "--vm", "nosuch", "--print-command"],
                       env=env, capture_output=True, timeout=120)
    assert r.returncode == 0, r
    f = fields(r.stdout)
    assert f.get("MESSAGE", "").startswith("No VM named 'nosuch'"), f
    assert f.get("QUBES_LITE_VM") == "nosuch", f
    assert f.get("SYSLOG_IDENTIFIER") == "qubes-lite-host-agent", f
    assert f.get("PRIORITY") == "3", f
    # Nothing went to stderr: the journal took the record.
    assert (tmp_path / "stderr").read_bytes() == b""
