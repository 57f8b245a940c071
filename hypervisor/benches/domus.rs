//! `cargo bench -p rpixen-hypervisor --bench domus`: static DomUs (issue 11), one run. The same
//! image manifest (Dom0 plus two DomUs, each an initramfs from OCI layers with `dom0-init` as PID 1)
//! written by `rpixen live` for our hypervisor (`images/qemu-virt-domus.yml`) and for Debian's Xen
//! 4.20 (`images/qemu-virt-xen-domus.yml`), booted through Debian's U-Boot and the image's boot
//! script on the same QEMU machine (virt, GICv2, `-smp 4`, 2 GiB, TCG): wall time from QEMU start to
//! all three `rpixen: dom0 ready` lines, and the ratio. Then the hypervisor binary's size against
//! Bao's Raspberry Pi 4 build.
//!
//! Each boot also prints when its console milestones came (U-Boot, the loads, the hypervisor, each
//! domain's Linux and readiness). `BENCH_ONLY=rpixen` or `BENCH_ONLY=xen` boots one contender once;
//! `BENCH_CONSOLE=DIR` keeps each boot's console there.
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
        seen[domain_of(line) as usize] = true;
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

/// Console milestones, each timed at its first appearance (to the 50 ms poll): where the time goes.
/// `None` as the domain matches any line; `Some(n)` only domain `n`'s (0: Dom0, unprefixed).
const MILESTONES: &[(&str, Option<u32>, &str)] = &[
    ("U-Boot banner", None, "U-Boot 20"),
    ("boot script loads its first file", None, "rpixen: loading hypervisor"),
    ("Dom0 kernel load starts", None, "rpixen: loading Dom0 kernel"),
    ("DomU files load starts", None, "rpixen: loading edge1 kernel"),
    ("booti", None, "rpixen: starting the hypervisor"),
    ("hypervisor entered (ours)", None, "hv: rpixen hypervisor"),
    ("hypervisor entered (Xen)", None, "Xen version"),
    ("d1's CPU up, scrubbing its RAM (ours)", None, "hv: cpu3 up"),
    ("d1 loaded (ours)", None, "hv: d1 (edge1) loaded"),
    ("d2 loaded (ours)", None, "hv: d2 (edge2) loaded"),
    ("Dom0 entered (ours)", None, "entering dom0 at EL1"),
    ("Dom0 Linux starts", Some(0), "Booting Linux on physical CPU"),
    ("d1 Linux starts", Some(1), "Booting Linux on physical CPU"),
    ("d2 Linux starts", Some(2), "Booting Linux on physical CPU"),
    ("Dom0 runs /init", Some(0), "Run /init as init process"),
    ("d1 runs /init", Some(1), "Run /init as init process"),
    ("d2 runs /init", Some(2), "Run /init as init process"),
    ("Dom0 ready", Some(0), READY),
    ("d1 ready", Some(1), READY),
    ("d2 ready", Some(2), READY),
];

/// The domain a console line is from: 1 or 2 for a DomU's prefixed line, else 0 (Dom0 or the
/// hypervisor).
fn domain_of(line: &str) -> u32 {
    (1..=2).find(|&n| from_domu(line, n)).unwrap_or(0)
}

/// Records the first time each milestone's line is on the console.
struct Milestones {
    seen: Vec<Option<Duration>>,
}

impl Milestones {
    fn new() -> Milestones {
        Milestones { seen: vec![None; MILESTONES.len()] }
    }

    fn update(&mut self, out: &str, now: Duration) {
        for (i, (_, dom, text)) in MILESTONES.iter().enumerate() {
            if self.seen[i].is_none()
                && out.lines().any(|l| l.contains(text) && dom.is_none_or(|d| domain_of(l) == d))
            {
                self.seen[i] = Some(now);
            }
        }
    }

    fn print(&self, what: &str) {
        eprintln!("{what}: console milestones (seconds since QEMU start):");
        for ((name, _, _), t) in MILESTONES.iter().zip(&self.seen) {
            if let Some(t) = t {
                eprintln!("  {:>7.2}  {name}", t.as_secs_f64());
            }
        }
    }
}

/// Boots `image` through U-Boot until all three readiness lines (QEMU start to there is what
/// `testkit::race` times); says how long each boot took and when each milestone came, so a failing
/// contender still leaves the other's figures.
fn boot(image: &Path, uboot: &Path, what: &str) {
    let args = testkit::QemuArgs::virt().smp(4).memory("2G").bios(uboot).disk(image);
    let start = std::time::Instant::now();
    let q = testkit::Qemu::start_with(&args, 1);
    let mut marks = Milestones::new();
    loop {
        let out = q.output();
        marks.update(&out, start.elapsed());
        if all_ready(&out) {
            eprintln!("{what}: Dom0 and both DomUs ready after {:.2?}", start.elapsed());
            if let Some(dir) = std::env::var_os("BENCH_CONSOLE") {
                let file = Path::new(&dir).join(format!("domus-{}.log", what.replace(' ', "-")));
                std::fs::write(&file, &out).unwrap();
                eprintln!("{what}: console in {}", file.display());
            }
            marks.print(what);
            for line in out.lines().filter(|l| l.contains(READY)) {
                eprintln!("  {line}");
            }
            return;
        }
        if let Some(f) = FAILURES.iter().find(|f| out.contains(**f)) {
            marks.print(what);
            panic!("{what}: failure pattern {f:?}:\n{}", tail(&out));
        }
        if start.elapsed() > LIMIT {
            marks.print(what);
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
    // One boot of one contender, for looking at its milestones while changing it.
    match std::env::var("BENCH_ONLY").as_deref() {
        Ok("rpixen") => return boot(&ours, &uboot, "rpixen"),
        Ok("xen") => return boot(&xen, &uboot, "Xen 4.20"),
        _ => {}
    }

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
