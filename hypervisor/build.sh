#!/usr/bin/env bash
# Builds the rpixen hypervisor as a flat arm64 Linux Image (header flags bit3 = 1: booti leaves it at a
# 2 MiB boundary near where it was loaded instead of copying it to the start of DRAM).
# Usage: hypervisor/build.sh OUT
set -euo pipefail
out=${1:?usage: hypervisor/build.sh OUT}
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
cargo build -q -p rpixen-hypervisor --bin rpixen-hypervisor --target aarch64-unknown-none --profile release-small
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
elf="$target_dir/aarch64-unknown-none/release-small/rpixen-hypervisor"
objcopy=aarch64-linux-gnu-objcopy
command -v "$objcopy" >/dev/null || { echo "build.sh: $objcopy not found (binutils-aarch64-linux-gnu)" >&2; exit 1; }
tmp="$out.tmp.$$"
"$objcopy" -O binary "$elf" "$tmp"
# The header's magic must be there, or booti refuses the file.
if [ "$(dd if="$tmp" bs=1 skip=56 count=4 2>/dev/null)" != "ARMd" ]; then
    echo "build.sh: $elf has no arm64 Image header" >&2; rm -f "$tmp"; exit 1
fi
mv "$tmp" "$out"
