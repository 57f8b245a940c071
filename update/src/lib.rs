//! Fleet updates for rpixen devices: slot artifacts as OCI images, their cosign signatures, and the
//! verified pull the device agent runs.
//!
//! - [`oci`]: the manifest and descriptor types and sha256 digests.
//! - [`cosign`]: cosign's key files, simple-signing payloads and `.sig` manifests.

pub mod cosign;
pub mod oci;
