# The flake's checks: the package, and each example of the README (the
# ones in tests/nix/examples.nix) evaluated as a whole NixOS system with
# the host module; the JSON files it writes must pass the programs' own
# `--check` (`--config-only`: the build has the configuration, not the
# machine's kernels and disks), give every VM a crosvm command line and the generator its
# units. The user is made known to the programs through nss_wrapper (the
# build sandbox has no such account). The guest images themselves are not
# built here: only the configuration is checked.
{ pkgs, package, module }:
let
  inherit (pkgs) lib;
  examples = import ../tests/nix/examples.nix;

  system = ex: pkgs.nixos [
    module
    ex
    {
      programs.qubes-lite.package = package;
      # What a bootable system needs and the examples leave out.
      boot.loader.grub.enable = false;
      fileSystems."/" = { device = "none"; fsType = "tmpfs"; };
      system.stateVersion = lib.trivial.release;
    }
  ];

  script = name: ex:
    let
      c = (system ex).config;
      q = c.programs.qubes-lite;
      uid = toString c.users.users.${q.user}.uid;
      files = lib.filterAttrs (n: _: lib.hasPrefix "qubes-lite/" n) c.environment.etc;
      vms = map (vm: vm.name) q.nixosVms;
      write = n: f:
        let text = lib.escapeShellArg (builtins.unsafeDiscardStringContext f.text);
        in "printf '%s' ${text} > etc/${lib.removePrefix "qubes-lite/" n}\n";
    in
    ''
      set -eu
      mkdir -p etc/vms units
      ${lib.concatStrings (lib.mapAttrsToList write files)}
      echo '${q.user}:x:${uid}:${uid}:${q.user}:/:/bin/sh' > passwd
      echo '${q.user}:x:${uid}:' > group
      export LD_PRELOAD=${pkgs.nss_wrapper}/lib/libnss_wrapper.so
      export NSS_WRAPPER_PASSWD=$PWD/passwd NSS_WRAPPER_GROUP=$PWD/group
      export QUBES_LITE_CONFIG_DIR=$PWD/etc
      qubes-lite-host-agent --check --config-only
      for vm in ${lib.escapeShellArgs vms}; do
        qubes-lite-host-agent --vm "$vm" --print-command > "$vm.argv"
        grep -qx 'run' "$vm.argv"
        qubes-lite-generator units
        test -s "units/qubes-lite-$vm.socket"
        test -s "units/qubes-lite-$vm-vm.service"
      done
      echo '${name}: ${toString (lib.length vms)} VMs checked'
      touch $out
    '';
in
{
  inherit package;
}
// lib.mapAttrs'
  (name: ex: lib.nameValuePair "example-${name}"
    (pkgs.runCommand "qubes-lite-example-${name}" { nativeBuildInputs = [ package ]; } (script name ex)))
  examples
