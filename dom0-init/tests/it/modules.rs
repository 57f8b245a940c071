//! Module dependency resolution and `.ko.xz` decompression on Debian's real arm64 module tree, which
//! ships without `modules.dep` (dependencies come from each module's `.modinfo`). Dry runs only: the
//! host kernel is not touched. Loading for real is covered by the QEMU boot test.

use std::path::PathBuf;

use dom0_init::modules::{modinfo, read_module, Loader};

fn module_dir() -> PathBuf {
    let modules =
        testkit::debian_package("linux-image-6.12.117+deb13-arm64").join("usr/lib/modules");
    std::fs::read_dir(&modules)
        .unwrap()
        .flatten()
        .next()
        .expect("one kernel release")
        .path()
}

#[test]
fn dependencies_come_first_from_modinfo() {
    let dir = module_dir();
    assert!(
        !dir.join("modules.dep").exists(),
        "this test is about trees without depmod output"
    );
    let mut loader = Loader::new(dir.clone());
    let order = loader.load("vfat", true).unwrap();
    assert_eq!(
        order,
        ["kernel/fs/fat/fat.ko.xz", "kernel/fs/fat/vfat.ko.xz"]
    );
    // Already "loaded": nothing more to do; `-` and `_` are the same name.
    assert!(loader.load("vfat", true).unwrap().is_empty());
    let order = loader.load("virtio-blk", true).unwrap();
    assert_eq!(
        order.last().map(String::as_str),
        Some("kernel/drivers/block/virtio_blk.ko.xz")
    );
    let err = loader.load("no_such_module", true).unwrap_err();
    assert!(
        err.contains("no_such_module") && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn xz_modules_decompress_to_elf_with_modinfo() {
    let image = read_module(&module_dir().join("kernel/fs/overlayfs/overlay.ko.xz")).unwrap();
    assert!(image.starts_with(b"\x7fELF\x02\x01"), "an ELF64 LE object");
    let info = modinfo(&image);
    let get = |k: &str| {
        info.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("name"), Some("overlay"));
    assert!(
        get("vermagic").is_some_and(|v| v.starts_with("6.12.")),
        "{info:?}"
    );
}

#[test]
fn builtin_modules_are_skipped() {
    let dir = module_dir();
    let builtin = std::fs::read_to_string(dir.join("modules.builtin")).unwrap();
    let first = builtin.lines().next().unwrap();
    let name = first
        .rsplit('/')
        .next()
        .unwrap()
        .split(".ko")
        .next()
        .unwrap();
    assert!(
        Loader::new(dir).load(name, true).unwrap().is_empty(),
        "{name} is built in"
    );
}
