#!/usr/bin/env bash
# Boots a live image in QEMU with the U-Boot its board needs (taken from the u-boot package image), the
# serial console on this terminal (Ctrl-A X quits QEMU).
#
# Usage: run-qemu.sh [--args] BOARD IMAGE
#   BOARD  qemu-virt, qemu-virt-xen, qemu-virt-domus, qemu-virt-xen-domus (QEMU virt) or rpi4-qemu (QEMU raspi4b)
#   --args print the machine arguments one per line instead of starting QEMU (the tests boot with
#          exactly these, with the serial ports going to files)
# Environment: RPIXEN (default target/release/rpixen), RPIXEN_RUN_DIR (default dist/run),
#   RPIXEN_SSH_PORT (default 2222): on qemu-virt, the host port (on 127.0.0.1 only) forwarded to
#   Dom0's SSH server, so `ssh -p 2222 root@127.0.0.1` reaches the device; QEMU's user network
#   gives Dom0 its DHCP lease (10.0.2.15) and DNS.
set -euo pipefail
print_args=0
if [ "${1:-}" = --args ]; then print_args=1; shift; fi
board=${1:?usage: run-qemu.sh [--args] BOARD IMAGE}
image=${2:?usage: run-qemu.sh [--args] BOARD IMAGE}
rpixen=${RPIXEN:-target/release/rpixen}
run_dir=${RPIXEN_RUN_DIR:-dist/run}
mkdir -p "$run_dir"
[ -f "$image" ] || { echo "run-qemu: no image $image (make live writes dist/live.raw)" >&2; exit 1; }

case "$board" in
qemu-virt | qemu-virt-xen | qemu-virt-domus | qemu-virt-xen-domus)
    "$rpixen" pkg cat u-boot u-boot/qemu_arm64/u-boot.bin -o "$run_dir/u-boot-qemu_arm64.bin"
    args=(-M virt,virtualization=on,gic-version=2 -cpu cortex-a72 -smp 4 -m 2G
          -bios "$run_dir/u-boot-qemu_arm64.bin"
          -drive "if=none,format=raw,file=$image,id=disk" -device virtio-blk-device,drive=disk
          # `-nic user,model=virtio-net-device` is refused on virt: the netdev and device spelled out.
          -netdev "user,id=net,hostfwd=tcp:127.0.0.1:${RPIXEN_SSH_PORT:-2222}-:22"
          -device virtio-net-device,netdev=net)
    console=(-serial mon:stdio)
    ;;
rpi4-qemu)
    # QEMU's raspi4b has no GPU firmware: it loads U-Boot and the device tree itself. The device tree is
    # the one `rpixen live` put on the boot FAT (with the blocks QEMU lacks disabled).
    "$rpixen" pkg cat u-boot u-boot/rpi_arm64/u-boot.bin -o "$run_dir/u-boot-rpi_arm64.bin"
    start=$(partx -g -o START -n 1 "$image" | tr -d ' ')
    dtb=$(mdir -b -i "$image@@$((start * 512))" :: | grep -i '\.dtb$' | head -1 | sed 's|^::/||')
    [ -n "$dtb" ] || { echo "run-qemu: no .dtb on the boot partition of $image" >&2; exit 1; }
    mcopy -o -i "$image@@$((start * 512))" "::$dtb" "$run_dir/board.dtb"
    # QEMU's SD card must be a power of two in size: boot a sparse copy grown to the next one.
    size=$(stat -c %s "$image"); sd_size=1
    while [ $sd_size -lt "$size" ]; do sd_size=$((sd_size * 2)); done
    cp --sparse=always "$image" "$run_dir/sd.img"
    truncate -s $sd_size "$run_dir/sd.img"
    args=(-M raspi4b -kernel "$run_dir/u-boot-rpi_arm64.bin" -dtb "$run_dir/board.dtb"
          -drive "if=sd,format=raw,file=$run_dir/sd.img")
    # U-Boot starts on the PL011 (#0); the hypervisor console is the mini-UART (#1).
    console=(-serial "file:$run_dir/serial0.log" -serial mon:stdio)
    ;;
*)
    echo "run-qemu: unknown board $board (qemu-virt, qemu-virt-xen, qemu-virt-domus, qemu-virt-xen-domus, rpi4-qemu)" >&2
    exit 1
    ;;
esac

if [ $print_args = 1 ]; then
    printf '%s\n' "${args[@]}"
    exit 0
fi
exec qemu-system-aarch64 -display none "${console[@]}" "${args[@]}"
