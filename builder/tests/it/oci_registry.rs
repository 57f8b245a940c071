//! Pulls from a real registry (Debian's docker-registry on 127.0.0.1, started per test) of images that
//! the tests build with our layout writer and push with oci-client: multi-arch index, zstd layer, device
//! nodes, whiteouts, hostile layers; the blob cache, --offline, resumed downloads and tampered blobs.

use crate::common;
use crate::common::ChainText;

use common::{cpio_list, has, layered_image, line_for, opts, Registry};
use rpixen::oci::layout::{write_index, Compression, ImageBuilder, LayerTar};
use rpixen::oci::registry::push_layout;
use rpixen::oci::{self, OciError};
use rpixen::rootfs::cpio::{write_compressed, CpioCompression};
use rpixen::rootfs::unpack::{unpack_image, Limits};

/// Writes a multi-arch layout: the layered arm64 image plus an amd64 decoy.
fn multi_arch_layout(dir: &std::path::Path) {
    let arm = layered_image().write_blobs(dir).unwrap();
    let mut t = LayerTar::new();
    t.file("etc/motd", b"wrong architecture\n", 0o644);
    let amd = ImageBuilder::new()
        .platform("linux/amd64".parse().unwrap())
        .layer(&t.finish(), Compression::Gzip)
        .unwrap()
        .write_blobs(dir)
        .unwrap();
    write_index(dir, "latest", vec![amd, arm]).unwrap();
}

#[test]
fn pull_multi_arch_image_then_build_offline() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    multi_arch_layout(&layout);
    let o = opts(tmp.path());
    let r = format!("{}/test/layered:v1", reg.host());
    push_layout(&o, &layout, "latest", &r).unwrap();

    let image = oci::resolve(&o, &r).unwrap();
    assert_eq!(image.layers.len(), 3, "the arm64 manifest, not the amd64 one");
    for l in &image.layers {
        assert!(l.path.starts_with(tmp.path().join("cache/blobs/sha256")), "{}", l.path.display());
    }
    let tree = unpack_image(&image, &Limits::default()).unwrap();
    assert_eq!(tree.read_file("etc/motd").unwrap(), b"hello from zstd\n");
    let out = tmp.path().join("rootfs.cpio.gz");
    write_compressed(&tree, CpioCompression::Gzip, &mut std::fs::File::create(&out).unwrap())
        .unwrap();
    let list = cpio_list(&out);
    assert!(line_for(&list, "dev/console").starts_with("crw-------"), "{list}");
    assert!(line_for(&list, "bin/ping6").starts_with("-rwsr-xr-x   2"), "{list}");
    assert!(
        !has(&list, "etc/old") && !has(&list, "opt/app/lower") && has(&list, "opt/app/upper"),
        "{list}"
    );

    // read_file goes through the same path.
    assert_eq!(rpixen::rootfs::read_file(&o, &r, "lib/libm.so").unwrap(), b"libm");

    // With the registry gone, --offline builds from the cache alone; a pinned digest works too.
    let digest = image.manifest_digest.clone();
    drop(reg);
    let offline = rpixen::oci::OciOptions { offline: true, ..o.clone() };
    let again = oci::resolve(&offline, &r).unwrap();
    assert_eq!(again.manifest_digest, digest);
    let pinned = format!("{}@{digest}", r.rsplit_once(':').unwrap().0);
    assert_eq!(oci::resolve(&offline, &pinned).unwrap().layers.len(), 3);
    let err = oci::resolve(&offline, "127.0.0.1:1/never/pulled:x").unwrap_err().chain_text();
    assert!(err.contains("--offline") && err.contains("never/pulled"), "{err}");
}

#[test]
fn tampered_registry_blob_is_refused_and_not_kept() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    layered_image().write(&layout, "latest").unwrap();
    let o = opts(tmp.path());
    let r = format!("{}/test/tampered:v1", reg.host());
    push_layout(&o, &layout, "latest", &r).unwrap();
    let good = oci::resolve(
        &oci::OciOptions { cache_dir: tmp.path().join("other-cache"), ..o.clone() },
        &r,
    )
    .unwrap();
    let layer = &good.layers[0];
    let expected = layer.descriptor.digest().to_string();

    // Same size, different bytes, in the registry's own storage.
    let stored = reg.blob_file(&expected);
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[100] ^= 0x55;
    std::fs::write(&stored, &bytes).unwrap();
    let actual = rpixen::oci::digest::sha256(&bytes);

    let err = oci::resolve(&o, &r).unwrap_err();
    let msg = err.chain_text();
    assert!(matches!(err, OciError::DigestMismatch(_)), "{err:?}");
    assert!(
        msg.contains(&r)
            && msg.contains("layer 0")
            && msg.contains(&expected)
            && msg.contains(&actual),
        "{msg}"
    );
    assert!(msg.contains("not cached"), "{msg}");
    let hex = &expected[7..];
    assert!(
        !tmp.path().join("cache/blobs/sha256").join(hex).exists(),
        "bad blob kept in the cache"
    );
    assert!(!tmp.path().join("cache/partial").join(hex).exists(), "bad download kept");
}

#[test]
fn interrupted_download_resumes_from_the_partial_file() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let mut t = LayerTar::new();
    let big: Vec<u8> = (0..600_000u32).flat_map(|i| i.to_le_bytes()).collect();
    t.file("data", &big, 0o644);
    ImageBuilder::new()
        .layer(&t.finish(), Compression::Gzip)
        .unwrap()
        .write(&layout, "latest")
        .unwrap();
    let o = opts(tmp.path());
    let r = format!("{}/test/resume:v1", reg.host());
    push_layout(&o, &layout, "latest", &r).unwrap();
    let l = oci::layout::Layout::open(&layout)
        .unwrap()
        .image("x", "latest", &o.platform)
        .unwrap()
        .layers[0]
        .clone();
    let blob = std::fs::read(&l.path).unwrap();
    let hex = &l.descriptor.digest().to_string()[7..];
    let partial = tmp.path().join("cache/partial").join(hex);
    std::fs::create_dir_all(partial.parent().unwrap()).unwrap();

    // A partial download whose first half is corrupt: only a pull that resumes (asks for the rest with
    // a Range request) ends up with the wrong digest, and then drops the partial file.
    let mut bad = blob[..blob.len() / 2].to_vec();
    bad[10] ^= 1;
    std::fs::write(&partial, &bad).unwrap();
    let err = oci::resolve(&o, &r).unwrap_err();
    assert!(matches!(err, OciError::DigestMismatch(_)), "{err:?}");
    assert!(!partial.exists());

    // A correct first half is completed, and the image verifies.
    std::fs::write(&partial, &blob[..blob.len() / 2]).unwrap();
    let image = oci::resolve(&o, &r).unwrap();
    assert_eq!(std::fs::read(&image.layers[0].path).unwrap(), blob);
    assert!(!partial.exists());
}

#[test]
fn hostile_layers_from_the_registry() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let o = opts(tmp.path());

    let escape = tmp.path().join("escape");
    let mut l1 = LayerTar::new();
    l1.symlink("pwn", "../../../../../../tmp").symlink("etcdir", "/etc");
    let mut l2 = LayerTar::new();
    l2.file("pwn/rpixen-escape-test", b"planted", 0o644).file("etcdir/shadow", b"evil", 0o600);
    ImageBuilder::new()
        .layer(&l1.finish(), Compression::Gzip)
        .unwrap()
        .layer(&l2.finish(), Compression::Gzip)
        .unwrap()
        .write(&escape, "latest")
        .unwrap();
    let r = format!("{}/hostile/escape:v1", reg.host());
    push_layout(&o, &escape, "latest", &r).unwrap();
    let tree = unpack_image(&oci::resolve(&o, &r).unwrap(), &Limits::default()).unwrap();
    assert_eq!(tree.read_file("tmp/rpixen-escape-test").unwrap(), b"planted");
    assert_eq!(tree.read_file("etc/shadow").unwrap(), b"evil");
    assert!(!std::path::Path::new("/tmp/rpixen-escape-test").exists());

    let traversal = tmp.path().join("traversal");
    let mut l = LayerTar::new();
    l.file("../../../../tmp/rpixen-traversal", b"x", 0o644);
    ImageBuilder::new()
        .layer(&l.finish(), Compression::Zstd)
        .unwrap()
        .write(&traversal, "latest")
        .unwrap();
    let r = format!("{}/hostile/traversal:v1", reg.host());
    push_layout(&o, &traversal, "latest", &r).unwrap();
    let err =
        unpack_image(&oci::resolve(&o, &r).unwrap(), &Limits::default()).unwrap_err().chain_text();
    assert!(
        err.contains(&r)
            && err.contains("../../../../tmp/rpixen-traversal")
            && err.contains("`..`"),
        "{err}"
    );
}

#[test]
fn repeated_layer_is_fetched_once_and_applied_twice() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let o = opts(tmp.path());
    let mut a = LayerTar::new();
    a.file("counter", b"a", 0o644);
    let a = a.finish();
    let mut b = LayerTar::new();
    b.whiteout("counter").file("other", b"b", 0o644);
    let layout = tmp.path().join("rep");
    ImageBuilder::new()
        .layer(&a, Compression::Gzip)
        .unwrap()
        .layer(&b.finish(), Compression::Gzip)
        .unwrap()
        .layer(&a, Compression::Gzip)
        .unwrap()
        .write(&layout, "latest")
        .unwrap();
    let r = format!("{}/test/repeat:v1", reg.host());
    push_layout(&o, &layout, "latest", &r).unwrap();
    let image = oci::resolve(&o, &r).unwrap();
    assert_eq!(image.layers.len(), 3);
    assert_eq!(image.layers[0].path, image.layers[2].path);
    let tree = unpack_image(&image, &Limits::default()).unwrap();
    assert_eq!(tree.read_file("counter").unwrap(), b"a", "re-added by the third layer");
    assert_eq!(tree.read_file("other").unwrap(), b"b");
}

#[test]
fn concurrent_pulls_share_one_cache() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let o = opts(tmp.path());
    let layout = tmp.path().join("big");
    let mut t = LayerTar::new();
    let big: Vec<u8> =
        (0..2_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    t.file("noise", &big, 0o644);
    ImageBuilder::new()
        .layer(&t.finish(), Compression::Gzip)
        .unwrap()
        .write(&layout, "latest")
        .unwrap();
    let r = format!("{}/test/concurrent:v1", reg.host());
    push_layout(&o, &layout, "latest", &r).unwrap();
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| oci::resolve(&o, &r).map(|i| i.layers[0].path.clone())))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for res in &results {
        let path = res.as_ref().unwrap();
        assert_eq!(
            rpixen::oci::digest::file_digest(path).unwrap().1,
            std::fs::metadata(path).unwrap().len()
        );
    }
    let tree = unpack_image(&oci::resolve(&o, &r).unwrap(), &Limits::default()).unwrap();
    assert_eq!(tree.read_file("noise").unwrap(), big);
}

#[test]
fn credentials_come_from_docker_config() {
    let reg = common::registry_with_auth("rpixen", "s3cret");
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    layered_image().write(&layout, "latest").unwrap();
    let r = format!("{}/private/img:v1", reg.host());

    let mut o = opts(tmp.path());
    o.docker_config = None;
    let err = push_layout(&o, &layout, "latest", &r).unwrap_err().chain_text();
    assert!(err.contains(&r), "{err}");

    let config = tmp.path().join("docker/config.json");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    // base64("rpixen:s3cret")
    std::fs::write(
        &config,
        format!(r#"{{"auths":{{"{}":{{"auth":"cnBpeGVuOnMzY3JldA=="}}}}}}"#, reg.host()),
    )
    .unwrap();
    o.docker_config = Some(config.clone());
    push_layout(&o, &layout, "latest", &r).unwrap();
    let image = oci::resolve(&o, &r).unwrap();
    assert_eq!(image.layers.len(), 3);

    // Anonymous pulls are refused: the error names the image.
    let anon = rpixen::oci::OciOptions {
        docker_config: None,
        cache_dir: tmp.path().join("anon-cache"),
        ..o.clone()
    };
    let err = oci::resolve(&anon, &r).unwrap_err().chain_text();
    assert!(err.contains(&r) && err.contains("auths"), "{err}");
    let wrong = tmp.path().join("wrong.json");
    std::fs::write(
        &wrong,
        format!(r#"{{"auths":{{"{}":{{"username":"rpixen","password":"nope"}}}}}}"#, reg.host()),
    )
    .unwrap();
    let bad = rpixen::oci::OciOptions { docker_config: Some(wrong), ..anon };
    assert!(oci::resolve(&bad, &r).is_err());
}
