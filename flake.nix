{
  description = "qubes-lite: applications in declaratively configured VMs on NixOS";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      # The host: programs.qubes-lite.
      nixosModules.default = ./nix/module.nix;
      # The NixOS inside each VM: qubes-lite.guest (the host module uses it
      # for the images it builds).
      nixosModules.guest = ./rootfs/guest.nix;

      packages = forAllSystems (pkgs: {
        default = pkgs.callPackage ./nix/package.nix { };
      });

      # The package, and each of the README's examples through the real
      # NixOS module system, its files checked by the programs themselves.
      checks = forAllSystems (pkgs: import ./nix/checks.nix {
        inherit pkgs;
        package = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        module = self.nixosModules.default;
      });
    };
}
