//! The download cache: `.deb` files stored by their sha256 (`<cache>/debs/sha256/<hex>`), so a rebuild
//! needs no network. Every file is checked against its pin when stored and again when used.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::def::{Deb, PkgDef};
use super::{DebDigestMismatch, PkgError};

pub struct DebCache {
    root: PathBuf,
}

impl DebCache {
    pub fn new(cache_dir: &Path) -> DebCache {
        DebCache { root: cache_dir.join("debs/sha256") }
    }

    /// Where a file with this digest is kept.
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.root.join(sha256)
    }

    /// The cached file for `deb`, checked against its pin; `None` when not cached. A cached file whose
    /// digest changed (disk corruption, tampering) stops the build; it is removed so the next run
    /// downloads it again.
    pub fn get(&self, def: &PkgDef, deb: &Deb) -> Result<Option<PathBuf>, PkgError> {
        let path = self.path(&deb.sha256);
        if !path.exists() {
            return Ok(None);
        }
        let actual = sha256_file(&path)?;
        if actual != deb.sha256 {
            let _ = std::fs::remove_file(&path);
            return Err(digest_error(def, deb, &path, actual));
        }
        Ok(Some(path))
    }

    /// Checks a downloaded file against the pin and moves it into the cache. On a mismatch the download
    /// is deleted and nothing enters the cache.
    pub fn insert(&self, def: &PkgDef, deb: &Deb, downloaded: &Path) -> Result<PathBuf, PkgError> {
        let actual = sha256_file(downloaded)?;
        if actual != deb.sha256 {
            let err = digest_error(def, deb, downloaded, actual);
            let _ = std::fs::remove_file(downloaded);
            return Err(err);
        }
        std::fs::create_dir_all(&self.root)
            .map_err(|source| PkgError::Io { path: self.root.clone(), source })?;
        let path = self.path(&deb.sha256);
        // Same file system (the download dir is inside the cache), so the rename is atomic.
        std::fs::rename(downloaded, &path)
            .map_err(|source| PkgError::Io { path: path.clone(), source })?;
        Ok(path)
    }
}

fn digest_error(def: &PkgDef, deb: &Deb, file: &Path, actual: String) -> PkgError {
    PkgError::Digest(Box::new(DebDigestMismatch {
        package: def.name.clone(),
        deb: format!("{}={}", deb.package, deb.version),
        def: def.path.clone(),
        file: file.to_owned(),
        expected: deb.sha256.clone(),
        actual,
    }))
}

/// The sha256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, PkgError> {
    let io = |source| PkgError::Io { path: path.to_owned(), source };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}
