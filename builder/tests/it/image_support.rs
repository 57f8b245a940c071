//! Shared fixtures for the image tests: manifests pointing at host files, fake arm64 Images, and a
//! busybox initramfs built with the system `cpio` (an independent tool).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const MARKER: &str = "RPIXEN-TEST-DOM0-INIT-MARKER";

pub fn rpixen() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rpixen"))
}

/// Runs rpixen, returning its output; the caller checks the status.
pub fn run_rpixen(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = rpixen();
    c.args(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().expect("start rpixen")
}

/// A file that `booti` accepts: an arm64 Image header (magic, image_size) and filler.
pub fn fake_arm64_image(len: usize, seed: u8) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
    v[16..24].copy_from_slice(&(len as u64).to_le_bytes());
    v[56..60].copy_from_slice(b"ARM\x64");
    v
}

/// Inputs for a synthetic qemu-virt manifest under `dir`.
pub struct Synthetic {
    pub manifest: PathBuf,
    pub initrd: PathBuf,
}

pub fn synthetic(dir: &Path, extra: &str) -> Synthetic {
    std::fs::write(dir.join("hv.bin"), fake_arm64_image(300_000, 1)).unwrap();
    std::fs::write(dir.join("Image"), fake_arm64_image(5_000_000, 2)).unwrap();
    std::fs::write(dir.join("u-boot.bin"), vec![0x5a; 100_000]).unwrap();
    std::fs::write(dir.join("initrd.img"), vec![0x17; 700_000]).unwrap();
    let manifest = dir.join("m.yml");
    std::fs::write(
        &manifest,
        format!(
            r#"board:
  kind: qemu-virt
  uboot: {{file: u-boot.bin}}
  console: serial0
hypervisor:
  kind: rpixen
  binary: {{file: hv.bin}}
  cmdline: "console=dtuart dtuart=serial0"
dom0:
  kernel: {{file: Image}}
  cmdline: "console=hvc0 rdinit=/init"
  memory: 512M
rootfs:
  format: cpio
  images: [busybox]
config_files:
  - {{path: /etc/server, contents: "example.org\n"}}
partitions:
  boot: 64M
  imga: 16M
  imgb: 16M
  config: 8M
  persist: 8M
{extra}"#
        ),
    )
    .unwrap();
    Synthetic { manifest, initrd: dir.join("initrd.img") }
}

/// A busybox initramfs (gzip newc cpio, made by the system `cpio`) whose /init prints [`MARKER`].
pub fn busybox_initramfs(dir: &Path) -> PathBuf {
    let bb = testkit::debian_package("busybox-static").join("usr/bin/busybox");
    let root = dir.join("initramfs-root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy(&bb, root.join("bin/busybox")).unwrap();
    std::fs::write(
        root.join("init"),
        format!("#!/bin/busybox sh\n/bin/busybox echo {MARKER}\n/bin/busybox poweroff -f\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    for f in ["init", "bin/busybox"] {
        std::fs::set_permissions(root.join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = dir.join("initramfs.cpio.gz");
    testkit::run(Command::new("sh").current_dir(&root).arg("-c").arg(format!(
        "find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -n > '{}'",
        out.display()
    )));
    out
}

/// A qemu-virt manifest with Debian's Xen 4.20, kernel and U-Boot (host-file references).
pub fn xen_virt_manifest(dir: &Path) -> PathBuf {
    let xen = testkit::debian_package("xen-hypervisor-4.20-arm64").join("boot/xen-4.20-arm64");
    let linux = testkit::test_kernel_image();
    let uboot = testkit::uboot_qemu();
    let m = dir.join("xen-virt.yml");
    std::fs::write(
        &m,
        format!(
            r#"board:
  kind: qemu-virt
  uboot: {{file: {}}}
  console: serial0
hypervisor:
  kind: xen
  binary: {{file: {}}}
  cmdline: "console=dtuart dtuart=serial0 sync_console dom0_max_vcpus=2"
dom0:
  kernel: {{file: {}}}
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
  persist: 16M
"#,
            uboot.display(),
            xen.display(),
            linux.display()
        ),
    )
    .unwrap();
    m
}

/// Copies `len` bytes at `offset` of `image` into a new file.
pub fn extract(image: &Path, offset: u64, len: u64, out: &Path) {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(image).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf).unwrap();
    std::fs::write(out, buf).unwrap();
}
