//! dom0-init as `/init` of an initramfs, booted by Debian's arm64 kernel on QEMU `virt`: it reaches
//! the readiness line, runs the config's services, and a service's busybox `poweroff` ends QEMU
//! through init's orderly shutdown (PSCI SYSTEM_OFF).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const KERNEL_PKG: &str = "linux-image-6.12.117+deb13-arm64";

/// The static aarch64 build, as packaged (`release-small`).
fn aarch64_init() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    testkit::run(Command::new(cargo).current_dir(testkit::repo_root()).args([
        "build",
        "-q",
        "-p",
        "dom0-init",
        "--target",
        "aarch64-unknown-linux-musl",
        "--profile",
        "release-small",
    ]));
    testkit::repo_root().join("target/aarch64-unknown-linux-musl/release-small/dom0-init")
}

fn kernel() -> PathBuf {
    let dir = testkit::debian_package(KERNEL_PKG).join("boot");
    std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("vmlinuz-"))
        .expect("vmlinuz in the kernel package")
}

/// A newc cpio made by the system `cpio` from a folder holding /init, busybox and the config.
fn initramfs(dir: &Path, config: &str) -> PathBuf {
    let root = dir.join("root");
    let _ = std::fs::remove_dir_all(&root);
    for d in ["bin", "etc/rpixen"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(aarch64_init(), root.join("init")).unwrap();
    let busybox = testkit::debian_package("busybox-static").join("usr/bin/busybox");
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    for applet in ["sh", "poweroff", "reboot", "halt", "cat", "echo", "sleep", "hostname", "ls", "ps"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("etc/rpixen/init.yml"), config).unwrap();
    // A few real modules (vfat needs fat) and the built-in list, as the kernel package lays them out.
    let modules = testkit::debian_package(KERNEL_PKG).join("usr/lib/modules");
    let release = std::fs::read_dir(&modules).unwrap().flatten().next().unwrap().path();
    let dest = root.join("lib/modules").join(release.file_name().unwrap());
    for m in ["modules.builtin", "kernel/fs/fat/fat.ko.xz", "kernel/fs/fat/vfat.ko.xz", "kernel/fs/overlayfs/overlay.ko.xz"] {
        std::fs::create_dir_all(dest.join(m).parent().unwrap()).unwrap();
        std::fs::copy(release.join(m), dest.join(m)).unwrap();
    }
    let out = dir.join("initrd.cpio");
    let cpio = Command::new("sh")
        .current_dir(&root)
        .arg("-c")
        .arg(format!("find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet > {}", out.display()))
        .status()
        .unwrap();
    assert!(cpio.success());
    out
}

fn boot(initrd: &Path) -> testkit::Qemu {
    let kernel = kernel();
    testkit::Qemu::start(
        &[
            "-M", "virt", "-cpu", "cortex-a72", "-m", "1G", "-no-reboot", "-nic", "none",
            "-kernel", kernel.to_str().unwrap(),
            "-initrd", initrd.to_str().unwrap(),
            "-append", "console=ttyAMA0 panic=-1 rpixen.trace",
        ],
        1,
    )
}

/// `ready in N ms since exec, M ms since kernel start` from the readiness line.
fn readiness(output: &str) -> (u64, u64) {
    let line = output.lines().find(|l| l.contains("rpixen: dom0 ready")).unwrap();
    let num = |after: &str| -> u64 {
        let rest = &line[line.find(after).unwrap() + after.len()..];
        rest.split_whitespace().next().unwrap().parse().unwrap()
    };
    let kernel_ms = line.split(", ").nth(1).and_then(|s| s.split_whitespace().next()).unwrap().parse().unwrap();
    (num("ready in "), kernel_ms)
}

const FAILURES: &[&str] = &["Kernel panic", "dom0-init: BUG", "Attempted to kill init"];

#[test]
fn initramfs_boot_runs_services_and_powers_off() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dom0-init-qemu");
    std::fs::create_dir_all(&dir).unwrap();
    let initrd = initramfs(
        &dir,
        r#"
hostname: rpixen-qemu
modules: [vfat, overlay]
onboot:
  - name: mods
    command: [/bin/cat, /proc/modules]
  - name: check
    command: [/bin/sh, -c, "echo onboot host=$(hostname) lo=$(cat /sys/class/net/lo/flags) pid1=$(cat /proc/1/comm)"]
services:
  - name: worker
    command: [/bin/sh, -c, "echo worker up; sleep 2; echo worker asks for poweroff; poweroff"]
    restart: never
  - name: idler
    command: [/bin/sh, -c, "trap 'echo idler stopping; exit 0' TERM; while :; do sleep 1; done"]
"#,
    );
    let mut qemu = boot(&initrd);
    let ready = qemu.wait_for("rpixen: dom0 ready", FAILURES, Duration::from_secs(180)).unwrap();
    let (exec_ms, kernel_ms) = readiness(&ready.output);
    eprintln!("readiness: {exec_ms} ms after exec, {kernel_ms} ms after kernel start");
    let from_init = ready.output.find("Run /init").unwrap_or(0);
    eprintln!("{}", &ready.output[from_init..]);
    let out = qemu.wait_for("power-off now", FAILURES, Duration::from_secs(60)).unwrap().output;
    let status = qemu.wait_exit(Duration::from_secs(60)).unwrap();
    let out = qemu.output().to_string() + &out[..0];
    assert!(status.success(), "QEMU exit status {status}");
    assert!(out.contains("[check] onboot host=rpixen-qemu lo=0x9 pid1=init"), "{out}");
    assert!(out.contains("[worker] worker up"), "{out}");
    for m in ["vfat", "fat", "overlay"] {
        assert!(out.contains(&format!("[mods] {m} ")), "module {m} loaded:\n{out}");
    }
    let mods = out.find("[mods]").unwrap();
    let check = out.find("[check]").unwrap();
    assert!(mods < check, "onboot steps run in order");
    assert!(out.contains("SIGUSR2 received: power-off"), "busybox poweroff signals PID 1:\n{out}");
    assert!(out.contains("[idler] idler stopping"), "services are stopped before power-off:\n{out}");
    assert!(!out.contains("Kernel panic"), "{out}");
    // Readiness line exactly once.
    assert_eq!(out.matches("rpixen: dom0 ready").count(), 1, "{out}");
}
