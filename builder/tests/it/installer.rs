//! `rpixen installer_raw` booted for real on QEMU `virt`: Debian's U-Boot (`-bios`) runs the installer
//! medium's scripts, which start our hypervisor and Dom0 (Debian's kernel, dom0-init from this
//! tree), whose `install` step writes the carried live image to the second disk.
//! - installer + blank 2 GiB target: written, verified, powered off; the target alone then boots to
//!   readiness with a first-boot identity, and its CONFIG holds the files given at build time (the
//!   manifest's and `/in`'s, through `RPIXEN_IN_DIR` as in the container); a `config.txt` and a
//!   NoCloud `user-data` put on the installer medium's BOOT FAT after the build (as a user or
//!   rpi-imager would) are on the target's BOOT, which `fsck.fat` accepts, and the target applies
//!   that user-data's host name;
//! - a target too small and one that holds a partition: refused on the console, bytes unchanged.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rpixen::oci::layout::{Compression, ImageBuilder};

const FAILURES: &[&str] = &[
    "Kernel panic",
    "dom0-init: BUG",
    "Attempted to kill init",
    "hv: FATAL",
    "hv: PANIC",
    "rpixen: cannot load",
    "rpixen-install: FAILED",
];
const LIMIT: Duration = Duration::from_secs(600);
const GIB: u64 = 1 << 30;

/// One QEMU at a time: TCG boots are CPU-bound.
static ONE_BOOT: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Writes an OCI layout at `dir` whose single layer is what `fill` puts in a folder.
fn layout(dir: &Path, staging: &Path, fill: impl FnOnce(&Path)) {
    std::fs::create_dir_all(staging).unwrap();
    fill(staging);
    ImageBuilder::new()
        .layer_from_dir(staging, Compression::Gzip)
        .unwrap()
        .write(dir, "latest")
        .unwrap();
}

/// The packages the manifest names, as `make pkgs` would lay them out: busybox, dom0-init, the
/// qemu-virt module set with kmod-index's indexes (coldplug loads virtio_blk, ext4 and vfat), and
/// e2fsprogs (first boot's `mkfs.ext4`).
fn packages(dir: &Path) -> PathBuf {
    let pkg = dir.join("pkg");
    let staging = dir.join("staging");
    layout(&pkg.join("dom0-init"), &staging.join("dom0-init"), |root| {
        std::fs::create_dir_all(root.join("sbin")).unwrap();
        std::fs::copy(testkit::aarch64_dom0_init(), root.join("sbin/dom0-init")).unwrap();
    });
    layout(&pkg.join("busybox"), &staging.join("busybox"), |root| {
        std::fs::create_dir_all(root.join("bin")).unwrap();
        let busybox = testkit::debian_package("busybox-static").join("usr/bin/busybox");
        std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
        for applet in ["sh", "poweroff", "cat", "ls", "sleep"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
    });
    layout(&pkg.join("modules"), &staging.join("modules"), |root| {
        let tree = testkit::test_kernel_package().join("usr/lib/modules");
        let release = std::fs::read_dir(&tree).unwrap().flatten().next().unwrap().path();
        let names = [
            "virtio_mmio",
            "virtio_blk",
            "ext4",
            "crc32c_generic",
            "vfat",
            "nls_cp437",
            "nls_ascii",
        ];
        let mods = kmod_index::closure_in_tree(&release, &names).unwrap();
        let dest = root.join("lib/modules").join(release.file_name().unwrap());
        for m in &mods {
            let to = dest.join(&m.path);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(release.join(&m.path), &to).unwrap();
        }
        std::fs::copy(release.join("modules.builtin"), dest.join("modules.builtin")).unwrap();
        for (name, text) in kmod_index::index_files(&mods) {
            std::fs::write(dest.join(name), text).unwrap();
        }
    });
    testkit::run(
        testkit::rpixen_command()
            .args(["pkg", "build", "pkg/e2fsprogs", "--cache"])
            .arg(testkit::pkg_cache())
            .arg("-o")
            .arg(pkg.join("e2fsprogs")),
    );
    pkg
}

/// Our hypervisor, built as the hypervisor's own tests build it.
fn hypervisor() -> PathBuf {
    let out = testkit::cache_dir().join("rpixen-hv.bin");
    testkit::run(Command::new(testkit::repo_root().join("hypervisor/build.sh")).arg(&out));
    out
}

struct Fixture {
    dir: tempfile::TempDir,
    manifest: PathBuf,
    pkg: PathBuf,
    in_dir: PathBuf,
    installer: PathBuf,
}

impl Fixture {
    /// `rpixen ARGS` with the fixture's packages, a private cache, and `/in` as the container has it.
    fn rpixen(&self, args: &[&str]) {
        let mut cmd = testkit::rpixen_command();
        cmd.args(args)
            .env("RPIXEN_PKG_DIR", &self.pkg)
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
            .env("RPIXEN_IN_DIR", &self.in_dir);
        testkit::run(&mut cmd);
    }
}

/// `rpixen installer_raw EXTRA` of a qemu-virt manifest with one CONFIG file, plus `/in/sub/server`.
fn build_installer(extra: &[&str]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let pkg = packages(dir.path());
    let manifest = dir.path().join("installer-test.yml");
    let text = format!(
        "board:\n  kind: qemu-virt\n  uboot: {{file: {uboot}}}\n  console: serial0\n\
         hypervisor:\n  kind: rpixen\n  binary: {{file: {hv}}}\n  cmdline: \"console=dtuart dtuart=serial0 sync_console\"\n\
         dom0:\n  kernel: {{file: {kernel}}}\n  cmdline: \"console=ttyAMA0 earlycon rdinit=/init\"\n  memory: 512M\n\
         rootfs:\n  format: cpio\n  images: [busybox, modules, e2fsprogs]\n\
         init:\n  hostname: rpixen-installed\n  onboot:\n    - {{name: nocloud, command: [/proc/self/exe, nocloud]}}\n\
         config_files:\n  - {{path: /build.txt, contents: \"from the manifest\\n\"}}\n\
         partitions: {{boot: 64M, imga: 64M, imgb: 64M, config: 8M, persist: 16M}}\n",
        uboot = testkit::uboot_qemu().display(),
        hv = hypervisor().display(),
        kernel = testkit::test_kernel_image().display(),
    );
    std::fs::write(&manifest, text).unwrap();
    let in_dir = dir.path().join("in");
    std::fs::create_dir_all(in_dir.join("sub")).unwrap();
    std::fs::write(in_dir.join("sub/server"), b"controller.example.invalid\n").unwrap();
    let installer = dir.path().join("installer.raw");
    let fx = Fixture { manifest, pkg, in_dir, installer, dir };
    let started = Instant::now();
    let mut args = vec!["installer_raw", s(&fx.manifest), "-o", s(&fx.installer)];
    args.extend_from_slice(extra);
    fx.rpixen(&args);
    eprintln!("rpixen installer_raw: {:?}", started.elapsed());
    fx
}

/// QEMU virt with the disks in order (the first is virtio 0).
fn start(disks: &[&Path]) -> testkit::Qemu {
    let args = disks.iter().fold(
        testkit::QemuArgs::virt().memory("1G").no_reboot().bios(&testkit::uboot_qemu()),
        |a, d| a.disk(d),
    );
    testkit::Qemu::start_with(&args, 1)
}

fn sparse_file(path: &Path, len: u64) {
    std::fs::File::create(path).unwrap().set_len(len).unwrap();
}

fn sha256(path: &Path) -> String {
    testkit::run(Command::new("sha256sum").arg(path)).split_whitespace().next().unwrap().to_owned()
}

/// The start and length in bytes of the partition named `name` of a GPT image (`partx`).
fn partition(image: &Path, name: &str) -> (u64, u64) {
    let table =
        testkit::run(Command::new("partx").args(["-g", "-o", "START,SECTORS,NAME"]).arg(image));
    let row = table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.get(2) == Some(&name))
        .unwrap_or_else(|| panic!("no partition {name} in:\n{table}"));
    (row[0].parse::<u64>().unwrap() * 512, row[1].parse::<u64>().unwrap() * 512)
}

fn mtype(image: &Path, file: &str) -> String {
    mtype_in(image, "CONFIG", file)
}

fn mtype_in(image: &Path, part: &str, file: &str) -> String {
    let (start, _) = partition(image, part);
    let drive = format!("{}@@{start}", image.display());
    testkit::run(Command::new("mtype").arg("-i").arg(drive).arg(file))
}

#[test]
fn installer_writes_the_target_which_then_boots_alone() {
    let _one = ONE_BOOT.lock().unwrap_or_else(|e| e.into_inner());
    let fx = build_installer(&[]);
    let target = fx.dir.path().join("target.raw");
    sparse_file(&target, 2 * GIB);
    // The user's edits on the flashed installer medium's BOOT FAT, made with mtools as any host would.
    let (boot, _) = partition(&fx.installer, "BOOT");
    let drive = format!("{}@@{boot}", fx.installer.display());
    let edits = fx.dir.path().join("edits");
    std::fs::create_dir_all(&edits).unwrap();
    std::fs::write(edits.join("config.txt"), CONFIG_TXT).unwrap();
    std::fs::write(edits.join("user-data"), USER_DATA).unwrap();
    for f in ["config.txt", "user-data"] {
        testkit::run(Command::new("mcopy").args(["-o", "-i", &drive]).arg(edits.join(f)).arg("::"));
    }

    let started = Instant::now();
    let mut q = start(&[&fx.installer, &target]);
    let done =
        q.wait_for("rpixen-install: done", FAILURES, LIMIT).unwrap_or_else(|e| panic!("{e}"));
    let status = q
        .wait_exit(Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("the installer did not power off: {e}"));
    let out = q.output();
    eprintln!("install: done after {:?}, QEMU ended after {:?}", done.elapsed, started.elapsed());
    assert!(status.success(), "QEMU status {status}");
    for l in out.lines().filter(|l| l.contains("rpixen-install")) {
        eprintln!("  {l}");
    }
    for line in [
        "rpixen-install: config.txt, user-data from the installer medium's BOOT partition",
        "rpixen-install: writing 10% (",
        "rpixen-install: writing 100% (",
        "rpixen-install: verified ",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    let target_line = out.lines().find(|l| l.contains("rpixen-install: target /dev/vd")).unwrap();
    assert!(target_line.ends_with("(2048 MiB)"), "{target_line}");
    drop(q);

    // The target as the installer left it: the image's table, CONFIG from the installer medium.
    let table = testkit::run(Command::new("sgdisk").arg("-p").arg(&target));
    for name in ["BOOT", "IMGA", "IMGB", "CONFIG", "PERSIST", "STATE"] {
        assert!(table.contains(name), "no {name} in:\n{table}");
    }
    assert_eq!(mtype(&target, "::/build.txt"), "from the manifest\n");
    assert_eq!(mtype(&target, "::/sub/server"), "controller.example.invalid\n");
    let (at, len) = partition(&target, "CONFIG");
    let config = fx.dir.path().join("config.fat");
    crate::image_support::extract(&target, at, len, &config);
    testkit::run(Command::new("fsck.fat").arg("-n").arg(&config));
    assert_eq!(mtype_in(&target, "BOOT", "::/config.txt"), CONFIG_TXT);
    assert_eq!(mtype_in(&target, "BOOT", "::/user-data"), USER_DATA);
    let (at, len) = partition(&target, "BOOT");
    let boot_fat = fx.dir.path().join("boot.fat");
    crate::image_support::extract(&target, at, len, &boot_fat);
    testkit::run(Command::new("fsck.fat").arg("-n").arg(&boot_fat));

    // The target alone: first boot makes it a device of its own, then readiness.
    let started = Instant::now();
    let mut q = start(&[&target]);
    let ready = q.wait_for("rpixen: dom0 ready", FAILURES, LIMIT).unwrap_or_else(|e| panic!("{e}"));
    let out = ready.output;
    eprintln!("installed target: ready after {:?}", started.elapsed());
    let line = out.lines().find(|l| l.contains("rpixen: dom0 ready")).unwrap();
    assert!(!line.contains("id=none"), "no first-boot identity: {line}\n{out}");
    assert!(out.contains("first boot: GPT of /dev/vda written"), "{out}");
    assert!(out.contains("NoCloud files user-data"), "{out}");
    assert!(out.contains("applied: hostname carried-over"), "{out}");
    drop(q);
    let verify = testkit::run(Command::new("sgdisk").arg("-v").arg(&target));
    assert!(verify.contains("No problems found"), "{verify}");
}

/// What the user writes onto the installer medium's BOOT FAT after flashing it.
const CONFIG_TXT: &str = "# edited on the installer medium\narm_64bit=1\ngpu_mem=16\n";
const USER_DATA: &str = "#cloud-config\nhostname: carried-over\n";

/// Boots the installer with `target`, expects `refusal` on the console, and checks that the target's
/// bytes did not change.
fn refused(fx: &Fixture, target: &Path, refusal: &str) -> Duration {
    let before = sha256(target);
    let started = Instant::now();
    let mut q = start(&[&fx.installer, target]);
    let o = q.wait_for("rpixen-install: nothing was written", FAILURES, LIMIT);
    let out = o.unwrap_or_else(|e| panic!("{e}")).output;
    let took = started.elapsed();
    drop(q);
    for l in out.lines().filter(|l| l.contains("rpixen-install")) {
        eprintln!("  {l}");
    }
    let line = out.lines().find(|l| l.contains("rpixen-install: refused: /dev/vd"));
    assert!(line.is_some_and(|l| l.contains(refusal)), "missing {refusal:?} in:\n{out}");
    assert!(!out.contains("rpixen-install: writing"), "{out}");
    assert_eq!(sha256(target), before, "the refused target changed");
    took
}

#[test]
fn too_small_and_non_empty_targets_are_refused_untouched() {
    let _one = ONE_BOOT.lock().unwrap_or_else(|e| e.into_inner());
    let fx = build_installer(&[]);

    let small = fx.dir.path().join("small.raw");
    sparse_file(&small, 64 << 20);
    let took = refused(&fx, &small, "is too small: it holds 64 MiB");
    eprintln!("too small: refused after {took:?}");

    let used = fx.dir.path().join("used.raw");
    sparse_file(&used, 2 * GIB);
    testkit::run(Command::new("sgdisk").args(["-n", "1:2048:+16M", "-c", "1:data"]).arg(&used));
    let took = refused(&fx, &used, "is not empty: it holds 1 partition(s), a GPT header at LBA 1");
    eprintln!("non-empty: refused after {took:?}");
}

/// Whether any tool would take `image` for a partitioned disk.
fn has_partition_table(image: &Path) -> bool {
    let o = Command::new("partx").args(["-g", "-o", "NAME"]).arg(image).output().unwrap();
    o.status.success() && !o.stdout.is_empty()
}

#[test]
fn wipe_overwrites_a_used_target_and_a_torn_install_leaves_no_table() {
    let _one = ONE_BOOT.lock().unwrap_or_else(|e| e.into_inner());
    let fx = build_installer(&["--wipe", "--install-target", "vda"]);
    let used = fx.dir.path().join("used.raw");
    sparse_file(&used, 2 * GIB);
    testkit::run(Command::new("sgdisk").args(["-n", "1:2048:+16M", "-c", "1:data"]).arg(&used));
    assert!(has_partition_table(&used));

    // Power cut half-way through the write: the old table is wiped, the new one not yet written.
    // The target comes last on the command line, which makes it Linux's vda on QEMU virt's MMIO bus.
    let mut q = start(&[&fx.installer, &used]);
    let o = q.wait_for("rpixen-install: writing 50%", FAILURES, LIMIT);
    let out = o.unwrap_or_else(|e| panic!("{e}")).output;
    drop(q);
    assert!(out.contains("rpixen-install: wiped /dev/vda (it held 1 partition(s)"), "{out}");
    assert!(!has_partition_table(&used), "a torn install left a partition table");

    let mut q = start(&[&fx.installer, &used]);
    q.wait_for("rpixen-install: done", FAILURES, LIMIT).unwrap_or_else(|e| panic!("{e}"));
    q.wait_exit(Duration::from_secs(120)).unwrap_or_else(|e| panic!("no power-off: {e}"));
    drop(q);
    assert_eq!(mtype(&used, "::/build.txt"), "from the manifest\n");
}

#[test]
fn installer_carries_the_live_image_and_its_digest() {
    let fx = build_installer(&[]);
    let live = fx.dir.path().join("live.raw");
    fx.rpixen(&["live", s(&fx.manifest), "-o", s(&live)]);
    let len = std::fs::metadata(&live).unwrap().len();

    // The INSTALLER partition starts with `rpixen live`'s image, byte for byte.
    let (at, size) = partition(&fx.installer, "INSTALLER");
    assert!(size >= len, "INSTALLER holds {size} bytes, the image {len}");
    let payload = fx.dir.path().join("payload.raw");
    crate::image_support::extract(&fx.installer, at, len, &payload);
    let digest = sha256(&live);
    assert_eq!(sha256(&payload), digest, "the payload differs from rpixen live's image");

    // The installer's initramfs records that size and digest, and runs only the installer.
    let (boot, _) = partition(&fx.installer, "BOOT");
    let initrd = fx.dir.path().join("installer-initrd.img");
    let drive = format!("{}@@{boot}", fx.installer.display());
    testkit::run(Command::new("mcopy").args(["-i", &drive, "::initrd.img"]).arg(&initrd));
    let recorded = crate::common::cpio_cat(&initrd, "'*etc/rpixen/installer'");
    let carried: String =
        rpixen::installer::CARRIED_BOOT_FILES.iter().map(|f| format!("carry {f}\n")).collect();
    assert_eq!(recorded, format!("size {len}\nsha256 {digest}\n{carried}"));
    let init = crate::common::cpio_cat(&initrd, "'*etc/rpixen/init.yml'");
    assert!(init.contains("/proc/self/exe") && init.contains("install"), "{init}");

    // No PERSIST or IMGA that a later boot could take for an installed system; tables and FATs clean.
    let table = testkit::run(Command::new("sgdisk").arg("-p").arg(&fx.installer));
    assert!(!table.contains("PERSIST") && !table.contains("IMGA"), "{table}");
    let verify = testkit::run(Command::new("sgdisk").arg("-v").arg(&fx.installer));
    assert!(verify.contains("No problems found"), "{verify}");
    for name in ["BOOT", "CONFIG"] {
        let (at, len) = partition(&fx.installer, name);
        let fat = fx.dir.path().join(format!("{name}.fat"));
        crate::image_support::extract(&fx.installer, at, len, &fat);
        testkit::run(Command::new("fsck.fat").arg("-n").arg(&fat));
    }
    assert_eq!(mtype(&fx.installer, "::/sub/server"), "controller.example.invalid\n");
}
