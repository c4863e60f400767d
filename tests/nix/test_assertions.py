"""The host module's assertions: each fires on a bad configuration with its
message, in --check's words. Where the bad value reaches the JSON files,
the real `qubes-lite-host-agent --check` on what the module wrote reports
the same problems (key and reason), no more and no fewer."""
import json
import re

import pytest

from qltest import program
from qltest.nix import nix_eval, run_as_configured, write_etc


def config(vms, **host):
    q = {"enable": True, "user": "david", "nixosVms": vms}
    q.update(host)
    return {"users": {"users": {"david": {"uid": 1000}}}, "programs": {"qubes-lite": q}}


V = lambda id, name, **kw: dict(id=id, name=name, **kw)  # noqa: E731

# (name, configuration, what the assertions say, whether --check sees it too)
CASES = [
    ("even id", config([V(4, "a")]),
     ["VM 'a'): key 'id': must be odd and from 3 to 255, not 4"], True),
    ("id too small", config([V(1, "a")]), ["key 'id': must be odd and from 3 to 255, not 1"], True),
    ("id too large", config([V(257, "a")]),
     ["key 'id': must be odd and from 3 to 255, not 257"], True),
    ("same id", config([V(3, "a"), V(3, "b")]),
     ["VM 'b'): key 'id': 3 is already the id of VM 'a'"], True),
    ("same name", config([V(3, "a"), V(5, "a")]),
     ["VM 'a'): key 'name': 'a' is already the name of another VM"], False),
    ("bad name", config([V(3, "Bank")]),
     ["key 'name': 'Bank' is not a valid VM name ([a-z][a-z0-9-], at most 12: the TAP is "
      "vm-<name>)"], False),
    ("long name", config([V(3, "abcdefghijklm")]),
     ["key 'name': 'abcdefghijklm' is not a valid VM name"], False),
    ("memory", config([V(3, "a", memory=0)]), ["key 'memory': must be from 1 to 16777216, not 0"],
     True),
    ("cpus", config([V(3, "a", cpus=0)]), ["key 'cpus': must be from 1 to 1024, not 0"], True),
    ("idle timeout", config([V(3, "a", idleTimeout=0)]),
     ["key 'idleTimeout': must be from 1 to 31622400, not 0"], True),
    ("network", config([V(3, "a")], hostNetworking={"network": "10.0.0.1/24"}),
     ["programs.qubes-lite: key 'hostNetworking.network': '10.0.0.1/24' is not an IPv4 network "
      "a.b.c.d/N (N from 1 to 30, host part 0) such as 172.16.200.0/24"], True),
    ("network zeros", config([V(3, "a")], hostNetworking={"network": "010.0.0.0/24"}),
     ["key 'hostNetworking.network': '010.0.0.0/24' is not an IPv4 network"], True),
    ("network prefix", config([V(3, "a")], hostNetworking={"network": "10.0.0.0/31"}),
     ["key 'hostNetworking.network': '10.0.0.0/31' is not an IPv4 network"], True),
    ("id outside the network", config([V(15, "a", hostNetworking=True),
                                       V(17, "b", hostNetworking=True), V(19, "c")],
                                      hostNetworking={"network": "10.7.0.16/28"}),
     ["VM 'b'): key 'id': 17 has no /31 in hostNetworking.network 10.7.0.16/28, which holds "
      "ids up to 15"], True),
    ("nat without interface", config([V(3, "a")], hostNetworking={"nat": {"enable": True}}),
     ["programs.qubes-lite: key 'hostNetworking.nat.interface': missing (required when "
      "hostNetworking.nat.enable is true)"], True),
    ("nat interface", config([V(3, "a")], hostNetworking={"nat": {"enable": True,
                                                                   "interface": "a/b"}}),
     ["key 'hostNetworking.nat.interface': 'a/b' is not a network interface name",
      "key 'hostNetworking.nat.interface': missing (required when hostNetworking.nat.enable "
      "is true)"], True),
    ("isolated device", config([V(3, "a")], isolatedPciDevices=["01:00.0", "1:0.0"]),
     ["key 'isolatedPciDevices[1]': '1:0.0' is not a PCI address (BB:DD.F or DDDD:BB:DD.F)"],
     True),
    ("pci device", config([V(3, "a", pciDevices=[{"path": "01:20.0"}])]),
     ["key 'pciDevices[0].path': '01:20.0' is not a PCI address (BB:DD.F or DDDD:BB:DD.F)"], True),
    ("pci device twice", config([V(3, "a", pciDevices=[{"path": "01:00.0"}]),
                                 V(5, "b", pciDevices=[{"path": "0000:01:00.0"}])]),
     ["VM 'b'): key 'pciDevices[0].path': 0000:01:00.0 is already given to VM 'a'"], True),
    ("two routers", config([V(3, "a", vmNetwork={"lan": {}}),
                            V(5, "r2", vmNetwork={"lan": {"router": True}}),
                            V(7, "r1", vmNetwork={"lan": {"router": True}})]),
     ["VM 'r2'): key 'vmNetwork.lan.router': network 'lan' already has a router, VM 'r1'"],
     True),
    ("no router", config([V(3, "a", vmNetwork={"lan": {}}), V(5, "b", vmNetwork={"lan": {}})]),
     ["key 'vmNetwork.lan': network 'lan' has 0 routers; it needs exactly one (router = true)"],
     True),
    ("network name", config([V(3, "a", vmNetwork={"Bad_Net": {"router": True}})]),
     ["key 'vmNetwork.Bad_Net': 'Bad_Net' is not a valid network name ([a-z][a-z0-9-], at most "
      "32)"], True),
    ("mac", config([V(3, "a", vmNetwork={"lan": {"router": True, "macAddress": "zz"}})]),
     ["key 'vmNetwork.lan.macAddress': 'zz' is not a VM's MAC address "
      "(52:ab:cd:ef:12:34: unicast, not all zero)"], True),
    ("multicast mac", config([V(3, "a", vmNetwork={"lan": {"router": True,
                                                            "macAddress": "53:00:00:00:00:01"}})]),
     ["key 'vmNetwork.lan.macAddress': '53:00:00:00:00:01' is not a VM's MAC address "
      "(52:ab:cd:ef:12:34: unicast, not all zero)"], True),
    ("zero mac", config([V(3, "a", vmNetwork={"lan": {"router": True,
                                                       "macAddress": "00:00:00:00:00:00"}})]),
     ["key 'vmNetwork.lan.macAddress': '00:00:00:00:00:00' is not a VM's MAC address "
      "(52:ab:cd:ef:12:34: unicast, not all zero)"], True),
    ("same mac", config([V(3, "a", vmNetwork={"lan": {"router": True,
                                                       "macAddress": "52:00:00:00:00:01"}}),
                         V(5, "b", vmNetwork={"lan": {"macAddress": "52:00:00:00:00:01"}})]),
     ["VM 'b'): key 'vmNetwork.lan.macAddress': 52:00:00:00:00:01 is already the MAC of VM 'a' "
      "on that network"], True),
    ("relative disk", config([V(3, "a", additionalDisks=[{"path": "data.img"}])]),
     ["key 'additionalDisks[0].path': 'data.img' is not an absolute path"], True),
    ("disk as root", config([V(3, "a", additionalDisks=[{"path": "/d", "root": True}])]),
     ["key 'additionalDisks[0].root': only rootDisk is the root device"], True),
    ("root disk ro", config([V(3, "a", rootDisk={"path": "/r", "ro": True, "root": True})]),
     ["key 'rootDisk.ro': set by rootDiskReadonly, not here",
      "key 'rootDisk.root': always set for the root disk, not here"], True),
    ("root disk path", config([V(3, "a", rootDisk="r.img")]),
     ["key 'rootDisk': 'r.img' is not an absolute path"], True),
    ("separator", config([V(3, "a", additionalDisks=[{"path": "/d", "id": "x,y"}])]),
     ["key 'additionalDisks[0].id': 'x,y' holds ',', which would split the option"], True),
    ("option name", config([V(3, "a", pciDevices=[{"path": "01:00.0", "bad key": 1}])]),
     ["key 'pciDevices[0].bad key': not a valid option name ([A-Za-z0-9_-])"], True),
    ("control character", config([V(3, "a", vhostUser=[{"type": "net", "socket": "/s\n"}])]),
     ["key 'vhostUser[0].socket': holds a control character"], True),
    ("shared tag", config([V(3, "a", sharedDirectories=[{"path": "/s", "tag": "a:b"}])]),
     ["key 'sharedDirectories[0].tag': 'a:b' holds ':', which would split the option"], True),
    ("empty tag", config([V(3, "a", sharedDirectories=[{"path": "/s", "tag": ""}])]),
     ["key 'sharedDirectories[0].tag': must be a non-empty string"], True),
    ("empty gpu", config([V(3, "a", gpu={})]),
     ["key 'gpu': an empty attribute set: use true for the default"], True),
    ("sound pair", config([V(3, "a", sound={"backend": "a,b"})]),
     ["key 'sound.backend': 'a,b' holds ',', which would split the option"], True),
    ("kernel", config([V(3, "a", kernel="/boot/a\tb")]),
     ["key 'kernel': '/boot/a\tb' is not an absolute path"], True),
    ("initramfs", config([V(3, "a", initramfs="/boot/a\tb")]),
     ["key 'initramfs': '/boot/a\tb' is not an absolute path"], True),
    ("user name", {"programs": {"qubes-lite": {"enable": True, "user": "bad user",
                                               "nixosVms": [V(3, "a")]}},
                   "users": {"users": {"bad user": {"uid": 1000}}}},
     ["programs.qubes-lite: key 'user': 'bad user' is not a valid user name"], True),
    ("no such user", {"programs": {"qubes-lite": {"enable": True, "user": "nosuchuserxyz",
                                                  "nixosVms": [V(3, "a")]}}},
     ["programs.qubes-lite: key 'user': no such user 'nosuchuserxyz'"], True),
    ("uid", {"programs": {"qubes-lite": {"enable": True, "user": "david",
                                         "nixosVms": [V(3, "a")]}},
             "users": {"users": {"david": {"isNormalUser": True}}}},
     ["programs.qubes-lite: key 'user': users.users.david.uid must be set"], False),
]


def tail(msg):
    """'key ...: reason' of a message of the module or of --check."""
    t = msg[msg.index("key '"):]
    return re.sub(r" \(/[^)]*\.json\)$", "", t)


@pytest.mark.parametrize("name,cfg,expected,checked", CASES, ids=[c[0] for c in CASES])
def test_assertion(name, cfg, expected, checked, tmp_path):
    data = nix_eval("host", strs={"configJSON": json.dumps(cfg)})
    failed = data["failedAssertions"]
    for e in expected:
        assert any(e in m for m in failed), (e, failed)
    assert len(failed) == len(expected), failed
    if not checked:
        return
    # What --check says of the files the module wrote.
    etc = tmp_path / "etc"
    write_etc(etc, data["etc"])
    # The user is made known to the program, unless the case is about one
    # that does not exist: then the machine's own (where it does not either).
    r = run_as_configured([program("qubes-lite-host-agent"), "--check", "--config-only"], etc, tmp_path,
                          nss=cfg["programs"]["qubes-lite"]["user"] == "david")
    assert r.returncode == 1, r
    lines = [line for line in r.stderr.splitlines() if ": key '" in line]
    # Each --check line is an assertion's message (which may add a hint).
    left = [tail(m) for m in failed]
    for line in lines:
        match = [m for m in left if m.startswith(tail(line))]
        assert match, (line, failed)
        left.remove(match[0])
    assert left == [], (r.stderr, failed)
    n = len(lines)
    assert f"qubes-lite-host-agent: {n} problem{'s' if n > 1 else ''} in " in r.stderr, r.stderr


def test_a_good_configuration_fails_nothing(tmp_path):
    """The cases' starting point is itself fine, for the module and C."""
    data = nix_eval("host", strs={"configJSON": json.dumps(config([V(3, "a"), V(5, "b")]))})
    assert data["failedAssertions"] == []
    etc = tmp_path / "etc"
    write_etc(etc, data["etc"])
    r = run_as_configured([program("qubes-lite-host-agent"), "--check", "--config-only"], etc, tmp_path)
    assert (r.returncode, r.stderr) == (0, "")


def test_type_errors_are_evaluation_errors():
    """What the option types refuse never reaches an assertion: an
    evaluation error naming the option."""
    for cfg, where in (
            (config([{"id": "3", "name": "a"}]), "nixosVms"),
            (config([V(3, "a", vmm="kvmtool")]), "vmm"),
            (config([V(3, "a")], vmm="firecracker"), "vmm"),
            (config([V(3, "a", crosvm={"logLevel": "loud"})]), "logLevel"),
            (config([V(3, "a", gpu="yes")]), "gpu")):
        p = nix_eval("host", strs={"configJSON": json.dumps(cfg)}, check=False)
        assert p.returncode != 0, cfg
        assert where in p.stderr, p.stderr[-2000:]
