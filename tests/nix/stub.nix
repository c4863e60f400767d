# A stand-in for the NixOS options the host and guest modules set or read,
# declared with types as close to NixOS's as can be without nixpkgs: a
# definition NixOS would refuse (a wrong type, an unknown option, two
# conflicting values) fails here too. Defaults are NixOS's where the
# modules read them; system.build holds made-up store paths.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  opt = type: default: mkOption { inherit type default; };
  strList = opt (types.listOf types.str) [ ];
  # systemd's unit settings ([Unit], [Service], …): NixOS's unitOption.
  unitScalar = types.oneOf [ types.bool types.int types.str types.path ];
  unitValue = types.either unitScalar (types.listOf unitScalar);
  settings = opt (types.attrsOf unitValue) { };
  storePath = name: "/nix/store/${builtins.substring 0 32 (builtins.hashString "sha256" name)}-${name}";

  commonUnit = {
    enable = opt types.bool true;
    description = opt types.str "";
    wantedBy = strList;
    requiredBy = strList;
    wants = strList;
    requires = strList;
    after = strList;
    before = strList;
    unitConfig = settings;
    overrideStrategy = opt (types.enum [ "asDropinIfExists" "asDropin" ]) "asDropinIfExists";
  };
  serviceType = types.submodule {
    options = commonUnit // {
      serviceConfig = settings;
      path = opt (types.listOf (types.either types.package types.str)) [ ];
      environment = opt (types.attrsOf (types.nullOr (types.oneOf [ types.str types.path types.package ]))) { };
      script = opt types.lines "";
      preStart = opt types.lines "";
    };
  };
  socketType = types.submodule {
    options = commonUnit // {
      socketConfig = settings;
      listenStreams = strList;
      listenDatagrams = strList;
    };
  };
  networkdSection = opt (types.attrsOf unitValue) { };
  networkType = types.submodule {
    options = {
      matchConfig = networkdSection;
      linkConfig = networkdSection;
      networkConfig = networkdSection;
      address = strList;
      gateway = strList;
      dns = strList;
    };
  };
  linkType = types.submodule {
    options = { matchConfig = networkdSection; linkConfig = networkdSection; };
  };
  fileSystemType = types.submodule ({ name, ... }: {
    options = {
      mountPoint = opt types.str name;
      device = opt (types.nullOr types.str) null;
      fsType = opt types.str "auto";
      options = opt (types.nonEmptyListOf types.str) [ "defaults" ];
      neededForBoot = opt types.bool false;
      depends = strList;
      label = opt (types.nullOr types.str) null;
    };
  });
  userType = types.submodule ({ name, ... }: {
    # What users.users.<name> has that the modules do not touch (openssh.*
    # among others) is taken as it comes.
    freeformType = types.attrsOf types.anything;
    options = {
      name = opt types.str name;
      uid = opt (types.nullOr types.int) null;
      isNormalUser = opt types.bool false;
      isSystemUser = opt types.bool false;
      extraGroups = strList;
      linger = opt types.bool false;
    };
  });
  etcType = types.submodule ({ name, config, ... }: {
    options = {
      enable = opt types.bool true;
      target = opt types.str name;
      text = opt (types.nullOr types.lines) null;
      source = opt (types.nullOr types.path) null;
      mode = opt types.str "symlink";
    };
  });
  sysctlValue = types.nullOr (types.oneOf [ types.bool types.str types.int ]);
in
{
  options = {
    assertions = mkOption { type = types.listOf types.unspecified; default = [ ]; };
    warnings = opt (types.listOf types.str) [ ];

    environment = {
      etc = opt (types.attrsOf etcType) { };
      systemPackages = opt (types.listOf types.package) [ ];
      pathsToLink = strList;
    };

    programs.bash.interactiveShellInit = opt types.lines "";

    users.users = opt (types.attrsOf userType) { };
    users.mutableUsers = opt types.bool true;

    boot = {
      loader.grub.enable = opt types.bool true;
      kernelParams = strList;
      kernelModules = strList;
      blacklistedKernelModules = strList;
      extraModprobeConfig = opt types.lines "";
      kernel.sysctl = opt (types.attrsOf sysctlValue) { };
      initrd = {
        kernelModules = strList;
        availableKernelModules = strList;
        preDeviceCommands = opt types.lines "";
        systemd.enable = opt types.bool false;
        systemd.services = opt (types.attrsOf serviceType) { };
      };
    };

    fileSystems = opt (types.attrsOf fileSystemType) { };

    systemd = {
      services = opt (types.attrsOf serviceType) { };
      sockets = opt (types.attrsOf socketType) { };
      user.services = opt (types.attrsOf serviceType) { };
      generators = opt (types.attrsOf types.path) { };
      packages = opt (types.listOf types.package) [ ];
      network = {
        enable = opt types.bool false;
        networks = opt (types.attrsOf networkType) { };
        links = opt (types.attrsOf linkType) { };
      };
    };

    networking = {
      hostName = opt types.str "nixos";
      useDHCP = opt types.bool true;
      useNetworkd = opt types.bool false;
      nameservers = strList;
      interfaces = opt
        (types.attrsOf (types.submodule {
          options = {
            virtual = opt types.bool false;
            virtualType = opt (types.nullOr (types.enum [ "tun" "tap" ])) null;
            virtualOwner = opt types.str "root";
            ipv4.addresses = opt
              (types.listOf (types.submodule {
                options = {
                  address = mkOption { type = types.str; };
                  prefixLength = mkOption { type = types.addCheck types.int (n: n >= 0 && n <= 32); };
                };
              })) [ ];
          };
        })) { };
      nat = {
        enable = opt types.bool false;
        externalInterface = opt (types.nullOr types.str) null;
        internalIPs = strList;
        internalInterfaces = strList;
      };
      firewall.enable = opt types.bool true;
    };

    services = {
      openssh = {
        enable = opt types.bool false;
        startWhenNeeded = opt types.bool false;
        openFirewall = opt types.bool true;
      };
      getty.autologinUser = opt (types.nullOr types.str) null;
    };

    hardware.graphics.enable = opt types.bool false;
    nix.enable = opt types.bool true;
    documentation.enable = opt types.bool true;

    system = {
      stateVersion = opt types.str "";
      boot.loader.kernelFile = opt types.str "bzImage";
      boot.loader.initrdFile = opt types.str "initrd";
      build = mkOption {
        type = types.lazyAttrsOf types.unspecified;
        default = { };
      };
    };
  };

  config.system.build = {
    toplevel = lib.mkDefault (storePath "nixos-system-${config.networking.hostName}");
    kernel = lib.mkDefault (storePath "linux-6.12");
    initialRamdisk = lib.mkDefault (storePath "initrd-linux-6.12");
  };
}
