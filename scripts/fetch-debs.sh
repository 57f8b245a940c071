#!/usr/bin/env bash
# Interim test-asset fetcher: downloads the pinned Debian trixie arm64 packages with apt (a private
# configuration: the host's apt state is untouched), checks each sha256 and unpacks it to
# $DEST/<package>/. `rpixen pkg` replaces this once it builds the same packages.
# Usage: fetch-debs.sh DEST [PACKAGE...]
set -euo pipefail
dest=${1:?usage: fetch-debs.sh DEST [PACKAGE...]}; shift
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)

# name version sha256
pins="
linux-image-6.12.117+deb13-arm64 6.12.117-1 73805585385c78e048e63fdfba66da36bab724c2cdebd96a3055a8a4f1ae287a
u-boot-qemu 2025.01-3+deb13u1 a3751b5d36a411457b2e7a2834cdce0e5d40493e6588a65d51c5603740a0c71c
u-boot-rpi 2025.01-3+deb13u1 c9e1aa3a17ccc1ff85858ace8cc43c917d1e0f70f04258438f1ae9b84b8b8c72
busybox-static 1:1.37.0-6+b9 c833be48abfa16bc19c4966ec93e289ff1ce5d2f1476cad3a57bd105378cd15c
raspi-firmware 1.20240424+ds-6 f95a3d3c41df10bac33580be91b595efa1e126ad5e4b7eca75ce26fbbc69af06
xen-hypervisor-4.20-arm64 4.20.4+63-g7abfd2bce2-0+deb13u1 b8b63ed4e100c92eab55f34ac05f03874ab9e84ce3e559cad9c25f338a0a2657
"
want=("$@")
[ ${#want[@]} -gt 0 ] || want=($(awk 'NF {print $1}' <<<"$pins"))

apt_dir="$dest/.apt"
mkdir -p "$apt_dir"/{lists/partial,cache/archives/partial,parts,debs}
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list)
echo "deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main non-free-firmware" > "$apt_dir/sources.list"
apt_opts=(-o APT::Architecture=arm64 -o APT::Architectures=arm64 -o "Dir::State::Lists=$apt_dir/lists"
    -o Dir::State::Status=/dev/null -o "Dir::Etc::SourceList=$apt_dir/sources.list"
    -o "Dir::Etc::SourceParts=$apt_dir/parts" -o "Dir::Cache=$apt_dir/cache" -o Dir::Etc::Preferences=/dev/null
    -o "Dir::Etc::PreferencesParts=$apt_dir/parts" -o APT::Sandbox::User=root)

updated=0
for name in "${want[@]}"; do
    [ -f "$dest/$name/.done" ] && continue
    line=$(awk -v n="$name" '$1 == n' <<<"$pins")
    [ -n "$line" ] || { echo "fetch-debs: no pin for $name" >&2; exit 1; }
    read -r _ version sha <<<"$line"
    deb=$(ls "$apt_dir/debs/${name}_"*.deb 2>/dev/null | head -1 || true)
    if [ -z "$deb" ]; then
        [ $updated = 1 ] || { apt-get "${apt_opts[@]}" -qq update; updated=1; }
        (cd "$apt_dir/debs" && apt-get "${apt_opts[@]}" -qq download "$name=$version")
        deb=$(ls "$apt_dir/debs/${name}_"*.deb | head -1)
    fi
    got=$(sha256sum "$deb" | cut -d' ' -f1)
    if [ "$got" != "$sha" ]; then
        echo "fetch-debs: $name $version: sha256 $got, expected $sha" >&2; rm -f "$deb"; exit 1
    fi
    rm -rf "$dest/$name"; mkdir -p "$dest/$name"
    dpkg-deb -x "$deb" "$dest/$name"
    touch "$dest/$name/.done"
done
