//! Module dependency resolution and `.ko.xz` decompression on Debian's real arm64 module tree, which
//! ships without `modules.dep` (dependencies come from each module's `.modinfo`). Dry runs only: the
//! host kernel is not touched. Loading for real is covered by the QEMU boot test.

use std::path::{Path, PathBuf};

use dom0_init::modules::{modinfo, read_module, Loader};
use kmod_index::{closure_in_tree, index_files, AliasIndex, Module};

pub(crate) fn module_dir() -> PathBuf {
    testkit::test_kernel_modules()
}

#[test]
fn dependencies_come_first_from_modinfo() {
    let dir = module_dir();
    assert!(!dir.join("modules.dep").exists(), "this test is about trees without depmod output");
    let mut loader = Loader::new(dir.clone());
    let order = loader.load("vfat", true).unwrap();
    assert_eq!(order, ["kernel/fs/fat/fat.ko.xz", "kernel/fs/fat/vfat.ko.xz"]);
    // Already "loaded": nothing more to do; `-` and `_` are the same name.
    assert!(loader.load("vfat", true).unwrap().is_empty());
    let order = loader.load("virtio-blk", true).unwrap();
    assert_eq!(order.last().map(String::as_str), Some("kernel/drivers/block/virtio_blk.ko.xz"));
    let err = loader.load("no_such_module", true).unwrap_err();
    assert!(err.contains("no_such_module") && err.contains("not found"), "{err}");
}

#[test]
fn xz_modules_decompress_to_elf_with_modinfo() {
    let image = read_module(&module_dir().join("kernel/fs/overlayfs/overlay.ko.xz")).unwrap();
    assert!(image.starts_with(b"\x7fELF\x02\x01"), "an ELF64 LE object");
    let info = modinfo(&image);
    let get = |k: &str| info.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    assert_eq!(get("name"), Some("overlay"));
    assert!(get("vermagic").is_some_and(|v| v.starts_with("6.12.")), "{info:?}");
}

#[test]
fn builtin_modules_are_skipped() {
    let dir = module_dir();
    let builtin = std::fs::read_to_string(dir.join("modules.builtin")).unwrap();
    let first = builtin.lines().next().unwrap();
    let name = first.rsplit('/').next().unwrap().split(".ko").next().unwrap();
    assert!(Loader::new(dir).load(name, true).unwrap().is_empty(), "{name} is built in");
}

/// A board's module set from `pkg/kernel/modules.yml`: `common` plus `boards.<board>`.
pub(crate) fn module_set(board: &str) -> Vec<String> {
    let path = testkit::repo_root().join("pkg/kernel/modules.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    let doc: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    let names = |v: &serde_norway::Value| -> Vec<String> {
        v.as_sequence()
            .unwrap_or_else(|| panic!("{}: a list of module names", path.display()))
            .iter()
            .map(|n| n.as_str().unwrap().to_owned())
            .collect()
    };
    let mut out = names(&doc["common"]);
    out.extend(names(&doc["boards"][board]));
    out
}

/// Copies `set` and its dependencies from Debian's module tree into `root/lib/modules/<release>/`
/// with the index files kmod-index writes (what the builder is to do); returns the modules and the
/// bytes they take (module files plus indexes).
pub(crate) fn install_module_set(root: &Path, set: &[String]) -> (Vec<Module>, u64) {
    let release = module_dir();
    let names: Vec<&str> = set.iter().map(String::as_str).collect();
    let mods = closure_in_tree(&release, &names).unwrap();
    let dest = root.join("lib/modules").join(release.file_name().unwrap());
    let mut bytes = 0;
    for m in &mods {
        let to = dest.join(&m.path);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        bytes += std::fs::copy(release.join(&m.path), &to).unwrap();
    }
    let builtin = std::fs::read(release.join("modules.builtin")).unwrap();
    std::fs::write(dest.join("modules.builtin"), &builtin).unwrap();
    bytes += builtin.len() as u64;
    for (name, text) in index_files(&mods) {
        std::fs::write(dest.join(name), &text).unwrap();
        bytes += text.len() as u64;
    }
    (mods, bytes)
}

/// The modules a device's modalias loads, through the index files written for `set`.
fn drivers_for(root: &Path, modalias: &str) -> Vec<String> {
    let dir = std::fs::read_dir(root.join("lib/modules")).unwrap().next().unwrap().unwrap().path();
    let idx = AliasIndex::parse(&std::fs::read_to_string(dir.join("modules.alias")).unwrap());
    idx.lookup(modalias).into_iter().map(str::to_owned).collect()
}

/// The module set of `board` installed into a scratch folder, listed with sizes.
fn installed(board: &str) -> (PathBuf, Vec<Module>, u64) {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("module-sets").join(board);
    let _ = std::fs::remove_dir_all(&root);
    let (mods, bytes) = install_module_set(&root, &module_set(board));
    eprintln!("{board}: {} modules, {} KiB with indexes:", mods.len(), bytes / 1024);
    for m in &mods {
        let size = std::fs::metadata(module_dir().join(&m.path)).unwrap().len();
        eprintln!("  {:>5} KiB  {}", size / 1024, m.path);
    }
    (root, mods, bytes)
}

/// The Pi 4's SD, Ethernet, USB and Wi-Fi: each device (its compatible string as in the board's
/// device tree, or its bus id) finds its driver in the rpi4 set through the generated modules.alias.
#[test]
fn rpi4_module_set_drives_sd_ethernet_usb_and_wifi() {
    let (root, mods, _) = installed("rpi4");
    let dtb = testkit::test_kernel_rpi4_dtb();
    let dts = testkit::run(
        std::process::Command::new("dtc").args(["-q", "-I", "dtb", "-O", "dts"]).arg(&dtb),
    );
    for (what, compatible, modalias, driver) in [
        ("SD card", Some("brcm,bcm2711-emmc2"), "of:NmmcT(null)Cbrcm,bcm2711-emmc2", "sdhci_iproc"),
        (
            "SD I/O 1.8 V",
            Some("regulator-gpio"),
            "of:Nsd_io_1v8_regT(null)Cregulator-gpio",
            "gpio_regulator",
        ),
        ("SD power", Some("regulator-fixed"), "of:Nsd_vcc_regT(null)Cregulator-fixed", "fixed"),
        (
            "Wi-Fi SDIO host",
            Some("brcm,bcm2835-sdhci"),
            "of:NmmcT(null)Cbrcm,bcm2835-sdhci",
            "sdhci_iproc",
        ),
        ("Wi-Fi BCM43455", None, "sdio:c00v02D0d4345", "brcmfmac"),
        (
            "Ethernet",
            Some("brcm,bcm2711-genet-v5"),
            "of:NethernetT(null)Cbrcm,bcm2711-genet-v5",
            "genet",
        ),
        (
            "Ethernet MDIO",
            Some("brcm,genet-mdio-v5"),
            "of:NmdioT(null)Cbrcm,genet-mdio-v5",
            "mdio_bcm_unimac",
        ),
        ("Ethernet PHY BCM54213PE", None, "mdio:01100000000011011000010010100010", "broadcom"),
        (
            "USB VL805 xHCI",
            None,
            "pci:v00001106d00003483sv00001106sd00003483bc0Csc03i30",
            "xhci_pci",
        ),
        (
            "USB VL805 firmware reset",
            Some("raspberrypi,firmware-reset"),
            "of:NresetT(null)Craspberrypi,firmware-reset",
            "reset_raspberrypi",
        ),
        ("USB-C OTG", Some("brcm,bcm2835-usb"), "of:NusbT(null)Cbrcm,bcm2835-usb", "dwc2"),
        ("USB stick", None, "usb:v0781p5567d0100dc00dsc00dp00ic08isc06ip50in00", "usb_storage"),
        (
            "hardware RNG",
            Some("brcm,bcm2711-rng200"),
            "of:NrngT(null)Cbrcm,bcm2711-rng200",
            "iproc_rng200",
        ),
    ] {
        if let Some(c) = compatible {
            assert!(dts.contains(&format!("\"{c}\"")), "{what}: {c} is not in {}", dtb.display());
        }
        let drivers = drivers_for(&root, modalias);
        assert!(
            drivers.iter().any(|d| d == driver),
            "{what} ({modalias}): {driver} not among {drivers:?}"
        );
    }
    // Dependencies came along (cfg80211 for brcmfmac, xhci_hcd for xhci_pci).
    for dep in ["cfg80211", "brcmutil", "xhci_hcd", "sdhci_pltfm", "ext4", "jbd2"] {
        assert!(mods.iter().any(|m| m.name == dep), "{dep} in the rpi4 set");
    }
}

#[test]
fn virt_module_set_drives_virtio_and_the_disk_filesystems() {
    let (root, mods, _) = installed("qemu-virt");
    for (modalias, driver) in [
        ("of:Nvirtio_mmioT(null)Cvirtio,mmio", "virtio_mmio"),
        ("virtio:d00000002v554D4551", "virtio_blk"),
        ("virtio:d00000001v554D4551", "virtio_net"),
        ("virtio:d00000004v554D4551", "virtio_rng"),
        ("fs-ext4", "ext4"),
        ("fs-vfat", "vfat"),
        ("crypto-crc32c", "crc32c_generic"),
        // The hypervisor's virtual SP805 watchdog, as the AMBA bus announces it (PeriphID 0x00141805).
        ("amba:d00141805", "sp805_wdt"),
    ] {
        assert_eq!(drivers_for(&root, modalias), [driver], "{modalias}");
    }
    // modules.dep puts ext4's dependencies after it, loadable from the end of the line.
    let dir = std::fs::read_dir(root.join("lib/modules")).unwrap().next().unwrap().unwrap().path();
    let dep = std::fs::read_to_string(dir.join("modules.dep")).unwrap();
    let ext4 = dep.lines().find(|l| l.starts_with("kernel/fs/ext4/ext4.ko.xz:")).unwrap();
    assert!(ext4.contains("kernel/fs/jbd2/jbd2.ko.xz"), "{ext4}");
    assert!(mods.len() < 40, "a small set: {}", mods.len());
}
