//! Issue 4's acceptance boot on QEMU virt: Debian's qemu_arm64 U-Boot (`-bios`) runs the boot script
//! that `rpixen live` wrote (the same one that boots Xen), which loads our hypervisor, Debian's 6.12
//! kernel and a busybox initramfs, describes them in /chosen and `booti`s the hypervisor.

use std::time::Duration;

use crate::common::*;

#[test]
fn uboot_boots_the_hypervisor_and_dom0_from_the_live_image() {
    let dir = tempfile::tempdir().unwrap();
    let uboot = testkit::uboot_qemu();
    let manifest = live_manifest(
        dir.path(),
        "qemu-virt",
        &uboot,
        None,
        "serial0",
        "console=dtuart dtuart=serial0 sync_console",
        "console=ttyAMA0 earlycon rdinit=/init",
    );
    let initrd = initramfs(dir.path(), "");
    let img = dir.path().join("live.raw");
    rpixen_live(&manifest, &initrd, &img);

    let args = virt_uboot_args(&uboot, &img);
    let mut q = testkit::Qemu::start_with(&args, 1);
    let outcome =
        q.wait_for(MARKER, FAILURES, Duration::from_secs(300)).unwrap_or_else(|e| panic!("{e}"));
    let status = q
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("poweroff did not end QEMU: {e}"));
    let out = q.output();
    for line in [
        "rpixen: starting the hypervisor",
        "hv: cmdline \"console=dtuart dtuart=serial0 sync_console dom0_mem=512M\"",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    assert_dom0_booted(&out, 4, 512);
    assert!(out.contains("hv: dom0 system_off") && status.success(), "status {status}:\n{out}");
    eprintln!("U-Boot -> hypervisor -> Dom0 /init in {:?}", outcome.elapsed);
}
