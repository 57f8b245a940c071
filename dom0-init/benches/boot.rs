//! Exec-to-first-service time of dom0-init against busybox's init, booted the same way (Debian's arm64 kernel,
//! QEMU `virt`, the same initramfs contents) in the same run. Both do the same work: mount /proc,
//! /sys, /dev, /dev/pts, /run, /tmp, set the hostname, bring up lo and start one service. The
//! service's first act is to write a marker to /dev/kmsg, so both ends of the interval carry the
//! kernel's own timestamps: `Run /init as init process` to `bench: service up`. Host load between
//! boots does not count. TCG makes absolute numbers large; the ratio is the figure.
//!
//! `cargo bench -p dom0-init --bench boot` (RUNS=N to change the 3 boots per init).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn main() {
    let runs: usize = std::env::var("RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    let dir = testkit::cache_dir().join("bench-dom0-init");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ours = initramfs(&dir.join("dom0-init"), Init::Dom0Init);
    let peer = initramfs(&dir.join("busybox"), Init::Busybox);
    let mut results = Vec::new();
    for (name, initrd) in [("dom0-init", &ours), ("busybox init", &peer)] {
        let times: Vec<f64> = (0..runs).map(|_| boot_ms(initrd)).collect();
        let best = times.iter().cloned().fold(f64::MAX, f64::min);
        let shown: Vec<String> = times.iter().map(|t| format!("{t:.0}")).collect();
        println!("{name:>13}: exec -> service running {} ms (best {best:.0})", shown.join(", "));
        results.push(best);
    }
    println!("ratio dom0-init / busybox init (best of {runs}): {:.2}", results[0] / results[1]);
}

enum Init {
    Dom0Init,
    Busybox,
}

fn initramfs(dir: &Path, init: Init) -> PathBuf {
    let root = dir.join("root");
    for d in ["bin", "etc/rpixen", "proc", "sys", "dev", "run", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let busybox = testkit::debian_package("busybox-static").join("usr/bin/busybox");
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "mount", "mkdir", "hostname", "ifconfig", "cat", "cut", "sleep", "poweroff", "echo",
        "init",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    let service = "echo bench: service up > /dev/kmsg; sleep 1; poweroff";
    match init {
        Init::Dom0Init => {
            std::fs::copy(testkit::aarch64_dom0_init(), root.join("init")).unwrap();
            let config = format!("hostname: bench\nservices:\n  - {{name: svc, command: [/bin/sh, -c, \"{service}\"], restart: never}}\n");
            std::fs::write(root.join("etc/rpixen/init.yml"), config).unwrap();
        }
        Init::Busybox => {
            std::os::unix::fs::symlink("bin/busybox", root.join("init")).unwrap();
            let rc = "#!/bin/sh\nmount -t proc proc /proc\nmount -t sysfs sysfs /sys\nmount -t devtmpfs devtmpfs /dev\n\
                      mkdir -p /dev/pts\nmount -t devpts devpts /dev/pts\nmount -t tmpfs tmpfs /run\nmount -t tmpfs tmpfs /tmp\n\
                      hostname bench\nifconfig lo up\n";
            std::fs::write(root.join("etc/rc"), rc).unwrap();
            std::fs::set_permissions(
                root.join("etc/rc"),
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .unwrap();
            // `once` entries start after sysinit.
            let inittab = format!("::sysinit:/etc/rc\n::once:/bin/sh -c '{service}'\n");
            std::fs::write(root.join("etc/inittab"), inittab).unwrap();
        }
    }
    let out = dir.join("initrd.cpio");
    let status = Command::new("sh")
        .current_dir(&root)
        .arg("-c")
        .arg(format!("find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet > {}", out.display()))
        .status()
        .unwrap();
    assert!(status.success());
    out
}

/// One boot: ms between the kernel timestamps of `Run /init` and the service's marker.
fn boot_ms(initrd: &Path) -> f64 {
    let kernel = testkit::test_kernel_image();
    let args = testkit::QemuArgs::virt_el1()
        .smp(1)
        .memory("1G")
        .no_reboot()
        .kernel(&kernel)
        .initrd(initrd)
        .append("console=ttyAMA0 panic=-1");
    let mut qemu = testkit::Qemu::start_with(&args, 1);
    let out =
        qemu.wait_for("Power down", &["Kernel panic"], Duration::from_secs(240)).unwrap().output;
    let stamp = |marker: &str| -> f64 {
        let line = out
            .lines()
            .find(|l| l.contains(marker))
            .unwrap_or_else(|| panic!("no {marker:?}:\n{out}"));
        line.trim_start_matches('[').split(']').next().unwrap().trim().parse().unwrap()
    };
    (stamp("bench: service up") - stamp("Run /init as init process")) * 1000.0
}
