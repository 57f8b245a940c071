//! rpixen-update against the real tools: Debian's `docker-registry` on 127.0.0.1 and cosign 2.5
//! (Debian trixie) as the independent signer and verifier.

mod install;

use rpixen_update::cosign::{PrivateKey, PublicKey};
use rpixen_update::oci::{self, Descriptor, Manifest};
use rpixen_update::registry::{Client, Credentials, Reference};
use rpixen_update::sign::sign_in_registry;
use rpixen_update::verify::{pull_verified, BlobStore, VerifyError};
use testkit::{output_text, CosignKeys, Registry};

/// The pair as rpixen reads it.
fn private(keys: &CosignKeys) -> PrivateKey {
    let pem = std::fs::read_to_string(keys.key_path()).unwrap();
    PrivateKey::from_encrypted_pem("cosign.key", &pem, keys.password.as_bytes()).unwrap()
}

fn public(keys: &CosignKeys) -> PublicKey {
    PublicKey::from_pem("cosign.pub", &std::fs::read_to_string(keys.pub_path()).unwrap()).unwrap()
}

/// Pushes a two-file artifact (as a slot artifact is shaped: raw file layers, empty config) and
/// returns its reference pinned to the manifest digest, and the layers.
fn push_artifact(reg: &Registry, repo: &str, tag: &str, files: &[&[u8]]) -> (Reference, Manifest) {
    let client = Client::new(&reg.host(), Credentials::Anonymous, &[]);
    let config = b"{}";
    client.put_blob(repo, config).unwrap();
    let mut layers = Vec::new();
    for f in files {
        client.put_blob(repo, f).unwrap();
        layers.push(Descriptor::of("application/octet-stream", f));
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MANIFEST_V1.into()),
        artifact_type: Some("application/vnd.rpixen.test.v1".into()),
        config: Descriptor::of(oci::EMPTY_V1, config),
        layers,
        annotations: Default::default(),
    };
    let bytes = manifest.to_bytes();
    client.put_manifest(repo, tag, oci::MANIFEST_V1, &bytes).unwrap();
    let reference = Reference::parse(&format!("{}/{repo}@{}", reg.host(), oci::sha256(&bytes)));
    (reference.unwrap(), manifest)
}

fn client(reg: &Registry) -> Client {
    Client::new(&reg.host(), Credentials::Anonymous, &[])
}

#[test]
fn an_artifact_signed_by_cosign_is_accepted_and_its_blobs_fetched() {
    let reg = Registry::start();
    let keys = CosignKeys::generate("cosign-pw");
    let (reference, manifest) =
        push_artifact(&reg, "fleet/slot", "v1", &[b"hypervisor bytes", b"kernel bytes"]);
    keys.sign(&reference.to_string());

    let store = tempfile::tempdir().unwrap();
    let by_tag = reference.at("v1");
    let (verified, paths) =
        pull_verified(&client(&reg), &by_tag, &public(&keys), &BlobStore::new(store.path()))
            .unwrap();
    assert_eq!(Some(verified.digest.as_str()), reference.digest.as_deref());
    assert_eq!(verified.payload.critical.identity.docker_reference, reference.name());
    assert_eq!(paths.len(), 2);
    assert_eq!(std::fs::read(&paths[0]).unwrap(), b"hypervisor bytes");
    assert_eq!(std::fs::read(&paths[1]).unwrap(), b"kernel bytes");
    assert_eq!(verified.manifest, manifest);
}

#[test]
fn an_artifact_signed_by_rpixen_verifies_with_cosign() {
    let reg = Registry::start();
    let keys = CosignKeys::generate("rpixen-pw");
    let (reference, _) = push_artifact(&reg, "fleet/slot", "v2", &[b"rootfs"]);
    // Before signing, cosign itself refuses it: the check below is not vacuous.
    let out = keys.verify(&reference.to_string());
    assert!(!out.status.success(), "cosign verified an unsigned artifact: {}", output_text(&out));

    let signed = sign_in_registry(&client(&reg), &reference.at("v2"), &private(&keys)).unwrap();
    assert_eq!(Some(&signed.digest), reference.digest.as_ref());
    let out = keys.verify(&format!("{}:v2", reference.name()));
    assert!(out.status.success(), "cosign verify: {}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&signed.digest), "{}", output_text(&out));
}

#[test]
fn cosign_and_rpixen_signatures_sit_side_by_side() {
    let reg = Registry::start();
    let (ours, theirs) = (CosignKeys::generate("a"), CosignKeys::generate("b"));
    let (reference, _) = push_artifact(&reg, "fleet/slot", "v3", &[b"dtb"]);
    theirs.sign(&reference.to_string());
    sign_in_registry(&client(&reg), &reference, &private(&ours)).unwrap();
    for keys in [&ours, &theirs] {
        let out = keys.verify(&reference.to_string());
        assert!(out.status.success(), "cosign verify: {}", output_text(&out));
        let store = tempfile::tempdir().unwrap();
        pull_verified(&client(&reg), &reference, &public(keys), &BlobStore::new(store.path()))
            .unwrap();
    }
}

#[test]
fn unsigned_other_key_and_tampered_artifacts_are_refused_naming_the_digest() {
    let reg = Registry::start();
    let keys = CosignKeys::generate("pw");
    let other = CosignKeys::generate("pw2");
    let store_dir = tempfile::tempdir().unwrap();
    let store = BlobStore::new(store_dir.path());
    let blobs = store_dir.path().join("blobs/sha256");
    let c = client(&reg);

    // Unsigned.
    let (unsigned, _) = push_artifact(&reg, "fleet/unsigned", "v1", &[b"u"]);
    let e = pull_verified(&c, &unsigned.at("v1"), &public(&keys), &store).unwrap_err();
    let digest = unsigned.digest.clone().unwrap();
    assert!(matches!(e, VerifyError::Unsigned { .. }), "{e}");
    assert!(e.to_string().contains(&digest), "{e}");

    // Signed, but with another key.
    let (foreign, _) = push_artifact(&reg, "fleet/foreign", "v1", &[b"f"]);
    other.sign(&foreign.to_string());
    let e = pull_verified(&c, &foreign.at("v1"), &public(&keys), &store).unwrap_err();
    assert!(matches!(e, VerifyError::Signature { .. }), "{e}");
    assert!(e.to_string().contains(foreign.digest.as_deref().unwrap()), "{e}");
    assert!(e.to_string().contains("does not verify with the given public key"), "{e}");

    // Signed with the right key, but a blob changed in the registry's storage afterwards.
    let (tampered, manifest) =
        push_artifact(&reg, "fleet/tampered", "v1", &[b"good layer", b"kernel 1.0"]);
    keys.sign(&tampered.to_string());
    let bad = &manifest.layers[1];
    std::fs::write(reg.blob_file(&bad.digest), b"kernel 6.6").unwrap();
    let e = pull_verified(&c, &tampered.at("v1"), &public(&keys), &store).unwrap_err();
    assert!(matches!(e, VerifyError::Blob { .. }), "{e}");
    assert!(e.to_string().contains(&bad.digest), "{e}");
    // The good layer is kept (verified) for the next try; the bad one left nothing behind.
    let hex = |d: &str| d.trim_start_matches("sha256:").to_owned();
    assert!(blobs.join(hex(&manifest.layers[0].digest)).is_file());
    assert!(!blobs.join(hex(&bad.digest)).exists());
    assert!(!store_dir.path().join("partial").join(hex(&bad.digest)).exists());

    // A signature whose payload names another manifest (a .sig copied onto this digest) is refused.
    let (copied, _) = push_artifact(&reg, "fleet/copied", "v1", &[b"c"]);
    let sig_of_other = format!("sha256-{}.sig", hex(foreign.digest.as_deref().unwrap()));
    let (sig, media) = client(&reg).manifest("fleet/foreign", &sig_of_other).unwrap().unwrap();
    let m: Manifest = serde_json::from_slice(&sig).unwrap();
    for l in std::iter::once(&m.config).chain(&m.layers) {
        let bytes = c.small_blob("fleet/foreign", &l.digest).unwrap();
        c.put_blob("fleet/copied", &bytes).unwrap();
    }
    let copied_tag = format!("sha256-{}.sig", hex(copied.digest.as_deref().unwrap()));
    c.put_manifest("fleet/copied", &copied_tag, &media, &sig).unwrap();
    let e = pull_verified(&c, &copied, &public(&other), &store).unwrap_err();
    assert!(e.to_string().contains("not this manifest"), "{e}");
}

#[test]
fn an_interrupted_download_resumes_and_a_corrupt_prefix_is_caught() {
    let reg = Registry::start();
    let keys = CosignKeys::generate("pw");
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let (reference, manifest) = push_artifact(&reg, "fleet/resume", "v1", &[&big]);
    keys.sign(&reference.to_string());
    let store_dir = tempfile::tempdir().unwrap();
    let store = BlobStore::new(store_dir.path());
    let hex = manifest.layers[0].digest.trim_start_matches("sha256:").to_owned();
    let partial = store_dir.path().join("partial").join(&hex);
    std::fs::create_dir_all(partial.parent().unwrap()).unwrap();

    // A prefix that is not the blob's: the whole-blob hash catches it and the partial file goes. (Had
    // the registry ignored the Range request, the fetch would have started over and succeeded: this
    // failure is also the proof that the download resumed.)
    let mut wrong = big[..1_000_000].to_vec();
    wrong[500] ^= 0xff;
    std::fs::write(&partial, &wrong).unwrap();
    let e = pull_verified(&client(&reg), &reference, &public(&keys), &store).unwrap_err();
    assert!(matches!(e, VerifyError::Blob { .. }) && e.to_string().contains(&hex), "{e}");
    assert!(!partial.exists());

    // A true prefix: the rest is fetched with a Range request and the blob checks out.
    std::fs::write(&partial, &big[..1_000_000]).unwrap();
    let (_, paths) = pull_verified(&client(&reg), &reference, &public(&keys), &store).unwrap();
    assert_eq!(std::fs::read(&paths[0]).unwrap(), big);
    assert!(!partial.exists());
}

#[test]
fn registry_credentials_are_used_and_their_absence_is_named() {
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let reg = Registry::start_with_htpasswd(Some(("fleet", &hash)));
    let keys = CosignKeys::generate("pw");
    let creds = Credentials::Basic { user: "fleet".into(), password: "s3cret".into() };
    let authed = Client::new(&reg.host(), creds, &[]);
    let config = b"{}";
    authed.put_blob("fleet/private", config).unwrap();
    authed.put_blob("fleet/private", b"kernel").unwrap();
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MANIFEST_V1.into()),
        artifact_type: Some("application/vnd.rpixen.test.v1".into()),
        config: Descriptor::of(oci::EMPTY_V1, config),
        layers: vec![Descriptor::of("application/octet-stream", b"kernel")],
        annotations: Default::default(),
    };
    authed.put_manifest("fleet/private", "v1", oci::MANIFEST_V1, &manifest.to_bytes()).unwrap();
    let reference = Reference::parse(&format!("{}/fleet/private:v1", reg.host())).unwrap();
    sign_in_registry(&authed, &reference, &private(&keys)).unwrap();
    let store = tempfile::tempdir().unwrap();
    pull_verified(&authed, &reference, &public(&keys), &BlobStore::new(store.path())).unwrap();

    let anonymous = client(&reg);
    let e = pull_verified(&anonymous, &reference, &public(&keys), &BlobStore::new(store.path()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("wants credentials and none were given"), "{e}");
    let wrong = Client::new(
        &reg.host(),
        Credentials::Basic { user: "fleet".into(), password: "nope".into() },
        &[],
    );
    let e = pull_verified(&wrong, &reference, &public(&keys), &BlobStore::new(store.path()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("HTTP 401") && e.contains("check the registry credentials"), "{e}");
}
