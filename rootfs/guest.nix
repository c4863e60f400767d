# The NixOS inside a qubes-lite VM (flake output nixosModules.guest; the
# host module builds one per VM with it).
#
#   - the guest agent, socket-activated on vsock port 5200, runs the host's
#     commands as the VM's user and powers a disposable VM off when idle;
#   - the root is a tmpfs over a read-only ext4 image: the image holds the
#     store, mounted in the initrd below a tmpfs overlay, so nothing the VM
#     writes outlives it (system.build.qubesLiteImage is that image);
#   - wayland-proxy-virtwl, a user service, offers the host's compositor
#     through virtio-gpu as the user's wayland-0;
#   - sshd on vsock port 22 when services.openssh is enabled (vm-shell
#     --ssh, with or without a network);
#   - the VM's /31 address and gateway on its host link, and each vmNetwork
#     interface matched by its MAC.
{ config, lib, pkgs, modulesPath, ... }:
let
  inherit (lib) mkOption mkIf mkDefault types optionalAttrs;
  cfg = config.qubes-lite.guest;
  ql = import ../nix/lib.nix { inherit lib; };
  net = ql.parseNetwork cfg.hostNetworking.network;
  ssh = config.services.openssh;
in
{
  options.qubes-lite.guest = {
    enable = lib.mkEnableOption "the qubes-lite guest (agent, overlay root, Wayland proxy, network)";

    name = mkOption { type = types.str; example = "banking"; description = "The VM's name (also its host name)."; };
    id = mkOption {
      type = types.int;
      example = 3;
      description = "The VM's id: its vsock CID and the last octet of its address.";
    };

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ../nix/package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage <qubes-lite/nix/package.nix> { }";
      description = "The qubes-lite package whose guest agent runs in the VM.";
    };

    user = {
      name = mkOption {
        type = types.str;
        default = "user";
        description = "The VM's user, whom the host's commands run as (the host module gives the host's user).";
      };
      uid = mkOption {
        type = types.int;
        default = 1000;
        description = "Its uid (the host module gives the host user's).";
      };
    };

    idleTimeout = mkOption {
      type = types.ints.unsigned;
      default = 0;
      description = "Seconds without a live session before the VM powers off; 0: not disposable.";
    };

    hostNetworking = {
      enable = mkOption { type = types.bool; default = false; description = "The VM has a host link (crosvm's TAP)."; };
      network = mkOption {
        type = types.str;
        default = "172.16.200.0/24";
        description = "The network the VM's /31 is in (the host's hostNetworking.network).";
      };
    };

    vmNetwork = mkOption {
      type = types.attrsOf (types.submodule ({ name, ... }: {
        options = {
          macAddress = mkOption {
            type = types.str;
            description = "The interface's MAC (as the host derives or is given it).";
          };
          router = mkOption { type = types.bool; default = false; description = "This VM is the network's router."; };
          interface = mkOption {
            type = types.str;
            default = builtins.substring 0 15 name;
            description = "The interface's name in the VM.";
          };
        };
      }));
      default = { };
      description = "The VM's vmNetwork interfaces, by network name.";
    };

    gpu = mkOption {
      type = types.bool;
      default = true;
      description = "The VM has a virtio-gpu: run the Wayland proxy.";
    };

    waylandProxy = mkOption {
      type = types.package;
      default = pkgs.wayland-proxy-virtwl;
      defaultText = lib.literalExpression "pkgs.wayland-proxy-virtwl";
      description = "The Wayland proxy.";
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = !ssh.enable || ssh.startWhenNeeded;
        message = "qubes-lite guest '${cfg.name}': services.openssh.startWhenNeeded must stay true: "
          + "sshd is socket-activated, on vsock port 22 too (vm-shell --ssh)";
      }
      {
        assertion = !cfg.hostNetworking.enable || net != null;
        message = "qubes-lite guest '${cfg.name}': '${cfg.hostNetworking.network}' is not an IPv4 network a.b.c.d/N "
          + "(N from ${toString ql.networkPrefixMin} to ${toString ql.networkPrefixMax}, host part 0)";
      }
      {
        assertion = !cfg.hostNetworking.enable || net == null || cfg.id <= ql.networkIdMax net;
        message = "qubes-lite guest '${cfg.name}': id ${toString cfg.id} has no /31 in ${cfg.hostNetworking.network}";
      }
      {
        assertion = lib.length (lib.unique (lib.mapAttrsToList (_: n: n.interface) cfg.vmNetwork))
          == lib.length (lib.attrNames cfg.vmNetwork);
        message = "qubes-lite guest '${cfg.name}': two vmNetwork interfaces have the same name "
          + "(the first 15 characters of the network's)";
      }
    ];

    # ---- boot: crosvm loads the kernel, the store comes from the image ----
    boot.loader.grub.enable = false;
    # The overlay below uses the scripted stage 1's handling of overlay
    # mounts (upper and work directories made under /mnt-root).
    boot.initrd.systemd.enable = mkDefault false;
    boot.kernelParams = [ "console=ttyS0" ];
    boot.initrd.availableKernelModules = [ "virtio_pci" "virtio_blk" "ext4" "overlay" ];
    boot.initrd.kernelModules = [ "overlay" ];
    boot.kernelModules = [ "vmw_vsock_virtio_transport" ];

    fileSystems = {
      "/" = { device = "none"; fsType = "tmpfs"; options = [ "mode=0755" ]; };
      # The root disk, first of crosvm's block devices, read-only.
      "/nix/.ro-root" = { device = "/dev/vda"; fsType = "ext4"; options = [ "ro" ]; neededForBoot = true; };
      "/nix/.rw-store" = { device = "none"; fsType = "tmpfs"; options = [ "mode=0755" ]; neededForBoot = true; };
      "/nix/store" = {
        device = "overlay";
        fsType = "overlay";
        options = [ "lowerdir=/nix/.ro-root/nix/store" "upperdir=/nix/.rw-store/store" "workdir=/nix/.rw-store/work" ];
        depends = [ "/nix/.ro-root" "/nix/.rw-store/store" "/nix/.rw-store/work" ];
      };
    };

    # The VM's root disk: an ext4 image holding the system's closure.
    system.build.qubesLiteImage = pkgs.callPackage "${modulesPath}/../lib/make-ext4-fs.nix" {
      storePaths = [ config.system.build.toplevel ];
      volumeLabel = "qubes-lite";
    };

    system.stateVersion = mkDefault lib.trivial.release;
    nix.enable = mkDefault false;
    documentation.enable = mkDefault false;

    # ---- the guest agent ---------------------------------------------------
    systemd.sockets.qubes-lite-guest-agent = {
      description = "qubes-lite guest agent socket";
      wantedBy = [ "sockets.target" ];
      listenStreams = [ "vsock::5200" ];
      socketConfig.Accept = false;
    };
    systemd.services.qubes-lite-guest-agent = {
      description = "qubes-lite guest agent";
      requires = [ "qubes-lite-guest-agent.socket" ];
      after = [ "qubes-lite-guest-agent.socket" ];
      # The PATH the commands get: the system's programs, guestPrograms
      # among them.
      path = [ "/run/wrappers" "/run/current-system/sw" ];
      # The VM's secret, which the host agent proves itself with, straight
      # from the VMM's fw_cfg over its I/O ports (as root; the kernel's
      # qemu_fw_cfg cannot find crosvm's): no copy of it on disk. Without
      # it the agent refuses every connection.
      serviceConfig = {
        Type = "notify";
        ExecStart = lib.escapeShellArgs ([ "${cfg.package}/bin/qubes-lite-guest-agent" "--default-user" cfg.user.name ]
          ++ lib.optionals (cfg.idleTimeout > 0) [ "--idle-timeout" (toString cfg.idleTimeout) ]
          ++ [ "--secret-fw-cfg" ]);
        Restart = "on-failure";
      };
    };

    # The user the host's commands run as: the host's user, same uid. Its
    # attribute is `user` whatever the login name, so that a guestConfig
    # shared by VMs (users.users.user.extraGroups, ….openssh…) configures
    # this account.
    users.users.user = {
      name = cfg.user.name;
      uid = cfg.user.uid;
      isNormalUser = true;
      # Its user manager runs from boot, so the Wayland proxy is up before
      # the first graphical command.
      linger = cfg.gpu;
    };
    # The serial console (vm-shell VM) is only the host user's to reach.
    services.getty.autologinUser = mkDefault cfg.user.name;

    # ---- Wayland ----------------------------------------------------------
    hardware.graphics.enable = mkIf cfg.gpu (mkDefault true);
    systemd.user.services.wayland-proxy-virtwl = mkIf cfg.gpu {
      description = "Wayland proxy to the host's compositor over virtio-gpu";
      wantedBy = [ "default.target" ];
      unitConfig.ConditionUser = cfg.user.name;
      serviceConfig = {
        ExecStart = lib.escapeShellArgs [
          "${cfg.waylandProxy}/bin/wayland-proxy-virtwl"
          "--virtio-gpu"
          "--wayland-display" "wayland-0"
          "--tag" "[${cfg.name}] "
        ];
        Restart = "on-failure";
      };
    };

    # ---- ssh over vsock ---------------------------------------------------
    services.openssh.startWhenNeeded = mkDefault true;
    services.openssh.openFirewall = mkDefault false;
    systemd.sockets.sshd = mkIf (ssh.enable && ssh.startWhenNeeded) {
      listenStreams = [ "vsock::22" ];
    };

    # ---- network ----------------------------------------------------------
    networking.hostName = mkDefault cfg.name;
    networking.useDHCP = false;
    networking.useNetworkd = true;
    networking.nameservers = mkIf cfg.hostNetworking.enable (mkDefault [ "9.9.9.9" "149.112.112.112" ]);
    systemd.network.enable = true;
    # vmNetwork interfaces by MAC first; the one virtio NIC left is the
    # host link (networkd takes the first file that matches).
    systemd.network.links = lib.mapAttrs'
      (net: n: lib.nameValuePair "10-qubes-lite-${net}" {
        matchConfig.MACAddress = n.macAddress;
        linkConfig.Name = n.interface;
      })
      cfg.vmNetwork;
    systemd.network.networks = lib.mapAttrs'
      (net: n: lib.nameValuePair "10-qubes-lite-${net}" {
        matchConfig.MACAddress = n.macAddress;
        linkConfig.RequiredForOnline = "no";
      })
      cfg.vmNetwork
    // optionalAttrs (cfg.hostNetworking.enable && net != null) {
      "20-qubes-lite-host" = {
        matchConfig = { Type = "ether"; Driver = "virtio_net"; };
        address = [ "${ql.vmAddress net cfg.id}/31" ];
        gateway = [ (ql.hostAddress net cfg.id) ];
      };
    };
  };
}
