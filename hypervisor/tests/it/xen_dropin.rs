//! The hypervisor is a drop-in for Xen: the image `rpixen live` writes for Xen (qemu-virt-xen's boot
//! flow: the same boot script, `xen` in slot A, Xen's command line) boots Dom0 when only the `xen`
//! file is replaced by ours. U-Boot's plan puts Dom0's kernel right after Xen's footprint
//! (2 MiB after the hypervisor), so whatever our Image declares (`image_size`, .bss included) must
//! end before it.

use std::process::Command;
use std::time::Duration;

use crate::common::*;

/// Slot A's offset in a live image: IMGA follows the 64 MiB boot partition, which starts at 1 MiB.
const SLOT_A: u64 = 65 << 20;
/// `live_manifest`'s IMGA size.
const SLOT_BYTES: usize = 64 << 20;

#[test]
fn our_binary_in_place_of_xen_boots_dom0_from_the_xen_image() {
    let dir = tempfile::tempdir().unwrap();
    let uboot = testkit::uboot_qemu();
    let xen = testkit::debian_package("xen-hypervisor-4.20-arm64").join("boot/xen-4.20-arm64");
    // images/qemu-virt-xen.yml's hypervisor and Dom0 command lines; Dom0's console works under both.
    let manifest = live_manifest_with(
        dir.path(),
        "qemu-virt",
        &uboot,
        None,
        "serial0",
        ("xen", &xen),
        "console=dtuart dtuart=serial0 sync_console dom0_mem=512M dom0_max_vcpus=4",
        "console=hvc0 console=ttyAMA0 rdinit=/init",
    );
    let initrd = initramfs(dir.path(), "");
    let img = dir.path().join("live.raw");
    rpixen_live(&manifest, &initrd, &img);

    // Swap the file: same name, same boot script.
    let drive_at = format!("{}@@{}", img.display(), SLOT_A);
    let listing = testkit::run(Command::new("mdir").args(["-b", "-i", &drive_at, "::"]));
    assert!(listing.lines().any(|l| l.trim_end() == "::/xen"), "no xen in slot A:\n{listing}");
    testkit::run(Command::new("mcopy").args(["-o", "-i", &drive_at]).arg(hv_bin()).arg("::xen"));
    let fsck_img = dir.path().join("slot.fat");
    let fat = std::fs::read(&img).unwrap();
    std::fs::write(&fsck_img, &fat[SLOT_A as usize..SLOT_A as usize + SLOT_BYTES]).unwrap();
    let fsck = Command::new("fsck.fat").arg("-n").arg(&fsck_img).output().unwrap();
    assert!(fsck.status.success(), "{}", String::from_utf8_lossy(&fsck.stdout));

    let args = virt_uboot_args(&uboot, &img);
    let mut q = testkit::Qemu::start_with(&args, 1);
    q.wait_for(MARKER, FAILURES, Duration::from_secs(300)).unwrap_or_else(|e| panic!("{e}"));
    let status = q
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("poweroff did not end QEMU: {e}"));
    let out = q.output();
    assert!(out.contains("rpixen: starting the hypervisor"), "{out}");
    assert!(
        out.contains("hv: rpixen hypervisor, EL2 entry"),
        "not our hypervisor that ran:\n{out}"
    );
    assert_dom0_booted(&out, 4, 512);
    assert!(out.contains("hv: dom0 system_off") && status.success(), "status {status}:\n{out}");
}
