#!/bin/bash
# Checks the Debian packages qubes-lite needs to build and test, and installs
# the missing ones when run as root (otherwise names them and fails).
#
#   scripts/deps.sh            build + image + test packages
#   scripts/deps.sh image      what `make image` needs: build + image packages
#   scripts/deps.sh --print    list them all, one per line
set -euo pipefail

BUILD_PKGS=(
    gcc libc6-dev make pkg-config
    libprotobuf-c-dev protobuf-c-compiler   # the wire protocol
    libsystemd-dev                          # sd-event, sd_listen_fds, sd_notify, sd-bus
    libwayland-dev                          # guest: wait for the Wayland display
    libjansson-dev                          # host: JSON configuration
    libseccomp-dev libcap-dev               # vm-switch sandbox
    libmnl-dev                              # host: rtnetlink for hostNetworking's TAP
)
IMAGE_PKGS=(
    busybox-static                          # the guest image's userland
    binutils python3 apt dpkg               # objcopy; rootfs/mkimage.py; the kernel package
)
TEST_PKGS=(
    libcmocka-dev                           # C unit tests
    python3-pytest python3-pytest-timeout
    python3-protobuf protobuf-compiler      # tests speak the protocol from Python
    clang libclang-rt-14-dev                # libFuzzer and sanitizers
    qemu-system-x86                         # VM tests under TCG
    weston                                  # a real Wayland compositor, headless
    openssh-server openssh-client           # benchmark peer; vm-shell --ssh in a VM test
    systemd                                 # systemd-analyze verify of the generated units
    dpdk-dev                                # dpdk-testpmd: a real vhost-user peer
    socat util-linux bsdutils procps
    iproute2                                # the TAP tests: interfaces that are not ours, read-back
    nix-bin                                 # the NixOS module, guest and flake evaluated offline
    libnss-wrapper                          # the module's user, known to the programs in tests
)

if [ "${1:-}" = --print ]; then
    printf '%s\n' "${BUILD_PKGS[@]}" "${IMAGE_PKGS[@]}" "${TEST_PKGS[@]}"
    exit 0
fi
wanted=("${BUILD_PKGS[@]}" "${IMAGE_PKGS[@]}")
[ "${1:-}" = image ] || wanted+=("${TEST_PKGS[@]}")

missing=()
for p in "${wanted[@]}"; do
    if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != installed ]; then
        missing+=("$p")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "qubes-lite: missing Debian packages: ${missing[*]}" >&2
    echo "qubes-lite: install them with: sudo apt-get install --no-install-recommends ${missing[*]}" >&2
    exit 1
fi

echo "qubes-lite: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# A fresh machine may have no package lists yet; an old list may name
# versions the archive no longer has. Update once, then install.
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}"
