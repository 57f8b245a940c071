//! Reading the files a manifest names ([`FileRef`]): host paths (relative to the manifest's folder) and
//! paths inside OCI images (through [`crate::rootfs::read_file`]). Errors name the manifest field.

use std::path::{Path, PathBuf};

use crate::disk::source::{Shared, Source};
use crate::manifest::FileRef;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("`{field}`: cannot read {path}: {source}")]
    Host { field: String, path: PathBuf, source: std::io::Error },
    #[error("`{field}`: cannot read {path} from image {image}: {message}")]
    Image { field: String, image: String, path: String, message: String },
}

/// Opens a file reference; `field` is the manifest field it came from (for errors). Host files are
/// not read here: their content is copied into place when the image is written.
pub fn open(fref: &FileRef, base: &Path, field: &str) -> Result<Shared, FileError> {
    match fref {
        FileRef::Host { file } => {
            let path = if file.is_absolute() { file.clone() } else { base.join(file) };
            host(&path, field)
        }
        FileRef::InImage { .. } => read(fref, base, field).map(|v| Shared::new(Source::Memory(v))),
    }
}

/// A host file as a source.
pub fn host(path: &Path, field: &str) -> Result<Shared, FileError> {
    Source::host(path.to_owned())
        .map(Shared::new)
        .map_err(|source| FileError::Host { field: field.to_owned(), path: path.to_owned(), source })
}

/// Reads a file reference into memory.
pub fn read(fref: &FileRef, base: &Path, field: &str) -> Result<Vec<u8>, FileError> {
    match fref {
        FileRef::Host { file } => {
            let path = if file.is_absolute() { file.clone() } else { base.join(file) };
            std::fs::read(&path).map_err(|source| FileError::Host { field: field.to_owned(), path, source })
        }
        FileRef::InImage { image, path } => {
            let opts = crate::oci::OciOptions::from_env();
            crate::rootfs::read_file(&opts, image, path).map_err(|e| FileError::Image {
                field: field.to_owned(),
                image: image.clone(),
                path: path.clone(),
                message: e.to_string(),
            })
        }
    }
}

/// The last path component of a reference (the name a file keeps on the boot FAT).
pub fn base_name(fref: &FileRef) -> String {
    let p = match fref {
        FileRef::Host { file } => file.to_string_lossy().into_owned(),
        FileRef::InImage { path, .. } => path.clone(),
    };
    p.rsplit('/').next().unwrap_or(&p).to_owned()
}
