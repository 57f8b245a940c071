//! Real boots: Debian's qemu_arm64 U-Boot (`-bios`) finds our boot.scr, runs the second stage
//! unattended, loads every file and starts Debian's Xen 4.20, whose Dom0 (Debian's 6.12 kernel) runs
//! the test initramfs's /init. Once from the GPT disk, once over TFTP (netboot).

mod image_support;

use std::time::Duration;

use image_support::*;

const FAILURES: &[&str] = &["rpixen: cannot load", "Unknown command", "Kernel panic", "(XEN) Panic", "Bad Linux ARM64 Image"];
const LIMIT: Duration = Duration::from_secs(300);

fn virt_args<'a>(uboot: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "-M", "virt,virtualization=on,gic-version=2", "-cpu", "cortex-a72", "-smp", "4", "-m", "2G", "-bios", uboot,
    ];
    a.extend_from_slice(extra);
    a
}

/// Lines that prove U-Boot ran our scripts and loaded every file.
fn assert_scripts_ran(out: &str, hv: &str) {
    for line in [
        "rpixen: running rpixen.scr".to_owned(),
        format!("rpixen: loading hypervisor {hv} at 0x50200000"),
        "rpixen: loading Dom0 kernel Image".to_owned(),
        "rpixen: loading Dom0 initrd initrd.img".to_owned(),
        "rpixen: starting the hypervisor".to_owned(),
        "(XEN) Xen version 4.20".to_owned(),
    ] {
        assert!(out.contains(&line), "missing {line:?} in:\n{out}");
    }
}

#[test]
fn xen_boots_dom0_from_the_live_image() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = xen_virt_manifest(dir.path());
    let initrd = busybox_initramfs(dir.path());
    let img = dir.path().join("live.raw");
    let o = run_rpixen(
        &["live", manifest.to_str().unwrap(), "--initrd", initrd.to_str().unwrap(), "-o", img.to_str().unwrap()],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let uboot = uboot_qemu();
    let drive = format!("if=none,file={},format=raw,id=d", img.display());
    let args = virt_args(uboot.to_str().unwrap(), &["-nic", "none", "-drive", &drive, "-device", "virtio-blk-device,drive=d"]);
    let mut q = testkit::Qemu::start(&args, 1);
    let outcome = q.wait_for(MARKER, FAILURES, LIMIT).unwrap_or_else(|e| panic!("{e}"));
    assert!(outcome.output.contains("with script"), "U-Boot did not pick boot.scr:\n{}", outcome.output);
    assert_scripts_ran(&outcome.output, "xen");
    eprintln!("live image: Dom0 /init reached in {:?}", outcome.elapsed);
}

#[test]
fn xen_boots_dom0_over_tftp() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = xen_virt_manifest(dir.path());
    let initrd = busybox_initramfs(dir.path());
    let out = dir.path().join("netboot");
    let o = run_rpixen(
        &[
            "netboot",
            manifest.to_str().unwrap(),
            "--initrd",
            initrd.to_str().unwrap(),
            "--serverip",
            "10.0.2.2",
            "-o",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in ["tftp/rpixen.scr", "tftp/xen", "tftp/Image", "tftp/initrd.img", "sdcard/boot.scr", "sdcard.raw"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // The card holds no kernel: everything the second stage loads must come over TFTP.
    assert!(!out.join("sdcard/Image").exists());

    let uboot = uboot_qemu();
    let drive = format!("if=none,file={},format=raw,id=d", out.join("sdcard.raw").display());
    let netdev = format!("user,id=n,tftp={}", out.join("tftp").display());
    let args = virt_args(
        uboot.to_str().unwrap(),
        &["-drive", &drive, "-device", "virtio-blk-device,drive=d", "-netdev", &netdev, "-device", "virtio-net-device,netdev=n", "-nic", "none"],
    );
    let mut q = testkit::Qemu::start(&args, 1);
    let outcome = q.wait_for(MARKER, FAILURES, LIMIT).unwrap_or_else(|e| panic!("{e}"));
    assert!(outcome.output.contains("TFTP from server 10.0.2.2"), "not over TFTP:\n{}", outcome.output);
    assert_scripts_ran(&outcome.output, "xen");
    eprintln!("netboot: Dom0 /init reached in {:?}", outcome.elapsed);
}
