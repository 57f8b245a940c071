//! cosign's key-based signatures, byte-compatible with `cosign sign --key` / `cosign verify --key`.
//!
//! cosign signs a manifest digest by signing a *simple-signing payload* (a small JSON naming the
//! repository and the digest) with ECDSA P-256 over SHA-256, and stores it in the same repository under
//! the tag `sha256-<hex>.sig`: an OCI manifest whose layers are payloads
//! (`application/vnd.dev.cosign.simplesigning.v1+json`), each with its base64 ASN.1 DER signature in the
//! `dev.cosignproject.cosign/signature` annotation. Every further signature is another layer.
//! (sigstore/cosign `specs/SIGNATURE_SPEC.md`; the bytes here were checked against cosign 2.5.)

pub mod keys;
#[cfg(feature = "sign")]
pub mod private;

use base64::Engine as _;
#[cfg(feature = "sign")]
use p256::ecdsa::signature::Signer;
use p256::ecdsa::signature::Verifier;
#[cfg(feature = "sign")]
use p256::ecdsa::DerSignature;
use p256::ecdsa::Signature;
use serde::{Deserialize, Serialize};

pub use keys::PublicKey;
#[cfg(feature = "sign")]
pub use private::PrivateKey;

use crate::oci::{self, Descriptor};

pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
pub const SIGNATURE_TYPE: &str = "cosign container image signature";

#[derive(Debug, thiserror::Error)]
pub enum CosignError {
    #[error("{what}: {message}")]
    Key { what: String, message: String },
    #[error("{what}: wrong password (COSIGN_PASSWORD), or the key file is damaged")]
    Password { what: String },
    #[error("manifest {digest}: signature layer {layer}: {message}")]
    Layer { digest: String, layer: String, message: String },
}

/// The tag cosign stores the signatures of `digest` under: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &str) -> Option<String> {
    oci::sha256_hex(digest).map(|hex| format!("sha256-{hex}.sig"))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    pub critical: Critical,
    /// cosign writes `null` when no `-a key=value` annotations were given.
    pub optional: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Critical {
    pub identity: Identity,
    pub image: PayloadImage,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    #[serde(rename = "docker-reference")]
    pub docker_reference: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadImage {
    #[serde(rename = "docker-manifest-digest")]
    pub docker_manifest_digest: String,
}

impl Payload {
    /// The payload cosign signs for `digest` in `repository` (`registry/name`, no tag: what cosign 2.x
    /// writes as the docker-reference).
    pub fn new(repository: &str, digest: &str) -> Payload {
        Payload {
            critical: Critical {
                identity: Identity { docker_reference: repository.into() },
                image: PayloadImage { docker_manifest_digest: digest.into() },
                kind: SIGNATURE_TYPE.into(),
            },
            optional: None,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a payload always serialises")
    }
}

/// One signature: the payload bytes and the base64 DER signature over them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPayload {
    pub payload: Vec<u8>,
    pub signature: String,
}

#[cfg(feature = "sign")]
/// Signs `digest` (of a manifest in `repository`). ECDSA here is deterministic (RFC 6979), so equal
/// inputs give equal signatures.
pub fn sign(key: &PrivateKey, repository: &str, digest: &str) -> SignedPayload {
    let payload = Payload::new(repository, digest).to_bytes();
    let signature: DerSignature = key.0.sign(&payload);
    SignedPayload {
        signature: base64::engine::general_purpose::STANDARD.encode(signature.as_bytes()),
        payload,
    }
}

/// Checks one signature layer of the `.sig` manifest of `digest`: the signature over the payload with
/// `key`, then that the payload names `digest`. `payload` must already match the layer's digest.
pub fn verify_layer(
    key: &PublicKey,
    digest: &str,
    layer: &Descriptor,
    payload: &[u8],
) -> Result<Payload, CosignError> {
    let err = |message: String| CosignError::Layer {
        digest: digest.into(),
        layer: layer.digest.clone(),
        message,
    };
    if layer.media_type != SIMPLE_SIGNING {
        return Err(err(format!("media type `{}` is not {SIMPLE_SIGNING}", layer.media_type)));
    }
    let b64 = layer
        .annotations
        .get(SIGNATURE_ANNOTATION)
        .ok_or_else(|| err(format!("no `{SIGNATURE_ANNOTATION}` annotation")))?;
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| err(format!("the signature is not base64: {e}")))?;
    let signature =
        Signature::from_der(&der).map_err(|e| err(format!("not an ASN.1 ECDSA signature: {e}")))?;
    key.0
        .verify(payload, &signature)
        .map_err(|_| err("the signature does not verify with the given public key".into()))?;
    let parsed: Payload = serde_json::from_slice(payload)
        .map_err(|e| err(format!("the signed payload is not simple-signing JSON: {e}")))?;
    if parsed.critical.kind != SIGNATURE_TYPE {
        return Err(err(format!(
            "payload type `{}` is not `{SIGNATURE_TYPE}`",
            parsed.critical.kind
        )));
    }
    if parsed.critical.image.docker_manifest_digest != digest {
        return Err(err(format!(
            "the signed payload is for {}, not this manifest",
            parsed.critical.image.docker_manifest_digest
        )));
    }
    Ok(parsed)
}

#[cfg(feature = "sign")]
/// The `.sig` manifest and its config, with `added` appended to the signatures `existing` holds (as
/// cosign appends; a signature already present is not repeated).
pub fn signature_manifest(
    existing: &[(Descriptor, Vec<u8>)],
    added: &SignedPayload,
) -> (oci::Manifest, Vec<u8>) {
    let mut layer = Descriptor::of(SIMPLE_SIGNING, &added.payload);
    layer.annotations.insert(SIGNATURE_ANNOTATION.into(), added.signature.clone());
    let mut layers: Vec<Descriptor> = existing.iter().map(|(d, _)| d.clone()).collect();
    if !layers.contains(&layer) {
        layers.push(layer);
    }
    // go-containerregistry's empty image with the payloads as layers, as cosign writes it (field
    // order matters: it is part of the config digest).
    #[derive(Serialize)]
    struct History {
        created: &'static str,
    }
    #[derive(Serialize)]
    struct RootFs<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        diff_ids: Vec<&'a str>,
    }
    #[derive(Serialize)]
    struct Config<'a> {
        architecture: &'static str,
        created: &'static str,
        history: Vec<History>,
        os: &'static str,
        rootfs: RootFs<'a>,
        config: serde_json::Map<String, serde_json::Value>,
    }
    const ZERO_TIME: &str = "0001-01-01T00:00:00Z";
    let config = Config {
        architecture: "",
        created: ZERO_TIME,
        history: layers.iter().map(|_| History { created: ZERO_TIME }).collect(),
        os: "",
        rootfs: RootFs {
            kind: "layers",
            diff_ids: layers.iter().map(|l| l.digest.as_str()).collect(),
        },
        config: serde_json::Map::new(),
    };
    let config = serde_json::to_vec(&config).expect("json");
    let manifest = oci::Manifest {
        schema_version: 2,
        media_type: Some(oci::MANIFEST_V1.into()),
        artifact_type: None,
        config: Descriptor::of(oci::IMAGE_CONFIG_V1, &config),
        layers,
        annotations: Default::default(),
    };
    (manifest, config)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:dafa15c0597d140b5612ebbd020065d705ab1bef622a9eca5aba48a93b27f4d1";

    fn cosigns_layer() -> (Descriptor, Vec<u8>) {
        // What `cosign sign --key` 2.5.0 stored for DIGEST with the key in keys::tests.
        let payload = br#"{"critical":{"identity":{"docker-reference":"127.0.0.1:5999/test/img"},"image":{"docker-manifest-digest":"sha256:dafa15c0597d140b5612ebbd020065d705ab1bef622a9eca5aba48a93b27f4d1"},"type":"cosign container image signature"},"optional":null}"#.to_vec();
        let mut d = Descriptor::of(SIMPLE_SIGNING, &payload);
        d.annotations.insert(SIGNATURE_ANNOTATION.into(), "MEUCICbrsYkSmoS71GYK0/YeywHw54bSJg8ZY6nj92syxKr8AiEAjb9vhS9oTphySpT62QqIR18D8iv02StiKiziKeK6Z0E=".into());
        (d, payload)
    }

    fn public() -> PublicKey {
        PublicKey::from_pem(
            "cosign.pub",
            "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE2VfypmQ3ywJ/fE2n9Yo/HFf6iU+j
Wd2ZXR8FURff18hXMy7fkHitJYIjzo5XHjTYY0HH7meBA+QycokZ/O5dWw==
-----END PUBLIC KEY-----",
        )
        .unwrap()
    }

    #[test]
    fn our_payload_is_cosigns_byte_for_byte() {
        let (d, payload) = cosigns_layer();
        assert_eq!(Payload::new("127.0.0.1:5999/test/img", DIGEST).to_bytes(), payload);
        assert_eq!(d.size, 239);
        assert_eq!(
            d.digest,
            "sha256:fb9b41074b797b16739b43d4fcc1cb150952d12d563a707c4e9731987e7bc89a"
        );
    }

    #[test]
    fn cosigns_signature_verifies_and_a_changed_digest_does_not() {
        let (d, payload) = cosigns_layer();
        verify_layer(&public(), DIGEST, &d, &payload).unwrap();
        let other = format!("sha256:{}", "0".repeat(64));
        let e = verify_layer(&public(), &other, &d, &payload).unwrap_err().to_string();
        assert!(e.contains(&other) && e.contains("not this manifest"), "{e}");
        let mut tampered = payload.clone();
        tampered[20] ^= 1;
        let e = verify_layer(&public(), DIGEST, &d, &tampered).unwrap_err().to_string();
        assert!(e.contains("does not verify"), "{e}");
    }

    #[cfg(feature = "sign")]
    #[test]
    fn our_signature_manifest_has_cosigns_config_bytes() {
        let (d, payload) = cosigns_layer();
        let sp = SignedPayload { payload, signature: d.annotations[SIGNATURE_ANNOTATION].clone() };
        let (m, config) = signature_manifest(&[], &sp);
        // The config digest cosign wrote for this one-layer signature image.
        assert_eq!(
            m.config.digest,
            "sha256:c2ffd1e5717f97b72ab55d5bfcb6cc328a2591da49c6daf548df4ba3f4072e51",
            "{}",
            String::from_utf8_lossy(&config)
        );
        assert_eq!(m.layers, vec![d.clone()]);
        // Appending the same signature again changes nothing.
        let (again, _) = signature_manifest(&[(d, sp.payload.clone())], &sp);
        assert_eq!(again, m);
    }
}
