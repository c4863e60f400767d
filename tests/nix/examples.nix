# The README's examples as NixOS modules, as a user would write them (the
# partial ones completed with the quick start's user and networking). The
# tests evaluate each with the host module, and so do the flake's checks.
let
  # What every example has: the user, with the explicit uid it needs.
  common = {
    users.users.david.uid = 1000;
    programs.qubes-lite = {
      enable = true;
      user = "david";
    };
  };
in
{
  quick-start = { pkgs, ... }: {
    imports = [ common ];
    programs.qubes-lite = {
      hostNetworking = {
        network = "172.16.200.0/24";
        nat = {
          enable = true;
          interface = "eth0";
        };
      };
      nixosVms = [
        {
          id = 3;
          name = "banking";
          memory = 4096;
          cpus = 4;
          hostNetworking = true;
          disposable = true;
          idleTimeout = 120;
          guestPrograms = with pkgs; [ firefox xfce4-terminal ];
        }
        {
          id = 5;
          name = "shopping";
          memory = 2048;
          cpus = 2;
          hostNetworking = true;
          disposable = true;
          guestPrograms = with pkgs; [ firefox xfce4-terminal ];
        }
        {
          id = 7;
          name = "personal";
          memory = 4096;
          cpus = 4;
          guestPrograms = with pkgs; [ libreoffice ];
        }
      ];
    };
  };

  shared-guest-config = { pkgs, ... }:
    let
      commonGuestConfig = {
        services.openssh.enable = true;
        users.users.user.extraGroups = [ "wheel" ];
        users.users.user.openssh.authorizedKeys.keys = [ "ssh-ed25519 AAAA..." ];
      };
      commonGuestPrograms = with pkgs; [ firefox xfce4-terminal ];
    in
    {
      imports = [ common ];
      programs.qubes-lite.nixosVms = [
        {
          id = 3;
          name = "dev";
          hostNetworking = true;
          guestPrograms = commonGuestPrograms;
          guestConfig = commonGuestConfig // {
            fileSystems."/home/user" = {
              device = "/dev/vdb";
              fsType = "ext4";
            };
          };
          additionalDisks = [{ path = "/dev/mapper/main-dev-home"; ro = false; }];
        }
        {
          id = 5;
          name = "banking";
          hostNetworking = true;
          guestPrograms = commonGuestPrograms;
          guestConfig = commonGuestConfig // {
            services.openssh.enable = false;
          };
        }
      ];
    };

  offline-vault = { pkgs, ... }: {
    imports = [ common ];
    programs.qubes-lite.nixosVms = [{
      id = 13;
      name = "vault";
      memory = 2048;
      guestPrograms = with pkgs; [ keepassxc ];
    }];
  };

  vm-to-vm = {
    imports = [ common ];
    programs.qubes-lite.nixosVms = [
      {
        id = 3;
        name = "router";
        hostNetworking = true;
        vmNetwork.internal = {
          router = true;
          macAddress = "52:ab:cd:ef:12:34";
        };
      }
      {
        id = 5;
        name = "banking";
        vmNetwork.internal = { };
      }
      {
        id = 7;
        name = "shopping";
        vmNetwork.internal = { };
      }
    ];
  };

  disposable = {
    imports = [ common ];
    programs.qubes-lite.nixosVms = [{
      id = 9;
      name = "untrusted";
      memory = 4096;
      disposable = true;
      idleTimeout = 60;
    }];
  };

  pci-passthrough = {
    imports = [ common ];
    programs.qubes-lite = {
      isolatedPciDevices = [ "01:00.0" "02:00.0" ];
      nixosVms = [
        {
          id = 3;
          name = "sys-usb";
          memory = 1024;
          pciDevices = [{ path = "01:00.0"; }];
        }
        {
          id = 5;
          name = "sys-net";
          memory = 1024;
          pciDevices = [{ path = "02:00.0"; }];
        }
      ];
    };
    boot.blacklistedKernelModules = [ "xhci_hcd" ];
  };

  # The project README's "Installing on NixOS".
  installing-on-nixos = { pkgs, ... }: {
    users.users.david.uid = 1000;

    programs.qubes-lite = {
      enable = true;
      user = "david";
      hostNetworking.nat = { enable = true; interface = "eth0"; };
      isolatedPciDevices = [ "01:00.0" ];
      nixosVms = [
        {
          id = 3; name = "banking"; memory = 4096; hostNetworking = true;
          disposable = true; idleTimeout = 120;
          guestPrograms = with pkgs; [ firefox ];
        }
        { id = 5; name = "sys-usb"; pciDevices = [{ path = "01:00.0"; }]; }
        { id = 7; name = "router"; hostNetworking = true; vmNetwork.internal.router = true; }
        {
          id = 9; name = "vault"; vmNetwork.internal = { };
          guestPrograms = with pkgs; [ keepassxc ];
          guestConfig = {
            services.openssh.enable = true;
            users.users.user.openssh.authorizedKeys.keys = [ "ssh-ed25519 …" ];
          };
        }
      ];
    };
  };

  # The option tables' forms: disks, gpu, sound, shared directories,
  # vhost-user, per-VM crosvm settings, a root disk of one's own.
  devices = {
    imports = [ common ];
    programs.qubes-lite = {
      crosvm = {
        logLevel = "debug";
        extraArgs = [ "--no-syslog" ];
        extraRunArgs = [ "--no-balloon" ];
      };
      vm-switch.logLevel = "warn";
      nixosVms = [
        {
          id = 3;
          name = "work";
          additionalDisks = [{
            path = "/tmp/data.qcow2";
            ro = false;
            sparse = true;
            block-size = 4096;
            id = "data";
            direct = false;
          }];
          gpu = { context-types = "cross-domain:virgl2"; width = 1920; height = 1080; };
          sound = { backend = "pulse"; capture = true; };
          sharedDirectories = [{ path = "/tmp/shared"; tag = "shared"; type = "fs"; uid = 1000; }];
          vhostUser = [{ type = "net"; socket = "/path/to/socket"; }];
          kernelParams = [ "quiet" ];
          crosvm = { logLevel = "trace"; extraRunArgs = [ "--no-rng" ]; };
        }
        {
          id = 5;
          name = "media";
          gpu = false;
          sound = true;
          kernel = "/boot/vmlinux";
          initramfs = "/boot/initrd.img";
          rootDisk = { path = "/var/lib/media.qcow2"; sparse = false; };
          rootDiskReadonly = false;
          vmm = "crosvm";
          qemu.extraArgs = [ "-no-reboot" ];
        }
      ];
    };
  };
}
