# A stand-in for nixpkgs' package set: derivations are attribute sets
# that record what they were given and have a made-up store path, so that
# the modules can be evaluated (and what they would build looked at)
# without nixpkgs. callPackage, stdenv.mkDerivation, runCommand and nixos
# behave as nixpkgs' do for what the modules use; `nixos` evaluates
# modules with the stub NixOS options (stub.nix). `outPaths` points some
# packages at real directories, for tests that run what was generated.
{ lib, system ? "x86_64-linux", outPaths ? { } }:
let
  storePath' = inputs: name:
    "/nix/store/${builtins.substring 0 32 (builtins.hashString "sha256" (inputs + name))}-${name}";
  storePath = storePath' "";
  # `inputs` tells apart derivations of the same name, as a real hash would.
  drv' = name: inputs: attrs: attrs // {
    inherit name;
    type = "derivation";
    outPath = outPaths.${name} or (storePath' inputs name);
    drvPath = storePath "${name}.drv";
  };
  drv = name: drv' name "";
  package = name: drv name { pname = name; };

  pkgs = {
    inherit lib pkgs;
    stdenv = {
      hostPlatform.system = system;
      mkDerivation = args: drv (args.name or "${args.pname}-${args.version}") { inherit args; };
    };
    callPackage = fn: args:
      let f = if builtins.isFunction fn then fn else import fn;
      in f (builtins.intersectAttrs (builtins.functionArgs f) pkgs // args);
    runCommand = name: env: buildCommand:
      drv' name (builtins.toJSON env + buildCommand) { inherit env buildCommand; };
    runtimeShell = "${storePath "bash-5.2"}/bin/bash";

    # The NixOS of the stubbed options; as nixpkgs' pkgs.nixos, the
    # system.build attributes beside the evaluation's own.
    nixos = modules:
      let
        ev = lib.evalModules {
          modules = [ ./stub.nix { _module.args.pkgs = pkgs; } ]
            ++ (if builtins.isList modules then modules else [ modules ]);
          specialArgs.modulesPath = toString ./fake-nixos/modules;
        };
      in
      ev.config.system.build // ev;
  }
  // lib.genAttrs [
    # what package.nix takes
    "pkg-config" "protobufc" "libseccomp" "libcap" "systemd" "wayland" "jansson" "libmnl"
    # what the modules and the examples use
    "crosvm" "wayland-proxy-virtwl" "nss_wrapper" "firefox" "xfce4-terminal" "libreoffice" "keepassxc"
    # what nixos/lib/make-ext4-fs.nix takes
    "e2fsprogs" "libfaketime" "perl" "lkl"
  ] package;
in
pkgs
