//! Fleet updates for rpixen devices: slot artifacts as OCI images, their cosign signatures, and the
//! verified pull the device agent runs.
//!
//! - [`artifact`]: the slot artifact (one raw layer per slot file) and its OCI layout writer.
//! - [`oci`]: the manifest and descriptor types and sha256 digests.
//! - [`cosign`]: cosign's key files, simple-signing payloads and `.sig` manifests.
//! - [`registry`]: a small blocking registry client (pull, and the pushes signing needs).
//! - [`sign`]: signing a manifest in a registry, stored as cosign stores it (feature `sign`; the device
//!   agent builds without it: no scrypt, no secretbox).
//! - [`verify`]: the device-side pull: signature, payload digest, then every blob while it streams.

pub mod artifact;
pub mod cosign;
pub mod oci;
pub mod registry;
#[cfg(feature = "sign")]
pub mod sign;
pub mod verify;
