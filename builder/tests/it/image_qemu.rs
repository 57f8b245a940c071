//! Real boots: Debian's qemu_arm64 U-Boot (`-bios`) finds our boot.scr, runs the second stage
//! unattended, loads every file and starts Debian's Xen 4.20, whose Dom0 (Debian's 6.12 kernel) runs
//! the test initramfs's /init. Once from the GPT disk, once over TFTP (netboot).

use crate::image_support;

use std::time::Duration;

use image_support::*;

const FAILURES: &[&str] = &[
    "rpixen: cannot load",
    "Unknown command",
    "Kernel panic",
    "(XEN) Panic",
    "Bad Linux ARM64 Image",
];
const LIMIT: Duration = Duration::from_secs(480);

/// One boot at a time: TCG boots are CPU-bound, and three at once on a small machine starve each other.
static ONE_BOOT: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub(crate) fn one_boot() -> std::sync::MutexGuard<'static, ()> {
    ONE_BOOT.lock().unwrap_or_else(|e| e.into_inner())
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
        &[
            "live",
            manifest.to_str().unwrap(),
            "--initrd",
            initrd.to_str().unwrap(),
            "-o",
            img.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let args = testkit::QemuArgs::virt().bios(&testkit::uboot_qemu()).disk(&img);
    let _turn = one_boot();
    let mut q = testkit::Qemu::start_with(&args, 1);
    let outcome = q.wait_for(MARKER, FAILURES, LIMIT).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        outcome.output.contains("with script"),
        "U-Boot did not pick boot.scr:\n{}",
        outcome.output
    );
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
    for f in [
        "tftp/rpixen.scr",
        "tftp/xen",
        "tftp/Image",
        "tftp/initrd.img",
        "sdcard/boot.scr",
        "sdcard.raw",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // The card holds no kernel: everything the second stage loads must come over TFTP.
    assert!(!out.join("sdcard/Image").exists());

    let args = testkit::QemuArgs::virt()
        .bios(&testkit::uboot_qemu())
        .disk(&out.join("sdcard.raw"))
        .tftp(&out.join("tftp"));
    let _turn = one_boot();
    let mut q = testkit::Qemu::start_with(&args, 1);
    let outcome = q.wait_for(MARKER, FAILURES, LIMIT).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        outcome.output.contains("TFTP from server 10.0.2.2"),
        "not over TFTP:\n{}",
        outcome.output
    );
    assert_scripts_ran(&outcome.output, "xen");
    eprintln!("netboot: Dom0 /init reached in {:?}", outcome.elapsed);
}

/// QEMU's raspi4b: U-Boot (rpi_arm64) as `-kernel`, the SD card on `if=sd` (size a power of two), the
/// upstream DTB with the blocks QEMU lacks disabled by `board.dtb_disable` (the same DTB our image
/// carries on its FAT, handed to QEMU too). QEMU itself prunes PCIe, GENET, RNG and thermal only from
/// the DTB it hands U-Boot; the second stage loads the FAT copy, so those are disabled there too. Xen's console is the mini-UART, serial port 1.
#[test]
fn xen_boots_dom0_on_raspi4b() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let xen = testkit::debian_package("xen-hypervisor-4.20-arm64").join("boot/xen-4.20-arm64");
    let dtb = testkit::test_kernel_rpi4_dtb();
    let uboot = testkit::uboot_rpi();
    let fw = testkit::debian_package("raspi-firmware").join("usr/lib/raspi-firmware");
    // SD reads in QEMU run at about 1 MiB/s: a gzipped kernel (Xen unpacks it) loads 3x faster.
    let kernel_gz = d.join("Image.gz");
    testkit::run(std::process::Command::new("sh").arg("-c").arg(format!(
        "gzip -n -1 -c '{}' > '{}'",
        testkit::test_kernel_image().display(),
        kernel_gz.display()
    )));
    let initrd = busybox_initramfs(d);
    let manifest = d.join("rpi4-qemu.yml");
    std::fs::write(
        &manifest,
        format!(
            r#"board:
  kind: rpi4
  dtb: {{file: {dtb}}}
  dtb_disable:
    - /soc/clock@7ef00000
    - /soc/interrupt-controller@7ef00100
    - /soc/hdmi@7ef00700
    - /soc/hdmi@7ef05700
    - /soc/i2c@7ef04500
    - /soc/i2c@7ef09500
    - /scb/pcie@7d500000
    - /scb/ethernet@7d580000
    - /soc/rng@7e104000
    - /soc/avs-monitor@7d5d2000/thermal
  uboot: {{file: {uboot}}}
  console: serial1
firmware:
  - {{source: {{file: {fw}/start4.elf}}, dest: start4.elf}}
  - {{source: {{file: {fw}/fixup4.dat}}, dest: fixup4.dat}}
hypervisor:
  kind: xen
  binary: {{file: {xen}}}
  cmdline: "console=dtuart dtuart=serial1 sync_console dom0_max_vcpus=2"
dom0:
  kernel: {{file: {kernel}}}
  cmdline: "console=hvc0 rdinit=/init"
  memory: 512M
rootfs:
  format: cpio
  images: [busybox]
partitions:
  boot: 64M
  imga: 64M
  imgb: 64M
  config: 8M
  persist: 52M
"#,
            dtb = dtb.display(),
            uboot = uboot.display(),
            fw = fw.display(),
            xen = xen.display(),
            kernel = kernel_gz.display(),
        ),
    )
    .unwrap();
    let img = d.join("live.raw");
    let o = run_rpixen(
        &[
            "live",
            manifest.to_str().unwrap(),
            "--initrd",
            initrd.to_str().unwrap(),
            "-o",
            img.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::metadata(&img).unwrap().len(),
        256 << 20,
        "QEMU wants a power-of-two SD card"
    );
    // QEMU gets the DTB from our boot FAT (where the Pi firmware reads it): the one slot A's
    // second stage loads too.
    let patched = d.join("patched.dtb");
    testkit::run(
        std::process::Command::new("mcopy")
            .arg("-i")
            .arg(format!("{}@@1M", img.display()))
            .arg("::bcm2711-rpi-4-b.dtb")
            .arg(&patched),
    );
    let args = testkit::QemuArgs::raspi4b().kernel(&uboot).dtb(&patched).disk(&img);
    let _turn = one_boot();
    let mut q = testkit::Qemu::start_with(&args, 2);
    let outcome =
        q.wait_for(MARKER, FAILURES, Duration::from_secs(420)).unwrap_or_else(|e| panic!("{e}"));
    for line in [
        "rpixen: running rpixen.scr",
        "rpixen: loading hypervisor xen at 0x10200000",
        "rpixen: loading device tree bcm2711-rpi-4-b.dtb",
        "rpixen: starting the hypervisor",
        "(XEN) Xen version 4.20",
    ] {
        assert!(outcome.output.contains(line), "missing {line:?} in:\n{}", outcome.output);
    }
    eprintln!("raspi4b: Dom0 /init reached in {:?}", outcome.elapsed);
}
