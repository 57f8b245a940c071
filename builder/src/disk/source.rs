//! File content for the image without copying it through memory: bytes we generated or read from an
//! OCI image ([`Source::Memory`]), or a file on the build host ([`Source::Host`]) that the output
//! stage copies straight into place (`copy_file_range` through `std::io::copy`), as `cp` would.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;

/// Where a file's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Memory(Vec<u8>),
    /// A host file; `len` is its size when it was planned (checked again when copied).
    Host {
        path: PathBuf,
        len: u64,
    },
}

/// A shared source.
pub type Shared = Arc<Source>;

impl Source {
    pub fn len(&self) -> u64 {
        match self {
            Source::Memory(v) => v.len() as u64,
            Source::Host { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Opens a host file as a source (size from its metadata).
    pub fn host(path: PathBuf) -> std::io::Result<Source> {
        let meta = std::fs::metadata(&path)?;
        if !meta.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(Source::Host { path, len: meta.len() })
    }

    /// The first `n` bytes (fewer if the source is shorter).
    pub fn head(&self, n: usize) -> std::io::Result<Vec<u8>> {
        match self {
            Source::Memory(v) => Ok(v[..n.min(v.len())].to_vec()),
            Source::Host { path, .. } => {
                let mut buf = Vec::with_capacity(n);
                std::fs::File::open(path)?.take(n as u64).read_to_end(&mut buf)?;
                Ok(buf)
            }
        }
    }

    /// All bytes, in memory (for small files and tests).
    pub fn bytes(&self) -> std::io::Result<std::borrow::Cow<'_, [u8]>> {
        match self {
            Source::Memory(v) => Ok(std::borrow::Cow::Borrowed(v)),
            Source::Host { path, .. } => Ok(std::borrow::Cow::Owned(std::fs::read(path)?)),
        }
    }

    /// Copies `len` bytes from `offset` of the source to `out` at its current position.
    pub fn copy_range(&self, offset: u64, len: u64, out: &mut impl Write) -> std::io::Result<()> {
        match self {
            Source::Memory(v) => out.write_all(&v[offset as usize..(offset + len) as usize]),
            Source::Host { path, .. } => {
                let mut file = std::fs::File::open(path)?;
                file.seek(SeekFrom::Start(offset))?;
                let copied = std::io::copy(&mut file.take(len), out)?;
                check_len(path, len, copied)
            }
        }
    }
}

fn check_len(path: &std::path::Path, want: u64, got: u64) -> std::io::Result<()> {
    if want != got {
        return Err(std::io::Error::other(format!(
            "{} changed while the image was built ({want} bytes expected, {got} read)",
            path.display()
        )));
    }
    Ok(())
}
