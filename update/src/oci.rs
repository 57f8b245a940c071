//! The few OCI types an update needs (image manifest, descriptor, sha256 digests), written here rather
//! than taken from `oci-spec` so that the device agent stays small (no builders, no regex).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub const MANIFEST_V1: &str = "application/vnd.oci.image.manifest.v1+json";
pub const IMAGE_CONFIG_V1: &str = "application/vnd.oci.image.config.v1+json";
pub const EMPTY_V1: &str = "application/vnd.oci.empty.v1+json";
/// Docker's manifest type: registries and cosign may still serve a signature manifest with it.
pub const DOCKER_MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The manifest media types a pull asks for (`Accept`).
pub const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
                          application/vnd.docker.distribution.manifest.v2+json";

/// An OCI content descriptor. Field order is the order cosign and skopeo write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub size: u64,
    pub digest: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    pub fn of(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            size: bytes.len() as u64,
            digest: sha256(bytes),
            annotations: BTreeMap::new(),
        }
    }
}

/// An OCI image manifest (also read for Docker v2 manifests, which have the same shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(rename = "artifactType", default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    /// The compact JSON the manifest digest is taken of.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a manifest always serialises")
    }
}

/// `sha256:<hex>` of some bytes.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The hex part of a `sha256:` digest, checked to be 64 lowercase hex digits (it names files and tags).
pub fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then_some(hex)
}

/// Copies `reader` to `out`, returning the `(digest, size)` of what passed.
pub fn copy_hashed(reader: &mut impl Read, out: &mut impl Write) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        total += n as u64;
    }
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests() {
        assert_eq!(
            sha256(b"{}"),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert!(sha256_hex(&sha256(b"x")).is_some());
        assert!(sha256_hex("sha256:../../etc/passwd").is_none());
        assert!(sha256_hex(&format!("sha256:{}", "A".repeat(64))).is_none());
        let (d, n) = copy_hashed(&mut &b"{}"[..], &mut Vec::new()).unwrap();
        assert_eq!((d.as_str(), n), (sha256(b"{}").as_str(), 2));
    }

    #[test]
    fn cosigns_signature_manifest_parses_and_reserialises_identically() {
        // As stored by `cosign sign --key` 2.5.0 on a distribution registry.
        let text = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":233,"digest":"sha256:c2ffd1e5717f97b72ab55d5bfcb6cc328a2591da49c6daf548df4ba3f4072e51"},"layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","size":239,"digest":"sha256:fb9b41074b797b16739b43d4fcc1cb150952d12d563a707c4e9731987e7bc89a","annotations":{"dev.cosignproject.cosign/signature":"MEUCICbrsYkSmoS71GYK0/YeywHw54bSJg8ZY6nj92syxKr8AiEAjb9vhS9oTphySpT62QqIR18D8iv02StiKiziKeK6Z0E="}}]}"#;
        let m: Manifest = serde_json::from_str(text).unwrap();
        assert_eq!(String::from_utf8(m.to_bytes()).unwrap(), text);
    }
}
