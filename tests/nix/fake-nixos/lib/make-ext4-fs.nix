# Stands in for nixpkgs' nixos/lib/make-ext4-fs.nix, with the same
# arguments (and no others: callPackage passes what it declares): an image
# "derivation" that records what it was asked to hold.
{ pkgs
, storePaths
, volumeLabel
, uuid ? "44444444-4444-4444-8888-888888888888"
, e2fsprogs
, libfaketime
, perl
, lkl
}:
pkgs.runCommand "ext4-fs.img" { inherit storePaths volumeLabel uuid; } "# make-ext4-fs stand-in"
