//! Shared pieces of the hypervisor's QEMU tests: the binary (built by build.sh), Debian's kernel, a
//! busybox initramfs whose /init prints a marker and powers off, and QEMU virt's own device tree with
//! Xen-style /chosen module nodes added by `fdtput` (what ImageBuilder's boot script does in U-Boot).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use testkit::QemuArgs;

pub const MARKER: &str = "DOM0-MARKER";
pub const FAILURES: &[&str] =
    &["hv: FATAL", "hv: PANIC", "Kernel panic", "Bad Linux ARM64 Image", "rpixen: cannot load"];
/// The hypervisor's and Dom0's command lines of most direct boots on `virt`: the hypervisor on the
/// PL011 (serial0) with synchronous output, Dom0 with 512 MiB and its console on the emulated PL011.
pub const VIRT_HV_ARGS: &str = "console=dtuart dtuart=serial0 sync_console dom0_mem=512M";
pub const VIRT_DOM0_ARGS: &str = "console=ttyAMA0 rdinit=/init";
/// QEMU -kernel puts an Image with text_offset 0 at RAM + 2 MiB.
pub const HV_ADDR_VIRT: u64 = 0x4020_0000;
pub const KERNEL_ADDR_VIRT: u64 = 0x4100_0000;
pub const INITRD_ADDR_VIRT: u64 = 0x4400_0000;

static BUILD: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The hypervisor binary, built once per test process with `hypervisor/build.sh`.
pub fn hv_bin() -> PathBuf {
    let mut g = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = &*g {
        return p.clone();
    }
    // Another build to compare against (an older commit's, for a before/after run).
    if let Some(p) = std::env::var_os("RPIXEN_HV_BIN") {
        *g = Some(PathBuf::from(&p));
        return PathBuf::from(p);
    }
    // build.sh replaces the file atomically, so concurrent test processes never see half a binary.
    let out = testkit::cache_dir().join("rpixen-hv.bin");
    testkit::run(Command::new(testkit::repo_root().join("hypervisor/build.sh")).arg(&out));
    *g = Some(out.clone());
    out
}

pub fn kernel() -> PathBuf {
    testkit::test_kernel_image()
}

/// A module of the test kernel, decompressed (busybox's insmod reads plain ELF), e.g.
/// `drivers/watchdog/sp805_wdt`.
pub fn kernel_module(dir: &Path, rel: &str) -> PathBuf {
    let xz = testkit::test_kernel_modules().join(format!("kernel/{rel}.ko.xz"));
    let name = rel.rsplit('/').next().unwrap_or(rel);
    let out = dir.join(format!("{name}.ko"));
    let xz_out = Command::new("xz").args(["-dc", "--"]).arg(&xz).output().expect("xz");
    assert!(
        xz_out.status.success(),
        "xz -d {}: {}",
        xz.display(),
        String::from_utf8_lossy(&xz_out.stderr)
    );
    std::fs::write(&out, xz_out.stdout).unwrap();
    out
}

pub fn pi_dtb() -> PathBuf {
    testkit::test_kernel_rpi4_dtb()
}

/// A gzip'd newc initramfs: busybox-static and an /init that mounts proc/sys/dev, prints the marker
/// with the CPU count, memory, and the kernel's EL line, runs `extra` and powers off.
pub fn initramfs(dir: &Path, extra: &str) -> PathBuf {
    initramfs_with(dir, extra, &[])
}

/// `initramfs` with more files: each (host file, name in the initramfs's root).
pub fn initramfs_with(dir: &Path, extra: &str, files: &[(&Path, &str)]) -> PathBuf {
    let root = dir.join("initramfs-root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    for (src, name) in files {
        std::fs::copy(src, root.join(name)).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    }
    for d in ["proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let bb = testkit::debian_package("busybox-static").join("usr/bin/busybox");
    std::fs::copy(bb, root.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "mount", "grep", "echo", "cat", "devmem", "poweroff", "sleep", "insmod", "watchdog",
        "kill",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    let init = format!(
        "#!/bin/sh\nexport PATH=/bin\nmount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n\
         echo \"{MARKER} cpus=$(grep -c ^processor /proc/cpuinfo) memtotal_kb=$(grep MemTotal /proc/meminfo | grep -o '[0-9]*')\"\n\
         {extra}\npoweroff -f\n"
    );
    std::fs::write(root.join("init"), init).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("init"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = dir.join("initrd.gz");
    let sh = format!(
        "cd '{}' && find . | cpio -o -H newc --quiet | gzip -1 > '{}'",
        root.display(),
        out.display()
    );
    testkit::run(Command::new("sh").arg("-c").arg(sh));
    out
}

/// QEMU virt's device tree for the test machine, dumped by QEMU itself.
pub fn virt_dtb(dir: &Path, smp: u32) -> PathBuf {
    let dtb = dir.join("virt.dtb");
    QemuArgs::virt().smp(smp).dump_dtb(&dtb);
    dtb
}

fn fdtput(dtb: &Path, args: &[&str]) {
    testkit::run(Command::new("fdtput").arg(dtb).args(args));
}

/// Adds Xen's /chosen bindings: command lines and the kernel and ramdisk module nodes.
pub fn add_chosen(
    dtb: &Path,
    hv_args: &str,
    dom0_args: &str,
    kernel: (u64, u64),
    initrd: (u64, u64),
) {
    fdtput(dtb, &["-t", "i", "/chosen", "#address-cells", "2"]);
    fdtput(dtb, &["-t", "i", "/chosen", "#size-cells", "2"]);
    fdtput(dtb, &["-t", "s", "/chosen", "xen,xen-bootargs", hv_args]);
    fdtput(dtb, &["-t", "s", "/chosen", "xen,dom0-bootargs", dom0_args]);
    for (name, compat, (addr, size)) in
        [("dom0", "multiboot,kernel", kernel), ("dom0-ramdisk", "multiboot,ramdisk", initrd)]
    {
        let node = format!("/chosen/{name}");
        fdtput(dtb, &["-c", &node]);
        fdtput(dtb, &["-t", "s", &node, "compatible", compat, "multiboot,module"]);
        let cells = [addr >> 32, addr & 0xFFFF_FFFF, size >> 32, size & 0xFFFF_FFFF]
            .map(|c| format!("{c:#x}"));
        let mut a = vec!["-t", "x", &node, "reg"];
        a.extend(cells.iter().map(String::as_str));
        fdtput(dtb, &a);
    }
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

/// QEMU arguments booting the hypervisor directly (`-kernel`, modules placed by `-device loader`) on
/// `virt` with `-smp smp -m 2G`.
pub fn virt_direct_args(
    dir: &Path,
    smp: u32,
    hv_args: &str,
    dom0_args: &str,
    initrd: &Path,
) -> QemuArgs {
    virt_direct_args_for(&hv_bin(), dir, smp, hv_args, dom0_args, initrd)
}

/// `virt_direct_args` with another hypervisor binary (Xen, or another build of ours) as `-kernel`.
pub fn virt_direct_args_for(
    hypervisor: &Path,
    dir: &Path,
    smp: u32,
    hv_args: &str,
    dom0_args: &str,
    initrd: &Path,
) -> QemuArgs {
    let dtb = virt_dtb(dir, smp);
    let k = kernel();
    add_chosen(
        &dtb,
        hv_args,
        dom0_args,
        (KERNEL_ADDR_VIRT, size(&k)),
        (INITRD_ADDR_VIRT, size(initrd)),
    );
    QemuArgs::virt()
        .smp(smp)
        .kernel(hypervisor)
        .dtb(&dtb)
        .load_at(&k, KERNEL_ADDR_VIRT)
        .load_at(initrd, INITRD_ADDR_VIRT)
}

/// QEMU virt booting a disk image through Debian's U-Boot (`-bios`), as a board boots from its SD
/// card: the boot script on the image's FAT loads the hypervisor, Dom0 and the device tree.
pub fn virt_uboot_args(uboot: &Path, img: &Path) -> QemuArgs {
    QemuArgs::virt().smp(4).bios(uboot).disk(img)
}

/// The checks every Dom0 boot must pass (issue 4 "Done when").
pub fn assert_dom0_booted(out: &str, cpus: u32, dom0_mem_mib: u64) {
    for line in [
        "hv: rpixen hypervisor, EL2 entry",
        "hv: gicv2 lines=",
        "Booting Linux on physical CPU",
        "CPU: All CPU(s) started at EL1",
        "arch_timer: cp15 timer(s) running at",
        &format!("smp: Brought up 1 node, {cpus} CPU"),
        &format!("{MARKER} cpus={cpus} "),
        "hv: dom0 memory",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    // Linux's own account of its memory: "Memory: 391836K/524288K available".
    assert!(
        out.contains(&format!("K/{}K available", dom0_mem_mib * 1024)),
        "Dom0 memory is not dom0_mem={dom0_mem_mib}M:\n{out}"
    );
    assert!(
        out.contains(&format!("({dom0_mem_mib} MiB)")),
        "hypervisor placed another size:\n{out}"
    );
    // No hypervisor line was cut into a Dom0 line: every "hv:" starts a line.
    for (i, l) in out.lines().enumerate() {
        if let Some(pos) = l.find("hv: ") {
            assert!(pos == 0, "line {i} has a hypervisor message in the middle: {l:?}");
        }
    }
}

static RPIXEN: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The `rpixen` CLI, built with the profile this test was built with.
pub fn rpixen_bin() -> PathBuf {
    let mut g = RPIXEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = &*g {
        return p.clone();
    }
    // This test runs from target/<profile-dir>/deps/.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(p) => p,
        None => "dev",
    };
    testkit::run(Command::new(env!("CARGO")).current_dir(testkit::repo_root()).args([
        "build",
        "-q",
        "-p",
        "rpixen",
        "--profile",
        profile,
    ]));
    let bin = profile_dir.join("rpixen");
    *g = Some(bin.clone());
    bin
}

/// A manifest for `rpixen live` that uses our hypervisor and Debian's kernel and U-Boot by host path.
pub fn live_manifest(
    dir: &Path,
    board: &str,
    uboot: &Path,
    dtb: Option<(&Path, &[&str])>,
    console: &str,
    hv_args: &str,
    dom0_args: &str,
) -> PathBuf {
    live_manifest_with(dir, board, uboot, dtb, console, ("rpixen", &hv_bin()), hv_args, dom0_args)
}

/// `live_manifest` with another hypervisor: `(kind, binary)` as in the manifest's `hypervisor:`.
#[allow(clippy::too_many_arguments)] // one per manifest field the tests vary
pub fn live_manifest_with(
    dir: &Path,
    board: &str,
    uboot: &Path,
    dtb: Option<(&Path, &[&str])>,
    console: &str,
    hypervisor: (&str, &Path),
    hv_args: &str,
    dom0_args: &str,
) -> PathBuf {
    let (hv_kind, hv_binary) = hypervisor;
    let mut board_yaml = format!(
        "board:\n  kind: {board}\n  uboot: {{file: {}}}\n  console: {console}\n",
        uboot.display()
    );
    if let Some((dtb, disable)) = dtb {
        board_yaml.push_str(&format!("  dtb: {{file: {}}}\n", dtb.display()));
        if !disable.is_empty() {
            board_yaml.push_str("  dtb_disable:\n");
            for d in disable {
                board_yaml.push_str(&format!("    - {d}\n"));
            }
        }
    }
    let m = dir.join("manifest.yml");
    std::fs::write(
        &m,
        format!(
            "{board_yaml}hypervisor:\n  kind: {hv_kind}\n  binary: {{file: {}}}\n  cmdline: \"{hv_args}\"\n\
             dom0:\n  kernel: {{file: {}}}\n  cmdline: \"{dom0_args}\"\n  memory: 512M\n\
             rootfs:\n  format: cpio\n  images: [busybox]\n\
             partitions:\n  boot: 64M\n  imga: 64M\n  imgb: 64M\n  config: 8M\n  persist: 16M\n",
            hv_binary.display(),
            kernel().display()
        ),
    )
    .unwrap();
    m
}

/// Runs `rpixen live MANIFEST --initrd INITRD -o OUT`.
pub fn rpixen_live(manifest: &Path, initrd: &Path, out: &Path) {
    testkit::run(Command::new(rpixen_bin()).args([
        "live",
        manifest.to_str().unwrap(),
        "--initrd",
        initrd.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]));
}
