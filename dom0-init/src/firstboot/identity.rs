//! The device's identity on PERSIST: a device id (soft serial, a random UUID) and an Ed25519 key pair
//! made from the kernel's random source. Files, in `identity/`:
//! - `device-key.pem`: the private key, PKCS#8 PEM (what `openssl pkey` and most TLS stacks read), 0600;
//! - `device-key.pub`: the public key as an OpenSSH line, easy to register with a controller;
//! - `device-id`: the id, written last: its presence means the identity is complete.
//!
//! Each file is written to a temporary name, flushed, renamed and its folder flushed, so a power
//! cut leaves either the old state or the new file, never a torn one. A cut before `device-id`
//! makes the next boot create a new key pair: nothing has seen the old one.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;

pub const DIR: &str = "identity";
pub const ID_FILE: &str = "device-id";
pub const KEY_FILE: &str = "device-key.pem";
pub const PUB_FILE: &str = "device-key.pub";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub id: String,
    /// `ssh-ed25519 AAAA... rpixen-device-<id>`
    pub public_key: String,
}

/// A version-4 UUID in text form from 16 random bytes.
pub fn uuid_v4(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0F) | 0x40;
    b[8] = (b[8] & 0x3F) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// Whether `s` is a UUID in the text form [`uuid_v4`] writes (what a valid `device-id` holds).
pub fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)))
}

/// The private key as PKCS#8 PEM (RFC 8410): a fixed DER prefix and the 32-byte seed.
pub fn private_pem(seed: &[u8; 32]) -> String {
    const PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let mut der = PREFIX.to_vec();
    der.extend_from_slice(seed);
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n")
}

/// The public key as an OpenSSH `authorized_keys`-style line.
pub fn openssh_public(public: &[u8; 32], comment: &str) -> String {
    let mut blob = Vec::with_capacity(51);
    for part in [b"ssh-ed25519".as_slice(), public.as_slice()] {
        blob.extend_from_slice(&(part.len() as u32).to_be_bytes());
        blob.extend_from_slice(part);
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(blob);
    format!("ssh-ed25519 {b64} {comment}")
}

/// The Ed25519 public key of a 32-byte seed (RFC 8032).
pub fn public_of(seed: &[u8; 32]) -> [u8; 32] {
    let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(*seed));
    *kp.pk
}

/// The identity in `root/identity`, if complete.
pub fn read(root: &Path) -> Option<Identity> {
    let dir = root.join(DIR);
    let id = std::fs::read_to_string(dir.join(ID_FILE)).ok()?;
    let id = id.trim();
    if !is_uuid(id) {
        return None;
    }
    let public_key = std::fs::read_to_string(dir.join(PUB_FILE)).ok()?;
    Some(Identity { id: id.to_owned(), public_key: public_key.trim().to_owned() })
}

/// Makes the identity in `root/identity` unless it is complete; returns it and whether it is new.
/// `random` fills buffers from the kernel's random source; `point` is the test pause hook.
pub fn ensure(
    root: &Path,
    random: &mut dyn FnMut(&mut [u8]) -> std::io::Result<()>,
    point: &mut dyn FnMut(&str) -> Result<(), super::Stop>,
) -> Result<(Identity, bool), super::Error> {
    if let Some(existing) = read(root) {
        return Ok((existing, false));
    }
    let dir = root.join(DIR);
    let io = |what: &str, e: std::io::Error| super::Error::Io(format!("{what}: {e}"));
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir.display().to_string(), e))?;
    let mut seed = [0u8; 32];
    random(&mut seed).map_err(|e| io("getrandom", e))?;
    let mut id_bytes = [0u8; 16];
    random(&mut id_bytes).map_err(|e| io("getrandom", e))?;
    let id = uuid_v4(id_bytes);
    let public_key = openssh_public(&public_of(&seed), &format!("rpixen-device-{id}"));
    write_atomic(&dir.join(KEY_FILE), private_pem(&seed).as_bytes(), 0o600)?;
    write_atomic(&dir.join(PUB_FILE), format!("{public_key}\n").as_bytes(), 0o644)?;
    point("identity-key")?;
    write_atomic(&dir.join(ID_FILE), format!("{id}\n").as_bytes(), 0o644)?;
    point("identity")?;
    Ok((Identity { id, public_key }, true))
}

/// tmp file, flush, rename over `path`, flush the folder.
fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), super::Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |e: std::io::Error| super::Error::Io(format!("writing {}: {e}", path.display()));
    let tmp: PathBuf = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids() {
        let id = uuid_v4([0xFF; 16]);
        assert_eq!(id, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert!(is_uuid(&id));
        assert!(!is_uuid("ffffffff-ffff-4fff-bfff-fffffffffff"));
        assert!(!is_uuid("FFFFFFFF-ffff-4fff-bfff-ffffffffffff"));
        assert!(!is_uuid(""));
    }

    /// RFC 8032 test vector 1.
    #[test]
    fn keys_in_standard_formats() {
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
        };
        let seed: [u8; 32] =
            hex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
                .try_into()
                .unwrap();
        let public = public_of(&seed);
        assert_eq!(
            public.to_vec(),
            hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
        );
        let line = openssh_public(&public, "c");
        assert!(line.starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI"), "{line}");
        assert!(line.ends_with(" c"));
        let pem = private_pem(&seed);
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI"), "{pem}");
    }

    #[test]
    fn ensure_creates_once_and_completes_after_a_cut() {
        let root = std::env::temp_dir().join(format!("dom0-init-identity-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let mut n = 0u8;
        let mut random = |b: &mut [u8]| {
            n += 1;
            b.fill(n);
            Ok(())
        };
        // A cut right after the key: no id yet, so the identity is not there and is made anew.
        let cut = ensure(&root, &mut random, &mut |p| {
            if p == "identity-key" {
                Err(super::super::Stop)
            } else {
                Ok(())
            }
        });
        assert!(cut.is_err());
        assert!(root.join("identity/device-key.pem").exists());
        assert_eq!(read(&root), None);
        let (first, new) = ensure(&root, &mut random, &mut |_| Ok(())).unwrap();
        assert!(new);
        assert!(is_uuid(&first.id));
        assert_eq!(read(&root), Some(first.clone()));
        let (again, new) = ensure(&root, &mut random, &mut |_| Ok(())).unwrap();
        assert!(!new);
        assert_eq!(again, first);
        use std::os::unix::fs::PermissionsExt;
        let mode =
            std::fs::metadata(root.join("identity/device-key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
