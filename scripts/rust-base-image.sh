#!/usr/bin/env bash
# Makes the local stand-in for the public Rust image the Dockerfile's `source` stage starts from
# (`docker.io/library/rust:1.95-bookworm`), for machines that cannot pull from a container registry:
# Debian bookworm from debootstrap (the host's apt mirror) plus the Rust toolchain that
# rust-toolchain.toml pins, copied from the host's rustup (with the targets the build needs), laid out
# as the official image lays it out (RUSTUP_HOME=/usr/local/rustup, CARGO_HOME=/usr/local/cargo).
#
# Usage: scripts/rust-base-image.sh [TAG]      (default rpixen-rust:1.95-bookworm)
#   then: docker build --build-arg RUST_IMAGE=rpixen-rust:1.95-bookworm -t rpixen .
# Environment: DOCKER (the docker CLI, default docker), DOCKER_HOST as docker reads it.
# Idempotent: an existing TAG is kept (delete it with `docker rmi` to remake it).
set -euo pipefail

tag=${1:-rpixen-rust:1.95-bookworm}
docker=${DOCKER:-docker}
here=$(cd "$(dirname "$0")/.." && pwd)

if "$docker" image inspect "$tag" >/dev/null 2>&1; then
    echo "rust-base-image: $tag exists" >&2
    exit 0
fi
[ "$(id -u)" = 0 ] || { echo "rust-base-image: run as root (debootstrap)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "rust-base-image: debootstrap not found (apt-get install debootstrap)" >&2; exit 1; }

channel=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$here/rust-toolchain.toml")
[ -n "$channel" ] || { echo "rust-base-image: no channel in rust-toolchain.toml" >&2; exit 1; }
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
toolchain=$(readlink -f "$rustup_home/toolchains/$channel-x86_64-unknown-linux-gnu" || true)
if [ ! -x "$toolchain/bin/rustc" ]; then
    echo "rust-base-image: toolchain $channel not installed in $rustup_home (rustup toolchain install $channel)" >&2
    exit 1
fi
for t in x86_64-unknown-linux-musl aarch64-unknown-linux-musl aarch64-unknown-none; do
    [ -d "$toolchain/lib/rustlib/$t" ] || { echo "rust-base-image: target $t missing (rustup target add $t)" >&2; exit 1; }
done
rustup_bin=$(command -v rustup)

# The host's Debian mirror, as rpixen's own apt configuration finds it.
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || { echo "rust-base-image: no Debian mirror in the host's apt sources" >&2; exit 1; }

work=$(mktemp -d /var/tmp/rpixen-rust-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root
echo "rust-base-image: debootstrap bookworm from $mirror" >&2
# What our build uses of the official image (a C compiler for build scripts, make), plus what the source
# stage would install. Not git and its perl: cargo fetches with its own libgit2 and Cargo.lock has no git
# sources.
debootstrap --variant=minbase \
    --include=ca-certificates,gcc,libc6-dev,make,xz-utils,musl-tools,binutils-aarch64-linux-gnu,debian-archive-keyring \
    bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
# The build downloads crates and .debs; it must trust what the host trusts (a proxy's own CA, say).
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null
fi

echo "rust-base-image: Rust $channel from $toolchain" >&2
mkdir -p "$root/usr/local/rustup/toolchains" "$root/usr/local/cargo/bin"
# The documentation is most of the toolchain's size and no build reads it; nor does the build run the
# linters (clippy, rustfmt) or rustdoc.
tar -C "$toolchain" --exclude=./share --exclude=./bin/rustdoc --exclude=./bin/clippy-driver \
    --exclude=./bin/cargo-clippy --exclude=./bin/rustfmt --exclude=./bin/cargo-fmt -cf - . \
    | tar -C "$root/usr/local/rustup/toolchains" --one-top-level="$channel-x86_64-unknown-linux-gnu" -xf -
cp "$rustup_bin" "$root/usr/local/cargo/bin/rustup"
for proxy in cargo rustc; do
    ln -s rustup "$root/usr/local/cargo/bin/$proxy"
done
cat >"$root/usr/local/rustup/settings.toml" <<EOF
version = "12"
default_toolchain = "$channel-x86_64-unknown-linux-gnu"
profile = "minimal"
auto_self_update = "disable"

[overrides]
EOF

tar -C "$root" -cf - . | "$docker" import \
    -c 'ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV RUSTUP_AUTO_INSTALL=0' \
    -c 'CMD ["bash"]' \
    -m "Debian bookworm (debootstrap) + Rust $channel, stand-in for rust:$channel-bookworm" \
    - "$tag" >/dev/null
"$docker" run --rm "$tag" rustc --version >&2
echo "rust-base-image: $tag ($("$docker" image inspect -f '{{.Size}}' "$tag") bytes)" >&2
