//! Reading the files a plan names ([`FileSource`]): host paths and paths inside OCI images (through [`crate::rootfs::read_file`]). Errors name the manifest field.

use std::path::{Path, PathBuf};

use crate::disk::source::{Shared, Source};
use crate::manifest::FileSource;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("`{field}`: cannot read {path}")]
    Host { field: String, path: PathBuf, source: std::io::Error },
    #[error("`{field}`: cannot read {path} from image {image}")]
    Image {
        field: String,
        image: String,
        path: String,
        #[source]
        source: Box<crate::oci::OciError>,
    },
}

/// Opens a file reference; `field` is the manifest field it came from (for errors). Host files are
/// not read here: their content is copied into place when the image is written.
pub fn open(fref: &FileSource, field: &str) -> Result<Shared, FileError> {
    match fref {
        FileSource::Host(path) => host(path, field),
        FileSource::InImage { .. } => read(fref, field).map(|v| Shared::new(Source::Memory(v))),
    }
}

/// A host file as a source.
pub fn host(path: &Path, field: &str) -> Result<Shared, FileError> {
    Source::host(path.to_owned()).map(Shared::new).map_err(|source| FileError::Host {
        field: field.to_owned(),
        path: path.to_owned(),
        source,
    })
}

/// Reads a file reference into memory.
pub fn read(fref: &FileSource, field: &str) -> Result<Vec<u8>, FileError> {
    match fref {
        FileSource::Host(path) => std::fs::read(path).map_err(|source| FileError::Host {
            field: field.to_owned(),
            path: path.clone(),
            source,
        }),
        FileSource::InImage { image, path } => {
            let opts = crate::oci::OciOptions::from_env();
            crate::rootfs::read_file(&opts, image, path).map_err(|source| FileError::Image {
                field: field.to_owned(),
                image: image.clone(),
                path: path.clone(),
                source: Box::new(source),
            })
        }
    }
}
