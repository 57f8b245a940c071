//! `cargo bench -p rpixen --bench slot_update`: what a device downloads for an update that changes
//! one file of one rootfs layer (dom0-init rebuilt), against the full slot size (target <= 10 %).
//!
//! The slot is realistic: a 128 MiB FAT (qemu-virt's `partitions.imga`) written by the builder's FAT
//! code, holding Debian's arm64 kernel, Debian's Xen as the hypervisor, a boot script, and a Dom0
//! initrd made of the packages qemu-virt's Dom0 carries (busybox, dom0-init built for
//! aarch64-musl, dropbear, e2fsprogs, the board's kernel modules), compressed as the builder does
//! (its parallel gzip). v1 and v2 are pushed to a real `docker-registry`, v2 signed, and installed
//! from v1 by `install_slot` into a partition file. It also prints, from the manifests alone, what
//! other chunk sizes would download, and races the install against `skopeo copy` of the same
//! artifact (a full pull, the peer).

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::Command;

use rpixen::disk::fat;
use rpixen::disk::source::{Shared, Source};
use rpixen_update::artifact::{self, Info};
use rpixen_update::chunking::Chunking;
use rpixen_update::cosign::{PrivateKey, PublicKey};
use rpixen_update::install::{install_slot, Slots};
use rpixen_update::oci::{self, Manifest};
use rpixen_update::registry::{Client, Credentials, Reference};
use rpixen_update::verify::{verify_signed, BlobStore};
use testkit::{CosignKeys, Registry};

const SLOT: u64 = 128 << 20;

fn sh(script: &str, dir: &Path) {
    let o = Command::new("bash").arg("-ec").arg(script).current_dir(dir).output().unwrap();
    assert!(o.status.success(), "{script}\n{}", String::from_utf8_lossy(&o.stderr));
}

/// The qemu-virt Dom0 module set (pkg/kernel/modules.yml: common + qemu-virt, and what they need).
const MODULES: &[&str] = &[
    "ext4",
    "jbd2",
    "mbcache",
    "crc16",
    "crc32c_generic",
    "vfat",
    "fat",
    "nls_cp437",
    "nls_ascii",
    "squashfs",
    "overlay",
    "sp805_wdt",
    "virtio_mmio",
    "virtio_blk",
    "virtio_net",
    "net_failover",
    "failover",
    "virtio_rng",
];

/// A Dom0 initrd tree: the packages' files and the modules, with `dom0` as /sbin/init.
fn initrd_tree(root: &Path, dom0_init: &[u8]) {
    for pkg in ["busybox-static", "dropbear-bin", "e2fsprogs", "libext2fs2t64"] {
        let dir = testkit::debian_package(pkg);
        sh(
            &format!(
                "cp -a '{}'/. '{}'/ && rm -rf '{}'/.done",
                dir.display(),
                root.display(),
                root.display()
            ),
            root,
        );
    }
    let kernel = testkit::test_kernel_package();
    let mut found = 0;
    for m in MODULES {
        let o = Command::new("find")
            .arg(kernel.join("usr/lib/modules"))
            .args(["-name", &format!("{m}.ko*")])
            .output()
            .unwrap();
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            let rel = Path::new(line).strip_prefix(&kernel).unwrap();
            let dest = root.join(rel);
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(line, dest).unwrap();
            found += 1;
        }
    }
    assert!(found >= 10, "only {found} modules found in {}", kernel.display());
    std::fs::create_dir_all(root.join("sbin")).unwrap();
    std::fs::write(root.join("sbin/dom0-init"), dom0_init).unwrap();
    std::fs::write(root.join("etc/hostname"), "rpixen\n").ok();
}

/// The builder's initrd encoding: a newc cpio (sorted) through its parallel gzip.
fn initrd(root: &Path, out: &Path) -> u64 {
    let o = Command::new("bash")
        .arg("-ec")
        .arg("find . | LC_ALL=C sort | cpio -o -H newc --quiet --reproducible")
        .current_dir(root)
        .output()
        .unwrap();
    assert!(o.status.success(), "cpio: {}", String::from_utf8_lossy(&o.stderr));
    let mut gz = Vec::new();
    rpixen::oci::gzip::parallel_gzip(&o.stdout, 6, &mut gz).unwrap();
    std::fs::write(out, &gz).unwrap();
    gz.len() as u64
}

/// The slot FAT, written by the builder's FAT code (as `rpixen update build` writes it).
fn slot_image(files: &[(&str, PathBuf)], out: &Path) {
    let shared: Vec<(String, Shared)> = files
        .iter()
        .map(|(n, p)| (n.to_string(), Shared::new(Source::Memory(std::fs::read(p).unwrap()))))
        .collect();
    let entries: Vec<fat::Entry<'_>> =
        shared.iter().map(|(n, s)| fat::Entry { path: n, source: s }).collect();
    let spec = fat::Spec {
        label: "RPIXEN-SLOT",
        size: SLOT,
        fat32: false,
        volume_id: 0x5250_5853,
        epoch: 1_700_000_000,
    };
    std::fs::write(out, fat::build(&spec, &entries).unwrap().to_bytes().unwrap()).unwrap();
}

fn info(version: &str) -> Info {
    Info {
        version: version.into(),
        epoch: 1_700_000_000,
        board: "qemu-virt".into(),
        revision: None,
        source: None,
    }
}

fn read_manifest(layout: &Path, digest: &str) -> (Vec<u8>, Manifest) {
    let bytes =
        std::fs::read(layout.join("blobs/sha256").join(oci::sha256_hex(digest).unwrap())).unwrap();
    let m = serde_json::from_slice(&bytes).unwrap();
    (bytes, m)
}

/// Unique chunk bytes of `new` that `old` lacks.
fn needed(new: &Manifest, old: &Manifest) -> u64 {
    let have: HashSet<_> = old.layers.iter().map(|l| &l.digest).collect();
    let mut seen = HashSet::new();
    new.layers
        .iter()
        .filter(|l| !have.contains(&l.digest) && seen.insert(&l.digest))
        .map(|l| l.size)
        .sum()
}

fn push(client: &Client, layout: &Path, digest: &str, tag: &str) {
    let (bytes, m) = read_manifest(layout, digest);
    let mut seen = HashSet::new();
    for d in std::iter::once(&m.config).chain(&m.layers) {
        if seen.insert(d.digest.clone()) {
            let blob = std::fs::read(
                layout.join("blobs/sha256").join(oci::sha256_hex(&d.digest).unwrap()),
            )
            .unwrap();
            client.put_blob("fleet/slot", &blob).unwrap();
        }
    }
    client.put_manifest("fleet/slot", tag, oci::MANIFEST_V1, &bytes).unwrap();
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let dom0_init = std::fs::read(testkit::aarch64_dom0_init()).unwrap();
    // v2's dom0-init: a rebuild that changed some code and grew by 4 KiB.
    let mut dom0_init2 = dom0_init.clone();
    let mid = dom0_init2.len() / 2;
    for b in &mut dom0_init2[mid..mid + 2000] {
        *b = b.wrapping_add(1);
    }
    dom0_init2.extend(std::iter::repeat_n(0x5a, 4096));

    let root = d.join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    initrd_tree(&root, &dom0_init);
    let (i1, i2) = (d.join("initrd1.img"), d.join("initrd2.img"));
    let initrd_size = initrd(&root, &i1);
    std::fs::write(root.join("sbin/dom0-init"), &dom0_init2).unwrap();
    initrd(&root, &i2);

    let kernel = testkit::test_kernel_image();
    let xen = testkit::debian_package("xen-hypervisor-4.20-arm64").join("boot/xen-4.20-arm64");
    let script = d.join("rpixen.scr");
    std::fs::write(&script, b"setenv bootargs console=hvc0\n".repeat(40)).unwrap();
    let files = |initrd: &Path| {
        vec![
            ("rpixen.scr", script.clone()),
            ("xen", xen.clone()),
            ("Image", kernel.clone()),
            ("initrd.img", initrd.to_owned()),
        ]
    };
    let (v1, v2) = (d.join("v1.img"), d.join("v2.img"));
    slot_image(&files(&i1), &v1);
    slot_image(&files(&i2), &v2);
    let payload: u64 = files(&i1).iter().map(|(_, p)| std::fs::metadata(p).unwrap().len()).sum();
    println!(
        "slot: {} MiB FAT; payload {:.1} MiB (kernel {:.1} MiB, initrd {:.1} MiB, xen {:.1} MiB)",
        SLOT >> 20,
        payload as f64 / 1048576.0,
        std::fs::metadata(&kernel).unwrap().len() as f64 / 1048576.0,
        initrd_size as f64 / 1048576.0,
        std::fs::metadata(&xen).unwrap().len() as f64 / 1048576.0,
    );

    // Chunk sizes compared, from the manifests alone.
    for (name, c) in [
        ("16K/64K/256K", Chunking { min: 16 << 10, avg: 64 << 10, max: 256 << 10 }),
        ("64K/256K/1M (default)", Chunking::DEFAULT),
        ("256K/1M/4M", Chunking { min: 256 << 10, avg: 1 << 20, max: 4 << 20 }),
    ] {
        let dir = d.join(format!("cmp-{}", c.avg));
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::create_dir_all(&dir).unwrap();
        let da = artifact::write_slot_layout_with(&a, &v1, &info("1"), c).unwrap();
        let db = artifact::write_slot_layout_with(&b, &v2, &info("2"), c).unwrap();
        let (_, ma) = read_manifest(&a, &da.digest);
        let (mb_bytes, mb) = read_manifest(&b, &db.digest);
        let need = needed(&mb, &ma);
        println!(
            "chunks {name:<22} {:>4} layers, manifest {:>6} bytes, one-file update downloads {:>9} bytes = {:.2} % of the slot",
            mb.layers.len(),
            mb_bytes.len(),
            need,
            need as f64 * 100.0 / SLOT as f64
        );
    }

    // The real flow: push, sign, verify, install v1 -> v2.
    let reg = Registry::start();
    let client = Client::new(&reg.host(), Credentials::Anonymous, &[]);
    let keys = CosignKeys::generate("bench");
    let (l1, l2) = (d.join("l1"), d.join("l2"));
    let d1 = artifact::write_slot_layout(&l1, &v1, &info("1.0.0")).unwrap();
    let d2 = artifact::write_slot_layout(&l2, &v2, &info("2.0.0")).unwrap();
    push(&client, &l1, &d1.digest, "1.0.0");
    push(&client, &l2, &d2.digest, "2.0.0");
    let r2 = Reference::parse(&format!("{}/fleet/slot:2.0.0", reg.host())).unwrap();
    let pem = std::fs::read_to_string(keys.key_path()).unwrap();
    let key = PrivateKey::from_encrypted_pem("cosign.key", &pem, b"bench").unwrap();
    rpixen_update::sign::sign_in_registry(&client, &r2, &key).unwrap();
    let public =
        PublicKey::from_pem("cosign.pub", &std::fs::read_to_string(keys.pub_path()).unwrap())
            .unwrap();
    let inactive = d.join("imgb");
    let store_dir = d.join("store");
    let mut last = None;
    let mut ours = || {
        let _ = std::fs::remove_dir_all(&store_dir);
        std::fs::write(&inactive, vec![0u8; SLOT as usize]).unwrap();
        let verified = verify_signed(&client, &r2, &public).unwrap();
        let store = BlobStore::new(&store_dir);
        let slots = Slots { active: &v1, inactive: &inactive, store: &store, store_cap: SLOT };
        last = Some(
            install_slot(&client, &verified, &slots, &mut |_| ControlFlow::Continue(())).unwrap(),
        );
    };
    let full = d.join("full");
    let source = format!("docker://{}/fleet/slot:2.0.0", reg.host());
    let mut skopeo = || {
        let _ = std::fs::remove_dir_all(&full);
        let o = Command::new("skopeo")
            .args(["copy", "-q", "--src-tls-verify=false", &source])
            .arg(format!("dir:{}", full.display()))
            .output()
            .unwrap();
        assert!(o.status.success(), "skopeo copy: {}", String::from_utf8_lossy(&o.stderr));
    };
    let [t_ours, t_skopeo] = testkit::race(3, [&mut ours, &mut skopeo]);
    let done = last.unwrap();
    assert_eq!(std::fs::read(&inactive).unwrap(), std::fs::read(&v2).unwrap());
    let full_bytes: u64 =
        std::fs::read_dir(&full).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    println!(
        "install v1 -> v2 (dom0-init changed): downloaded {} bytes, reused {} bytes of {}",
        done.downloaded, done.reused, done.image_size
    );
    println!(
        "downloaded / slot size: {:.4} ({:.2} %, target <= 10 %); / slot payload: {:.4}; / full pull (skopeo, {} bytes): {:.4}",
        done.downloaded as f64 / SLOT as f64,
        done.downloaded as f64 * 100.0 / SLOT as f64,
        done.downloaded as f64 / payload as f64,
        full_bytes,
        done.downloaded as f64 / full_bytes as f64,
    );
    println!(
        "time: install (verify, index v1, fetch, write 128 MiB, read back) {:.2?}, skopeo full pull {:.2?}, ratio {:.2}",
        t_ours,
        t_skopeo,
        t_ours.as_secs_f64() / t_skopeo.as_secs_f64()
    );
}
