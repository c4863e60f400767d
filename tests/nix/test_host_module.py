"""The host module (nix/module.nix) evaluated through nixpkgs' real module
system, beside stub NixOS options (stub.nix) and a stub package set
(stub-pkgs.nix). For each of the README's examples (examples.nix): the
files it writes pass the real `qubes-lite-host-agent --check`, give the
same crosvm command lines as the same configuration written by hand, and
the real generator writes the expected units from them; the NixOS
settings it makes (TAP, NAT, vfio, generator, desktop entries,
completion) are the intended ones."""
import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from qltest import ROOT, program
from qltest.nix import (NIX, host_example, nix_env, nix_eval, out_paths, run_as_configured,
                        write_etc)

EXAMPLES = ["quick-start", "shared-guest-config", "offline-vault", "vm-to-vm", "disposable",
            "pci-passthrough", "devices", "installing-on-nixos"]
UID = 1000
WAYLAND = f"/run/user/{UID}/wayland-0"


def built(data, vm, params=()):
    """What the module fills in for a VM that gives no kernel, initramfs nor
    root disk of its own: the built guest's."""
    g = data["guests"][vm]
    return {"kernel": g["kernel"], "initramfs": g["initrd"], "rootDisk": g["image"]["path"],
            "kernelParams": ["console=ttyS0", f"init={g['toplevel']}/init", *params]}


def by_hand(example, data):
    """Each example written by hand as JSON: only what differs from the
    defaults, in the README's key order."""
    b = lambda vm, *p: built(data, vm, p)  # noqa: E731
    user = {"user": "david"}
    if example == "quick-start":
        return {"user": "david", "hostNetworking": {"network": "172.16.200.0/24",
                                                   "nat": {"enable": True, "interface": "eth0"}}}, {
            "banking": {"id": 3, "memory": 4096, "cpus": 4, "hostNetworking": True,
                        "disposable": True, "idleTimeout": 120, **b("banking")},
            "shopping": {"id": 5, "memory": 2048, "cpus": 2, "hostNetworking": True,
                         "disposable": True, **b("shopping")},
            "personal": {"id": 7, "memory": 4096, "cpus": 4, **b("personal")},
        }
    if example == "shared-guest-config":
        return user, {
            "dev": {"id": 3, "hostNetworking": True, **b("dev"),
                    "additionalDisks": [{"path": "/dev/mapper/main-dev-home", "ro": False}]},
            "banking": {"id": 5, "hostNetworking": True, **b("banking")},
        }
    if example == "offline-vault":
        return user, {"vault": {"id": 13, "name": "vault", "memory": 2048, **b("vault")}}
    if example == "vm-to-vm":
        return user, {
            "router": {"id": 3, "hostNetworking": True, **b("router"),
                       "vmNetwork": {"internal": {"router": True,
                                                  "macAddress": "52:ab:cd:ef:12:34"}}},
            "banking": {"id": 5, **b("banking"), "vmNetwork": {"internal": {}}},
            "shopping": {"id": 7, **b("shopping"), "vmNetwork": {"internal": {}}},
        }
    if example == "disposable":
        return user, {"untrusted": {"id": 9, "memory": 4096, "disposable": True,
                                    "idleTimeout": 60, **b("untrusted")}}
    if example == "pci-passthrough":
        return {"user": "david", "isolatedPciDevices": ["01:00.0", "02:00.0"]}, {
            "sys-usb": {"id": 3, "memory": 1024, **b("sys-usb"),
                        "pciDevices": [{"path": "01:00.0"}]},
            "sys-net": {"id": 5, "memory": 1024, **b("sys-net"),
                        "pciDevices": [{"path": "02:00.0"}]},
        }
    if example == "devices":
        return {"user": "david", "crosvm": {"logLevel": "debug", "extraArgs": ["--no-syslog"],
                                            "extraRunArgs": ["--no-balloon"]},
                "vm-switch": {"logLevel": "warn"}}, {
            "work": {"id": 3, **b("work", "quiet"),
                     "additionalDisks": [{"path": "/tmp/data.qcow2", "ro": False, "sparse": True,
                                          "block-size": 4096, "id": "data", "direct": False}],
                     "gpu": {"context-types": "cross-domain:virgl2", "width": 1920,
                             "height": 1080},
                     "sound": {"backend": "pulse", "capture": True},
                     "sharedDirectories": [{"path": "/tmp/shared", "tag": "shared",
                                            "type": "fs", "uid": 1000}],
                     "vhostUser": [{"type": "net", "socket": "/path/to/socket"}],
                     "crosvm": {"logLevel": "trace", "extraRunArgs": ["--no-rng"]}},
            "media": {"id": 5, "gpu": False, "sound": True, "kernel": "/boot/vmlinux",
                      "initramfs": "/boot/initrd.img",
                      "rootDisk": {"path": "/var/lib/media.qcow2", "sparse": False},
                      "rootDiskReadonly": False, "vmm": "crosvm",
                      "qemu": {"extraArgs": ["-no-reboot"]}},
        }
    if example == "installing-on-nixos":
        return {"user": "david", "hostNetworking": {"nat": {"enable": True, "interface": "eth0"}},
                "isolatedPciDevices": ["01:00.0"]}, {
            "banking": {"id": 3, "memory": 4096, "hostNetworking": True, "disposable": True,
                        "idleTimeout": 120, **b("banking")},
            "sys-usb": {"id": 5, **b("sys-usb"), "pciDevices": [{"path": "01:00.0"}]},
            "router": {"id": 7, "hostNetworking": True, **b("router"),
                       "vmNetwork": {"internal": {"router": True}}},
            "vault": {"id": 9, **b("vault"), "vmNetwork": {"internal": {}}},
        }
    raise KeyError(example)


def write_by_hand(etc, host, vms):
    os.makedirs(os.path.join(etc, "vms"))
    with open(os.path.join(etc, "host.json"), "w") as f:
        json.dump(host, f)
    for name, vm in vms.items():
        with open(os.path.join(etc, "vms", f"{name}.json"), "w") as f:
            json.dump(vm, f)


# crosvm's key=value options: the module writes pairs in name order (Nix
# sorts attribute names), a hand-written file in its own order; crosvm
# takes either.
KV_FLAGS = {"--block": ",", "--vfio": ",", "--gpu": ",", "--virtio-snd": ",",
            "--vhost-user": ",", "--shared-dir": ":"}


def normalise(argv):
    out = []
    for i, a in enumerate(argv):
        sep = KV_FLAGS.get(argv[i - 1]) if i > 0 else None
        if sep:
            parts = a.split(sep)
            head = [p for p in parts[:2 if sep == ":" else 1] if "=" not in p]
            out.append(tuple(head) + tuple(sorted(parts[len(head):])))
        else:
            out.append(a)
    return out


def print_command(etc, tmp, vm):
    r = run_as_configured([program("qubes-lite-host-agent"), "--vm", vm, "--print-command"],
                          etc, tmp)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def option(argv, flag):
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


@pytest.fixture(params=EXAMPLES)
def example(request):
    return request.param, host_example(request.param)


def test_example_evaluates_without_failed_assertions(example):
    name, data = example
    assert data["failedAssertions"] == [], data["failedAssertions"]
    for vm, g in data["guests"].items():
        assert g["failedAssertions"] == [], (vm, g["failedAssertions"])
    # Exactly host.json and one file per VM, nothing else in /etc.
    assert sorted(data["etc"]) == ["qubes-lite/host.json"] + sorted(
        f"qubes-lite/vms/{vm}.json" for vm in data["guests"])
    assert data["otherEtc"] == []


def test_example_passes_check(example, tmp_path):
    name, data = example
    etc = tmp_path / "etc"
    write_etc(etc, data["etc"])
    r = run_as_configured([program("qubes-lite-host-agent"), "--check", "--config-only"], etc, tmp_path)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), r


def test_example_written_as_option_names(example):
    """Keys are the option names, values as evaluated; the Nix-only options
    are not written; the built image fills kernel, initramfs, root disk."""
    name, data = example
    host = json.loads(data["etc"]["qubes-lite/host.json"])
    assert sorted(host) == ["crosvm", "enableBashIntegration", "hostNetworking",
                            "isolatedPciDevices", "qemu", "user", "vm-switch", "vmm"]
    assert sorted(host["crosvm"]) == ["extraArgs", "extraRunArgs", "logLevel"]
    for vm in data["guests"]:
        j = json.loads(data["etc"][f"qubes-lite/vms/{vm}.json"])
        assert sorted(j) == sorted([
            "id", "name", "memory", "cpus", "hostNetworking", "disposable", "idleTimeout",
            "additionalDisks", "rootDisk", "kernel", "initramfs", "rootDiskReadonly",
            "kernelParams", "gpu", "sound", "sharedDirectories", "pciDevices", "vmNetwork",
            "vhostUser", "crosvm", "vmm", "qemu"]), vm
        assert j["name"] == vm
        if name != "devices" or vm == "work":
            b = built(data, vm)
            assert (j["kernel"], j["initramfs"], j["rootDisk"]) == (
                b["kernel"], b["initramfs"], b["rootDisk"])
            assert j["kernelParams"][:2] == b["kernelParams"]


def test_example_same_command_as_by_hand(example, tmp_path):
    name, data = example
    etc = tmp_path / "etc"
    write_etc(etc, data["etc"])
    hand = tmp_path / "hand"
    host, vms = by_hand(name, data)
    write_by_hand(hand, host, vms)
    r = run_as_configured([program("qubes-lite-host-agent"), "--check", "--config-only"], hand, tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(vms) == sorted(data["guests"])
    for vm in vms:
        ours = print_command(etc, tmp_path, vm)
        theirs = print_command(hand, tmp_path, vm)
        assert normalise(ours) == normalise(theirs), (vm, ours, theirs)
        assert ours[0] == "crosvm" and "run" in ours
        cid = int(json.loads(data["etc"][f"qubes-lite/vms/{vm}.json"])["id"])
        assert option(ours, "--vsock") == [f"cid={cid}"]
        gpu = json.loads(data["etc"][f"qubes-lite/vms/{vm}.json"])["gpu"]
        assert option(ours, "--wayland-sock") == ([] if gpu is False else [WAYLAND])


def test_readme_results_in():
    """The documented "Results in:" lines of each option form, from the
    devices example."""
    data = host_example("devices")
    with tempfile.TemporaryDirectory() as tmp:
        etc = os.path.join(tmp, "etc")
        write_etc(etc, data["etc"])
        argv = print_command(etc, tmp, "work")
        media = print_command(etc, tmp, "media")
    n = normalise
    assert n(["--block", option(argv, "--block")[1]]) == n(
        ["--block", "/tmp/data.qcow2,ro=false,sparse=true,block-size=4096,id=data,direct=false"])
    # As Nix writes it: pairs in name order.
    assert option(argv, "--block")[1] == \
        "/tmp/data.qcow2,block-size=4096,direct=false,id=data,ro=false,sparse=true"
    assert option(argv, "--shared-dir") == ["/tmp/shared:shared:type=fs:uid=1000"]
    assert n(["--vhost-user", *option(argv, "--vhost-user")]) == n(
        ["--vhost-user", "type=net,socket=/path/to/socket"])
    assert n(["--gpu", option(argv, "--gpu")[0]]) == n(
        ["--gpu", "context-types=cross-domain:virgl2,width=1920,height=1080"])
    assert option(argv, "--wayland-sock") == [WAYLAND]
    assert option(argv, "--virtio-snd") == ["backend=pulse,capture=true"]
    assert argv[1:6] == ["--log-level", "trace", "--no-syslog", "run", "--cpus"]
    assert argv[-3:-1] == ["--no-balloon", "--no-rng"]
    assert option(media, "--block") == ["/var/lib/media.qcow2,sparse=false,ro=false,root=true"]
    assert option(media, "--virtio-snd") == ["backend=pulse"]
    assert option(media, "--gpu") == [] and option(media, "--wayland-sock") == []
    assert option(media, "--initrd") == ["/boot/initrd.img"] and media[-1] == "/boot/vmlinux"
    pci = host_example("pci-passthrough")
    with tempfile.TemporaryDirectory() as tmp:
        etc = os.path.join(tmp, "etc")
        write_etc(etc, pci["etc"])
        assert option(print_command(etc, tmp, "sys-usb"), "--vfio") == [
            "/sys/bus/pci/devices/0000:01:00.0/"]


def read_units(out):
    units = {}
    for root, dirs, files in os.walk(out):
        for f in files:
            p = os.path.join(root, f)
            rel = os.path.relpath(p, out)
            units[rel] = ("-> " + os.readlink(p)) if os.path.islink(p) else open(p).read()
    return units


def generate(etc, tmp, name):
    out = os.path.join(tmp, name)
    os.makedirs(out)
    r = run_as_configured([program("qubes-lite-generator"), out], etc, tmp)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    return read_units(out)


def test_example_units(example, tmp_path):
    """The real generator on the evaluated /etc: a socket and a service per
    VM, a switch per network, the vfio binding where devices are isolated;
    the same units as from the hand-written files."""
    name, data = example
    etc = tmp_path / "etc"
    write_etc(etc, data["etc"])
    units = generate(etc, str(tmp_path), "gen")
    hand = tmp_path / "hand"
    write_by_hand(hand, *by_hand(name, data))
    hand_units = generate(hand, str(tmp_path), "gen-hand")
    def strip(units):
        return {k: re.sub(r"^# Generated by .*\n", "", v).replace(str(hand), str(etc))
                for k, v in units.items()}
    assert strip(units) == strip(hand_units)

    vms = sorted(data["guests"])
    nets = sorted({n for vm in vms
                   for n in json.loads(data["etc"][f"qubes-lite/vms/{vm}.json"])["vmNetwork"]})
    expected = {f"qubes-lite-{vm}.socket" for vm in vms}
    expected |= {f"qubes-lite-{vm}-vm.service" for vm in vms}
    expected |= {f"sockets.target.wants/qubes-lite-{vm}.socket" for vm in vms}
    expected |= {f"vm-switch-{n}.service" for n in nets}
    expected |= {f"multi-user.target.wants/vm-switch-{n}.service" for n in nets}
    if json.loads(data["etc"]["qubes-lite/host.json"])["isolatedPciDevices"]:
        expected |= {"qubes-lite-vfio.service", "multi-user.target.wants/qubes-lite-vfio.service"}
    assert set(units) == expected
    for vm in vms:
        assert "SocketUser=david\n" in units[f"qubes-lite-{vm}.socket"]
        service = units[f"qubes-lite-{vm}-vm.service"]
        assert f"ExecStart={program('qubes-lite-host-agent')} --vm {vm}\n" in service
        j = json.loads(data["etc"][f"qubes-lite/vms/{vm}.json"])
        session = j["gpu"] is not False or j["sound"] is not False
        assert (f"Environment=XDG_RUNTIME_DIR=/run/user/{UID}\n" in service) == session
        assert ("Environment=WAYLAND_DISPLAY=wayland-0\n" in service) == (j["gpu"] is not False)
        for n in j["vmNetwork"]:
            assert f"Wants=vm-switch-{n}.service\n" in service
        isolated = json.loads(data["etc"]["qubes-lite/host.json"])["isolatedPciDevices"]
        assert ("Wants=qubes-lite-vfio.service\n" in service) == bool(isolated and j["pciDevices"])


def test_generator_and_packages():
    data = host_example("quick-start")
    pkg = data["generators"]["qubes-lite-generator"].rsplit("/lib/", 1)[0]
    assert pkg.endswith("-qubes-lite-0.1.0")
    assert data["generators"] == {
        "qubes-lite-generator": f"{pkg}/lib/systemd/system-generators/qubes-lite-generator"}
    assert data["systemPackages"][0] == pkg
    # The units are the generator's; NixOS adds only crosvm's PATH, as
    # drop-ins, one per VM.
    assert sorted(data["services"]) == [f"qubes-lite-{vm}-vm" for vm in
                                        ("banking", "personal", "shopping")]
    for s in data["services"].values():
        assert s["overrideStrategy"] == "asDropin"
        assert len(s["path"]) == 1 and s["path"][0].endswith("-crosvm")
        assert s["serviceConfig"] == {} and s["wantedBy"] == []


def test_tap_interfaces_and_nat():
    data = host_example("quick-start")
    assert data["interfaces"] == {
        "vm-banking": {"virtual": True, "virtualType": "tap", "virtualOwner": "david",
                       "ipv4": {"addresses": [{"address": "172.16.200.2", "prefixLength": 31}]}},
        "vm-shopping": {"virtual": True, "virtualType": "tap", "virtualOwner": "david",
                        "ipv4": {"addresses": [{"address": "172.16.200.4", "prefixLength": 31}]}},
    }
    assert data["nat"] == {"enable": True, "externalInterface": "eth0",
                           "internalIPs": ["172.16.200.3/32", "172.16.200.5/32"],
                           "internalInterfaces": []}
    assert data["sysctl"] == {"net.ipv4.ip_forward": 1}
    # Networking without NAT: the TAP, no NAT, no forwarding.
    data = host_example("vm-to-vm")
    assert list(data["interfaces"]) == ["vm-router"]
    assert data["nat"]["enable"] is False and data["sysctl"] == {}
    # Another network, not a /24: addresses are its address plus the id.
    web = {"id": 21, "name": "web", "hostNetworking": True}
    data = nix_eval("host", strs={"example": "disposable", "configJSON": json.dumps({
        "programs": {"qubes-lite": {"hostNetworking": {"network": "10.9.8.224/27"},
                                    "nixosVms": [web]}}})})
    assert data["interfaces"]["vm-web"]["ipv4"]["addresses"] == [
        {"address": "10.9.8.244", "prefixLength": 31}]
    assert "vm-untrusted" not in data["interfaces"]
    assert data["guests"]["web"]["network"]["networks"]["20-qubes-lite-host"]["address"] == [
        "10.9.8.245/31"]
    assert data["guests"]["web"]["network"]["networks"]["20-qubes-lite-host"]["gateway"] == [
        "10.9.8.244"]


def fake_sysfs(root):
    """Three PCI devices: 01:00.0 taken by xhci_hcd, 02:00.0 without a
    driver, 03:00.0 (not isolated) taken by e1000e."""
    pci = root / "bus" / "pci"
    for drv in ("xhci_hcd", "e1000e", "vfio-pci"):
        (pci / "drivers" / drv).mkdir(parents=True)
        (pci / "drivers" / drv / "unbind").write_text("")
    (pci / "drivers_probe").write_text("")
    for dev, drv in (("0000:01:00.0", "xhci_hcd"), ("0000:02:00.0", None),
                     ("0000:03:00.0", "e1000e")):
        d = pci / "devices" / dev
        d.mkdir(parents=True)
        (d / "driver_override").write_text("(null)\n")
        if drv:
            os.symlink(f"../../drivers/{drv}", d / "driver")
    return pci


def test_vfio_in_the_initrd(tmp_path):
    data = host_example("pci-passthrough")
    assert data["initrd"]["kernelModules"] == ["vfio-pci"]
    assert data["initrd"]["systemdServices"] == {}
    # driver_override by address, not vfio-pci ids= by vendor and device.
    assert data["extraModprobeConfig"] == ""
    script = data["initrd"]["preDeviceCommands"]
    assert "0000:01:00.0 0000:02:00.0" in script
    pci = fake_sysfs(tmp_path / "sys")
    r = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, QUBES_LITE_SYSFS_ROOT=str(tmp_path / "sys")))
    assert r.returncode == 0, r.stderr
    dev = pci / "devices"
    assert (dev / "0000:01:00.0" / "driver_override").read_text() == "vfio-pci\n"
    assert (dev / "0000:02:00.0" / "driver_override").read_text() == "vfio-pci\n"
    assert (dev / "0000:03:00.0" / "driver_override").read_text() == "(null)\n"
    assert (pci / "drivers" / "xhci_hcd" / "unbind").read_text() == "0000:01:00.0\n"
    assert (pci / "drivers" / "e1000e" / "unbind").read_text() == ""
    assert (pci / "drivers_probe").read_text() == "0000:02:00.0\n"
    # A device that is not there is said so, the others still bound.
    (pci / "drivers_probe").write_text("")
    shutil.rmtree(dev / "0000:01:00.0")
    r = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, QUBES_LITE_SYSFS_ROOT=str(tmp_path / "sys")))
    assert r.returncode == 0
    assert "isolated PCI device 0000:01:00.0 not found" in r.stderr
    assert (pci / "drivers_probe").read_text() == "0000:02:00.0\n"

    # With systemd in the initrd: the same script in a unit before udev.
    data = nix_eval("host", strs={"example": "pci-passthrough"},
                    args={"extra": "{ boot.initrd.systemd.enable = true; }"})
    assert data["failedAssertions"] == []
    assert data["initrd"]["preDeviceCommands"] == ""
    unit = data["initrd"]["systemdServices"]["qubes-lite-vfio"]
    assert unit["script"] == script
    assert "systemd-udev-trigger.service" in unit["before"]
    assert unit["after"] == ["systemd-modules-load.service"]
    assert unit["serviceConfig"] == {"Type": "oneshot"}
    # Nothing isolated, nothing in the initrd.
    data = host_example("quick-start")
    assert data["initrd"] == {"kernelModules": [], "preDeviceCommands": "", "systemdServices": {}}


def test_desktop_entries(tmp_path):
    """A launcher per .desktop file of each VM's guestPrograms, through
    vm-run, named after the VM; the derivation's own command run on
    stand-in packages."""
    pkgs = {}
    for p, entries in (("firefox", {"firefox.desktop": "[Desktop Entry]\nName=Firefox\n"
                                    "Name[de]=Firefox-Browser\nTryExec=firefox\n"
                                    "Exec=firefox %u\nIcon=firefox\n\n"
                                    "[Desktop Action new-window]\nName=New Window\n"
                                    "Exec=firefox --new-window %u\n"}),
                       ("xfce4-terminal", {"xfce4-terminal.desktop":
                                           "[Desktop Entry]\nName=Terminal\n"
                                           "Exec=xfce4-terminal\nDBusActivatable=true\n"}),
                       ("libreoffice", {})):
        d = tmp_path / "pkgs" / p
        (d / "share" / "applications").mkdir(parents=True)
        for f, text in entries.items():
            (d / "share" / "applications" / f).write_text(text)
        pkgs[p] = str(d)
    (tmp_path / "pkgs" / "firefox" / "share" / "icons" / "hicolor").mkdir(parents=True)
    (tmp_path / "pkgs" / "firefox" / "share" / "icons" / "hicolor" / "firefox.png").write_text("")
    data = nix_eval("host", strs={"example": "quick-start"}, args={"outPaths": out_paths(pkgs)})
    drvs = {p["name"]: p for p in data["systemPackages"] if isinstance(p, dict)}
    assert sorted(drvs) == ["qubes-lite-banking-desktop-entries",
                            "qubes-lite-personal-desktop-entries",
                            "qubes-lite-shopping-desktop-entries"]
    cmd = drvs["qubes-lite-banking-desktop-entries"]["buildCommand"].strip()
    m = re.fullmatch(r"(\S+/bin/bash) (/nix/store/\S+-desktop-entries\.sh) (.*)", cmd)
    assert m, cmd
    assert m.group(3) == f"banking \"$out\" {pkgs['firefox']} {pkgs['xfce4-terminal']}"
    out = tmp_path / "out"
    # The store copy of the script is nix/desktop-entries.sh.
    script = os.path.join(ROOT, "nix", "desktop-entries.sh")
    r = subprocess.run(["sh", "-c", f"sh {script} {m.group(3)}"], capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, out=str(out)))
    assert r.returncode == 0, r.stderr
    apps = out / "share" / "applications"
    assert sorted(os.listdir(apps)) == ["qubes-lite-banking-firefox.desktop",
                                        "qubes-lite-banking-xfce4-terminal.desktop"]
    assert (apps / "qubes-lite-banking-firefox.desktop").read_text() == (
        "[Desktop Entry]\nName=[banking] Firefox\nName[de]=[banking] Firefox-Browser\n"
        "Exec=vm-run --wait-wayland banking firefox %u\nIcon=firefox\n\n"
        "[Desktop Action new-window]\nName=[banking] New Window\n"
        "Exec=vm-run --wait-wayland banking firefox --new-window %u\n")
    assert (apps / "qubes-lite-banking-xfce4-terminal.desktop").read_text() == (
        "[Desktop Entry]\nName=[banking] Terminal\n"
        "Exec=vm-run --wait-wayland banking xfce4-terminal\n")
    icon = out / "share" / "icons" / "hicolor" / "firefox.png"
    assert os.readlink(icon) == f"{pkgs['firefox']}/share/icons/hicolor/firefox.png"
    # personal's libreoffice has none: an empty directory, not an error.
    cmd = drvs["qubes-lite-personal-desktop-entries"]["buildCommand"].strip()
    assert cmd.endswith(f"personal \"$out\" {pkgs['libreoffice']}")
    # No guestPrograms, no launchers.
    assert not any(isinstance(p, dict) for p in host_example("vm-to-vm")["systemPackages"])


def test_bash_completion():
    data = host_example("quick-start")
    pkg = data["systemPackages"][0]
    assert data["bashInit"] == f"source {pkg}/share/bash-completion/completions/vm-run\n"
    data = nix_eval("host", strs={"example": "quick-start", "configJSON": json.dumps(
        {"programs": {"qubes-lite": {"enableBashIntegration": False}}})})
    assert data["bashInit"] == ""
    assert json.loads(data["etc"]["qubes-lite/host.json"])["enableBashIntegration"] is False


def test_disabled_module_sets_nothing():
    data = nix_eval("host", strs={"configJSON": json.dumps(
        {"programs": {"qubes-lite": {"nixosVms": [{"id": 3, "name": "a"}]}}})})
    assert data["etc"] == {} and data["systemPackages"] == [] and data["generators"] == {}
    assert data["failedAssertions"] == [] and data["interfaces"] == {}


def test_guest_macs_are_the_switch_macs(tmp_path):
    """The MAC the guest matches its vmNetwork interface by is the one the
    host gives the switch (derived the same way in Nix and C)."""
    data = nix_eval("host", strs={"example": "vm-to-vm", "configJSON": json.dumps(
        {"programs": {"qubes-lite": {"nixosVms": [
            {"id": 9, "name": "office-pc", "vmNetwork": {"office": {}, "internal": {}}},
            {"id": 11, "name": "office-gw", "vmNetwork": {"office": {"router": True}}}]}}})})
    assert data["failedAssertions"] == []
    etc = tmp_path / "etc"
    write_etc(etc, data["etc"])
    for net in ("internal", "office"):
        conf = tmp_path / net
        r = run_as_configured([program("qubes-lite-host-agent"), "--write-switch-config", net,
                               str(conf)], etc, tmp_path)
        assert r.returncode == 0, r.stderr
        for f in os.listdir(conf):
            vm = f[:-len(".conf")]
            mac = dict(line.split("=", 1) for line in (conf / f).read_text().split())["mac"]
            links = data["guests"][vm]["network"]["links"]
            assert links[f"10-qubes-lite-{net}"]["matchConfig"]["MACAddress"] == mac, (net, vm)
    assert data["guests"]["router"]["network"]["links"]["10-qubes-lite-internal"][
        "matchConfig"]["MACAddress"] == "52:ab:cd:ef:12:34"


def test_readme_example_is_the_tested_one(tmp_path):
    """The project README's "Installing on NixOS" configuration, taken from
    the README itself, writes what examples.nix's copy writes."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    section = readme[readme.index("## Installing on NixOS"):]
    blocks = re.findall(r"```nix\n(.*?)```", section, re.S)
    module = tmp_path / "configuration.nix"
    module.write_text(blocks[1])
    data = nix_eval("host", args={"extra": f"import {module}"})
    assert data["failedAssertions"] == []
    assert data["etc"] == host_example("installing-on-nixos")["etc"]
    # And the flake snippet parses as the inputs and outputs it shows.
    flake = tmp_path / "flake.nix"
    flake.write_text(blocks[0])
    p = subprocess.run([NIX, "--parse", str(flake)], capture_output=True, text=True,
                       env=nix_env(), timeout=60)
    assert p.returncode == 0, p.stderr
