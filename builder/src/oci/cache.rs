//! The content-addressed blob cache under `$XDG_CACHE_HOME/rpixen`, shared by every build:
//!
//! - `blobs/sha256/<hex>`: blobs, each verified against digest and size before it is put here;
//! - `partial/<hex>`: downloads in progress (a later pull resumes them, then verifies the whole);
//! - `refs/<registry>/<repository>/<tag>`: the manifest digest a tag last resolved to (for `--offline`);
//! - `rootfs/<key>`: finished root filesystems, keyed by everything they were built from.

use std::path::{Path, PathBuf};

use oci_spec::image::Descriptor;

use super::digest::{file_digest, sha256, sha256_hex};
use super::layout::{mismatch, write_atomic};
use super::OciError;

#[derive(Debug, Clone)]
pub struct BlobCache {
    pub root: PathBuf,
}

impl BlobCache {
    pub fn new(root: &Path) -> BlobCache {
        BlobCache { root: root.to_owned() }
    }

    fn dir(&self, name: &str) -> Result<PathBuf, OciError> {
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir).map_err(OciError::io(&dir))?;
        Ok(dir)
    }

    /// Where a blob lives (it may not be there yet).
    pub fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        sha256_hex(digest).map(|hex| self.root.join("blobs/sha256").join(hex))
    }

    /// Where a download of `digest` in progress is kept.
    pub fn partial_path(&self, digest: &str) -> Result<Option<PathBuf>, OciError> {
        Ok(match sha256_hex(digest) {
            Some(hex) => Some(self.dir("partial")?.join(hex)),
            None => None,
        })
    }

    /// The cached blob for `desc`, verified (digest and size); a cached file that fails is deleted and
    /// reported as absent, so it is fetched again.
    pub fn get_verified(&self, desc: &Descriptor) -> Option<PathBuf> {
        let path = self.blob_path(desc.digest().as_ref())?;
        if std::fs::metadata(&path).map(|m| m.len() != desc.size()).unwrap_or(true) {
            return None;
        }
        match file_digest(&path) {
            Ok((d, n)) if d == desc.digest().to_string() && n == desc.size() => Some(path),
            _ => {
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// A small cached blob read whole and verified (manifests, configs).
    pub fn read_small(&self, digest: &str) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.blob_path(digest)?).ok()?;
        (sha256(&bytes) == digest).then_some(bytes)
    }

    /// Stores a small blob after checking it against `desc`.
    pub fn put_small(
        &self,
        image: &str,
        what: &str,
        desc: &Descriptor,
        bytes: &[u8],
    ) -> Result<PathBuf, OciError> {
        let actual = sha256(bytes);
        if actual != desc.digest().to_string() || bytes.len() as u64 != desc.size() {
            return Err(mismatch(image, what, desc, actual, bytes.len() as u64));
        }
        let path = self.blob_path(desc.digest().as_ref()).expect("checked sha256 above");
        self.dir("blobs/sha256")?;
        write_atomic(&path, bytes)?;
        Ok(path)
    }

    /// Moves a finished download into place once it verifies; a download that does not is deleted, so a
    /// bad blob is never kept.
    pub fn commit_partial(
        &self,
        image: &str,
        what: &str,
        desc: &Descriptor,
        partial: &Path,
    ) -> Result<PathBuf, OciError> {
        let (actual, size) = file_digest(partial).map_err(OciError::io(partial))?;
        self.commit_hashed(image, what, desc, partial, actual, size)
    }

    /// [`Self::commit_partial`] for a download whose digest and size were computed while it was written.
    pub fn commit_hashed(
        &self,
        image: &str,
        what: &str,
        desc: &Descriptor,
        partial: &Path,
        actual: String,
        size: u64,
    ) -> Result<PathBuf, OciError> {
        if actual != desc.digest().to_string() || size != desc.size() {
            let _ = std::fs::remove_file(partial);
            let mut err = mismatch(image, what, desc, actual, size);
            if let OciError::DigestMismatch(m) = &mut err {
                m.note = "; the download was deleted, not cached".into();
            }
            return Err(err);
        }
        let path =
            self.blob_path(desc.digest().as_ref()).expect("partial paths exist only for sha256");
        self.dir("blobs/sha256")?;
        std::fs::rename(partial, &path).map_err(OciError::io(&path))?;
        Ok(path)
    }

    fn ref_path(&self, registry: &str, repository: &str, tag: &str) -> PathBuf {
        self.root.join("refs").join(registry.replace(':', "_")).join(repository).join(tag)
    }

    /// Remembers which manifest digest a tag resolved to.
    pub fn set_ref(
        &self,
        registry: &str,
        repository: &str,
        tag: &str,
        digest: &str,
    ) -> Result<(), OciError> {
        let path = self.ref_path(registry, repository, tag);
        let dir = path.parent().expect("has a parent");
        std::fs::create_dir_all(dir).map_err(OciError::io(dir))?;
        write_atomic(&path, digest.as_bytes())
    }

    pub fn get_ref(&self, registry: &str, repository: &str, tag: &str) -> Option<String> {
        std::fs::read_to_string(self.ref_path(registry, repository, tag))
            .ok()
            .filter(|d| sha256_hex(d).is_some())
    }

    /// The folder for finished root filesystems.
    pub fn rootfs_dir(&self) -> Result<PathBuf, OciError> {
        self.dir("rootfs")
    }
}
