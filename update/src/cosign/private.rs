//! cosign's private key file, `cosign.key`: a password-encrypted PKCS#8 key as `cosign generate-key-pair`
//! writes it. Only signing needs it (feature `sign`); the device does not.
//!
//! The encrypted form is sigstore's (go-tuf's `encrypted` package, used by sigstore's `cryptoutils`): a PEM
//! block `ENCRYPTED SIGSTORE PRIVATE KEY` (older cosign: `ENCRYPTED COSIGN PRIVATE KEY`) whose body is
//! JSON: `{"kdf":{"name":"scrypt","params":{"N":..,"r":..,"p":..},"salt":B64},
//! "cipher":{"name":"nacl/secretbox","nonce":B64},"ciphertext":B64}`. The secretbox key is
//! `scrypt(password, salt, N, r, p, 32)`; the plaintext is the PKCS#8 DER of an ECDSA P-256 key.

use base64::Engine as _;
use crypto_secretbox::aead::{Aead, KeyInit};
use p256::ecdsa::SigningKey;
use p256::pkcs8::DecodePrivateKey;
use serde::Deserialize;

use super::{CosignError, PublicKey};

/// The PEM labels cosign writes for encrypted private keys (new, then old).
const ENCRYPTED_LABELS: &[&str] =
    &["ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY"];

/// scrypt's memory is 128·N·r bytes; cosign's default (N=65536, r=8) needs 64 MiB. A key file asking
/// for far more is refused rather than allowed to exhaust memory.
const MAX_SCRYPT_MEMORY: u64 = 1 << 30;

#[derive(Deserialize)]
struct EncryptedKey {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(Deserialize)]
struct Kdf {
    name: String,
    params: ScryptParams,
    salt: String,
}

#[derive(Deserialize)]
#[allow(non_snake_case)] // the JSON field is `N`
struct ScryptParams {
    N: u64,
    r: u32,
    p: u32,
}

#[derive(Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

/// A cosign private key (ECDSA P-256), decrypted.
#[derive(Clone)]
pub struct PrivateKey(pub(crate) SigningKey);

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey(public: {:?})", self.public())
    }
}

impl PrivateKey {
    /// Decrypts a `cosign.key` with `password` (cosign reads it from `COSIGN_PASSWORD`).
    pub fn from_encrypted_pem(
        what: &str,
        pem: &str,
        password: &[u8],
    ) -> Result<PrivateKey, CosignError> {
        let bad = |message: String| CosignError::Key { what: what.into(), message };
        let (label, body) = pem_rfc7468_decode(pem).map_err(|m| bad(m.to_owned()))?;
        if !ENCRYPTED_LABELS.contains(&label.as_str()) {
            return Err(bad(format!(
                "PEM block `{label}` is not a cosign key (expected `{}`)",
                ENCRYPTED_LABELS[0]
            )));
        }
        let key: EncryptedKey = serde_json::from_slice(&body)
            .map_err(|e| bad(format!("the encrypted key's JSON: {e}")))?;
        if key.kdf.name != "scrypt" {
            return Err(bad(format!("kdf.name `{}`: only scrypt is supported", key.kdf.name)));
        }
        if key.cipher.name != "nacl/secretbox" {
            return Err(bad(format!(
                "cipher.name `{}`: only nacl/secretbox is supported",
                key.cipher.name
            )));
        }
        let b64 = |field: &str, text: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| bad(format!("{field}: not base64: {e}")))
        };
        let salt = b64("kdf.salt", &key.kdf.salt)?;
        let nonce = b64("cipher.nonce", &key.cipher.nonce)?;
        let ciphertext = b64("ciphertext", &key.ciphertext)?;
        let ScryptParams { N: n, r, p } = key.kdf.params;
        if !n.is_power_of_two() || n < 2 {
            return Err(bad(format!("kdf.params.N = {n} is not a power of two")));
        }
        if 128u64.saturating_mul(n).saturating_mul(u64::from(r)) > MAX_SCRYPT_MEMORY {
            return Err(bad(format!("kdf.params N = {n}, r = {r} need more than 1 GiB")));
        }
        let params = scrypt::Params::new(n.trailing_zeros() as u8, r, p)
            .map_err(|e| bad(format!("kdf.params: {e}")))?;
        let mut secret = [0u8; 32];
        scrypt::scrypt(password, &salt, &params, &mut secret)
            .expect("32 bytes is a valid scrypt output length");
        let nonce: [u8; 24] = nonce
            .try_into()
            .map_err(|n: Vec<u8>| bad(format!("cipher.nonce is {} bytes, not 24", n.len())))?;
        let plain = crypto_secretbox::XSalsa20Poly1305::new(&secret.into())
            .decrypt(&nonce.into(), ciphertext.as_slice())
            .map_err(|_| CosignError::Password { what: what.into() })?;
        SigningKey::from_pkcs8_der(&plain)
            .map(PrivateKey)
            .map_err(|e| bad(format!("the decrypted key is not a PKCS#8 ECDSA P-256 key: {e}")))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(*self.0.verifying_key())
    }
}

/// One PEM block's label and body (RFC 7468), without the crate's strict line-length rules: cosign's
/// Go writer and hand-edited files differ in wrapping, and the body is base64 either way.
fn pem_rfc7468_decode(pem: &str) -> Result<(String, Vec<u8>), &'static str> {
    let text = pem.trim();
    let first = text.lines().next().ok_or("empty file")?;
    let label = first
        .strip_prefix("-----BEGIN ")
        .and_then(|l| l.strip_suffix("-----"))
        .ok_or("not a PEM file (no -----BEGIN line)")?;
    let end = format!("-----END {label}-----");
    let mut body = String::new();
    let mut closed = false;
    for line in text.lines().skip(1) {
        if line.trim() == end {
            closed = true;
            break;
        }
        body.push_str(line.trim());
    }
    if !closed {
        return Err("PEM block has no matching -----END line");
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| "PEM body is not base64")?;
    Ok((label.to_owned(), bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by `COSIGN_PASSWORD=pw cosign generate-key-pair` (cosign 2.5.0, Debian trixie).
    const KEY: &str = "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----
eyJrZGYiOnsibmFtZSI6InNjcnlwdCIsInBhcmFtcyI6eyJOIjo2NTUzNiwiciI6
OCwicCI6MX0sInNhbHQiOiJ4YnNOMmFHbmYvUnhGdDRGbEdrSDcwRkJaNW80SFha
SFp4SmRwY2Z3OXRBPSJ9LCJjaXBoZXIiOnsibmFtZSI6Im5hY2wvc2VjcmV0Ym94
Iiwibm9uY2UiOiJva08wUklOYUsvZWtaengwZjh0b2QrdG1OM1FWdE9mOCJ9LCJj
aXBoZXJ0ZXh0Ijoic2txNTl4aDhtdGt5ZEtXOFVTUFZteDYrWFp2NHZxcU4ranNI
ckp3SGlhYW9NdDhBS3c4bWRTdWdDQms1eFEvcWx4Mmdwb09iR2JWZDgybXhNNkVh
Rnp3YTJpeExFNTczbzVZMUhhbHo4Uy9Ia0tVZEJjUkFUS0NNSmN2ZXJaK1lQMnpS
bkM4YnZIQVFUcFEvRDBYaHpvZXM4SVpHL0NKVWRqSnVZNy9LL3dmdEdiSlRCY0dG
TzBrWUcyUFQ2d3dydWl2VndDbkVjUkFjTnc9PSJ9
-----END ENCRYPTED SIGSTORE PRIVATE KEY-----
";
    /// The `cosign.pub` written beside it.
    const PUB: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE2VfypmQ3ywJ/fE2n9Yo/HFf6iU+j
Wd2ZXR8FURff18hXMy7fkHitJYIjzo5XHjTYY0HH7meBA+QycokZ/O5dWw==
-----END PUBLIC KEY-----
";

    #[test]
    fn decrypts_cosigns_key_to_the_public_key_beside_it() {
        let key = PrivateKey::from_encrypted_pem("cosign.key", KEY, b"pw").unwrap();
        assert_eq!(key.public(), PublicKey::from_pem("cosign.pub", PUB).unwrap());
        assert_eq!(key.public().to_pem(), PUB);
    }

    #[test]
    fn wrong_password_is_named() {
        let e = PrivateKey::from_encrypted_pem("cosign.key", KEY, b"nope").unwrap_err();
        assert!(matches!(e, CosignError::Password { .. }), "{e}");
        assert!(e.to_string().contains("cosign.key"), "{e}");
    }

    #[test]
    fn other_pem_blocks_are_refused() {
        let e = PrivateKey::from_encrypted_pem("k", PUB, b"pw").unwrap_err();
        assert!(e.to_string().contains("`PUBLIC KEY` is not a cosign key"), "{e}");
        let e = PublicKey::from_pem("cosign.pub", KEY).unwrap_err();
        assert!(e.to_string().starts_with("cosign.pub: "), "{e}");
    }
}
