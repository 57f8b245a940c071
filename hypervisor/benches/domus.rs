//! `cargo bench -p rpixen-hypervisor --bench domus`: static DomUs (issue 11), one run. The same
//! image manifest (Dom0 plus two DomUs, each an initramfs from OCI layers with `dom0-init` as PID 1)
//! written by `rpixen live` for our hypervisor (`images/qemu-virt-domus.yml`) and for Debian's Xen
//! 4.20 (`images/qemu-virt-xen-domus.yml`), booted through Debian's U-Boot and the image's boot
//! script on the same QEMU machine (virt, GICv2, `-smp 4`, 2 GiB, TCG): wall time from QEMU start to
//! all three `rpixen: dom0 ready` lines, and the ratio. Then the hypervisor binary's size against
//! Bao's Raspberry Pi 4 build.
//!
//! Targets: ours at most 0.5x Xen's time; binary under Bao's 90,112 bytes with DomU support in.

#[path = "../tests/it/common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const READY: &str = "rpixen: dom0 ready";
const FAILURES: &[&str] = &[
    "Kernel panic",
    "(XEN) Panic",
    "hv: PANIC",
    "hv: FATAL",
    "rpixen: cannot load",
    "Unknown command",
    "dom0-init: BUG",
    "Attempted to kill init",
];
/// Three Linux kernels on four TCG vCPUs of a shared two-core machine.
const LIMIT: Duration = Duration::from_secs(900);
/// Bao's hypervisor for the Raspberry Pi 4 (`PLATFORM=rpi4`), as issue 11 gives it.
const BAO_RPI4_BYTES: u64 = 90_112;

/// Whether a console line is DomU `n`'s: ours prefixes `(dN) `; Xen 4.20 prints a vpl011 line as
/// `(XEN) DOMn: ` (later Xen as `(dn) `).
fn from_domu(line: &str, n: u32) -> bool {
    line.contains(&format!("DOM{n}: ")) || line.contains(&format!("(d{n}) "))
}

/// Dom0's readiness line and both DomUs'.
fn all_ready(out: &str) -> bool {
    let mut seen = [false; 3];
    for line in out.lines().filter(|l| l.contains(READY)) {
        let who = (1..=2).find(|&n| from_domu(line, n)).unwrap_or(0);
        seen[who as usize] = true;
    }
    seen == [true; 3]
}

/// `rpixen live MANIFEST -o OUT` with the packages in `pkg`.
fn live(rpixen: &Path, pkg: &Path, cache: &Path, manifest: &str, out: &Path) {
    let o = Command::new(rpixen)
        .current_dir(testkit::repo_root())
        .args(["live", manifest, "-o"])
        .arg(out)
        .env("RPIXEN_PKG_DIR", pkg)
        .env("XDG_CACHE_HOME", cache)
        .output()
        .unwrap();
    assert!(o.status.success(), "rpixen live {manifest}: {}", String::from_utf8_lossy(&o.stderr));
}

/// Boots `image` through U-Boot until all three readiness lines (QEMU start to there is what
/// `testkit::race` times); says how long each boot took, so a failing contender still leaves the
/// other's figure.
fn boot(image: &Path, uboot: &Path, what: &str) {
    let args = testkit::QemuArgs::virt().smp(4).memory("2G").bios(uboot).disk(image);
    let q = testkit::Qemu::start_with(&args, 1);
    let start = std::time::Instant::now();
    loop {
        let out = q.output();
        if all_ready(&out) {
            eprintln!("{what}: Dom0 and both DomUs ready after {:.2?}", start.elapsed());
            return;
        }
        if let Some(f) = FAILURES.iter().find(|f| out.contains(**f)) {
            panic!("{what}: failure pattern {f:?}:\n{}", tail(&out));
        }
        if start.elapsed() > LIMIT {
            panic!("{what}: not all three domains ready within {LIMIT:?}:\n{}", tail(&out));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tail(s: &str) -> &str {
    let start = s.len().saturating_sub(6000);
    let start = (start..s.len()).find(|i| s.is_char_boundary(*i)).unwrap_or(s.len());
    &s[start..]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rpixen = testkit::rpixen_release_binary();
    let pkg = testkit::build_packages(
        &rpixen,
        &d.join("pkg"),
        &["kernel", "busybox", "dom0-init", "u-boot", "xen", "hypervisor"],
    );
    // The same build.sh output the image's `hypervisor` package carries.
    let hv: PathBuf = common::hv_bin();
    let (ours, xen) = (d.join("ours.raw"), d.join("xen.raw"));
    live(&rpixen, &pkg, &d.join("cache"), "images/qemu-virt-domus.yml", &ours);
    live(&rpixen, &pkg, &d.join("cache"), "images/qemu-virt-xen-domus.yml", &xen);
    let uboot = testkit::debian_package("u-boot-qemu").join("usr/lib/u-boot/qemu_arm64/u-boot.bin");

    // Xen first: its figure is printed even if ours does not come up.
    let [t_xen, t_ours] = testkit::race(
        1,
        [&mut || boot(&xen, &uboot, "Xen 4.20"), &mut || boot(&ours, &uboot, "rpixen")],
    );
    let size = std::fs::metadata(&hv).unwrap().len();
    println!("QEMU start to Dom0 + 2 DomUs ready (virt TCG, -smp 4, through U-Boot; one run):");
    println!("  rpixen hypervisor  {t_ours:>9.2?}");
    println!("  Xen 4.20 dom0less  {t_xen:>9.2?}");
    println!("  rpixen/xen = {:.2} (target <= 0.50)", t_ours.as_secs_f64() / t_xen.as_secs_f64());
    println!(
        "hypervisor binary: {size} bytes, Bao (rpi4) {BAO_RPI4_BYTES} bytes: rpixen/bao = {:.3} (target < 1)",
        size as f64 / BAO_RPI4_BYTES as f64
    );
}
