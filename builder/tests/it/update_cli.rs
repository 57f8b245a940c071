//! `rpixen update build|push|sign|verify` end to end: a slot artifact from a manifest, pushed to a real
//! `docker-registry`, checked by skopeo (the layout and the pushed manifest) and cosign 2.5 (the
//! signature), and refused when unsigned.

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
    assert_eq!(m["artifactType"], "application/vnd.rpixen.slot.v1");
    assert_eq!(m["annotations"]["org.opencontainers.image.version"], "1.0.0");
    assert_eq!(m["annotations"]["org.opencontainers.image.created"], "2023-11-14T22:13:20Z");
    assert_eq!(m["annotations"]["org.opencontainers.image.revision"], "0123abc");
    assert_eq!(
        m["annotations"]["org.opencontainers.image.source"],
        "https://example.invalid/fleet"
    );
    let layers = m["layers"].as_array().unwrap();
    let roles: Vec<(&str, &str)> = layers
        .iter()
        .map(|l| {
            (
                l["annotations"]["dev.rpixen.slot.role"].as_str().unwrap(),
                l["annotations"]["org.opencontainers.image.title"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        [
            ("boot-script", "rpixen.scr"),
            ("hypervisor", "rpixen-hv.bin"),
            ("kernel", "Image"),
            ("initrd", "initrd.img")
        ]
    );
    // The kernel layer is the manifest's kernel, byte for byte.
    let kernel = std::fs::read(dir.path().join("Image")).unwrap();
    assert_eq!(layers[2]["digest"], sha256(&kernel));

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
    let hex = layers[2]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_owned();
    assert_eq!(std::fs::read(store.join("blobs/sha256").join(&hex)).unwrap(), kernel);

    // v2 changes the kernel only: one layer differs. Pushed unsigned, it is refused by digest;
    // signed with `rpixen update sign`, it verifies with cosign.
    std::fs::write(dir.path().join("Image"), fake_arm64_image(5_000_000, 9)).unwrap();
    let v2 = dir.path().join("v2");
    build(&s.manifest, &s.initrd, &v2, "2.0.0");
    let raw2 = skopeo_manifest(&v2, "2.0.0");
    let m2 = json(&raw2);
    let changed: Vec<&str> = layers
        .iter()
        .zip(m2["layers"].as_array().unwrap())
        .filter(|(a, b)| a["digest"] != b["digest"])
        .map(|(a, _)| a["annotations"]["org.opencontainers.image.title"].as_str().unwrap())
        .collect();
    assert_eq!(changed, ["Image"]);
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
