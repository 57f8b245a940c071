//! Package builds through the real `rpixen` binary: our `.deb` reader agrees with `dpkg-deb -x`, every
//! package layout holds the paths the image manifests use (contract C-PKG, listed with GNU tar and
//! checked by `skopeo`), file contents match the `.deb`s, and a rebuild from the cache is offline and
//! byte-identical.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use rpixen::pkg::PkgDef;

fn rpixen(args: &[&str]) -> String {
    testkit::run(
        Command::new(env!("CARGO_BIN_EXE_rpixen")).args(args).current_dir(testkit::repo_root()),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn cache() -> String {
    testkit::pkg_cache().display().to_string()
}

fn cached_deb(pkg: &str, deb: &str) -> PathBuf {
    let def = PkgDef::load(&testkit::repo_root().join("pkg").join(pkg)).unwrap();
    let d = def.debs.iter().find(|d| d.package == deb).unwrap();
    rpixen(&["pkg", "fetch", &format!("pkg/{pkg}"), "--deb", deb, "--cache", &cache()]);
    testkit::pkg_cache().join("debs/sha256").join(&d.sha256)
}

/// Every entry below `root`: relative path -> (kind, mode, content digest or link target).
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if rel == ".done" {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            let desc = if m.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                format!("dir {:o}", m.permissions().mode() & 0o7777)
            } else {
                format!(
                    "file {:o} {} {}",
                    m.mode() & 0o7777,
                    m.len(),
                    blake(&std::fs::read(&p).unwrap())
                )
            };
            out.insert(rel, desc);
        }
    }
    out
}

fn blake(b: &[u8]) -> String {
    blake3::hash(b).to_hex().to_string()
}

#[test]
fn deb_reader_agrees_with_dpkg_deb() {
    for (pkg, deb) in
        [("busybox", "busybox-static"), ("u-boot", "u-boot-qemu"), ("firmware", "raspi-firmware")]
    {
        let file = cached_deb(pkg, deb);
        let tmp = tempfile::tempdir().unwrap();
        let ours = tmp.path().join("ours");
        rpixen(&[
            "pkg",
            "fetch",
            &format!("pkg/{pkg}"),
            "--deb",
            deb,
            "--cache",
            &cache(),
            "--unpack",
            s(&ours),
        ]);
        let theirs = tmp.path().join("dpkg");
        testkit::run(Command::new("dpkg-deb").arg("-x").arg(&file).arg(&theirs));
        let (a, b) = (tree(&ours.join(deb)), tree(&theirs));
        assert!(a.len() > 3, "{deb}: unpacked {} entries", a.len());
        assert_eq!(a, b, "{deb}: our unpack differs from dpkg-deb -x");
    }
}

/// The layer blobs of a layout's `latest` image, via index.json and the manifest.
fn layers(layout: &Path) -> Vec<PathBuf> {
    let blob =
        |digest: &str| layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    let json = |p: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let index = json(layout.join("index.json"));
    let m = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "latest")
        .expect("a manifest tagged latest");
    let manifest = json(blob(m["digest"].as_str().unwrap()));
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| blob(l["digest"].as_str().unwrap()))
        .collect()
}

/// `tar -tvzf` of the layer, one line per entry.
fn listing(layer: &Path) -> String {
    testkit::run(Command::new("tar").arg("-tvzf").arg(layer))
}

fn has(list: &str, kind: char, path: &str) -> bool {
    list.lines().any(|l| {
        l.starts_with(kind)
            && (l.ends_with(&format!(" {path}")) || l.contains(&format!(" {path} -> ")))
    })
}

fn extract(layer: &Path, path: &str) -> Vec<u8> {
    let out = Command::new("tar").arg("-xzOf").arg(layer).arg(path).output().unwrap();
    assert!(out.status.success(), "tar -xzOf {} {path}", layer.display());
    out.stdout
}

fn deb_file(deb: &Path, path: &str) -> Vec<u8> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("dpkg-deb --fsys-tarfile '{}' | tar -xO '{path}'", deb.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "dpkg-deb {path}");
    out.stdout
}

#[test]
fn package_layouts_hold_the_contract_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let build = |name: &str| {
        let out = tmp.path().join(name);
        rpixen(&["pkg", "build", &format!("pkg/{name}"), "--cache", &cache(), "-o", s(&out)]);
        // skopeo reads the layout as an independent OCI implementation.
        let inspect = testkit::run(
            Command::new("skopeo")
                .args(["inspect", "--raw"])
                .arg(format!("oci:{}:latest", out.display())),
        );
        assert!(
            inspect.contains("application/vnd.oci.image.layer.v1.tar+gzip"),
            "{name}: {inspect}"
        );
        let l = layers(&out);
        assert_eq!(l.len(), 1, "{name}: one layer");
        l[0].clone()
    };

    let kernel = build("kernel");
    let list = listing(&kernel);
    assert!(
        has(&list, '-', "boot/Image") && has(&list, '-', "boot/dtbs/broadcom/bcm2711-rpi-4-b.dtb"),
        "{list:.2000}"
    );
    // Debian ships no modules.dep (depmod runs at install time); modules.builtin and the .ko.xz files are there.
    assert!(
        list.lines().any(|l| l.contains(" lib/modules/6.12.") && l.ends_with("/modules.builtin")),
        "modules.builtin"
    );
    assert!(
        list.lines().any(|l| l.contains(" lib/modules/6.12.") && l.ends_with("/virtio_net.ko.xz")),
        "virtio_net.ko.xz"
    );
    let image = extract(&kernel, "boot/Image");
    assert_eq!(&image[0x38..0x3c], b"ARMd", "boot/Image is an uncompressed arm64 Image");
    let kdeb = cached_deb("kernel", testkit::TEST_KERNEL);
    assert_eq!(blake(&image), blake(&deb_file(&kdeb, "./boot/vmlinuz-6.12.117+deb13-arm64")));

    let uboot = listing(&build("u-boot"));
    assert!(
        has(&uboot, '-', "u-boot/qemu_arm64/u-boot.bin")
            && has(&uboot, '-', "u-boot/rpi_arm64/u-boot.bin"),
        "{uboot}"
    );

    let fw = listing(&build("firmware"));
    for f in ["boot/start4.elf", "boot/fixup4.dat", "boot/bootcode.bin"] {
        assert!(has(&fw, '-', f), "{f}: {fw}");
    }

    let xen = build("xen");
    assert!(has(&listing(&xen), '-', "boot/xen"));
    let xdeb = cached_deb("xen", "xen-hypervisor-4.20-arm64");
    assert_eq!(blake(&extract(&xen, "boot/xen")), blake(&deb_file(&xdeb, "./boot/xen-4.20-arm64")));

    let bb = build("busybox");
    let list = listing(&bb);
    assert!(
        list.lines().any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with(" bin/busybox")),
        "{list:.500}"
    );
    assert!(has(&list, 'l', "bin/sh") && list.contains(" bin/sh -> busybox"), "{list:.500}");
    assert!(
        !has(&list, 'l', "bin/init") && !has(&list, 'l', "sbin/init"),
        "busybox must not claim init"
    );
}

#[test]
fn rebuild_is_offline_and_byte_identical() {
    cached_deb("busybox", "busybox-static");
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for out in [&a, &b] {
        rpixen(&["pkg", "build", "pkg/busybox", "--offline", "--cache", &cache(), "-o", s(out)]);
    }
    assert_eq!(tree(&a), tree(&b));
}

#[test]
fn dom0_init_package_is_a_static_aarch64_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("dom0-init");
    rpixen(&["pkg", "build", "pkg/dom0-init", "-o", s(&out)]);
    let layer = &layers(&out)[0];
    let bin = extract(layer, "sbin/dom0-init");
    assert_eq!(&bin[..4], b"\x7fELF");
    assert_eq!(u16::from_le_bytes([bin[18], bin[19]]), 183, "e_machine is EM_AARCH64");
    // A static executable has no PT_INTERP program header.
    let phoff = u64::from_le_bytes(bin[32..40].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (
        u16::from_le_bytes([bin[54], bin[55]]) as usize,
        u16::from_le_bytes([bin[56], bin[57]]) as usize,
    );
    let interp = (0..phnum)
        .any(|i| u32::from_le_bytes(bin[phoff + i * phentsize..][..4].try_into().unwrap()) == 3);
    assert!(!interp, "dom0-init must be static");
}
