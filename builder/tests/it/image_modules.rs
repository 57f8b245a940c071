//! The board images' Dom0 rootfs as `rpixen rootfs images/BOARD.yml` builds it from the real
//! packages (`rpixen pkg build`; dom0-init is a stand-in, it is not under test here): the board's
//! kernel modules with their dependencies and index files, checked against kmod's own `depmod` run
//! on the extracted tree; the rpi4 image's SD, Ethernet, USB and Wi-Fi drivers and firmware; the
//! build time on `/etc/rpixen/init.yml`; and `rpixen live`'s content digest against `sha256sum`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::common::{fake_dom0_init, fake_sbin_package, sh, squashfs_list};
use crate::image_support::{run_rpixen, synthetic};

const EPOCH: &str = "1700000000";

/// The packages the rpi4 and qemu-virt rootfs name, built once per test run.
fn packages() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = testkit::cache_dir().join("builder-image-modules/pkg");
        let _ = std::fs::remove_dir_all(&dir);
        let rpixen = Path::new(env!("CARGO_BIN_EXE_rpixen"));
        testkit::build_packages(
            rpixen,
            &dir,
            &[
                "kernel",
                "busybox",
                "dropbear",
                "e2fsprogs",
                "firmware-brcm",
                "wireless-regdb",
                "wpasupplicant",
            ],
        );
        fake_dom0_init(&dir, "#!/bin/sh\n");
        // images/qemu-virt.yml runs the update agent; these tests read the rootfs, never run it.
        fake_sbin_package(&dir, "agent", "rpixen-agent", "#!/bin/sh\n");
        dir
    })
}

/// `rpixen rootfs MANIFEST -o OUT [--format F]` with the test packages; panics with stderr on failure.
fn rootfs(manifest: &Path, out: &Path, format: &str, epoch: &str, cache: &Path) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_rpixen"))
        .arg("rootfs")
        .arg(manifest)
        .arg("-o")
        .arg(out)
        .args(["--format", format])
        .env("RPIXEN_PKG_DIR", packages())
        .env("XDG_CACHE_HOME", cache)
        .env("SOURCE_DATE_EPOCH", epoch)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "rpixen rootfs {}: {err}", manifest.display());
    err
}

fn board(name: &str) -> PathBuf {
    testkit::repo_root().join("images").join(format!("{name}.yml"))
}

/// The cpio archive unpacked by GNU cpio into `dir` (modification times kept).
fn extract(cpio: &Path, dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    sh(&format!(
        "cd '{}' && gzip -dc '{}' | cpio -idm --quiet --no-absolute-filenames",
        dir.display(),
        cpio.display()
    ));
}

/// The only `lib/modules/<release>` folder of an extracted rootfs.
fn release_dir(root: &Path) -> PathBuf {
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(root.join("lib/modules")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.pop().unwrap()
}

/// Bytes below `dir`.
fn bytes_below(dir: &Path) -> u64 {
    sh(&format!("du -sb --apparent-size '{}' | cut -f1", dir.display())).trim().parse().unwrap()
}

/// `modules.dep` as (module, set of dependencies): depmod and we may order a line's dependencies
/// differently where both orders load correctly.
fn dep_sets(text: &str) -> BTreeSet<(String, BTreeSet<String>)> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (m, deps) = l.split_once(':').unwrap();
            (m.to_owned(), deps.split_whitespace().map(str::to_owned).collect())
        })
        .collect()
}

fn alias_lines(text: &str) -> BTreeSet<String> {
    text.lines().filter(|l| l.starts_with("alias ")).map(str::to_owned).collect()
}

#[test]
fn virt_rootfs_carries_its_module_set_with_the_indexes_depmod_writes() {
    let tmp = tempfile::tempdir_in(testkit::cache_dir()).unwrap();
    let t = tmp.path();
    let cpio = t.join("virt.cpio.gz");
    rootfs(&board("qemu-virt"), &cpio, "cpio", EPOCH, &t.join("xdg"));
    let root = t.join("root");
    extract(&cpio, &root);
    let rel = release_dir(&root);
    let has = |p: &str| rel.join(p).is_file();
    for m in [
        "kernel/drivers/virtio/virtio_mmio.ko.xz",
        "kernel/drivers/block/virtio_blk.ko.xz",
        "kernel/drivers/net/virtio_net.ko.xz",
        // virtio_net's dependencies, closed over by the builder.
        "kernel/drivers/net/net_failover.ko.xz",
        "kernel/net/core/failover.ko.xz",
        "kernel/fs/ext4/ext4.ko.xz",
        "kernel/fs/jbd2/jbd2.ko.xz",
        "kernel/fs/fat/vfat.ko.xz",
        "modules.builtin",
        "modules.softdep",
    ] {
        assert!(has(m), "{m} in {}", rel.display());
    }
    // Only the set: a distribution kernel has thousands of modules.
    let count = sh(&format!("find '{}' -name '*.ko.xz' | wc -l", rel.display()));
    let count: usize = count.trim().parse().unwrap();
    assert!((10..40).contains(&count), "{count} modules");

    // kmod's depmod, run on a copy of the same tree, writes the same dependencies and aliases.
    let ours_dep = std::fs::read_to_string(rel.join("modules.dep")).unwrap();
    let ours_alias = std::fs::read_to_string(rel.join("modules.alias")).unwrap();
    let base = t.join("depmod");
    let release = rel.file_name().unwrap().to_str().unwrap().to_owned();
    std::fs::create_dir_all(base.join("lib/modules")).unwrap();
    sh(&format!("cp -a '{}' '{}/lib/modules/'", rel.display(), base.display()));
    testkit::run(Command::new("/usr/sbin/depmod").arg("-b").arg(&base).arg(&release));
    let theirs = base.join("lib/modules").join(&release);
    let theirs_dep = std::fs::read_to_string(theirs.join("modules.dep")).unwrap();
    let theirs_alias = std::fs::read_to_string(theirs.join("modules.alias")).unwrap();
    assert_eq!(
        dep_sets(&ours_dep),
        dep_sets(&theirs_dep),
        "ours:\n{ours_dep}\ndepmod:\n{theirs_dep}"
    );
    assert_eq!(alias_lines(&ours_alias), alias_lines(&theirs_alias));
    assert!(ours_alias.contains("alias virtio:d00000002v* virtio_blk\n"), "{ours_alias}");
    eprintln!(
        "qemu-virt: {count} modules, {} KiB with modules.builtin and the indexes",
        bytes_below(&rel) / 1024
    );

    // The squashfs stage carries the same tree.
    let sq = t.join("virt.squashfs");
    rootfs(&board("qemu-virt"), &sq, "squashfs", EPOCH, &t.join("xdg"));
    let list = squashfs_list(&sq);
    for m in ["kernel/drivers/block/virtio_blk.ko.xz", "modules.dep", "modules.alias"] {
        let path = format!("lib/modules/{release}/{m}");
        assert!(list.lines().any(|l| l.ends_with(&path)), "{path} in the squashfs:\n{list}");
    }

    // A module the kernel does not have is named, and nothing is written.
    let text = std::fs::read_to_string(board("qemu-virt"))
        .unwrap()
        .replace("modules: {image: kernel}", "modules: {image: kernel, add: [no_such_driver]}");
    let manifest = t.join("bad.yml");
    std::fs::write(&manifest, text).unwrap();
    let out = t.join("bad.cpio.gz");
    let o = Command::new(env!("CARGO_BIN_EXE_rpixen"))
        .arg("rootfs")
        .arg(&manifest)
        .arg("-o")
        .arg(&out)
        .env("RPIXEN_PKG_DIR", packages())
        .env("XDG_CACHE_HOME", t.join("xdg"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("rootfs.modules: image `kernel`")
            && err.contains(
                "module no_such_driver (needed by the module set) is not in the module tree"
            ),
        "{err}"
    );
    assert!(!out.exists());
}

/// The Raspberry Pi 4 image: its SD, Ethernet, USB and Wi-Fi drivers with their firmware (QEMU
/// cannot boot these: the list is the test).
#[test]
fn rpi4_rootfs_lists_sd_ethernet_usb_and_wifi_drivers_and_firmware() {
    let tmp = tempfile::tempdir_in(testkit::cache_dir()).unwrap();
    let t = tmp.path();
    let cpio = t.join("rpi4.cpio.gz");
    rootfs(&board("rpi4"), &cpio, "cpio", EPOCH, &t.join("xdg"));
    let root = t.join("root");
    extract(&cpio, &root);
    let rel = release_dir(&root);
    let mut listed = Vec::new();
    for (what, file) in [
        ("SD card (emmc2)", "kernel/drivers/mmc/host/sdhci-iproc.ko.xz"),
        ("SD card host core", "kernel/drivers/mmc/host/sdhci-pltfm.ko.xz"),
        ("SD I/O voltage", "kernel/drivers/regulator/gpio-regulator.ko.xz"),
        ("Ethernet GENET", "kernel/drivers/net/ethernet/broadcom/genet/genet.ko.xz"),
        ("Ethernet MDIO", "kernel/drivers/net/mdio/mdio-bcm-unimac.ko.xz"),
        ("Ethernet PHY", "kernel/drivers/net/phy/broadcom.ko.xz"),
        ("USB xHCI (VL805)", "kernel/drivers/usb/host/xhci-pci.ko.xz"),
        ("USB xHCI core", "kernel/drivers/usb/host/xhci-hcd.ko.xz"),
        ("USB-C OTG", "kernel/drivers/usb/dwc2/dwc2.ko.xz"),
        ("USB storage", "kernel/drivers/usb/storage/usb-storage.ko.xz"),
        ("USB keyboard", "kernel/drivers/hid/usbhid/usbhid.ko.xz"),
        (
            "Wi-Fi brcmfmac",
            "kernel/drivers/net/wireless/broadcom/brcm80211/brcmfmac/brcmfmac.ko.xz",
        ),
        ("Wi-Fi cfg80211", "kernel/net/wireless/cfg80211.ko.xz"),
    ] {
        let path = rel.join(file);
        let size = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{what}: {file} not in the rpi4 rootfs: {e}"))
            .len();
        listed.push(format!("  {what:<20} {:>5} KiB  {file}", size / 1024));
    }
    let alias = std::fs::read_to_string(rel.join("modules.alias")).unwrap();
    for (pattern, module) in [
        ("Cbrcm,bcm2711-emmc2", "sdhci_iproc"),
        ("Cbrcm,bcm2711-genet-v5", "genet"),
        ("d4345", "brcmfmac"),
        ("bc0Csc03i30", "xhci_pci"),
    ] {
        assert!(
            alias.lines().any(|l| l.contains(pattern) && l.ends_with(&format!(" {module}"))),
            "an alias with {pattern} for {module} in modules.alias"
        );
    }
    for (what, file) in [
        ("Wi-Fi firmware", "lib/firmware/brcm/brcmfmac43455-sdio.bin"),
        ("Wi-Fi CLM blob", "lib/firmware/brcm/brcmfmac43455-sdio.clm_blob"),
        ("Wi-Fi nvram", "lib/firmware/brcm/brcmfmac43455-sdio.raspberrypi,4-model-b.txt"),
        ("regulatory db", "lib/firmware/regulatory.db"),
        ("supplicant", "usr/sbin/wpa_supplicant"),
        ("mkfs.ext4", "sbin/mke2fs"),
        ("SSH server", "usr/sbin/dropbear"),
    ] {
        let size = std::fs::metadata(root.join(file))
            .unwrap_or_else(|e| panic!("{what}: {file} not in the rpi4 rootfs: {e}"))
            .len();
        listed.push(format!("  {what:<20} {:>5} KiB  {file}", size / 1024));
    }
    let count = sh(&format!("find '{}' -name '*.ko.xz' | wc -l", rel.display()));
    eprintln!(
        "rpi4: {} modules, {} KiB with modules.builtin and the indexes; drivers and firmware:\n{}",
        count.trim(),
        bytes_below(&rel) / 1024,
        listed.join("\n")
    );
}

/// `/etc/rpixen/init.yml` carries SOURCE_DATE_EPOCH (dom0-init's clock floor), and the rootfs is
/// still the same bytes for the same epoch (built twice without the rootfs cache).
#[test]
fn init_yml_carries_the_build_time_and_rootfs_stays_reproducible() {
    let tmp = tempfile::tempdir_in(testkit::cache_dir()).unwrap();
    let t = tmp.path();
    let build = |name: &str, epoch: &str| {
        let out = t.join(name);
        rootfs(&board("qemu-virt"), &out, "cpio", epoch, &t.join(format!("xdg-{name}")));
        out
    };
    let (a, b, c) = (build("a", EPOCH), build("b", EPOCH), build("c", "1800000000"));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "same epoch, same bytes");
    assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap());
    for (archive, epoch) in [(&a, EPOCH), (&c, "1800000000")] {
        let root = t.join("x");
        extract(archive, &root);
        let mtime = sh(&format!("stat -c %Y '{}'", root.join("etc/rpixen/init.yml").display()));
        assert_eq!(mtime.trim(), epoch);
    }
}

/// `rpixen live` prints `sha256:<hex>` of the image it wrote, to a file and to a pipe; `sha256sum`
/// of the bytes agrees.
#[test]
fn live_prints_the_image_digest_that_sha256sum_computes() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let s = synthetic(t, "");
    let digest_of = |stderr: &[u8]| -> String {
        let text = String::from_utf8_lossy(stderr);
        let at = text.find("rpixen: image sha256:").unwrap_or_else(|| panic!("{text}"));
        text[at + "rpixen: image sha256:".len()..][..64].to_owned()
    };
    let raw = t.join("live.raw");
    let o = run_rpixen(
        &[
            "live",
            s.manifest.to_str().unwrap(),
            "--initrd",
            s.initrd.to_str().unwrap(),
            "-o",
            raw.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let printed = digest_of(&o.stderr);
    let sum = testkit::run(Command::new("sha256sum").arg(&raw));
    assert_eq!(printed, sum.split_whitespace().next().unwrap(), "file");
    // Streamed through a pipe (zeros included): the same digest, and sha256sum agrees.
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' live '{}' --initrd '{}' | sha256sum",
            env!("CARGO_BIN_EXE_rpixen"),
            s.manifest.display(),
            s.initrd.display()
        ))
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(digest_of(&o.stderr), printed, "pipe");
    assert_eq!(String::from_utf8_lossy(&o.stdout).split_whitespace().next().unwrap(), printed);
}

/// `rpixen pkg update --cache RELATIVE`: apt gets absolute paths (it read relative ones against
/// /etc/apt). The relative path is a link to the shared download cache, so nothing is downloaded
/// again but the index check.
#[test]
fn pkg_update_takes_a_relative_cache_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    std::os::unix::fs::symlink(testkit::pkg_cache(), t.join("cache")).unwrap();
    std::fs::create_dir_all(t.join("pkg/busybox")).unwrap();
    let pinned = std::fs::read_to_string(testkit::repo_root().join("pkg/busybox/pkg.yml")).unwrap();
    std::fs::write(t.join("pkg/busybox/pkg.yml"), &pinned).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_rpixen"))
        .current_dir(t)
        .args(["pkg", "update", "pkg/busybox", "--cache", "cache"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("/etc/apt/cache"), "{err}");
    let updated = std::fs::read_to_string(t.join("pkg/busybox/pkg.yml")).unwrap();
    assert!(updated.contains("package: busybox-static"), "{updated}");
}
