//! Shared by the `oci_*` tests: the test images they build with our layout writer, the checks run with
//! independent tools, and a real `docker-registry` started on 127.0.0.1 for the duration of a test.

use std::path::Path;
use std::process::Command;

use rpixen::oci::layout::{Compression, EntryMeta, ImageBuilder, LayerTar};
use rpixen::oci::OciOptions;

/// An error and its causes on one line (`a: b: c`): what a test checks for may sit in any cause.
pub trait ChainText {
    fn chain_text(&self) -> String;
}

impl<E: std::error::Error + 'static> ChainText for E {
    fn chain_text(&self) -> String {
        rpixen::error::one_line(self)
    }
}

/// Options with the cache and package folder inside `tmp`.
pub fn opts(tmp: &Path) -> OciOptions {
    OciOptions {
        cache_dir: tmp.join("cache"),
        pkg_dir: tmp.join("pkg"),
        progress: false,
        ..OciOptions::from_env()
    }
}

/// Three layers (gzip, uncompressed, zstd) exercising whiteouts, an opaque directory, a hard link, a
/// symlink written through, a device node, a setuid file with an xattr and a non-root owner.
pub fn layered_image() -> ImageBuilder {
    let mut l1 = LayerTar::new();
    l1.dir("etc", 0o755)
        .file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644)
        .file("etc/old", b"old", 0o644)
        .dir("opt/app", 0o755)
        .file("opt/app/lower", b"lower", 0o644)
        .dir("usr/lib", 0o755)
        .file("usr/lib/libc.so", b"libc", 0o755)
        .symlink("lib", "usr/lib")
        .file_with(
            "bin/ping",
            b"ping",
            &EntryMeta {
                mode: 0o4755,
                mtime: 7,
                xattrs: vec![("security.capability".into(), vec![1, 0, 0, 2])],
                ..Default::default()
            },
        );
    let mut l2 = LayerTar::new();
    l2.whiteout("etc/old")
        .opaque("opt/app")
        .file("opt/app/upper", b"upper", 0o600)
        .file("lib/libm.so", b"libm", 0o755)
        .file_with(
            "home/user/f",
            b"mine",
            &EntryMeta { mode: 0o640, uid: 1000, gid: 100, ..Default::default() },
        )
        .hardlink("bin/ping6", "bin/ping")
        .char_device("dev/console", 5, 1, 0o600)
        .block_device("dev/vda", 254, 0, 0o660)
        .fifo("run/initctl", 0o600);
    let mut l3 = LayerTar::new();
    l3.file("etc/motd", b"hello from zstd\n", 0o644);
    ImageBuilder::new()
        .layer(&l1.finish(), Compression::Gzip)
        .unwrap()
        .layer(&l2.finish(), Compression::None)
        .unwrap()
        .layer(&l3.finish(), Compression::Zstd)
        .unwrap()
}

/// Runs a shell command line; returns stdout, panics with stderr on failure.
pub fn sh(script: &str) -> String {
    testkit::run(Command::new("sh").arg("-c").arg(script))
}

/// `cpio -itv` listing (numeric owners) of a gzip- or zstd-compressed archive.
pub fn cpio_list(path: &Path) -> String {
    sh(&format!(
        "(zstdcat -q {0} 2>/dev/null || gzip -dc {0}) | cpio -itv --numeric-uid-gid --quiet",
        path.display()
    ))
}

/// One file's contents from a compressed cpio archive, read by GNU cpio.
pub fn cpio_cat(path: &Path, member: &str) -> String {
    sh(&format!("gzip -dc {} | cpio -i --to-stdout --quiet {member}", path.display()))
}

/// `unsquashfs -lln` listing.
pub fn squashfs_list(path: &Path) -> String {
    testkit::run(Command::new("unsquashfs").arg("-lln").arg(path))
}

/// The listing line whose last field is `name` (cpio) or ends with `/name` (unsquashfs).
pub fn line_for<'a>(listing: &'a str, name: &str) -> &'a str {
    listing
        .lines()
        .find(|l| {
            let last = l.split(" -> ").next().unwrap_or(l).split_whitespace().last().unwrap_or("");
            last == name || last.ends_with(&format!("/{name}"))
        })
        .unwrap_or_else(|| panic!("no `{name}` in:\n{listing}"))
}

pub fn has(listing: &str, name: &str) -> bool {
    listing.lines().any(|l| {
        let last = l.split(" -> ").next().unwrap_or(l).split_whitespace().last().unwrap_or("");
        last == name || last.ends_with(&format!("/{name}"))
    })
}

pub use testkit::{qemu_virt_manifest_with_rootfs as manifest_with_rootfs, Registry};

/// A registry that requires HTTP basic auth as `user` with `password` (bcrypt in htpasswd).
pub fn registry_with_auth(user: &str, password: &str) -> Registry {
    let hash = bcrypt::hash(password, 4).unwrap();
    Registry::start_with_htpasswd(Some((user, &hash)))
}

/// A fake `dom0-init` package (a shell script at `sbin/dom0-init`) in `pkg_dir`.
pub fn fake_dom0_init(pkg_dir: &Path, script: &str) {
    fake_sbin_package(pkg_dir, "dom0-init", "dom0-init", script);
}

/// A package `name` in `pkg_dir` holding only `sbin/<program>`, a shell script: for rootfs tests
/// that need a manifest's service to exist, not to run (the real ones cost a cross build each).
pub fn fake_sbin_package(pkg_dir: &Path, name: &str, program: &str, script: &str) {
    let mut t = LayerTar::new();
    t.dir("sbin", 0o755).file(&format!("sbin/{program}"), script.as_bytes(), 0o755);
    ImageBuilder::new()
        .layer(&t.finish(), Compression::Gzip)
        .unwrap()
        .write(&pkg_dir.join(name), "latest")
        .unwrap();
}
