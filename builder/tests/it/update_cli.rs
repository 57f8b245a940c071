//! `rpixen update build|push|sign|verify` end to end: a slot artifact (the slot FAT cut into chunks)
//! from a manifest, pushed to a real `docker-registry`, checked by skopeo (the layout and the pushed
//! manifest), fsck.fat and mtools (the slot image) and cosign 2.5 (the signature), and refused when
//! unsigned.

use std::path::Path;

use testkit::{output_text, CosignKeys, Registry};

use crate::image_support::{fake_arm64_image, run_rpixen, synthetic};

const EPOCH: (&str, &str) = ("SOURCE_DATE_EPOCH", "1700000000");

fn build(manifest: &Path, initrd: &Path, out: &Path, version: &str) {
    let o = run_rpixen(
        &[
            "update",
            "build",
            manifest.to_str().unwrap(),
            "--initrd",
            initrd.to_str().unwrap(),
            "--version",
            version,
            "--revision",
            "0123abc",
            "--source",
            "https://example.invalid/fleet",
            "-o",
            out.to_str().unwrap(),
        ],
        &[EPOCH],
    );
    assert!(o.status.success(), "rpixen update build: {}", output_text(&o));
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

/// The manifest of a one-image layout, through skopeo (an independent OCI reader).
fn skopeo_manifest(layout: &Path, tag: &str) -> Vec<u8> {
    let o = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", &format!("oci:{}:{tag}", layout.display())])
        .output()
        .unwrap();
    assert!(o.status.success(), "skopeo inspect: {}", output_text(&o));
    o.stdout
}

/// The slot image a layout's chunk layers spell.
fn reassemble(layout: &Path, layers: &[serde_json::Value]) -> Vec<u8> {
    let mut image = Vec::new();
    for l in layers {
        let hex = l["digest"].as_str().unwrap().trim_start_matches("sha256:");
        image.extend(std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap());
    }
    image
}

/// A file of a FAT image, read by mtools.
fn mcopy_out(img: &Path, name: &str, dir: &Path) -> Vec<u8> {
    let out = dir.join(format!("out-{name}"));
    let o = std::process::Command::new("mcopy")
        .args(["-n", "-i"])
        .arg(img)
        .arg(format!("::{name}"))
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "mcopy {name}: {}", output_text(&o));
    std::fs::read(out).unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

#[test]
fn build_push_sign_verify_with_skopeo_and_cosign() {
    let dir = tempfile::tempdir().unwrap();
    let s = synthetic(dir.path(), "");
    let v1 = dir.path().join("v1");
    build(&s.manifest, &s.initrd, &v1, "1.0.0");

    // Reproducible: a second build is the same layout, byte for byte.
    let again = dir.path().join("again");
    build(&s.manifest, &s.initrd, &again, "1.0.0");
    for f in ["index.json", "oci-layout"] {
        assert_eq!(std::fs::read(v1.join(f)).unwrap(), std::fs::read(again.join(f)).unwrap());
    }

    let raw = skopeo_manifest(&v1, "1.0.0");
    let m = json(&raw);
    assert_eq!(m["artifactType"], "application/vnd.rpixen.slot.image.v1");
    assert_eq!(m["annotations"]["org.opencontainers.image.version"], "1.0.0");
    assert_eq!(m["annotations"]["org.opencontainers.image.created"], "2023-11-14T22:13:20Z");
    assert_eq!(m["annotations"]["org.opencontainers.image.revision"], "0123abc");
    assert_eq!(
        m["annotations"]["org.opencontainers.image.source"],
        "https://example.invalid/fleet"
    );
    assert_eq!(
        m["annotations"]["dev.rpixen.slot.image.chunking"],
        "fastcdc-v2020 min=65536 avg=262144 max=1048576"
    );
    let layers = m["layers"].as_array().unwrap();
    assert!(layers.iter().all(|l| l["mediaType"] == "application/vnd.rpixen.slot.image.chunk.v1"));
    // The chunks in order are the slot image: a FAT fsck.fat accepts, holding the manifest's kernel.
    let image = reassemble(&v1, layers);
    assert_eq!(image.len().to_string(), m["annotations"]["dev.rpixen.slot.image.size"]);
    assert_eq!(sha256(&image), m["annotations"]["dev.rpixen.slot.image.digest"]);
    let img = dir.path().join("v1.img");
    std::fs::write(&img, &image).unwrap();
    let o = std::process::Command::new("fsck.fat").arg("-n").arg(&img).output().unwrap();
    assert!(o.status.success(), "fsck.fat: {}", output_text(&o));
    let kernel = std::fs::read(dir.path().join("Image")).unwrap();
    assert_eq!(mcopy_out(&img, "Image", dir.path()), kernel);
    for f in ["rpixen.scr", "rpixen-hv.bin", "initrd.img"] {
        mcopy_out(&img, f, dir.path());
    }
    // The same bytes as slot A of the live image from the same inputs, and as `--slot-image`.
    let live = dir.path().join("live.raw");
    let slot = dir.path().join("slot.img");
    for out in [["-o", live.to_str().unwrap()], ["--slot-image", slot.to_str().unwrap()]] {
        let mut args =
            vec!["live", s.manifest.to_str().unwrap(), "--initrd", s.initrd.to_str().unwrap()];
        args.extend(out);
        let o = run_rpixen(&args, &[EPOCH]);
        assert!(o.status.success(), "rpixen live: {}", output_text(&o));
    }
    assert_eq!(std::fs::read(&slot).unwrap(), image, "--slot-image differs from the artifact");
    let live = std::fs::read(&live).unwrap();
    let imga = 65 << 20; // after the 64 MiB boot partition at 1 MiB
    assert_eq!(&live[imga..imga + image.len()], &image[..], "IMGA differs from the artifact");

    let reg = Registry::start();
    let keys = CosignKeys::generate("fleet-pw");
    let target = format!("{}/fleet/qemu-virt:1.0.0", reg.host());

    // A wrong password fails before anything is pushed.
    let o = run_rpixen(
        &[
            "update",
            "push",
            v1.to_str().unwrap(),
            &target,
            "--key",
            keys.key_path().to_str().unwrap(),
        ],
        &[("COSIGN_PASSWORD", "wrong")],
    );
    assert!(!o.status.success());
    assert!(output_text(&o).contains("wrong password"), "{}", output_text(&o));
    let listed = std::process::Command::new("skopeo")
        .args([
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{}/fleet/qemu-virt", reg.host()),
        ])
        .output()
        .unwrap();
    assert!(!listed.status.success() || !output_text(&listed).contains("1.0.0"));

    let o = run_rpixen(
        &[
            "update",
            "push",
            v1.to_str().unwrap(),
            &target,
            "--key",
            keys.key_path().to_str().unwrap(),
        ],
        &[("COSIGN_PASSWORD", "fleet-pw")],
    );
    assert!(o.status.success(), "rpixen update push: {}", output_text(&o));
    let digest = sha256(&raw);
    assert!(String::from_utf8_lossy(&o.stdout).contains(&digest), "{}", output_text(&o));
    // The registry holds the layout's manifest unchanged (skopeo reads it back).
    let pushed = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{target}")])
        .output()
        .unwrap();
    assert!(pushed.status.success(), "{}", output_text(&pushed));
    assert_eq!(sha256(&pushed.stdout), digest);
    // cosign accepts our signature.
    let o = keys.verify(&target);
    assert!(o.status.success(), "cosign verify: {}", output_text(&o));

    // The device's check, through the CLI: signature, then every file into a blob store.
    let store = dir.path().join("store");
    let pubkey = keys.pub_path();
    let verify = |reference: &str| {
        run_rpixen(
            &[
                "update",
                "verify",
                "--key",
                pubkey.to_str().unwrap(),
                reference,
                "--fetch",
                store.to_str().unwrap(),
            ],
            &[],
        )
    };
    let o = verify(&target);
    assert!(o.status.success(), "rpixen update verify: {}", output_text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&sha256(&image)), "{}", output_text(&o));
    let distinct: std::collections::HashSet<_> = layers.iter().map(|l| &l["digest"]).collect();
    assert_eq!(std::fs::read_dir(store.join("blobs/sha256")).unwrap().count(), distinct.len());

    // v2 changes the kernel only. Pushed unsigned, it is refused by digest;
    // signed with `rpixen update sign`, it verifies with cosign.
    std::fs::write(dir.path().join("Image"), fake_arm64_image(5_000_000, 9)).unwrap();
    let v2 = dir.path().join("v2");
    build(&s.manifest, &s.initrd, &v2, "2.0.0");
    let raw2 = skopeo_manifest(&v2, "2.0.0");
    let m2 = json(&raw2);
    // Only the chunks holding the new kernel (and the FAT's directory) are new.
    let new: u64 = m2["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| !distinct.contains(&l["digest"]))
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    assert!(new < 5_000_000 + (3 << 20), "{new} new bytes for a 5 MB kernel");
    let target2 = format!("{}/fleet/qemu-virt:2.0.0", reg.host());
    let o = run_rpixen(&["update", "push", v2.to_str().unwrap(), &target2], &[]);
    assert!(o.status.success(), "rpixen update push: {}", output_text(&o));
    let o = verify(&target2);
    assert!(!o.status.success());
    let err = output_text(&o);
    assert!(err.contains(&sha256(&raw2)) && err.contains("is not signed"), "{err}");
    let o = run_rpixen(
        &["update", "sign", "--key", keys.key_path().to_str().unwrap(), &target2],
        &[("COSIGN_PASSWORD", "fleet-pw")],
    );
    assert!(o.status.success(), "rpixen update sign: {}", output_text(&o));
    let o = keys.verify(&target2);
    assert!(o.status.success(), "cosign verify: {}", output_text(&o));
    assert!(verify(&target2).status.success());
}
