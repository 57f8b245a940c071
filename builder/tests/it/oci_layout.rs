//! OCI image layouts: written by our writer, read back by our reader, flattened with OCI semantics, and
//! refused when a blob was tampered with.

use crate::common;
use crate::common::ChainText;

use rpixen::oci::layout::{write_index, Compression, ImageBuilder, LayerTar};
use rpixen::oci::{self, OciError, Platform};
use rpixen::rootfs::tree::Kind;
use rpixen::rootfs::unpack::{unpack_image, Limits};

use common::{layered_image, opts};

#[test]
fn layout_round_trip_with_oci_semantics() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("img");
    layered_image().write(&dir, "v1").unwrap();
    assert!(dir.join("oci-layout").is_file());
    let mut o = opts(tmp.path());
    o.offline = true;
    let r = format!("oci:{}:v1", dir.display());
    assert_eq!(rpixen::rootfs::read_file(&o, &r, "etc/motd").unwrap(), b"hello from zstd\n");
    assert_eq!(rpixen::rootfs::read_file(&o, &r, "/lib/libc.so").unwrap(), b"libc");
    assert_eq!(
        rpixen::rootfs::read_file(&o, &r, "usr/lib/libm.so").unwrap(),
        b"libm",
        "written through the lib symlink"
    );
    assert_eq!(
        rpixen::rootfs::read_file(&o, &r, "bin/ping6").unwrap(),
        b"ping",
        "a hard link's contents"
    );
    let err = rpixen::rootfs::read_file(&o, &r, "dev/console").unwrap_err().chain_text();
    assert!(err.contains("character device"), "{err}");
    let err = rpixen::rootfs::read_file(&o, &r, "etc/old").unwrap_err().chain_text();
    assert!(err.contains("etc/old"), "{err}");
    assert!(
        rpixen::rootfs::read_file(&o, &r, "opt/app/lower").is_err(),
        "opaque dir hides the lower layer"
    );
    assert_eq!(
        rpixen::rootfs::read_file(&o, &r, "opt/app/upper").unwrap(),
        b"upper",
        "opaque applies before the layer's own entries"
    );

    let image = oci::resolve(&o, &r).unwrap();
    assert_eq!(image.layers.len(), 3);
    let tree = unpack_image(&image, &Limits::default()).unwrap();
    let ping = tree.lookup(b"bin/ping", false).unwrap();
    assert_eq!(tree.lookup(b"bin/ping6", false), Some(ping));
    let node = tree.node(ping);
    assert_eq!(node.meta.mode, 0o4755);
    assert_eq!(node.meta.mtime, 7);
    assert_eq!(node.meta.xattrs, vec![(b"security.capability".to_vec(), vec![1, 0, 0, 2])]);
    let console = tree.node(tree.lookup(b"dev/console", false).unwrap());
    assert_eq!(console.kind, Kind::CharDev { major: 5, minor: 1 });
    let home = tree.node(tree.lookup(b"home/user/f", false).unwrap());
    assert_eq!((home.meta.uid, home.meta.gid, home.meta.mode), (1000, 100, 0o640));
}

#[test]
fn package_names_and_tags() {
    let tmp = tempfile::tempdir().unwrap();
    let mut o = opts(tmp.path());
    o.offline = true;
    let mut t = LayerTar::new();
    t.file("sbin/dom0-init", b"\x7fELF", 0o755);
    ImageBuilder::new()
        .layer(&t.finish(), Compression::Gzip)
        .unwrap()
        .write(&o.pkg_dir.join("dom0-init"), "latest")
        .unwrap();
    assert_eq!(rpixen::rootfs::read_file(&o, "dom0-init", "sbin/dom0-init").unwrap(), b"\x7fELF");
    let err = rpixen::rootfs::read_file(&o, "nosuchpkg", "x").unwrap_err().chain_text();
    assert!(err.contains("nosuchpkg") && err.contains("oci-layout"), "{err}");
    let err = rpixen::rootfs::read_file(
        &o,
        &format!("oci:{}:v9", o.pkg_dir.join("dom0-init").display()),
        "x",
    )
    .unwrap_err();
    assert!(err.chain_text().contains("v9"), "{err}");
}

#[test]
fn multi_arch_index_resolves_to_arm64() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("multi");
    let mut descs = Vec::new();
    for (plat, text) in
        [("linux/amd64", "amd64"), ("linux/arm64/v8", "arm64"), ("linux/arm/v7", "armv7")]
    {
        let mut t = LayerTar::new();
        t.file("arch", text.as_bytes(), 0o644);
        let b = ImageBuilder::new()
            .platform(plat.parse().unwrap())
            .layer(&t.finish(), Compression::Gzip)
            .unwrap();
        descs.push(b.write_blobs(&dir).unwrap());
    }
    write_index(&dir, "latest", descs).unwrap();
    let mut o = opts(tmp.path());
    let r = format!("oci:{}", dir.display());
    assert_eq!(rpixen::rootfs::read_file(&o, &r, "arch").unwrap(), b"arm64");
    o.platform = "linux/amd64".parse::<Platform>().unwrap();
    assert_eq!(rpixen::rootfs::read_file(&o, &r, "arch").unwrap(), b"amd64");
    o.platform = "linux/riscv64".parse::<Platform>().unwrap();
    let err = rpixen::rootfs::read_file(&o, &r, "arch").unwrap_err().chain_text();
    assert!(err.contains("linux/riscv64") && err.contains("linux/arm64/v8"), "{err}");
}

#[test]
fn tampered_layout_blob_is_refused_naming_both_digests() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("img");
    let desc = layered_image().write(&dir, "latest").unwrap();
    let mut o = opts(tmp.path());
    o.offline = true;
    let r = format!("oci:{}", dir.display());
    let image = oci::resolve(&o, &r).unwrap();
    let layer = &image.layers[1];
    let expected = layer.descriptor.digest().to_string();
    // Same size, different content: only the digest can tell.
    let mut bytes = std::fs::read(&layer.path).unwrap();
    bytes[600] ^= 0xff;
    std::fs::write(&layer.path, &bytes).unwrap();
    let actual = rpixen::oci::digest::sha256(&bytes);
    let err = oci::resolve(&o, &r).unwrap_err();
    assert!(matches!(err, OciError::DigestMismatch(_)), "{err:?}");
    let msg = err.chain_text();
    assert!(
        msg.contains(&r)
            && msg.contains("layer 1")
            && msg.contains(&expected)
            && msg.contains(&actual),
        "{msg}"
    );
    assert!(rpixen::rootfs::read_file(&o, &r, "etc/motd").is_err());
    let _ = desc;
}
