# programs.qubes-lite: the host side of qubes-lite on NixOS.
#
# The module is thin on purpose. It writes the configuration as JSON with
# the option names as keys (/etc/qubes-lite/host.json and one
# vms/<name>.json per VM), and the C programs do the rest: the systemd
# generator turns those files into units at boot and on daemon-reload, the
# host agent builds crosvm's command line from them. The module adds what
# only NixOS can do: the packages, the guest images, the persistent TAP
# interfaces, NAT, binding isolated PCI devices to vfio-pci in the initrd,
# bash completion and desktop entries for the guests' programs.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption mkIf mkMerge types optional optionals optionalAttrs concatLists
    imap0 mapAttrsToList filter length head elem;

  cfg = config.programs.qubes-lite;
  ql = import ./lib.nix { inherit lib; };

  logLevel = types.enum [ "error" "warn" "info" "debug" "trace" ];
  scalar = types.oneOf [ types.str types.int types.bool ];

  # The free-form sets handed to crosvm: declared keys plus any others,
  # each a string, an integer or a boolean.
  freeform = options: types.submodule { freeformType = types.attrsOf scalar; inherit options; };
  diskType = freeform {
    path = mkOption {
      type = types.str;
      example = "/tmp/data.qcow2";
      description = "The disk image or block device (crosvm's positional argument).";
    };
  };
  sharedDirectoryType = freeform {
    path = mkOption { type = types.str; example = "/tmp/shared"; description = "The host directory."; };
    tag = mkOption { type = types.str; example = "shared"; description = "The tag the guest mounts."; };
  };
  pciDeviceType = freeform {
    path = mkOption {
      type = types.str;
      example = "01:00.0";
      description = "The device's PCI address (BB:DD.F or DDDD:BB:DD.F).";
    };
  };
  vhostUserType = freeform {
    type = mkOption { type = types.str; example = "net"; description = "The device type."; };
    socket = mkOption { type = types.str; description = "The backend's socket."; };
  };
  featureType = types.either types.bool (types.attrsOf scalar);

  vmNetworkType = types.submodule {
    options = {
      router = mkOption {
        type = types.bool;
        default = false;
        description = ''
          This VM is the network's router (exactly one per network): it reaches every
          client, the clients reach only it.
        '';
      };
      macAddress = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "52:ab:cd:ef:12:34";
        description = "The VM's MAC on this network; by default derived from the network's and the VM's names.";
      };
    };
  };

  vmType = types.submodule {
    options = {
      id = mkOption {
        type = types.int;
        example = 3;
        description = "VM ID (odd number 3-255). Used for IP and vsock CID.";
      };
      name = mkOption {
        type = types.str;
        example = "banking";
        description = "VM name for scripts and TAP interface ([a-z][a-z0-9-], at most 12 characters).";
      };
      memory = mkOption { type = types.int; default = 1024; description = "Memory allocation in MB."; };
      cpus = mkOption { type = types.int; default = 2; description = "Number of virtual CPUs."; };
      hostNetworking = mkOption {
        type = types.bool;
        default = false;
        description = "Enable host networking (tap interface) and NATed internet access.";
      };
      disposable = mkOption {
        type = types.bool;
        default = false;
        description = "Auto-shutdown when idle (after idleTimeout seconds).";
      };
      idleTimeout = mkOption {
        type = types.int;
        default = 60;
        description = "Seconds to wait before shutdown (when disposable = true).";
      };
      additionalDisks = mkOption {
        type = types.listOf diskType;
        default = [ ];
        example = [{ path = "/tmp/data.qcow2"; ro = false; sparse = true; }];
        description = "Additional disks: free-form sets passed to crosvm --block, path positional.";
      };
      rootDisk = mkOption {
        type = types.nullOr (types.either types.str diskType);
        default = null;
        description = "Custom root disk (defaults to the VM's built image).";
      };
      kernel = mkOption {
        type = types.nullOr types.path;
        default = null;
        description = "Custom kernel image (defaults to the built guest's).";
      };
      initramfs = mkOption {
        type = types.nullOr types.path;
        default = null;
        description = "Custom initramfs (defaults to the built guest's).";
      };
      rootDiskReadonly = mkOption {
        type = types.bool;
        default = true;
        description = "Whether root disk is read-only.";
      };
      kernelParams = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Extra kernel command line parameters.";
      };
      gpu = mkOption {
        type = featureType;
        default = true;
        description = ''
          GPU config (false = disabled, true = context-types=cross-domain:virgl2,
          attrset = crosvm --gpu pairs).
        '';
      };
      sound = mkOption {
        type = featureType;
        default = false;
        description = ''
          Sound config (false = disabled, true = default PulseAudio, attrset = crosvm
          --virtio-snd pairs).
        '';
      };
      sharedDirectories = mkOption {
        type = types.listOf sharedDirectoryType;
        default = [ ];
        description = "Shared directories with path, tag, and optional pairs (crosvm --shared-dir).";
      };
      pciDevices = mkOption {
        type = types.listOf pciDeviceType;
        default = [ ];
        description = "PCI devices to pass through (path + optional pairs; crosvm --vfio).";
      };
      guestPrograms = mkOption {
        type = types.listOf types.package;
        default = [ ];
        description = "VM-specific packages, installed in the VM; their .desktop files become host launchers.";
      };
      guestConfig = mkOption {
        type = types.attrs;
        default = { };
        description = "VM-specific NixOS configuration, merged last into the guest's.";
      };
      vmNetwork = mkOption {
        type = types.attrsOf vmNetworkType;
        default = { };
        example = { internal.router = true; };
        description = "VM networks for VM-to-VM communication (one vm-switch each).";
      };
      vhostUser = mkOption {
        type = types.listOf vhostUserType;
        default = [ ];
        description = "vhost-user devices (crosvm --vhost-user); the vmNetwork ones are added by the host agent.";
      };
      crosvm = {
        logLevel = mkOption {
          type = types.nullOr logLevel;
          default = null;
          description = "Per-VM log level override (uses global if null).";
        };
        extraArgs = mkOption {
          type = types.listOf types.str;
          default = [ ];
          description = "Per-VM extra args (appended to global crosvm.extraArgs).";
        };
        extraRunArgs = mkOption {
          type = types.listOf types.str;
          default = [ ];
          description = "Per-VM extra run args (appended to global crosvm.extraRunArgs).";
        };
      };
      vmm = mkOption {
        type = types.nullOr (types.enum [ "crosvm" "qemu" ]);
        default = null;
        description = "This VM's VMM (uses the global vmm if null).";
      };
      qemu.extraArgs = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Per-VM extra qemu args (appended to global qemu.extraArgs).";
      };
    };
  };

  vms = cfg.nixosVms;
  hostNet = ql.parseNetwork cfg.hostNetworking.network;
  userEntry = config.users.users.${cfg.user} or null;
  userUid = if userEntry == null then null else userEntry.uid;

  # ---- the guests ---------------------------------------------------------

  # What the guest module needs to know of its VM.
  guestSettings = vm: {
    qubes-lite.guest = {
      enable = true;
      inherit (vm) name id;
      package = cfg.package;
      # (without a uid the host's assertion fails; the guest's default stands in)
      user = { name = cfg.user; } // lib.optionalAttrs (userUid != null) { uid = userUid; };
      idleTimeout = if vm.disposable then vm.idleTimeout else 0;
      hostNetworking = { enable = vm.hostNetworking; network = cfg.hostNetworking.network; };
      vmNetwork = lib.mapAttrs
        (net: n: { macAddress = ql.macOf net vm.name n.macAddress; inherit (n) router; })
        vm.vmNetwork;
      gpu = vm.gpu != false;
    };
  };

  # The VM's NixOS, guestConfig last.
  guestSystem = vm: pkgs.nixos [
    ../rootfs/guest.nix
    (guestSettings vm)
    { environment.systemPackages = vm.guestPrograms; }
    { _file = "programs.qubes-lite.nixosVms (VM '${vm.name}').guestConfig"; imports = [ vm.guestConfig ]; }
  ];

  built = vm:
    let c = cfg.guestSystems.${vm.name}.config;
    in {
      kernel = "${c.system.build.kernel}/${c.system.boot.loader.kernelFile}";
      initramfs = "${c.system.build.initialRamdisk}/${c.system.boot.loader.initrdFile}";
      rootDisk = "${c.system.build.qubesLiteImage}";
      kernelParams = c.boot.kernelParams ++ [ "init=${c.system.build.toplevel}/init" ];
    };

  # ---- the JSON files: option names as keys, values as evaluated ----------

  hostJSON = {
    inherit (cfg) user hostNetworking enableBashIntegration isolatedPciDevices vmm qemu;
    crosvm = removeAttrs cfg.crosvm [ "package" ];
    vm-switch = cfg.vm-switch;
  };

  # Nix-only options are left out; the built image's kernel, initramfs and
  # root disk (with the kernel parameters its init needs) fill in what the
  # user did not give.
  vmJSON = vm:
    let b = built vm;
    in removeAttrs vm [ "guestPrograms" "guestConfig" ] // {
      kernel = if vm.kernel != null then vm.kernel else b.kernel;
      initramfs = if vm.initramfs != null then vm.initramfs else b.initramfs;
      rootDisk = if vm.rootDisk != null then vm.rootDisk else b.rootDisk;
      kernelParams = optionals (vm.rootDisk == null) b.kernelParams ++ vm.kernelParams;
    };

  # ---- assertions, in --check's words -------------------------------------

  hostProblem = key: reason: "programs.qubes-lite: key '${key}': ${reason}";
  vmProblem = vm: key: reason: "programs.qubes-lite.nixosVms (VM '${vm.name}'): key '${key}': ${reason}";
  check = cond: msg: { assertion = cond; message = msg; };
  range = vm: key: min: max: v:
    check (v >= min && v <= max)
      (vmProblem vm key "must be from ${toString min} to ${toString max}, not ${toString v}");
  pciReason = s: "'${s}' is not a PCI address (BB:DD.F or DDDD:BB:DD.F)";
  pathProblems = vm: key: s:
    optional (!ql.absolutePath s) (vmProblem vm key "'${s}' is not an absolute path");

  deviceAssertions = vm: key: kind: d:
    let
      sep = if kind == "shared" then ":" else ",";
      declared = {
        disk = [ "path" ];
        root = [ "path" ];
        shared = [ "path" "tag" ];
        pci = [ "path" ];
        vhost = [ ];
      }.${kind};
      rest = removeAttrs d declared;
      reserved = {
        disk = optional (rest ? root) (vmProblem vm "${key}.root" "only rootDisk is the root device");
        root = optional (rest ? ro) (vmProblem vm "${key}.ro" "set by rootDiskReadonly, not here")
          ++ optional (rest ? root) (vmProblem vm "${key}.root" "always set for the root disk, not here");
      }.${kind} or [ ];
      pathMsgs =
        if kind == "pci" then optional (ql.pciCanonical d.path == null) (vmProblem vm "${key}.path" (pciReason d.path))
        else if kind == "vhost" then [ ]
        else pathProblems vm "${key}.path" d.path;
      tagMsgs = optionals (kind == "shared")
        (if d.tag == "" then [ (vmProblem vm "${key}.tag" "must be a non-empty string") ]
         else map (m: "programs.qubes-lite.nixosVms (VM '${vm.name}'): ${m}")
           (ql.optionProblems key sep { inherit (d) tag; }));
      pairMsgs = map (m: "programs.qubes-lite.nixosVms (VM '${vm.name}'): ${m}")
        (ql.optionProblems key sep (removeAttrs rest (if kind == "disk" then [ "root" ] else [ "ro" "root" ])));
    in
    map (m: check false m) (reserved ++ pathMsgs ++ tagMsgs ++ pairMsgs);

  devicesAssertions = vm: key: kind: list:
    concatLists (imap0 (i: d: deviceAssertions vm "${key}[${toString i}]" kind d) list);

  featureAssertions = vm: key: v:
    optionals (builtins.isAttrs v)
      (if v == { } then [ (check false (vmProblem vm key "an empty attribute set: use true for the default")) ]
       else map (m: check false "programs.qubes-lite.nixosVms (VM '${vm.name}'): ${m}") (ql.optionProblems key "," v));

  vmAssertions = vm:
    [
      (check (ql.vmNameValid vm.name) (vmProblem vm "name"
        "'${vm.name}' is not a valid VM name ([a-z][a-z0-9-], at most ${toString ql.vmNameMax}: the TAP is vm-<name>)"))
      (check (vm.id >= 3 && vm.id <= 255 && lib.mod vm.id 2 == 1) (vmProblem vm "id"
        "must be odd and from 3 to 255, not ${toString vm.id}"))
      (check (!vm.hostNetworking || hostNet == null || vm.id <= ql.networkIdMax hostNet) (vmProblem vm "id"
        "${toString vm.id} has no /31 in hostNetworking.network ${cfg.hostNetworking.network}, which holds ids up to ${toString (if hostNet == null then 0 else ql.networkIdMax hostNet)}"))
      (range vm "memory" 1 16777216 vm.memory)
      (range vm "cpus" 1 1024 vm.cpus)
      (range vm "idleTimeout" 1 31622400 vm.idleTimeout)
    ]
    ++ map (m: check false m) (concatLists [
      (optionals (vm.kernel != null) (pathProblems vm "kernel" (toString vm.kernel)))
      (optionals (vm.initramfs != null) (pathProblems vm "initramfs" (toString vm.initramfs)))
      (optionals (builtins.isString vm.rootDisk) (pathProblems vm "rootDisk" vm.rootDisk))
    ])
    ++ optionals (builtins.isAttrs vm.rootDisk) (deviceAssertions vm "rootDisk" "root" vm.rootDisk)
    ++ devicesAssertions vm "additionalDisks" "disk" vm.additionalDisks
    ++ devicesAssertions vm "sharedDirectories" "shared" vm.sharedDirectories
    ++ devicesAssertions vm "pciDevices" "pci" vm.pciDevices
    ++ devicesAssertions vm "vhostUser" "vhost" vm.vhostUser
    ++ featureAssertions vm "gpu" vm.gpu
    ++ featureAssertions vm "sound" vm.sound
    ++ concatLists (mapAttrsToList
      (net: n:
        [
          (check (ql.netNameValid net) (vmProblem vm "vmNetwork.${net}"
            "'${net}' is not a valid network name ([a-z][a-z0-9-], at most ${toString ql.netNameMax})"))
        ]
        ++ optionals (n.macAddress != null) [
          (check (ql.macValid n.macAddress) (vmProblem vm "vmNetwork.${net}.macAddress"
            "'${n.macAddress}' is not a VM's MAC address (52:ab:cd:ef:12:34: unicast, not all zero)"))
        ])
      vm.vmNetwork);

  # What only the whole set shows, reported at the later VM.
  earlier = i: lib.take i vms;
  crossAssertions = concatLists (imap0
    (i: vm:
      let before = earlier i; in
      concatLists [
        (map (o: check false (vmProblem vm "id" "${toString vm.id} is already the id of VM '${o.name}'"))
          (filter (o: o.id == vm.id) before))
        (map (o: check false (vmProblem vm "name" "'${vm.name}' is already the name of another VM"))
          (lib.take 1 (filter (o: o.name == vm.name) before)))
        (concatLists (imap0
          (x: d:
            let bdf = ql.pciCanonical d.path; in
            map (o: check false (vmProblem vm "pciDevices[${toString x}].path"
              "${bdf} is already given to VM '${o.name}'"))
              (filter (o: bdf != null && lib.any (e: ql.pciCanonical e.path == bdf) o.pciDevices) before))
          vm.pciDevices))
        (concatLists (mapAttrsToList
          (net: n:
            let
              # as the C side: a MAC given but not valid counts as not given
              usable = m: if m != null && ql.macValid m then m else null;
              mac = ql.macOf net vm.name (usable n.macAddress);
              macOfOther = o: ql.macOf net o.name (usable o.vmNetwork.${net}.macAddress);
            in
            map (o: check false (vmProblem vm "vmNetwork.${net}.macAddress"
              "${mac} is already the MAC of VM '${o.name}' on that network"))
              (filter (o: builtins.hasAttr net o.vmNetwork && macOfOther o == mac) before))
          (lib.filterAttrs (net: _: ql.netNameValid net) vm.vmNetwork)))
      ])
    vms);

  # Networks with a valid name (the others are reported as such).
  networks = filter ql.netNameValid (lib.unique (concatLists (map (vm: lib.attrNames vm.vmNetwork) vms)));
  # A router after the first is reported at itself, naming the first (in
  # the order of the files' names, as --check reads them); a network
  # without one at its first member.
  byFileName = lib.sort (a: b: "${a.name}.json" < "${b.name}.json");
  routerAssertions = concatLists (map
    (net:
      let
        members = filter (vm: builtins.hasAttr net vm.vmNetwork) vms;
        routers = byFileName (filter (vm: vm.vmNetwork.${net}.router) members);
      in
      [
        (check (routers != [ ]) (vmProblem (head members) "vmNetwork.${net}"
          "network '${net}' has 0 routers; it needs exactly one (router = true)"))
      ]
      ++ map
        (vm: check false (vmProblem vm "vmNetwork.${net}.router"
          "network '${net}' already has a router, VM '${(head routers).name}'"))
        (lib.drop 1 routers))
    networks);

  nat = cfg.hostNetworking.nat;
  hostAssertions =
    [
      (check (ql.userNameValid cfg.user) (hostProblem "user" "'${cfg.user}' is not a valid user name"))
      (check (userEntry != null) (hostProblem "user"
        "no such user '${cfg.user}' (declare users.users.${cfg.user}, with an explicit uid)"))
      (check (userEntry == null || userUid != null) (hostProblem "user"
        "users.users.${cfg.user}.uid must be set: the VMs' files, Wayland socket and guest user follow the uid"))
      (check (hostNet != null) (hostProblem "hostNetworking.network"
        ("'${cfg.hostNetworking.network}' is not an IPv4 network a.b.c.d/N (N from ${toString ql.networkPrefixMin} "
          + "to ${toString ql.networkPrefixMax}, host part 0) such as 172.16.200.0/24")))
      # An interface that is not valid counts as none, as in --check.
      (check (!nat.enable || (nat.interface != "" && ql.ifnameValid nat.interface))
        (hostProblem "hostNetworking.nat.interface"
          "missing (required when hostNetworking.nat.enable is true)"))
      (check (nat.interface == "" || ql.ifnameValid nat.interface)
        (hostProblem "hostNetworking.nat.interface" "'${nat.interface}' is not a network interface name"))
    ]
    ++ imap0 (i: s: check (ql.pciCanonical s != null) (hostProblem "isolatedPciDevices[${toString i}]" (pciReason s)))
      cfg.isolatedPciDevices;

  # ---- host networking, vfio, desktop entries -----------------------------

  hostNetVms = filter (vm: vm.hostNetworking) vms;
  isolated = lib.unique (filter (s: s != null) (map ql.pciCanonical cfg.isolatedPciDevices));

  # Claims each isolated device for vfio-pci by address before udev loads
  # the native drivers: driver_override, off its driver if one took it,
  # then a probe, which binds it to the vfio-pci already loaded. Every
  # other device keeps its driver. QUBES_LITE_SYSFS_ROOT is for tests.
  vfioScript = ''
    # qubes-lite: bind the isolated PCI devices to vfio-pci
    sysfs="''${QUBES_LITE_SYSFS_ROOT:-/sys}"
    for dev in ${lib.concatStringsSep " " isolated}; do
      d="$sysfs/bus/pci/devices/$dev"
      if [ ! -e "$d" ]; then
        echo "qubes-lite: isolated PCI device $dev not found" >&2
        continue
      fi
      echo vfio-pci > "$d/driver_override"
      if [ -e "$d/driver" ]; then
        echo "$dev" > "$d/driver/unbind"
      fi
      echo "$dev" > "$sysfs/bus/pci/drivers_probe"
    done
  '';

  desktopEntries = vm:
    let programs = lib.escapeShellArgs (map toString vm.guestPrograms); in
    pkgs.runCommand "qubes-lite-${vm.name}-desktop-entries" { } ''
      ${pkgs.runtimeShell} ${./desktop-entries.sh} ${lib.escapeShellArg vm.name} "$out" ${programs}
    '';
in
{
  options.programs.qubes-lite = {
    enable = lib.mkEnableOption "qubes-lite VM management";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage <qubes-lite/nix/package.nix> { }";
      description = "The qubes-lite package to use (host programs, generator, guest agent).";
    };

    user = mkOption {
      type = types.str;
      example = "david";
      description = "User who owns TAP interfaces and runs VMs (must have an explicit UID in users.users).";
    };

    hostNetworking = {
      network = mkOption {
        type = types.str;
        default = "172.16.200.0/24";
        description = "Network CIDR for host networking, a prefix from /1 to /30 that holds every hostNetworking VM's /31: VM <base>+<id>, host end of its /31 <base>+<id-1>.";
      };
      nat = {
        enable = mkOption { type = types.bool; default = false; description = "Enable NAT for VM internet access."; };
        interface = mkOption {
          type = types.str;
          default = "";
          example = "eth0";
          description = "External interface for NAT (required if nat.enable).";
        };
      };
    };

    nixosVms = mkOption {
      type = types.listOf vmType;
      default = [ ];
      description = "List of NixOS-based VMs to create.";
    };

    enableBashIntegration = mkOption {
      type = types.bool;
      default = true;
      description = "Enable bash completion for vm-* commands.";
    };

    crosvm = {
      package = lib.mkPackageOption pkgs "crosvm" { };
      logLevel = mkOption { type = logLevel; default = "info"; description = "Log level for crosvm."; };
      extraArgs = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Extra args passed to crosvm before the run subcommand.";
      };
      extraRunArgs = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Extra args passed to crosvm after the run subcommand.";
      };
    };

    vm-switch = {
      logLevel = mkOption { type = logLevel; default = "info"; description = "Log level for the vm-switch daemon."; };
      extraArgs = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Extra command line arguments for the vm-switch daemon.";
      };
    };

    isolatedPciDevices = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "01:00.0" ];
      description = "PCI devices to isolate with vfio-pci (claimed in the initrd, before other drivers).";
    };

    vmm = mkOption {
      type = types.enum [ "crosvm" "qemu" ];
      default = "crosvm";
      description = "The VMM that runs the VMs (overridable per VM).";
    };

    qemu.extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Extra args passed to qemu.";
    };

    guestSystems = mkOption {
      type = types.lazyAttrsOf types.unspecified;
      internal = true;
      readOnly = true;
      description = ''
        Each VM's NixOS (pkgs.nixos of rootfs/guest.nix, its settings, guestPrograms
        and guestConfig), by VM name: what its image, kernel and initrd are built from.
      '';
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      programs.qubes-lite.guestSystems = lib.listToAttrs (map (vm: lib.nameValuePair vm.name (guestSystem vm)) vms);

      assertions = hostAssertions ++ concatLists (map vmAssertions vms) ++ crossAssertions ++ routerAssertions;

      environment.etc = {
        "qubes-lite/host.json".text = builtins.toJSON hostJSON;
      } // lib.listToAttrs (map
        (vm: lib.nameValuePair "qubes-lite/vms/${vm.name}.json" { text = builtins.toJSON (vmJSON vm); })
        vms);

      environment.systemPackages = [ cfg.package ]
        ++ map desktopEntries (filter (vm: vm.guestPrograms != [ ]) vms);

      # The units come from the generator (at boot and on daemon-reload);
      # NixOS only adds what its services lack here: crosvm on the PATH.
      systemd.generators.qubes-lite-generator =
        "${cfg.package}/lib/systemd/system-generators/qubes-lite-generator";
      systemd.services = lib.listToAttrs (map
        (vm: lib.nameValuePair "qubes-lite-${vm.name}-vm" {
          overrideStrategy = "asDropin";
          path = [ cfg.crosvm.package ];
        })
        vms);
    }

    (mkIf (hostNet != null) {
      networking.interfaces = lib.listToAttrs (map
        (vm: lib.nameValuePair "vm-${vm.name}" {
          virtual = true;
          virtualType = "tap";
          virtualOwner = cfg.user;
          ipv4.addresses = [{ address = ql.hostAddress hostNet vm.id; prefixLength = 31; }];
        })
        hostNetVms);
    })

    (mkIf (cfg.hostNetworking.nat.enable && hostNet != null) {
      boot.kernel.sysctl."net.ipv4.ip_forward" = 1;
      networking.nat = {
        enable = true;
        externalInterface = cfg.hostNetworking.nat.interface;
        internalIPs = map (vm: "${ql.vmAddress hostNet vm.id}/32") hostNetVms;
      };
    })

    (mkIf (isolated != [ ]) {
      boot.initrd.kernelModules = [ "vfio-pci" ];
      boot.initrd.preDeviceCommands = mkIf (!config.boot.initrd.systemd.enable) vfioScript;
      boot.initrd.systemd.services.qubes-lite-vfio = mkIf config.boot.initrd.systemd.enable {
        description = "qubes-lite: bind the isolated PCI devices to vfio-pci";
        wantedBy = [ "sysinit.target" ];
        after = [ "systemd-modules-load.service" ];
        before = [ "systemd-udev-trigger.service" "sysinit.target" ];
        unitConfig.DefaultDependencies = false;
        serviceConfig.Type = "oneshot";
        script = vfioScript;
      };
    })

    (mkIf cfg.enableBashIntegration {
      programs.bash.interactiveShellInit = ''
        source ${cfg.package}/share/bash-completion/completions/vm-run
      '';
    })
  ]);
}
