#!/usr/bin/env bash
# Copies what `rpixen sbom` reads of the source tree into OUT: Cargo.lock, the workspace's Cargo.toml
# and every crate manifest under it (found, not listed, so a new workspace member needs no edit here
# or in the Dockerfile). The container carries OUT as /usr/share/rpixen/src, next to pkg/.
#
# Usage: scripts/sbom-sources.sh OUT      (run from anywhere; reads the tree this script is in)
set -euo pipefail
out=${1:?usage: scripts/sbom-sources.sh OUT}
here=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$out"
mkdir -p "$out"
cp "$here/Cargo.lock" "$out/"
cd "$here"
# Build outputs and the packages' outputs hold no manifests of ours.
find . \( -path ./target -o -path ./dist -o -path ./.git \) -prune -o -name Cargo.toml -print \
    | while read -r m; do
        mkdir -p "$out/$(dirname "$m")"
        cp "$m" "$out/$m"
    done
