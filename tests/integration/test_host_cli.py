"""The host agent's one-shot modes: --check, --print-command, --bind-vfio,
run as the real program against configuration and sysfs-shaped trees in a
temporary directory."""
import json
import os
import subprocess

from qltest import program

AGENT = program("qubes-lite-host-agent")


def run(tmp_path, *args, env=None):
    e = dict(os.environ, QUBES_LITE_CONFIG_DIR=str(tmp_path / "etc"),
             QUBES_LITE_RUNTIME_DIR=str(tmp_path / "run"))
    e.update(env or {})
    return subprocess.run([AGENT, *args], env=e, capture_output=True, text=True, timeout=30)


def write_config(tmp_path, host, vms):
    (tmp_path / "etc" / "vms").mkdir(parents=True)
    if host is not None:
        (tmp_path / "etc" / "host.json").write_text(json.dumps(host))
    for name, vm in vms.items():
        (tmp_path / "etc" / "vms" / f"{name}.json").write_text(json.dumps(vm))


BANKING = {"id": 3, "name": "banking", "kernel": "/k/bzImage", "rootDisk": "/v/banking.img",
           "memory": 2048, "hostNetworking": True, "kernelParams": ["quiet"]}


def test_check_passes_a_good_configuration(tmp_path):
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "bzImage").write_text("")
    (tmp_path / "banking.img").write_text("")
    banking = dict(BANKING, kernel=str(tmp_path / "k" / "bzImage"),
                   rootDisk=str(tmp_path / "banking.img"))
    write_config(tmp_path, {"user": "root"}, {
        "banking": banking,
        "vault": {"id": 5, "name": "vault", "kernel": banking["kernel"],
                  "sharedDirectories": [{"path": str(tmp_path / "k"), "tag": "k"}]}})
    p = run(tmp_path, "--check")
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""


def test_check_reports_what_is_not_on_this_machine(tmp_path):
    """A mistyped kernel, disk or shared directory is a line of --check,
    not the VMM's error at the start; --config-only leaves them out (a
    configuration checked where it was built, not where it runs)."""
    (tmp_path / "k").mkdir()
    vault = {"id": 5, "name": "vault", "kernel": str(tmp_path / "k"),
             "additionalDisks": [{"path": "/dev/null"}],
             "sharedDirectories": [{"path": str(tmp_path / "nowhere"), "tag": "n"}]}
    write_config(tmp_path, {"user": "root"}, {"banking": BANKING, "vault": vault})
    p = run(tmp_path, "--check")
    assert p.returncode == 1
    vms = tmp_path / "etc" / "vms"
    assert p.stderr.splitlines() == [
        f"qubes-lite-host-agent: {vms}/banking.json: key 'kernel': /k/bzImage does not exist",
        f"qubes-lite-host-agent: {vms}/banking.json: key 'rootDisk': /v/banking.img does not "
        "exist",
        f"qubes-lite-host-agent: {vms}/vault.json: key 'kernel': {tmp_path}/k is not a file",
        f"qubes-lite-host-agent: {vms}/vault.json: key 'additionalDisks[0].path': /dev/null is "
        "not a file or a block device",
        f"qubes-lite-host-agent: {vms}/vault.json: key 'sharedDirectories[0].path': "
        f"{tmp_path}/nowhere does not exist",
        f"qubes-lite-host-agent: 5 problems in {tmp_path}/etc"]
    p = run(tmp_path, "--check", "--config-only")
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    p = run(tmp_path, "--vm", "vault", "--print-command", "--config-only")
    assert p.returncode == 1
    assert p.stderr == "qubes-lite-host-agent: --config-only goes with --check\n"


def test_check_reports_every_problem(tmp_path):
    write_config(tmp_path, {"user": "root", "colour": 1},
                 {"banking": BANKING,
                  "bad": {"id": 4, "name": "bad", "memory": "lots"},
                  "twin": {"id": 3, "name": "twin"}})
    p = run(tmp_path, "--check")
    assert p.returncode == 1
    lines = p.stderr.splitlines()
    etc = str(tmp_path / "etc")
    assert any(f"{etc}/host.json" in l and "'colour'" in l and "unknown key" in l for l in lines)
    assert any(f"{etc}/vms/bad.json" in l and "'id'" in l and "odd" in l for l in lines)
    assert any(f"{etc}/vms/bad.json" in l and "'memory'" in l for l in lines)
    assert any("twin.json" in l and "'id'" in l and "banking" in l for l in lines), lines
    assert "problems in" in lines[-1]


def test_print_command(tmp_path):
    write_config(tmp_path, {"user": "root"}, {"banking": BANKING})
    p = run(tmp_path, "--vm", "banking", "--print-command")
    assert p.returncode == 0, p.stderr
    argv = p.stdout.splitlines()
    assert argv[0] == "crosvm" and "run" in argv
    assert argv[argv.index("--vsock") + 1] == "cid=3"
    assert argv[argv.index("--mem") + 1] == "size=2048"
    assert argv[argv.index("--net") + 1] == "tap-name=vm-banking"
    assert argv[argv.index("--socket") + 1] == str(tmp_path / "run" / "banking.crosvm.sock")
    assert argv[-1] == "/k/bzImage"
    # Nothing was started or created.
    assert not (tmp_path / "run").exists()


def test_print_command_of_a_qemu_vm(tmp_path):
    # host.json chooses qemu for every VM; one VM chooses crosvm again.
    vault = {"id": 5, "name": "vault", "kernel": "/k/vmlinux", "vmm": "crosvm"}
    write_config(tmp_path, {"user": "root", "vmm": "qemu", "qemu": {"extraArgs": ["-s"]}},
                 {"banking": dict(BANKING, gpu=False, rootDisk=None), "vault": vault})
    p = run(tmp_path, "--vm", "banking", "--print-command")
    assert p.returncode == 0, p.stderr
    argv = p.stdout.splitlines()
    assert argv[0] == "qemu-system-x86_64" and argv[-1] == "-s"
    assert argv[argv.index("-m") + 1] == "2048"
    assert argv[argv.index("-object") + 1] == "memory-backend-memfd,id=mem,size=2048M,share=on"
    assert argv[argv.index("-netdev") + 1] == "tap,id=tap0,ifname=vm-banking,script=no,downscript=no"
    assert argv[argv.index("-qmp") + 1] == f"unix:{tmp_path}/run/banking.qmp.sock,server=on,wait=off"
    append = argv[argv.index("-append") + 1]
    assert append.startswith("console=ttyS0 panic=-1 quiet no_timer_check qubes_lite.name=banking ")
    assert "qubes_lite.ip=172.16.200.3/31 qubes_lite.gw=172.16.200.2" in append
    assert append.endswith(" quiet")
    p = run(tmp_path, "--vm", "vault", "--print-command")
    assert p.returncode == 0 and p.stdout.splitlines()[0] == "crosvm", p
    assert not (tmp_path / "run").exists()


def test_qemu_refuses_what_it_cannot_do(tmp_path):
    # gpu is on by default: a qemu VM must say gpu = false; --check,
    # --print-command and a start all say why in the same words.
    write_config(tmp_path, {"user": "root"},
                 {"banking": dict(BANKING, vmm="qemu"),
                  "vault": {"id": 5, "name": "vault", "kernel": "/k", "vmm": "qemu", "gpu": False,
                            "sound": True}})
    p = run(tmp_path, "--check")
    assert p.returncode == 1
    lines = p.stderr.splitlines()
    etc = str(tmp_path / "etc")
    assert (f"qubes-lite-host-agent: {etc}/vms/banking.json: key 'gpu': qemu cannot show the guest's windows as crosvm "
            f"does (no cross-domain Wayland in qemu 7.2); set \"gpu\": false, or \"vmm\": "
            f"\"crosvm\"") in lines, lines
    assert any(l.startswith(f"qubes-lite-host-agent: {etc}/vms/vault.json: key 'sound': "
                            "qemu 7.2 has no virtio-snd")
               for l in lines), lines
    p = run(tmp_path, "--vm", "banking", "--print-command")
    assert p.returncode == 1 and p.stdout == ""
    assert "key 'gpu': qemu cannot show" in p.stderr


def test_print_command_unknown_vm(tmp_path):
    write_config(tmp_path, {"user": "root"}, {"banking": BANKING})
    p = run(tmp_path, "--vm", "nosuch", "--print-command")
    assert p.returncode == 1 and p.stdout == ""
    assert len(p.stderr.splitlines()) == 1 and "No VM named 'nosuch'" in p.stderr


def sysfs_device(sys, bdf, driver, group, cls="0x0c0330"):
    d = sys / "bus" / "pci" / "devices" / bdf
    d.mkdir(parents=True)
    (d / "class").write_text(cls + "\n")
    (d / "driver_override").write_text("(null)\n")
    drv = sys / "bus" / "pci" / "drivers" / driver
    drv.mkdir(parents=True, exist_ok=True)
    (drv / "unbind").touch()
    os.symlink(f"../../drivers/{driver}", d / "driver")
    g = sys / "kernel" / "iommu_groups" / str(group) / "devices"
    g.mkdir(parents=True, exist_ok=True)
    os.symlink(f"../../../../kernel/iommu_groups/{group}", d / "iommu_group")
    os.symlink(f"../../../../bus/pci/devices/{bdf}", g / bdf)
    return d


def test_bind_vfio_writes_in_order(tmp_path):
    write_config(tmp_path, {"user": "root", "isolatedPciDevices": ["01:00.0"]}, {})
    sys = tmp_path / "sys"
    sysfs_device(sys, "0000:01:00.0", "xhci_hcd", 7)
    (sys / "bus" / "pci" / "drivers" / "vfio-pci").mkdir()
    (sys / "bus" / "pci" / "drivers_probe").touch()
    log = tmp_path / "writes"
    p = run(tmp_path, "--bind-vfio",
            env={"QUBES_LITE_SYSFS_ROOT": str(sys), "QUBES_LITE_SYSFS_LOG": str(log)})
    # A tree has no kernel behind it: the driver link stays, and the
    # verification says so, naming the device.
    assert p.returncode == 1
    assert "0000:01:00.0" in p.stderr and "xhci_hcd" in p.stderr
    assert log.read_text().splitlines() == [
        "bus/pci/devices/0000:01:00.0/driver_override=vfio-pci",
        "bus/pci/devices/0000:01:00.0/driver/unbind=0000:01:00.0",
        "bus/pci/drivers_probe=0000:01:00.0",
    ]


def test_bind_vfio_already_bound_writes_nothing(tmp_path):
    write_config(tmp_path, {"user": "root", "isolatedPciDevices": ["0000:01:00.0"]}, {})
    sys = tmp_path / "sys"
    d = sysfs_device(sys, "0000:01:00.0", "vfio-pci", 7)
    (d / "driver_override").write_text("vfio-pci\n")
    log = tmp_path / "writes"
    p = run(tmp_path, "--bind-vfio",
            env={"QUBES_LITE_SYSFS_ROOT": str(sys), "QUBES_LITE_SYSFS_LOG": str(log)})
    assert p.returncode == 0, p.stderr
    assert not log.exists()


def test_modes_exclude_each_other(tmp_path):
    write_config(tmp_path, {"user": "root"}, {"banking": BANKING})
    p = run(tmp_path, "--check", "--bind-vfio")
    assert p.returncode != 0 and "exclude" in p.stderr
