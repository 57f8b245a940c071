//! cosign's public key file, `cosign.pub`: a PEM `PUBLIC KEY` (PKIX SubjectPublicKeyInfo) holding an
//! ECDSA P-256 key. All a device needs.

use p256::ecdsa::VerifyingKey;
use p256::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};

use super::CosignError;

/// A cosign public key (ECDSA P-256), as in `cosign.pub`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(pub(crate) VerifyingKey);

impl PublicKey {
    /// Parses a PEM `PUBLIC KEY` block (PKIX / SubjectPublicKeyInfo). `what` names the source in errors.
    pub fn from_pem(what: &str, pem: &str) -> Result<PublicKey, CosignError> {
        VerifyingKey::from_public_key_pem(pem.trim()).map(PublicKey).map_err(|e| CosignError::Key {
            what: what.into(),
            message: format!("not a PEM ECDSA P-256 public key (PUBLIC KEY): {e}"),
        })
    }

    /// The key as `cosign.pub` holds it.
    pub fn to_pem(&self) -> String {
        self.0.to_public_key_pem(LineEnding::LF).expect("a P-256 key always encodes")
    }
}
