#!/usr/bin/env bash
# Installs everything the build and the tests need on a fresh Debian 12 (bookworm) machine.
# Idempotent: a second run only checks. Needs root (CI runs as root).
set -euo pipefail

need_root() { if [ "$(id -u)" != 0 ]; then echo "setup-host: run as root (apt-get install)" >&2; exit 1; fi; }

# bookworm-backports carries QEMU 10 (raspi4b) and qemu-user; trixie is pinned low so nothing
# upgrades from it unless asked for by name.
add_suites() {
    local src=/etc/apt/sources.list.d/debian.sources uri
    uri=$(awk '/^URIs:/ {print $2; exit}' "$src")
    if [ ! -f /etc/apt/sources.list.d/rpixen-extra.sources ]; then
        cat > /etc/apt/sources.list.d/rpixen-extra.sources <<SRC
Types: deb
URIs: $uri
Suites: bookworm-backports trixie
Components: main non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
        cat > /etc/apt/preferences.d/rpixen-trixie <<PREF
Package: *
Pin: release n=trixie
Pin-Priority: 100
PREF
        apt-get update -qq
    fi
}

BACKPORTS_PKGS=(qemu-system-arm qemu-user qemu-utils)
# cosign 2.5: the independent signer and verifier of the update tests (bookworm has no cosign).
TRIXIE_PKGS=(cosign)
PKGS=(gdisk fdisk dosfstools mtools u-boot-tools cpio squashfs-tools device-tree-compiler
      docker-registry gcc-aarch64-linux-gnu xz-utils zstd curl ca-certificates skopeo
      debian-archive-keyring util-linux hyperfine
      docker.io musl-tools git make
      openssh-client openssl e2fsprogs debootstrap bmap-tools python3-jsonschema
      kmod
      # ring's C code (rpixen-update's TLS) for the aarch64-musl device build of the update agent.
      libc6-dev-arm64-cross)

main() {
    need_root
    export DEBIAN_FRONTEND=noninteractive
    local missing=()
    for p in "${PKGS[@]}" "${BACKPORTS_PKGS[@]}" "${TRIXIE_PKGS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    if ! qemu-system-aarch64 -machine help 2>/dev/null | grep -q raspi4b; then missing+=(qemu-system-arm); fi
    if [ ${#missing[@]} -gt 0 ]; then
        apt-get update -qq
        add_suites
        apt-get install -y -qq --no-install-recommends -t bookworm-backports "${BACKPORTS_PKGS[@]}"
        apt-get install -y -qq --no-install-recommends "${PKGS[@]}"
        apt-get install -y -qq --no-install-recommends -t trixie "${TRIXIE_PKGS[@]}"
    fi
    # The SBOM test's independent checker (SPDX's own validator); pinned.
    python3 -m pip show spdx-tools >/dev/null 2>&1 \
        || python3 -m pip install --quiet --break-system-packages spdx-tools==0.8.5
    rustup target add aarch64-unknown-none aarch64-unknown-linux-musl x86_64-unknown-linux-musl >/dev/null
}
main "$@"
