# What the Python tests look at, as JSON: nix-instantiate --eval --strict
# --json tests/nix/eval.nix --argstr libPath LIB --argstr what host|guest|flake …
#
#   host   the host module with one of examples.nix (example), or a
#          configuration given as JSON (configJSON) and/or as a Nix
#          expression (extra): its /etc files, failed assertions and the
#          NixOS settings it makes, and each guest's
#   guest  the guest module alone, with qubes-lite.guest set from JSON
#   flake  flake.nix's outputs, called with a stand-in nixpkgs
{ libPath
, what
, example ? null
, configJSON ? "{}"
, extra ? { }
, guestJSON ? "{}"
, outPaths ? { }
}:
let
  lib = import libPath;
  root = ../..;
  pkgs = import ./stub-pkgs.nix { inherit lib outPaths; };
  examples = import ./examples.nix;

  failed = c: map (a: a.message) (lib.filter (a: !a.assertion) c.assertions);
  drvInfo = d: { name = d.name; path = toString d.outPath; }
    // lib.optionalAttrs (d ? buildCommand) { inherit (d) buildCommand; };
  unit = u: {
    inherit (u) description wantedBy after before requires unitConfig overrideStrategy;
  } // lib.optionalAttrs (u ? serviceConfig) { inherit (u) serviceConfig script; path = map toString u.path; }
    // lib.optionalAttrs (u ? socketConfig) { inherit (u) socketConfig listenStreams; };

  guestView = sys:
    let c = sys.config; in {
      failedAssertions = failed c;
      hostName = c.networking.hostName;
      sockets = lib.mapAttrs (_: unit) c.systemd.sockets;
      services = lib.mapAttrs (_: unit) c.systemd.services;
      userServices = lib.mapAttrs (_: unit) c.systemd.user.services;
      fileSystems = lib.mapAttrs (_: f: { inherit (f) device fsType options neededForBoot depends; }) c.fileSystems;
      network = {
        inherit (c.networking) useDHCP useNetworkd nameservers;
        enable = c.systemd.network.enable;
        networks = c.systemd.network.networks;
        links = c.systemd.network.links;
      };
      users = lib.mapAttrs
        (_: u: { inherit (u) name uid isNormalUser extraGroups linger; }
          // lib.optionalAttrs (u ? openssh) { inherit (u) openssh; })
        c.users.users;
      packages = map toString c.environment.systemPackages;
      kernelParams = c.boot.kernelParams;
      initrdModules = {
        inherit (c.boot.initrd) availableKernelModules kernelModules;
        systemd = c.boot.initrd.systemd.enable;
      };
      kernelModules = c.boot.kernelModules;
      openssh = { inherit (c.services.openssh) enable startWhenNeeded openFirewall; };
      autologinUser = c.services.getty.autologinUser;
      graphics = c.hardware.graphics.enable;
      image = drvInfo c.system.build.qubesLiteImage // {
        inherit (c.system.build.qubesLiteImage.env) storePaths volumeLabel;
      };
      toplevel = c.system.build.toplevel;
      kernel = "${c.system.build.kernel}/${c.system.boot.loader.kernelFile}";
      initrd = "${c.system.build.initialRamdisk}/${c.system.boot.loader.initrdFile}";
    };

  host =
    let
      userModule = if example != null then examples.${example} else { };
      sys = pkgs.nixos [
        (root + "/nix/module.nix")
        userModule
        (builtins.fromJSON configJSON)
        extra
      ];
      c = sys.config;
      q = c.programs.qubes-lite;
    in
    {
      failedAssertions = failed c;
      etc = lib.mapAttrs (_: e: e.text) (lib.filterAttrs (n: _: lib.hasPrefix "qubes-lite/" n) c.environment.etc);
      otherEtc = lib.attrNames (lib.filterAttrs (n: _: !lib.hasPrefix "qubes-lite/" n) c.environment.etc);
      systemPackages = map (p: if p ? buildCommand then drvInfo p else toString p) c.environment.systemPackages;
      generators = lib.mapAttrs (_: toString) c.systemd.generators;
      services = lib.mapAttrs (_: unit) c.systemd.services;
      interfaces = c.networking.interfaces;
      nat = c.networking.nat;
      sysctl = c.boot.kernel.sysctl;
      initrd = {
        inherit (c.boot.initrd) kernelModules preDeviceCommands;
        systemdServices = lib.mapAttrs (_: unit) c.boot.initrd.systemd.services;
      };
      extraModprobeConfig = c.boot.extraModprobeConfig;
      bashInit = c.programs.bash.interactiveShellInit;
      user = if q.enable then { name = q.user; uid = c.users.users.${q.user}.uid or null; } else null;
      guests = if q.enable then lib.mapAttrs (_: guestView) q.guestSystems else { };
    };

  guest = guestView (pkgs.nixos [
    (root + "/rootfs/guest.nix")
    { qubes-lite.guest = builtins.fromJSON guestJSON; }
    extra
  ]);

  # flake.nix's outputs with a stand-in nixpkgs: the real lib, stub
  # package sets. `self` is the outputs themselves, as Nix passes them.
  flake =
    let
      nixpkgs = {
        inherit lib;
        legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ]
          (system: import ./stub-pkgs.nix { inherit lib system outPaths; });
      };
      outputs = (import (root + "/flake.nix")).outputs { inherit self nixpkgs; };
      self = outputs // { outPath = toString root; };
      checks = outputs.checks.x86_64-linux;
    in
    {
      description = (import (root + "/flake.nix")).description;
      inputs = lib.attrNames (import (root + "/flake.nix")).inputs;
      nixosModules = lib.mapAttrs (_: toString) outputs.nixosModules;
      packages = lib.mapAttrs
        (_: lib.mapAttrs (_: p: {
          inherit (p) name;
          path = toString p.outPath;
          args = removeAttrs p.args [ "src" "meta" ];
        }))
        outputs.packages;
      checkNames = lib.mapAttrs (_: lib.attrNames) outputs.checks;
      checks = lib.mapAttrs
        (_: d: drvInfo d // { nativeBuildInputs = map toString (d.env.nativeBuildInputs or [ ]); })
        (removeAttrs checks [ "package" ]);
      checkPackage = toString checks.package.outPath;
      # What the package's source keeps of the tree.
      srcKeeps =
        let src = outputs.packages.x86_64-linux.default.args.src; r = toString root;
        in lib.mapAttrs (p: type: src.filter "${r}/${p}" type) {
          "build" = "directory"; "host" = "directory"; ".git" = "directory";
          "result" = "symlink"; "Makefile" = "regular"; "nix/module.nix" = "regular";
        };
    };
in
{
  inherit host guest flake;
}.${what}
