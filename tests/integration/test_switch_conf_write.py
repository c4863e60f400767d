"""`qubes-lite-host-agent --write-switch-config NET DIR`: vm-switch's
<vm>.conf files from the host configuration, the MACs being those config.c
derives (recomputed here from the documented rule), the router's role,
stale files removed and others left alone; then the real vm-switch serving
exactly those VMs."""
import json
import os
import subprocess

from qltest import program
from qltest.switch import Switch

AGENT = program("qubes-lite-host-agent")


def derived_mac(net, vm):
    """52: then the low 40 bits of the 64-bit FNV-1a of "<net>/<vm>"."""
    h = 0xcbf29ce484222325
    for c in f"{net}/{vm}".encode():
        h = ((h ^ c) * 0x100000001b3) & (2**64 - 1)
    return ":".join(["52"] + [f"{(h >> (8 * (4 - i))) & 0xff:02x}" for i in range(5)])


VMS = {
    "gw": {"id": 3, "kernel": "/k", "vmNetwork": {"office": {"router": True},
                                                  "lan": {"router": True}}},
    "work": {"id": 5, "kernel": "/k", "vmNetwork": {"office": {}}},
    "vault": {"id": 7, "kernel": "/k",
              "vmNetwork": {"office": {"macAddress": "52:54:00:00:00:07"}}},
    "offline": {"id": 9, "kernel": "/k"},
}


def setup_config(tmp_path, vms):
    etc = tmp_path / "etc"
    (etc / "vms").mkdir(parents=True, exist_ok=True)
    for f in (etc / "vms").iterdir():
        f.unlink()
    for name, vm in vms.items():
        (etc / "vms" / f"{name}.json").write_text(vm if isinstance(vm, str) else json.dumps(vm))
    return etc


def write(etc, net, d):
    return subprocess.run([AGENT, "--write-switch-config", net, str(d)], capture_output=True,
                          text=True, timeout=30, env=dict(os.environ, QUBES_LITE_CONFIG_DIR=str(etc)))


def confs(d):
    return {f[:-5]: (d / f).read_text() for f in os.listdir(d) if f.endswith(".conf")}


def test_files_from_the_configuration(tmp_path):
    etc = setup_config(tmp_path, VMS)
    office, lan = tmp_path / "run" / "switch" / "office", tmp_path / "run" / "switch" / "lan"
    p = write(etc, "office", office)
    assert p.returncode == 0, p.stderr
    assert confs(office) == {
        "gw": f"mac={derived_mac('office', 'gw')}\nrole=router\n",
        "work": f"mac={derived_mac('office', 'work')}\nrole=client\n",
        "vault": "mac=52:54:00:00:00:07\nrole=client\n",
    }
    # The directory is made for a switch that runs as another user.
    assert os.stat(office).st_mode & 0o777 == 0o755
    assert all(os.stat(office / f).st_mode & 0o777 == 0o644 for f in os.listdir(office))
    assert sorted(os.listdir(office)) == ["gw.conf", "vault.conf", "work.conf"]  # no leftovers
    p = write(etc, "lan", lan)
    assert p.returncode == 0, p.stderr
    # Another network, another MAC for the same VM.
    assert confs(lan) == {"gw": f"mac={derived_mac('lan', 'gw')}\nrole=router\n"}
    assert derived_mac("lan", "gw") != derived_mac("office", "gw")


def test_stale_files_removed_others_left_alone(tmp_path):
    etc = setup_config(tmp_path, VMS)
    d = tmp_path / "office"
    assert write(etc, "office", d).returncode == 0
    work_inode = os.stat(d / "work.conf").st_ino
    (d / "README").write_text("mine\n")
    (d / "Not-A-VM.conf").write_text("mine too\n")
    (d / "ghost.conf").write_text("mac=52:00:00:00:00:01\n")  # a VM that no longer exists

    # vault leaves the network, offline joins it, gw's file is broken.
    vms = dict(VMS, vault={"id": 7, "kernel": "/k"},
               offline={"id": 9, "kernel": "/k", "vmNetwork": {"office": {}}})
    etc = setup_config(tmp_path, vms)
    p = write(etc, "office", d)
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(d)) == ["Not-A-VM.conf", "README", "gw.conf", "offline.conf",
                                     "work.conf"]
    assert confs(d)["offline"] == f"mac={derived_mac('office', 'offline')}\nrole=client\n"
    # Unchanged text: the file is not replaced (the switch would restart it).
    assert os.stat(d / "work.conf").st_ino == work_inode

    # A VM whose file does not load keeps its file, and is reported.
    gw_text = (d / "gw.conf").read_text()
    setup_config(tmp_path, dict(vms, gw="{not json"))
    p = write(etc, "office", d)
    assert p.returncode == 0, p.stderr
    assert "gw.json" in p.stderr
    assert (d / "gw.conf").read_text() == gw_text

    # No VM on the network any more: no <vm>.conf left.
    setup_config(tmp_path, {"offline": {"id": 9, "kernel": "/k"}})
    p = write(etc, "office", d)
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(d)) == ["Not-A-VM.conf", "README"]


def test_unknown_network_is_an_error(tmp_path):
    """A network no VM names: one line, exit 1, and no directory made (it
    exited 0 with an empty directory, which a typo looked like)."""
    etc = setup_config(tmp_path, VMS)
    d = tmp_path / "out" / "ofice"
    p = write(etc, "ofice", d)
    assert p.returncode == 1, p.stderr
    assert p.stderr == (f"qubes-lite-host-agent: No VM is on network 'ofice' (no vmNetwork.ofice "
                        f"in {etc}/vms/*.json); {d} not made\n"), p.stderr
    assert not (tmp_path / "out").exists()


def test_usage_errors(tmp_path):
    etc = setup_config(tmp_path, VMS)
    p = subprocess.run([AGENT, "--write-switch-config", "office"], capture_output=True,
                       text=True, timeout=30, env=dict(os.environ, QUBES_LITE_CONFIG_DIR=str(etc)))
    assert p.returncode != 0 and "NET DIR" in p.stderr
    p = subprocess.run([AGENT, "--write-switch-config", "office", str(tmp_path / "x"), "--check"],
                       capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, QUBES_LITE_CONFIG_DIR=str(etc)))
    assert p.returncode != 0 and "exclude" in p.stderr
    # A directory that cannot be made.
    (tmp_path / "file").write_text("")
    p = write(etc, "office", tmp_path / "file" / "office")
    assert p.returncode == 1 and "Cannot write" in p.stderr


def test_switch_serves_the_written_files(tmp_path):
    """The real vm-switch on the files written: one socket and one child
    per VM of the network, with its role."""
    etc = setup_config(tmp_path, VMS)
    sw = Switch(tmp_path / "sw", sandbox=False)
    p = write(etc, "office", sw.config_dir)
    assert p.returncode == 0, p.stderr
    sw.start()
    try:
        stats = sw.wait_running(["gw", "work", "vault"])
        assert sorted(stats) == ["gw", "vault", "work"]
        assert stats["gw"]["role"] == "router" and stats["work"]["role"] == "client"
        assert sorted(f for f in os.listdir(sw.socket_dir) if f.endswith(".sock")) == [
            "gw.sock", "vault.sock", "work.sock"]
        # vault leaves the network: rewritten while the switch runs, its
        # child and socket go, the others keep their children.
        before = {vm: stats[vm]["pid"] for vm in ("gw", "work")}
        setup_config(tmp_path, dict(VMS, vault={"id": 7, "kernel": "/k"}))
        assert write(etc, "office", sw.config_dir).returncode == 0
        s = sw.wait_stats(lambda s: "vault" not in s, what="vault removed")
        assert {vm: s[vm]["pid"] for vm in ("gw", "work")} == before
        assert not os.path.exists(os.path.join(sw.socket_dir, "vault.sock"))
    finally:
        sw.stop()
