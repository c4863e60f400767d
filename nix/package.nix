# qubes-lite: the host programs, the systemd generator, bash completion and
# the guest agent, built with the project's Makefile and installed by
# `make install`.
{ lib
, stdenv
, pkg-config
, protobufc
, libseccomp
, libcap
, systemd
, wayland
, jansson
, libmnl
}:

stdenv.mkDerivation {
  pname = "qubes-lite";
  version = "0.1.0";

  # The source tree without build outputs or version-control files.
  src = lib.cleanSourceWith {
    src = ../.;
    filter = path: type:
      lib.cleanSourceFilter path type
      && !(type == "directory" && builtins.elem (baseNameOf path) [ "build" "result" ]);
  };

  nativeBuildInputs = [ pkg-config protobufc ]; # protoc-c
  buildInputs = [ protobufc libseccomp libcap systemd wayland jansson libmnl ];

  makeFlags = [
    "PREFIX=$(out)"
    # nixpkgs ships no static libc nor protobuf-c archive: vm-run and
    # qubes-lite-init are linked like the other programs.
    "DYNAMIC=1"
    # The project builds with -Werror on its own compiler; a newer one's
    # new warnings must not break a user's system build.
    "EXTRA_CFLAGS=-Wno-error"
  ];
  # The Makefile sets its own hardening, _FORTIFY_SOURCE included; the
  # wrapper's definition of the same macro would be a redefinition.
  hardeningDisable = [ "fortify" ];
  enableParallelBuilding = true;

  meta = {
    description = "Applications in declaratively configured VMs (crosvm, Wayland proxying) on NixOS";
    platforms = lib.platforms.linux;
    mainProgram = "vm-run";
  };
}
