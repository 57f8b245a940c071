//! Signing an artifact in a registry as `cosign sign --key` does: the payload for the manifest's
//! digest, appended to the `sha256-<hex>.sig` manifest in the same repository.

use crate::cosign::{self, PrivateKey};
use crate::oci::{self, Manifest};
use crate::registry::{Client, Reference, RegistryError};

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{reference}: no such manifest in the registry")]
    NotFound { reference: String },
    #[error("{reference}: the registry sent manifest {actual}, not the pinned {expected}")]
    PinnedDigest { reference: String, expected: String, actual: String },
    #[error("{reference}: the existing signature manifest `{tag}`: {message}")]
    Existing { reference: String, tag: String, message: String },
}

/// What was signed and where the signature went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub digest: String,
    /// `registry/repository:sha256-<hex>.sig`
    pub signature: String,
}

/// Signs the manifest `reference` names and stores the signature beside it. Signatures already there
/// (cosign's or ours) are kept.
pub fn sign_in_registry(
    client: &Client,
    reference: &Reference,
    key: &PrivateKey,
) -> Result<Signed, SignError> {
    let name = reference.to_string();
    let repo = &reference.repository;
    let (bytes, _) = client
        .manifest(repo, reference.tag_or_digest())?
        .ok_or_else(|| SignError::NotFound { reference: name.clone() })?;
    let digest = oci::sha256(&bytes);
    if let Some(pinned) = &reference.digest {
        if pinned != &digest {
            return Err(SignError::PinnedDigest {
                reference: name,
                expected: pinned.clone(),
                actual: digest,
            });
        }
    }
    let tag = cosign::signature_tag(&digest).expect("sha256 computed above");
    let mut existing = Vec::new();
    if let Some((sig_bytes, _)) = client.manifest(repo, &tag)? {
        let m: Manifest = serde_json::from_slice(&sig_bytes).map_err(|e| SignError::Existing {
            reference: name.clone(),
            tag: tag.clone(),
            message: e.to_string(),
        })?;
        for layer in m.layers {
            let payload = client.small_blob(repo, &layer.digest)?;
            existing.push((layer, payload));
        }
    }
    let added = cosign::sign(key, &reference.name(), &digest);
    let (manifest, config) = cosign::signature_manifest(&existing, &added);
    client.put_blob(repo, &added.payload)?;
    client.put_blob(repo, &config)?;
    client.put_manifest(repo, &tag, oci::MANIFEST_V1, &manifest.to_bytes())?;
    Ok(Signed { signature: reference.at(&tag).to_string(), digest })
}
