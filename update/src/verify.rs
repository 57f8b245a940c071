//! The device side of an update: fetch a manifest by reference, fetch its cosign `.sig`, check a
//! signature against the public key and that the signed payload names this manifest's digest, then
//! fetch every blob, checking its digest while it streams. Nothing reaches the caller (or a slot)
//! before its digest checked out.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::cosign::{self, Payload, PublicKey};
use crate::oci::{self, Descriptor, Manifest};
use crate::registry::{Client, Reference, RegistryError};

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{reference}: no such manifest in the registry")]
    NotFound { reference: String },
    #[error("{reference}: the registry sent manifest {actual}, not the pinned {expected}")]
    PinnedDigest { reference: String, expected: String, actual: String },
    #[error("{reference}: manifest {digest}: {message}")]
    Manifest { reference: String, digest: String, message: String },
    #[error("{reference}: manifest {digest} is not signed (no `{tag}` in the repository)")]
    Unsigned { reference: String, digest: String, tag: String },
    #[error(
        "{reference}: manifest {digest}: no signature verifies with the public key: {reasons}"
    )]
    Signature { reference: String, digest: String, reasons: String },
    #[error(
        "{reference}: blob {digest} ({what}) does not match its digest: got {actual} ({actual_size} of {size} bytes); discarded"
    )]
    Blob {
        reference: String,
        what: String,
        digest: String,
        size: u64,
        actual: String,
        actual_size: u64,
    },
    #[error("{reference}: blob {digest}: download stopped by the caller after {have} of {size} bytes (kept for a resume)")]
    Cancelled { reference: String, digest: String, have: u64, size: u64 },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> VerifyError + '_ {
    move |source| VerifyError::Io { path: path.to_owned(), source }
}

/// A manifest whose signature checked out.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The reference pinned to the verified digest.
    pub reference: Reference,
    pub digest: String,
    pub manifest: Manifest,
    /// The signed payload that named `digest`.
    pub payload: Payload,
}

/// Fetches the manifest `reference` names and checks its cosign signature with `key`.
pub fn verify_signed(
    client: &Client,
    reference: &Reference,
    key: &PublicKey,
) -> Result<Verified, VerifyError> {
    let name = reference.to_string();
    let (bytes, _media) = client
        .manifest(&reference.repository, reference.tag_or_digest())?
        .ok_or_else(|| VerifyError::NotFound { reference: name.clone() })?;
    let digest = oci::sha256(&bytes);
    if let Some(pinned) = &reference.digest {
        if pinned != &digest {
            return Err(VerifyError::PinnedDigest {
                reference: name,
                expected: pinned.clone(),
                actual: digest,
            });
        }
    }
    let bad_manifest = |message: String| VerifyError::Manifest {
        reference: name.clone(),
        digest: digest.clone(),
        message,
    };
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| bad_manifest(format!("not an OCI image manifest: {e}")))?;
    let tag = cosign::signature_tag(&digest).expect("sha256 computed above");
    let (sig_bytes, _) = client.manifest(&reference.repository, &tag)?.ok_or_else(|| {
        VerifyError::Unsigned { reference: name.clone(), digest: digest.clone(), tag: tag.clone() }
    })?;
    let sig_manifest: Manifest = serde_json::from_slice(&sig_bytes)
        .map_err(|e| bad_manifest(format!("its signature manifest `{tag}` does not parse: {e}")))?;
    let mut reasons = Vec::new();
    for layer in &sig_manifest.layers {
        if layer.size > crate::registry::MAX_MANIFEST {
            reasons.push(format!("layer {}: {} bytes is too large", layer.digest, layer.size));
            continue;
        }
        let payload = client.small_blob(&reference.repository, &layer.digest)?;
        if oci::sha256(&payload) != layer.digest {
            reasons.push(format!("layer {}: the payload does not match its digest", layer.digest));
            continue;
        }
        match cosign::verify_layer(key, &digest, layer, &payload) {
            Ok(payload) => {
                return Ok(Verified {
                    reference: reference.at(&digest),
                    digest,
                    manifest,
                    payload,
                });
            }
            Err(e) => reasons.push(e.to_string()),
        }
    }
    if reasons.is_empty() {
        reasons.push(format!("`{tag}` holds no signatures"));
    }
    Err(VerifyError::Signature { reference: name, digest, reasons: reasons.join("; ") })
}

/// Verified blobs on the device (PERSIST): `blobs/sha256/<hex>` only once the digest checked out;
/// downloads grow in `partial/<hex>` and resume from there.
#[derive(Debug, Clone)]
pub struct BlobStore {
    pub dir: PathBuf,
}

impl BlobStore {
    pub fn new(dir: impl Into<PathBuf>) -> BlobStore {
        BlobStore { dir: dir.into() }
    }

    fn paths(&self, digest: &str) -> Option<(PathBuf, PathBuf)> {
        let hex = oci::sha256_hex(digest)?;
        Some((self.dir.join("blobs/sha256").join(hex), self.dir.join("partial").join(hex)))
    }

    /// The path of a blob present and intact (re-hashed: storage may have rotted since).
    pub fn verified(&self, desc: &Descriptor) -> Result<Option<PathBuf>, VerifyError> {
        let Some((path, _)) = self.paths(&desc.digest) else { return Ok(None) };
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let (digest, size) = oci::copy_hashed(&mut file, &mut io::sink()).map_err(io_err(&path))?;
        if digest == desc.digest && size == desc.size {
            return Ok(Some(path));
        }
        // A damaged copy is removed so that the next fetch replaces it.
        fs::remove_file(&path).map_err(io_err(&path))?;
        Ok(None)
    }

    /// Removes every blob and partial download whose digest is not in `keep`; returns the bytes freed.
    /// Files that are not blobs (no sha256 name) are left alone.
    pub fn prune(&self, keep: &HashSet<&str>) -> Result<u64, VerifyError> {
        let mut freed = 0;
        for entry in self.entries()? {
            let digest = format!("sha256:{}", entry.file_name().to_string_lossy());
            if oci::sha256_hex(&digest).is_none() || keep.contains(digest.as_str()) {
                continue;
            }
            let path = entry.path();
            freed += entry.metadata().map_err(io_err(&path))?.len();
            fs::remove_file(&path).map_err(io_err(&path))?;
        }
        Ok(freed)
    }

    /// Bytes held: verified blobs and partial downloads.
    pub fn usage(&self) -> Result<u64, VerifyError> {
        let mut total = 0;
        for entry in self.entries()? {
            total += entry.metadata().map_err(io_err(&entry.path()))?.len();
        }
        Ok(total)
    }

    /// The files of both folders the store keeps: verified blobs and partial downloads.
    fn entries(&self) -> Result<Vec<fs::DirEntry>, VerifyError> {
        let mut all = Vec::new();
        for sub in ["blobs/sha256", "partial"] {
            let dir = self.dir.join(sub);
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&dir)(e)),
            };
            for entry in entries {
                all.push(entry.map_err(io_err(&dir))?);
            }
        }
        Ok(all)
    }
}

/// Fetches every layer of a verified manifest into `store` (what is there already is re-checked, not
/// downloaded) and returns the blob paths in layer order.
pub fn fetch_layers(
    client: &Client,
    verified: &Verified,
    store: &BlobStore,
) -> Result<Vec<PathBuf>, VerifyError> {
    verified
        .manifest
        .layers
        .iter()
        .enumerate()
        .map(|(i, layer)| {
            let fetched =
                fetch_blob(client, verified, store, &format!("layer {i}"), layer, &mut |_| true)?;
            Ok(fetched.path)
        })
        .collect()
}

/// A blob in the store, and how many of its bytes came over the network this time.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub path: PathBuf,
    pub downloaded: u64,
}

/// Fetches one blob into `store` unless it is there intact, resuming a partial download with a Range
/// request, checking the digest of the whole blob. `on_bytes` hears of each piece received (its
/// length); returning `false` stops the download with [`VerifyError::Cancelled`], keeping what
/// arrived for a resume.
pub fn fetch_blob(
    client: &Client,
    verified: &Verified,
    store: &BlobStore,
    what: &str,
    desc: &Descriptor,
    on_bytes: &mut dyn FnMut(u64) -> bool,
) -> Result<Fetched, VerifyError> {
    let reference = verified.reference.to_string();
    let (done, partial) = store.paths(&desc.digest).ok_or_else(|| VerifyError::Manifest {
        reference: reference.clone(),
        digest: verified.digest.clone(),
        message: format!("{what}: unsupported digest `{}` (only sha256)", desc.digest),
    })?;
    if let Some(path) = store.verified(desc)? {
        return Ok(Fetched { path, downloaded: 0 });
    }
    for dir in [done.parent(), partial.parent()].into_iter().flatten() {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&partial)
        .map_err(io_err(&partial))?;
    let mut have = file.metadata().map_err(io_err(&partial))?.len();
    if have >= desc.size {
        have = 0;
    }
    let (mut body, resumed) = client.blob(&verified.reference.repository, &desc.digest, have)?;
    // The hash covers the kept prefix too, so the whole blob is checked, not just the new part.
    let mut hasher = Sha256::new();
    let mut len = if resumed { have } else { 0 };
    file.set_len(len).map_err(io_err(&partial))?;
    file.seek(SeekFrom::Start(0)).map_err(io_err(&partial))?;
    io::copy(&mut (&mut file).take(len), &mut HashWriter(&mut hasher)).map_err(io_err(&partial))?;
    file.seek(SeekFrom::Start(len)).map_err(io_err(&partial))?;
    let mut buf = vec![0u8; 1 << 16];
    let mut downloaded = 0u64;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // Kept in partial/: the next attempt resumes from here.
            Err(e) => {
                return Err(VerifyError::Registry(RegistryError::Http {
                    method: "GET".into(),
                    url: format!("{reference} blob {}", desc.digest),
                    message: format!("interrupted after {len} of {} bytes: {e}", desc.size),
                }));
            }
        };
        // A registry sending more than the descriptor says is not trusted further.
        let take = n.min((desc.size - len) as usize);
        file.write_all(&buf[..take]).map_err(io_err(&partial))?;
        hasher.update(&buf[..take]);
        len += take as u64;
        downloaded += take as u64;
        if take < n {
            len += 1; // counts as oversized below
            break;
        }
        if !on_bytes(take as u64) {
            return Err(VerifyError::Cancelled {
                reference,
                digest: desc.digest.clone(),
                have: len,
                size: desc.size,
            });
        }
    }
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if actual != desc.digest || len != desc.size {
        drop(file);
        fs::remove_file(&partial).map_err(io_err(&partial))?;
        return Err(VerifyError::Blob {
            reference,
            what: what.into(),
            digest: desc.digest.clone(),
            size: desc.size,
            actual,
            actual_size: len,
        });
    }
    // Durable before it is named verified: a power cut leaves either no blob or a whole one.
    file.sync_all().map_err(io_err(&partial))?;
    drop(file);
    fs::rename(&partial, &done).map_err(io_err(&done))?;
    let dir = done.parent().expect("blobs/sha256");
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))?;
    Ok(Fetched { path: done, downloaded })
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The whole device-side check: the signature, then every layer into `store`. Returns the verified
/// manifest and the layers' blob paths in order.
pub fn pull_verified(
    client: &Client,
    reference: &Reference,
    key: &PublicKey,
    store: &BlobStore,
) -> Result<(Verified, Vec<PathBuf>), VerifyError> {
    let verified = verify_signed(client, reference, key)?;
    let paths = fetch_layers(client, &verified, store)?;
    Ok((verified, paths))
}
