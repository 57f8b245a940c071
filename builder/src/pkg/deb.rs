//! Reading a `.deb` without dpkg: an `ar` archive holding `debian-binary`, `control.tar.*` and
//! `data.tar.*` (xz, zstd, gzip or uncompressed), read with the `ar`, `tar`, `liblzma`, `zstd` and
//! `flate2` crates.

use std::io::Read;
use std::path::Path;

use super::PkgError;
use crate::error::{context, Cause};

/// Calls `f` for every entry of the `.deb`'s data tarball, in archive order.
pub fn for_each_data_entry(
    deb: &Path,
    mut f: impl FnMut(&mut tar::Entry<'_, Box<dyn Read + '_>>) -> Result<(), PkgError>,
) -> Result<(), PkgError> {
    let bad = |source: Cause| PkgError::Deb { path: deb.to_owned(), source };
    let file =
        std::fs::File::open(deb).map_err(|source| PkgError::Io { path: deb.to_owned(), source })?;
    let mut ar = ar::Archive::new(std::io::BufReader::new(file));
    let mut seen_version = false;
    while let Some(member) = ar.next_entry() {
        let member = member.map_err(|e| bad(context("not an ar archive")(e)))?;
        let name = String::from_utf8_lossy(member.header().identifier()).into_owned();
        if name == "debian-binary" {
            seen_version = true;
            continue;
        }
        let Some(compression) = name.strip_prefix("data.tar") else { continue };
        if !seen_version {
            return Err(bad("`debian-binary` is not the first member".into()));
        }
        let reader: Box<dyn Read + '_> = match compression {
            ".xz" => Box::new(liblzma::read::XzDecoder::new(member)),
            ".zst" => {
                Box::new(zstd::stream::read::Decoder::new(member).map_err(|e| bad(e.into()))?)
            }
            ".gz" => Box::new(flate2::read::GzDecoder::new(member)),
            "" => Box::new(member),
            other => {
                return Err(bad(format!("unsupported data compression `data.tar{other}`").into()))
            }
        };
        let mut tar = tar::Archive::new(reader);
        let entries = tar.entries().map_err(|e| bad(context(name.clone())(e)))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| bad(context(name.clone())(e)))?;
            f(&mut entry)?;
        }
        return Ok(());
    }
    Err(bad("no data.tar member".into()))
}

/// Unpacks the whole data tarball under `dest` (for tests and exploration). Paths that would leave
/// `dest` are refused by the `tar` crate's `unpack_in`.
pub fn unpack_all(deb: &Path, dest: &Path) -> Result<(), PkgError> {
    std::fs::create_dir_all(dest)
        .map_err(|source| PkgError::Io { path: dest.to_owned(), source })?;
    for_each_data_entry(deb, |entry| {
        entry
            .unpack_in(dest)
            .map_err(|e| PkgError::Deb { path: deb.to_owned(), source: context("unpacking")(e) })?;
        Ok(())
    })
}
