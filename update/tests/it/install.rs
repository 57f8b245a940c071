//! Installing slot images against the real tools: FAT slot images made by `mkfs.vfat` and `mcopy`,
//! pushed to Debian's `docker-registry` on 127.0.0.1, signed by cosign 2.5 (and by rpixen, checked by
//! `cosign verify`), installed from "partition" files, the result checked by `fsck.fat -n` and `mcopy`.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::Command;

use rpixen_update::artifact::{self, Info};
use rpixen_update::cosign::{PrivateKey, PublicKey};
use rpixen_update::install::{install_slot, InstallError, Installed, Progress, Slots, Stage};
use rpixen_update::oci::{self, Manifest};
use rpixen_update::registry::{Client, Credentials, Reference};
use rpixen_update::verify::{verify_signed, BlobStore, Verified, VerifyError};
use testkit::{output_text, CosignKeys, Registry};

const SLOT_MIB: u64 = 32;

fn sh(cmd: &mut Command) {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?}: {}", output_text(&o));
}

/// Bytes that do not compress or repeat, as kernels and compressed initrds are.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The files of a slot, as the builder puts them on it.
fn slot_files(hv_seed: u64) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("rpixen.scr", b"setenv bootargs console=hvc0\nbooti ${kernel_addr_r}\n".repeat(20)),
        ("rpixen-hv.bin", noise(96 << 10, hv_seed)),
        ("Image", noise(9 << 20, 2)),
        ("virt.dtb", noise(40 << 10, 3)),
        ("initrd.img", noise(12 << 20, 4)),
    ]
}

/// A slot partition image: `mkfs.vfat` and `mcopy` of `files`.
fn make_slot(dir: &Path, name: &str, files: &[(&str, Vec<u8>)]) -> PathBuf {
    let img = dir.join(name);
    sh(Command::new("mkfs.vfat")
        .args(["-C", "-i", "52505853", "-n", "RPIXEN-SLOT"])
        .arg(&img)
        .arg((SLOT_MIB << 10).to_string()));
    for (n, bytes) in files {
        let src = dir.join(format!("{name}.{n}"));
        std::fs::write(&src, bytes).unwrap();
        sh(Command::new("mcopy").arg("-i").arg(&img).arg(&src).arg(format!("::{n}")));
        std::fs::remove_file(src).unwrap();
    }
    img
}

/// `v1` with one file replaced in place (`mcopy -o`), as an update that rebuilt one file.
fn change_one_file(dir: &Path, v1: &Path, name: &str, file: &str, bytes: &[u8]) -> PathBuf {
    let img = dir.join(name);
    std::fs::copy(v1, &img).unwrap();
    let src = dir.join(format!("{name}.{file}"));
    std::fs::write(&src, bytes).unwrap();
    sh(Command::new("mcopy").arg("-o").arg("-i").arg(&img).arg(&src).arg(format!("::{file}")));
    img
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

fn client(reg: &Registry) -> Client {
    Client::new(&reg.host(), Credentials::Anonymous, &[])
}

/// Writes `image` as a slot layout and pushes it (every blob, then the manifest by tag); returns the
/// reference pinned to the manifest digest and the manifest.
fn push_slot(reg: &Registry, dir: &Path, image: &Path, version: &str) -> (Reference, Manifest) {
    let layout = dir.join(format!("layout-{version}"));
    let desc = artifact::write_slot_layout(&layout, image, &info(version)).unwrap();
    let blob =
        |d: &str| std::fs::read(layout.join("blobs/sha256").join(oci::sha256_hex(d).unwrap()));
    let bytes = blob(&desc.digest).unwrap();
    let manifest: Manifest = serde_json::from_slice(&bytes).unwrap();
    let c = client(reg);
    let mut pushed = HashSet::new();
    for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
        if pushed.insert(d.digest.clone()) {
            c.put_blob("fleet/slot", &blob(&d.digest).unwrap()).unwrap();
        }
    }
    c.put_manifest("fleet/slot", version, oci::MANIFEST_V1, &bytes).unwrap();
    let r = Reference::parse(&format!("{}/fleet/slot@{}", reg.host(), desc.digest)).unwrap();
    (r, manifest)
}

fn public(keys: &CosignKeys) -> PublicKey {
    PublicKey::from_pem("cosign.pub", &std::fs::read_to_string(keys.pub_path()).unwrap()).unwrap()
}

/// A "partition" file full of what the old contents were (not zeros, so a write shows).
fn partition(dir: &Path, name: &str, mib: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, vec![0xa5u8; (mib << 20) as usize]).unwrap();
    p
}

fn sha256_file(p: &Path) -> String {
    oci::sha256(&std::fs::read(p).unwrap())
}

fn install(
    reg: &Registry,
    verified: &Verified,
    active: &Path,
    inactive: &Path,
    store: &BlobStore,
    cap: u64,
    progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
) -> Result<Installed, InstallError> {
    let slots = Slots { active, inactive, store, store_cap: cap };
    install_slot(&client(reg), verified, &slots, progress)
}

fn go_on(_: &Progress) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

/// Unique chunk bytes of `m` that `active` does not hold (what an install must download).
fn needed(m: &Manifest, active: &Manifest) -> u64 {
    let have: HashSet<_> = active.layers.iter().map(|l| &l.digest).collect();
    let mut seen = HashSet::new();
    m.layers
        .iter()
        .filter(|l| !have.contains(&l.digest) && seen.insert(&l.digest))
        .map(|l| l.size)
        .sum()
}

#[test]
fn v1_to_v2_with_one_file_changed_downloads_a_small_fraction() {
    let reg = Registry::start();
    let keys = CosignKeys::generate("pw");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let v1 = make_slot(d, "v1.img", &slot_files(1));
    let v2 = change_one_file(d, &v1, "v2.img", "rpixen-hv.bin", &noise(96 << 10, 9));
    let (_, m1) = push_slot(&reg, d, &v1, "1.0.0");
    let (r2, m2) = push_slot(&reg, d, &v2, "2.0.0");
    // cosign signs; the device accepts it.
    keys.sign(&r2.to_string());
    let verified = verify_signed(&client(&reg), &r2.at("2.0.0"), &public(&keys)).unwrap();

    let inactive = partition(d, "imgb", SLOT_MIB);
    let store = BlobStore::new(d.join("store"));
    let mut stages = Vec::new();
    let mut last = None;
    let done = install(&reg, &verified, &v1, &inactive, &store, 64 << 20, &mut |p| {
        if stages.last() != Some(&p.stage) {
            stages.push(p.stage);
        }
        last = Some(*p);
        ControlFlow::Continue(())
    })
    .unwrap();
    let size = SLOT_MIB << 20;
    assert_eq!(done.image_size, size);
    assert_eq!(std::fs::read(&inactive).unwrap(), std::fs::read(&v2).unwrap());
    assert_eq!(stages, [Stage::Indexing, Stage::Fetching, Stage::Writing, Stage::Checking]);
    let last = last.unwrap();
    assert_eq!((last.fetched, last.written), (done.downloaded, size));
    // Exactly the chunks v1 lacks came over the network, and they are a small part of the slot.
    assert_eq!(done.downloaded, needed(&m2, &m1));
    assert!(done.downloaded * 20 < size, "downloaded {} of {size}", done.downloaded);
    assert_eq!(done.reused + done.downloaded + done.from_store, size, "{done:?}");
    eprintln!(
        "v1 -> v2 (one 96 KiB file of a {SLOT_MIB} MiB slot): downloaded {} bytes ({:.2} %), reused {}",
        done.downloaded,
        done.downloaded as f64 * 100.0 / size as f64,
        done.reused
    );
    // Independent checks of the written slot: fsck.fat, and the changed file read back by mcopy.
    sh(Command::new("fsck.fat").arg("-n").arg(&inactive));
    let out = d.join("hv-out");
    sh(Command::new("mcopy").arg("-i").arg(&inactive).arg("::rpixen-hv.bin").arg(&out));
    assert_eq!(std::fs::read(out).unwrap(), noise(96 << 10, 9));

    // The same install again (a power cut before the trial was set): nothing is downloaded.
    let again = install(&reg, &verified, &v1, &inactive, &store, 64 << 20, &mut go_on).unwrap();
    assert_eq!(again.downloaded, 0);
    assert_eq!(again.from_store + again.reused, size);
}

#[test]
fn an_interrupted_download_resumes_where_it_stopped() {
    let reg = Registry::start();
    let keys = CosignKeys::generate("pw");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let v1 = make_slot(d, "v1.img", &slot_files(1));
    // A new initrd: megabytes to fetch, several chunks.
    let v2 = change_one_file(d, &v1, "v2.img", "initrd.img", &noise(12 << 20, 40));
    let (_, m1) = push_slot(&reg, d, &v1, "1.0.0");
    let (r2, m2) = push_slot(&reg, d, &v2, "2.0.0");
    keys.sign(&r2.to_string());
    let verified = verify_signed(&client(&reg), &r2, &public(&keys)).unwrap();
    let inactive = partition(d, "imgb", SLOT_MIB);
    let before = sha256_file(&inactive);
    let store = BlobStore::new(d.join("store"));
    let need = needed(&m2, &m1);
    assert!(need > 8 << 20, "{need}");

    // Stopped in the middle of a chunk, as a lost connection or a reboot would.
    let stop_at = need / 2 + 12_345;
    let mut got = 0;
    let e = install(&reg, &verified, &v1, &inactive, &store, 64 << 20, &mut |p| {
        got = p.fetched;
        if p.fetched >= stop_at {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap_err();
    assert!(matches!(e, InstallError::Verify(VerifyError::Cancelled { .. })), "{e}");
    assert_eq!(sha256_file(&inactive), before, "the inactive slot was touched");
    let partials = std::fs::read_dir(d.join("store/partial")).unwrap().count();
    assert_eq!(partials, 1, "the chunk being fetched stays as a partial download");

    // The caller stops it once everything is fetched, before the first write (the agent does when
    // STATE cannot be written): the inactive slot stays untouched, the chunks stay in the store.
    let mut got2 = 0;
    let e = install(&reg, &verified, &v1, &inactive, &store, 64 << 20, &mut |p| {
        got2 = p.fetched;
        if p.stage == Stage::Writing {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap_err();
    assert!(matches!(e, InstallError::Stopped { .. }), "{e}");
    assert_eq!(sha256_file(&inactive), before, "the inactive slot was touched");

    let done = install(&reg, &verified, &v1, &inactive, &store, 64 << 20, &mut go_on).unwrap();
    // No byte came twice: the kept chunks were not fetched again, the partial one resumed (Range).
    assert_eq!(got + got2 + done.downloaded, need, "{got}, {got2}, then {}", done.downloaded);
    assert!(done.from_store > 0);
    assert_eq!(std::fs::read(&inactive).unwrap(), std::fs::read(&v2).unwrap());
    assert_eq!(std::fs::read_dir(d.join("store/partial")).unwrap().count(), 0);
}

#[test]
fn a_tampered_chunk_is_refused_naming_it_before_the_inactive_slot_is_touched() {
    let reg = Registry::start();
    let keys = CosignKeys::generate("pw");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let v1 = make_slot(d, "v1.img", &slot_files(1));
    let v2 = change_one_file(d, &v1, "v2.img", "Image", &noise(9 << 20, 77));
    let (_, m1) = push_slot(&reg, d, &v1, "1.0.0");
    let (r2, m2) = push_slot(&reg, d, &v2, "2.0.0");
    // Signed by rpixen; cosign agrees with the signature.
    let pem = std::fs::read_to_string(keys.key_path()).unwrap();
    let key = PrivateKey::from_encrypted_pem("cosign.key", &pem, b"pw").unwrap();
    rpixen_update::sign::sign_in_registry(&client(&reg), &r2, &key).unwrap();
    let out = keys.verify(&r2.to_string());
    assert!(out.status.success(), "cosign verify: {}", output_text(&out));

    // The registry's copy of the last chunk v1 lacks is changed after signing.
    let have: HashSet<_> = m1.layers.iter().map(|l| &l.digest).collect();
    let bad = m2.layers.iter().rev().find(|l| !have.contains(&l.digest)).unwrap().clone();
    let mut bytes = std::fs::read(reg.blob_file(&bad.digest)).unwrap();
    bytes[100] ^= 1;
    std::fs::write(reg.blob_file(&bad.digest), bytes).unwrap();

    let verified = verify_signed(&client(&reg), &r2, &public(&keys)).unwrap();
    let inactive = partition(d, "imgb", SLOT_MIB);
    let before = sha256_file(&inactive);
    let store = BlobStore::new(d.join("store"));
    let mut wrote = false;
    let e = install(&reg, &verified, &v1, &inactive, &store, 64 << 20, &mut |p| {
        wrote |= p.written > 0 || p.stage == Stage::Writing;
        ControlFlow::Continue(())
    })
    .unwrap_err();
    assert!(matches!(e, InstallError::Verify(VerifyError::Blob { .. })), "{e}");
    assert!(e.to_string().contains(&bad.digest), "{e}");
    assert!(!wrote);
    assert_eq!(sha256_file(&inactive), before, "the inactive slot was touched");
}

#[test]
fn an_image_larger_than_the_partition_is_refused_naming_it() {
    let reg = Registry::start();
    let keys = CosignKeys::generate("pw");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let v1 = make_slot(d, "v1.img", &slot_files(1));
    let v2 = change_one_file(d, &v1, "v2.img", "rpixen-hv.bin", &noise(96 << 10, 5));
    let (r2, _) = push_slot(&reg, d, &v2, "2.0.0");
    keys.sign(&r2.to_string());
    let verified = verify_signed(&client(&reg), &r2, &public(&keys)).unwrap();
    let small = partition(d, "imgb-small", SLOT_MIB / 2);
    let before = sha256_file(&small);
    let store = BlobStore::new(d.join("store"));
    let e = install(&reg, &verified, &v1, &small, &store, 64 << 20, &mut go_on).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, InstallError::TooLarge { .. }), "{text}");
    assert!(text.contains("imgb-small") && text.contains(&(SLOT_MIB << 20).to_string()), "{text}");
    assert_eq!(sha256_file(&small), before);
    assert_eq!(store.usage().unwrap(), 0, "nothing was downloaded");
    // Nor is the running slot ever the target.
    let e = install(&reg, &verified, &v1, &v1, &store, 64 << 20, &mut go_on).unwrap_err();
    assert!(matches!(e, InstallError::SameSlot { .. }), "{e}");
}

#[test]
fn the_blob_store_stays_bounded() {
    let reg = Registry::start();
    let keys = CosignKeys::generate("pw");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let v1 = make_slot(d, "v1.img", &slot_files(1));
    let v2 = change_one_file(d, &v1, "v2.img", "initrd.img", &noise(12 << 20, 41));
    let v3 = change_one_file(d, &v2, "v3.img", "Image", &noise(9 << 20, 42));
    let (_, m1) = push_slot(&reg, d, &v1, "1.0.0");
    let (r2, m2) = push_slot(&reg, d, &v2, "2.0.0");
    let (r3, m3) = push_slot(&reg, d, &v3, "3.0.0");
    keys.sign(&r2.to_string());
    keys.sign(&r3.to_string());
    let c = client(&reg);
    let (ver2, ver3) = (
        verify_signed(&c, &r2, &public(&keys)).unwrap(),
        verify_signed(&c, &r3, &public(&keys)).unwrap(),
    );
    let store = BlobStore::new(d.join("store"));
    // A leftover of an abandoned update (a blob and a partial download).
    let stale = noise(300_000, 99);
    let stale_hex = oci::sha256_hex(&oci::sha256(&stale)).unwrap().to_owned();
    for sub in ["blobs/sha256", "partial"] {
        std::fs::create_dir_all(d.join("store").join(sub)).unwrap();
        std::fs::write(d.join("store").join(sub).join(&stale_hex), &stale).unwrap();
    }

    // A cap below what v2 needs: refused before anything is downloaded, naming the store and sizes.
    let (imgb, imga) = (partition(d, "imgb", SLOT_MIB), partition(d, "imga", SLOT_MIB));
    let need2 = needed(&m2, &m1);
    let e = install(&reg, &ver2, &v1, &imgb, &store, need2 - 1, &mut go_on).unwrap_err();
    assert!(matches!(e, InstallError::StoreFull { need, .. } if need == need2), "{e}");
    assert!(e.to_string().contains("store"), "{e}");
    assert_eq!(store.usage().unwrap(), 0, "the stale blobs are gone and nothing was fetched");

    // v1 -> v2 into IMGB: the store then holds exactly v2's downloaded chunks.
    let done = install(&reg, &ver2, &v1, &imgb, &store, need2, &mut go_on).unwrap();
    assert_eq!(done.downloaded, need2);
    assert_eq!(store.usage().unwrap(), need2);
    // v2 (now active in IMGB) -> v3 into IMGA: v2's chunks are pruned, v3's kept, within the cap.
    let need3 = needed(&m3, &m2);
    let done = install(&reg, &ver3, &imgb, &imga, &store, need3, &mut go_on).unwrap();
    assert_eq!(done.downloaded, need3);
    assert_eq!(done.pruned, 0, "v2's chunks went before the download, to make room");
    assert_eq!(store.usage().unwrap(), need3);
    assert_eq!(std::fs::read(&imga).unwrap(), std::fs::read(&v3).unwrap());
}
