//! Layers to trees to archives: cpio and squashfs outputs checked with GNU cpio and unsquashfs, and
//! hostile layers rejected or contained.

use crate::common;
use crate::common::ChainText;

use common::{cpio_cat, cpio_list, has, layered_image, line_for, opts, squashfs_list};
use rpixen::oci::layout::{Compression, EntryMeta, ImageBuilder, LayerTar};
use rpixen::oci::{self, OciError};
use rpixen::rootfs::cpio::{write_compressed, CpioCompression};
use rpixen::rootfs::squashfs::write_squashfs;
use rpixen::rootfs::tree::Tree;
use rpixen::rootfs::unpack::{unpack_image, Limits};

fn unpack_layers(
    tmp: &std::path::Path,
    layers: Vec<Vec<u8>>,
    limits: Limits,
) -> Result<Tree, OciError> {
    let mut b = ImageBuilder::new();
    for l in layers {
        b = b.layer(&l, Compression::Gzip).unwrap();
    }
    let dir = tmp.join(format!(
        "img{}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    ));
    b.write(&dir, "latest").unwrap();
    let image = oci::resolve(&opts(tmp), &format!("oci:{}", dir.display()))?;
    unpack_image(&image, &limits)
}

fn layer(f: impl FnOnce(&mut LayerTar)) -> Vec<u8> {
    let mut t = LayerTar::new();
    f(&mut t);
    t.finish()
}

#[test]
fn cpio_checked_by_gnu_cpio() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("img");
    layered_image().write(&dir, "latest").unwrap();
    let image = oci::resolve(&opts(tmp.path()), &format!("oci:{}", dir.display())).unwrap();
    let tree = unpack_image(&image, &Limits::default()).unwrap();
    let out = tmp.path().join("rootfs.cpio.gz");
    write_compressed(&tree, CpioCompression::Gzip, &mut std::fs::File::create(&out).unwrap())
        .unwrap();
    let list = cpio_list(&out);
    let l = line_for(&list, "dev/console");
    assert!(
        l.starts_with("crw-------") && l.contains(" 0 ") && l.contains("5,") && l.contains(" 1 "),
        "{l}"
    );
    assert!(line_for(&list, "dev/vda").starts_with("brw-rw----"), "{list}");
    assert!(line_for(&list, "run/initctl").starts_with("prw-------"), "{list}");
    let ping = line_for(&list, "bin/ping");
    assert!(ping.starts_with("-rwsr-xr-x   2 0        0"), "{ping}");
    assert!(line_for(&list, "bin/ping6").starts_with("-rwsr-xr-x   2"), "{list}");
    assert!(line_for(&list, "home/user/f").starts_with("-rw-r-----   1 1000     100"), "{list}");
    assert!(list.contains("lib -> usr/lib"), "{list}");
    assert!(has(&list, "usr/lib/libm.so") && has(&list, "opt/app/upper"), "{list}");
    assert!(!has(&list, "etc/old") && !has(&list, "opt/app/lower"), "{list}");
    assert!(!list.contains(".wh."), "{list}");
    assert_eq!(cpio_cat(&out, "etc/motd"), "hello from zstd\n");
    assert_eq!(cpio_cat(&out, "bin/ping"), "ping");

    // zstd compression, read by zstdcat + cpio.
    let zst = tmp.path().join("rootfs.cpio.zst");
    write_compressed(&tree, CpioCompression::Zstd, &mut std::fs::File::create(&zst).unwrap())
        .unwrap();
    assert_eq!(cpio_list(&zst), list);
}

#[test]
fn squashfs_checked_by_unsquashfs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("img");
    layered_image().write(&dir, "latest").unwrap();
    let image = oci::resolve(&opts(tmp.path()), &format!("oci:{}", dir.display())).unwrap();
    let tree = unpack_image(&image, &Limits::default()).unwrap();
    let out = tmp.path().join("rootfs.squashfs");
    let warnings = write_squashfs(&tree, &mut std::fs::File::create(&out).unwrap()).unwrap();
    assert!(warnings.iter().any(|w| w.contains("bin/ping")), "{warnings:?}");
    let list = squashfs_list(&out);
    let l = line_for(&list, "dev/console");
    assert!(l.starts_with("crw------- 0/0") && l.contains("5,") && l.contains(" 1 "), "{l}");
    assert!(line_for(&list, "dev/vda").starts_with("brw-rw---- 0/0"), "{list}");
    assert!(line_for(&list, "bin/ping").starts_with("-rwsr-xr-x 0/0"), "{list}");
    assert!(line_for(&list, "home/user/f").starts_with("-rw-r----- 1000/100"), "{list}");
    assert!(list.contains("squashfs-root/lib -> usr/lib"), "{list}");
    assert!(
        !has(&list, "etc/old") && !has(&list, "opt/app/lower") && has(&list, "opt/app/upper"),
        "{list}"
    );
    let motd = testkit::run(
        std::process::Command::new("unsquashfs").arg("-cat").arg(&out).arg("etc/motd"),
    );
    assert_eq!(motd, "hello from zstd\n");
}

#[test]
fn dot_dot_is_rejected_naming_the_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let err = unpack_layers(
        tmp.path(),
        vec![layer(|t| {
            t.file("ok", b"", 0o644);
            t.file("a/../../../etc/evil", b"x", 0o644);
        })],
        Limits::default(),
    )
    .unwrap_err()
    .chain_text();
    assert!(
        err.contains("a/../../../etc/evil")
            && err.contains("`..`")
            && err.contains("layer sha256:"),
        "{err}"
    );
    let err = unpack_layers(
        tmp.path(),
        vec![layer(|t| {
            t.file("etc/shadow", b"", 0o600);
            t.hardlink("x", "../../etc/shadow");
        })],
        Limits::default(),
    )
    .unwrap_err()
    .chain_text();
    assert!(err.contains("hard link `x`") && err.contains("`..`"), "{err}");
}

#[test]
fn hard_link_to_outside_the_image_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let err = unpack_layers(
        tmp.path(),
        vec![layer(|t| {
            t.hardlink("steal", "/etc/shadow");
        })],
        Limits::default(),
    )
    .unwrap_err()
    .chain_text();
    assert!(err.contains("steal") && err.contains("not in the image"), "{err}");
}

#[test]
fn absolute_names_are_contained() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = unpack_layers(
        tmp.path(),
        vec![layer(|t| {
            t.file("/etc/abs", b"inside", 0o644);
        })],
        Limits::default(),
    )
    .unwrap();
    assert_eq!(tree.read_file("etc/abs").unwrap(), b"inside");
    assert!(
        tree.warnings.iter().any(|w| w.contains("absolute name `/etc/abs`")),
        "{:?}",
        tree.warnings
    );
}

#[test]
fn symlink_escapes_are_contained() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = unpack_layers(
        tmp.path(),
        vec![
            layer(|t| {
                t.symlink("pwn", "../../../../../tmp/outside");
                t.symlink("abs", "/etc");
            }),
            layer(|t| {
                t.file("pwn/file", b"planted", 0o644);
                t.file("abs/passwd", b"evil", 0o644);
                // Same layer: plant then write through.
                t.symlink("up", "..");
                t.file("up/up/same-layer", b"s", 0o644);
            }),
        ],
        Limits::default(),
    )
    .unwrap();
    assert_eq!(tree.read_file("tmp/outside/file").unwrap(), b"planted");
    assert_eq!(tree.read_file("etc/passwd").unwrap(), b"evil");
    assert_eq!(tree.read_file("same-layer").unwrap(), b"s");
    assert!(!std::path::Path::new("/tmp/outside/file").exists());
    // And the archive holds them inside the root.
    let out = tmp.path().join("x.cpio.gz");
    write_compressed(&tree, CpioCompression::Gzip, &mut std::fs::File::create(&out).unwrap())
        .unwrap();
    let list = cpio_list(&out);
    assert!(has(&list, "tmp/outside/file") && has(&list, "etc/passwd"), "{list}");
    let names: Vec<&str> = list
        .lines()
        .map(|l| l.split(" -> ").next().unwrap().split_whitespace().last().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('/') && !n.contains("..")), "{list}");
}

#[test]
fn root_cannot_be_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    for name in [".", "/", "./"] {
        let err = unpack_layers(
            tmp.path(),
            vec![layer(|t| {
                t.symlink(name, "/tmp");
            })],
            Limits::default(),
        )
        .unwrap_err()
        .chain_text();
        assert!(err.contains("cannot replace the root"), "{name}: {err}");
    }
    // A directory entry for the root only sets its metadata.
    let tree = unpack_layers(
        tmp.path(),
        vec![layer(|t| {
            t.dir("./", 0o700);
            t.file("f", b"", 0o644);
        })],
        Limits::default(),
    )
    .unwrap();
    assert_eq!(tree.node(rpixen::rootfs::tree::ROOT).meta.mode, 0o700);
    assert!(tree.read_file("f").is_ok());
}

#[test]
fn bare_whiteout_is_not_a_whiteout() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = unpack_layers(
        tmp.path(),
        vec![
            layer(|t| {
                t.file("etc/keep", b"k", 0o644);
            }),
            layer(|t| {
                t.file(".wh.", b"", 0o644);
                t.file("etc/.wh.", b"", 0o644);
            }),
        ],
        Limits::default(),
    )
    .unwrap();
    assert_eq!(tree.read_file("etc/keep").unwrap(), b"k");
    assert!(tree.lookup(b".wh.", false).is_none());
    assert!(
        tree.warnings.iter().filter(|w| w.contains("bare `.wh.`")).count() == 2,
        "{:?}",
        tree.warnings
    );
}

#[test]
fn oversized_entries_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let limits = Limits { max_entry_size: 1000, max_total_size: 1500 };
    let err = unpack_layers(
        tmp.path(),
        vec![layer(|t| {
            t.file("big", &[0u8; 1001], 0o644);
        })],
        limits,
    )
    .unwrap_err()
    .chain_text();
    assert!(err.contains("entry `big` is 1001 bytes, over the limit of 1000"), "{err}");
    let err = unpack_layers(
        tmp.path(),
        vec![
            layer(|t| {
                t.file("a", &[0u8; 800], 0o644);
            }),
            layer(|t| {
                t.file("b", &[0u8; 800], 0o644);
            }),
        ],
        limits,
    )
    .unwrap_err()
    .chain_text();
    assert!(err.contains("more than 1500 bytes"), "{err}");
    let err = unpack_layers(
        tmp.path(),
        vec![layer(|t| {
            t.file("a", &[0u8; 800], 0o644);
            t.file("b", &[0u8; 800], 0o644);
        })],
        limits,
    )
    .unwrap_err()
    .chain_text();
    assert!(err.contains("layer unpacks to more than 1500 bytes"), "{err}");
    let long = "x".repeat(300);
    let err = unpack_layers(
        tmp.path(),
        vec![layer(|t| {
            t.file(&long, b"", 0o644);
        })],
        Limits::default(),
    )
    .unwrap_err()
    .chain_text();
    assert!(err.contains("300 bytes long"), "{err}");
    // A header that claims more data than the layer holds.
    let mut bytes = layer(|t| {
        t.file_with("trunc", &[1u8; 4096], &EntryMeta::mode(0o644));
    });
    bytes.truncate(512 + 1024);
    let err = unpack_layers(tmp.path(), vec![bytes], Limits::default()).unwrap_err().chain_text();
    assert!(err.contains("trunc") || err.contains("corrupt"), "{err}");
}

#[test]
fn whiteout_then_children_acts_as_opaque() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = unpack_layers(
        tmp.path(),
        vec![
            layer(|t| {
                t.file("d/old", b"", 0o644);
            }),
            layer(|t| {
                t.file("d/new", b"n", 0o644);
                t.whiteout("d");
            }),
        ],
        Limits::default(),
    )
    .unwrap();
    assert!(tree.read_file("d/old").is_err());
    assert_eq!(tree.read_file("d/new").unwrap(), b"n");
}

#[test]
fn layer_not_matching_the_config_diff_id_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = layer(|t| {
        t.file("f", b"x", 0o644);
    });
    let blob = Compression::Gzip.compress(&tar).unwrap();
    let wrong = rpixen::oci::digest::sha256(b"another tar");
    let dir = tmp.path().join("img");
    ImageBuilder::new()
        .raw_layer(rpixen::oci::layout::LayerData {
            media_type: Compression::Gzip.media_type(),
            blob,
            diff_id: wrong.clone(),
        })
        .write(&dir, "latest")
        .unwrap();
    let r = format!("oci:{}", dir.display());
    let image = oci::resolve(&opts(tmp.path()), &r).unwrap();
    let err = unpack_image(&image, &Limits::default()).unwrap_err().chain_text();
    assert!(
        err.contains(&r)
            && err.contains(&wrong)
            && err.contains(&rpixen::oci::digest::sha256(&tar)),
        "{err}"
    );
}
