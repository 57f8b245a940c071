//! A rootfs built from a registry boots as an initramfs: busybox-static (Debian arm64) packed as an OCI
//! image by our layout writer, pushed to a real registry, pulled and built by `rootfs::build` with a
//! script as dom0-init, then booted by Debian's arm64 kernel in QEMU `virt`; its `/init` prints a marker.

use crate::common;

use std::time::Duration;

use common::{fake_dom0_init, manifest_with_rootfs, opts, Registry};
use rpixen::manifest::{self, RootfsFormat};
use rpixen::oci::layout::{Compression, ImageBuilder, LayerTar};
use rpixen::oci::registry::push_layout;

const MARKER: &str = "RPIXEN-OCI-INITRAMFS-OK";

#[test]
fn registry_rootfs_boots_as_initramfs() {
    let busybox =
        std::fs::read(testkit::debian_package("busybox-static").join("usr/bin/busybox")).unwrap();
    let kernel = testkit::test_kernel_image();

    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let o = opts(t);

    // Layer 1: busybox and its applet links; layer 2: device node and mount points.
    let mut l1 = LayerTar::new();
    l1.dir("bin", 0o755).file("bin/busybox", &busybox, 0o755);
    for applet in ["sh", "echo", "mount", "poweroff", "ls"] {
        l1.symlink(&format!("bin/{applet}"), "busybox");
    }
    // A hard link: the kernel links later names of an inode to the first, whose entry carries the data.
    l1.hardlink("bin/cat", "bin/busybox");
    let mut l2 = LayerTar::new();
    l2.dir("dev", 0o755)
        .char_device("dev/console", 5, 1, 0o600)
        .dir("proc", 0o555)
        .dir("sys", 0o555);
    let layout = t.join("busybox-layout");
    ImageBuilder::new()
        .layer(&l1.finish(), Compression::Gzip)
        .unwrap()
        .layer(&l2.finish(), Compression::Zstd)
        .unwrap()
        .write(&layout, "latest")
        .unwrap();
    let r = format!("{}/rpixen/busybox:test", reg.host());
    push_layout(&o, &layout, "latest", &r).unwrap();

    fake_dom0_init(
        &o.pkg_dir,
        &format!(
            "#!/bin/sh\nmount -t proc proc /proc\necho {MARKER} pid=$$\ncat /etc/rpixen/init.yml\nls -l /dev/console\npoweroff -f\n"
        ),
    );
    let manifest_path = t.join("m.yml");
    std::fs::write(
        &manifest_path,
        manifest_with_rootfs(&format!("rootfs:\n  format: cpio\n  images: [\"{r}\"]\n")),
    )
    .unwrap();
    let manifest = manifest::load(&manifest_path).unwrap();
    let initrd = t.join("initrd.cpio.gz");
    let report = rpixen::rootfs::build(
        &o,
        &manifest,
        RootfsFormat::Cpio,
        &mut std::fs::File::create(&initrd).unwrap(),
    )
    .unwrap();
    assert!(!report.cached);
    let raw: u64 =
        common::sh(&format!("gzip -dc {} | wc -c", initrd.display())).trim().parse().unwrap();
    assert!(raw > 1 << 20, "the archive spans several parallel-gzip blocks: {raw}");
    drop(reg);

    let args = testkit::QemuArgs::virt_el1()
        .smp(1)
        .memory("1G")
        .no_reboot()
        .kernel(&kernel)
        .initrd(&initrd)
        .append("console=ttyAMA0 rdinit=/init panic=-1");
    let mut qemu = testkit::Qemu::start_with(&args, 1);
    let boot = qemu
        .wait_for(
            MARKER,
            &["Kernel panic", "junk at the end", "invalid magic"],
            Duration::from_secs(240),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = qemu.wait_for("hostname: rpixen", &["Kernel panic"], Duration::from_secs(60));
    let out = qemu.output();
    assert!(out.contains(&format!("{MARKER} pid=1")), "/init is PID 1:\n{out}");
    assert!(out.contains("hostname: rpixen"), "init.yml from manifest.init:\n{out}");
    eprintln!("booted to the marker in {:?}", boot.elapsed);
}
