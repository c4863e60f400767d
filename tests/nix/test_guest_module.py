"""The guest module (rootfs/guest.nix) evaluated through nixpkgs' real
module system with the stub NixOS options: alone, and as the host module
builds it for each VM (its settings, guestPrograms, guestConfig last). The
agent's command line is run for real."""
import json
import re

from qltest import program
from qltest.guest import without_port_access
from qltest.procs import Daemon, wait_for
from qltest.nix import host_example, nix_eval

SETTINGS = {"enable": True, "name": "banking", "id": 3,
            "user": {"name": "david", "uid": 1000}, "idleTimeout": 120,
            "hostNetworking": {"enable": True},
            "vmNetwork": {"internal": {"macAddress": "52:ab:cd:ef:12:34", "router": True}}}


def guest(extra=None, **settings):
    s = dict(SETTINGS, **settings)
    args = {"extra": extra} if extra else None
    return nix_eval("guest", strs={"guestJSON": json.dumps(s)}, args=args)


def test_agent_on_vsock_through_a_socket_unit():
    g = guest()
    assert g["failedAssertions"] == []
    sock = g["sockets"]["qubes-lite-guest-agent"]
    assert sock["listenStreams"] == ["vsock::5200"]
    assert sock["wantedBy"] == ["sockets.target"]
    assert sock["socketConfig"] == {"Accept": False}
    svc = g["services"]["qubes-lite-guest-agent"]
    assert svc["requires"] == ["qubes-lite-guest-agent.socket"]
    assert svc["serviceConfig"]["Type"] == "notify"
    exe, *args = svc["serviceConfig"]["ExecStart"].split(" ")
    assert exe.endswith("-qubes-lite-0.1.0/bin/qubes-lite-guest-agent")
    assert args == ["--default-user", "david", "--idle-timeout", "120", "--secret-fw-cfg"]
    # The commands' PATH: the system's programs (guestPrograms among them).
    assert svc["path"] == ["/run/wrappers", "/run/current-system/sw"]
    # Not disposable: no idle timeout.
    g = guest(idleTimeout=0)
    args = g["services"]["qubes-lite-guest-agent"]["serviceConfig"]["ExecStart"].split(" ")[1:]
    assert args == ["--default-user", "david", "--secret-fw-cfg"]


def test_agent_takes_those_options(tmp_path):
    """The real guest agent, with the unit's options (and a unix socket
    instead of systemd's vsock one), comes up listening. This machine is
    no VM with fw_cfg: without I/O ports, --secret-fw-cfg finds no secret
    and the agent refuses everyone (fail closed) but runs."""
    g = guest()
    args = g["services"]["qubes-lite-guest-agent"]["serviceConfig"]["ExecStart"].split(" ")[1:]
    sock = tmp_path / "agent.sock"
    d = Daemon("guest agent", [program("qubes-lite-guest-agent"), *args, "--listen",
                               f"unix:{sock}"], str(tmp_path / "log"),
               preexec=without_port_access)
    try:
        wait_for(lambda: sock.exists() or not d.alive(), timeout=30, what="the agent's socket")
        assert d.alive() and sock.exists(), d.log_text()
        assert re.search(r"--secret-fw-cfg: no secret: fw_cfg file opt/qubes-lite/secret: "
                         r"(Operation not permitted|Function not implemented); every "
                         r"connection will be refused", d.log_text()), \
            d.log_text()
    finally:
        d.stop()


def test_overlay_root_from_the_image():
    g = guest()
    fs = g["fileSystems"]
    assert fs["/"] == {"device": "none", "fsType": "tmpfs", "options": ["mode=0755"],
                       "neededForBoot": False, "depends": []}
    assert fs["/nix/.ro-root"] == {"device": "/dev/vda", "fsType": "ext4", "options": ["ro"],
                                   "neededForBoot": True, "depends": []}
    assert fs["/nix/.rw-store"]["fsType"] == "tmpfs" and fs["/nix/.rw-store"]["neededForBoot"]
    assert fs["/nix/store"] == {
        "device": "overlay", "fsType": "overlay", "neededForBoot": False,
        "options": ["lowerdir=/nix/.ro-root/nix/store", "upperdir=/nix/.rw-store/store",
                    "workdir=/nix/.rw-store/work"],
        "depends": ["/nix/.ro-root", "/nix/.rw-store/store", "/nix/.rw-store/work"]}
    assert g["initrdModules"] == {"availableKernelModules": ["virtio_pci", "virtio_blk", "ext4",
                                                             "overlay"],
                                  "kernelModules": ["overlay"], "systemd": False}
    assert g["kernelModules"] == ["vmw_vsock_virtio_transport"]
    assert g["kernelParams"] == ["console=ttyS0"]
    # The image holds the system's closure (nixpkgs' make-ext4-fs, called
    # with only arguments it takes).
    assert g["image"]["storePaths"] == [g["toplevel"]]
    assert g["image"]["volumeLabel"] == "qubes-lite"
    assert g["image"]["name"] == "ext4-fs.img"


def test_wayland_proxy():
    g = guest()
    proxy = g["userServices"]["wayland-proxy-virtwl"]
    exe, args = proxy["serviceConfig"]["ExecStart"].split(" ", 1)
    assert exe.endswith("-wayland-proxy-virtwl/bin/wayland-proxy-virtwl")
    # wayland-0 is where the guest agent waits for the display (vm-run
    # --wait-wayland) and where programs look by default.
    assert args == "--virtio-gpu --wayland-display wayland-0 --tag '[banking] '"
    assert proxy["wantedBy"] == ["default.target"]
    assert proxy["unitConfig"] == {"ConditionUser": "david"}
    # The user's manager runs from boot, so the proxy is up early.
    assert g["users"]["user"]["linger"] is True
    assert g["graphics"] is True
    # Without a gpu, no proxy.
    g = guest(gpu=False)
    assert g["userServices"] == {}
    assert g["users"]["user"]["linger"] is False and g["graphics"] is False


def test_sshd_on_vsock():
    g = guest()
    assert "sshd" not in g["sockets"]
    g = guest(extra="{ services.openssh.enable = true; }")
    assert g["failedAssertions"] == []
    assert g["sockets"]["sshd"]["listenStreams"] == ["vsock::22"]
    assert g["openssh"] == {"enable": True, "startWhenNeeded": True, "openFirewall": False}
    g = guest(extra="{ services.openssh = { enable = true; startWhenNeeded = false; }; }")
    assert g["failedAssertions"] == [
        "qubes-lite guest 'banking': services.openssh.startWhenNeeded must stay true: sshd is "
        "socket-activated, on vsock port 22 too (vm-shell --ssh)"]


def test_network():
    g = guest()
    net = g["network"]
    assert (net["enable"], net["useNetworkd"], net["useDHCP"]) == (True, True, False)
    assert net["links"] == {"10-qubes-lite-internal": {
        "matchConfig": {"MACAddress": "52:ab:cd:ef:12:34"}, "linkConfig": {"Name": "internal"}}}
    n = net["networks"]
    assert n["10-qubes-lite-internal"]["matchConfig"] == {"MACAddress": "52:ab:cd:ef:12:34"}
    host = n["20-qubes-lite-host"]
    assert host["matchConfig"] == {"Type": "ether", "Driver": "virtio_net"}
    assert (host["address"], host["gateway"]) == (["172.16.200.3/31"], ["172.16.200.2"])
    assert net["nameservers"] == ["9.9.9.9", "149.112.112.112"]
    # A VM without a host link has none configured.
    g = guest(hostNetworking={"enable": False}, vmNetwork={})
    assert g["network"]["networks"] == {} and g["network"]["nameservers"] == []
    # Interfaces take the network's name, cut at 15 characters; two that
    # would clash are refused.
    g = guest(vmNetwork={"averyveryverylongnet-a": {"macAddress": "52:00:00:00:00:01"},
                         "averyveryverylongnet-b": {"macAddress": "52:00:00:00:00:02"}})
    assert len(g["failedAssertions"]) == 1 and "same name" in g["failedAssertions"][0]


def test_the_user():
    g = guest()
    assert g["users"]["user"] == {"name": "david", "uid": 1000, "isNormalUser": True,
                                  "extraGroups": [], "linger": True}
    assert g["autologinUser"] == "david"
    assert g["hostName"] == "banking"


def test_as_the_host_builds_it():
    """shared-guest-config: each VM's guestConfig, merged last, configures
    the VM's user account (users.users.user, as the documented examples
    write it) and sshd; guestPrograms are installed."""
    data = host_example("shared-guest-config")
    dev, banking = data["guests"]["dev"], data["guests"]["banking"]
    for g in (dev, banking):
        assert g["failedAssertions"] == []
        assert g["users"]["user"]["name"] == "david" and g["users"]["user"]["uid"] == 1000
        assert g["users"]["user"]["extraGroups"] == ["wheel"]
        keys = {"authorizedKeys": {"keys": ["ssh-ed25519 AAAA..."]}}
        assert g["users"]["user"]["openssh"] == keys
        assert [p.rsplit("-", 1)[-1] for p in g["packages"]] == ["firefox", "terminal"]
    assert dev["sockets"]["sshd"]["listenStreams"] == ["vsock::22"]
    assert dev["fileSystems"]["/home/user"]["device"] == "/dev/vdb"
    assert "sshd" not in banking["sockets"] and banking["openssh"]["enable"] is False
    # The host's settings reach the guest: idle timeout of disposable VMs,
    # the /31, the gpu.
    q = host_example("quick-start")["guests"]
    assert q["banking"]["services"]["qubes-lite-guest-agent"]["serviceConfig"][
        "ExecStart"].endswith("--default-user david --idle-timeout 120 --secret-fw-cfg")
    assert q["shopping"]["services"]["qubes-lite-guest-agent"]["serviceConfig"][
        "ExecStart"].endswith("--default-user david --idle-timeout 60 --secret-fw-cfg")
    assert q["personal"]["services"]["qubes-lite-guest-agent"]["serviceConfig"][
        "ExecStart"].endswith("--default-user david --secret-fw-cfg")
    assert q["personal"]["network"]["networks"] == {}
    assert q["shopping"]["network"]["networks"]["20-qubes-lite-host"]["address"] == [
        "172.16.200.5/31"]
    media = host_example("devices")["guests"]["media"]
    assert media["userServices"] == {}


def test_guest_config_wins():
    data = nix_eval("host", strs={"example": "offline-vault", "configJSON": json.dumps(
        {"programs": {"qubes-lite": {"nixosVms": [{
            "id": 15, "name": "notes",
            "guestConfig": {"networking": {"hostName": "elsewhere"},
                            "services": {"getty": {"autologinUser": None}}}}]}}})})
    g = data["guests"]["notes"]
    assert g["hostName"] == "elsewhere" and g["autologinUser"] is None
    assert data["guests"]["vault"]["hostName"] == "vault"
