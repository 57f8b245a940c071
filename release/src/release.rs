//! One pass over the raw image writes every release file: the bytes feed the image's sha256, the
//! block-map range hashes and the xz encoder together, so the image may come from a pipe.
//!
//! Files appear whole or not at all: each is written to a temporary file in the output folder and
//! renamed into place only after every file is complete.

use std::io::{Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::bmap::{self, BlockMap, BmapError, RangeHasher};
use crate::digest::{self, Digest, HashingWriter};
use crate::imager::{self, ImagerError, ImagerMeta};
use crate::xz::{self, XzError, XzOptions};

/// The suffixes `bmaptool copy` and rpi-imager users expect next to `live.raw`.
pub const XZ_SUFFIX: &str = ".xz";
pub const BMAP_SUFFIX: &str = ".bmap";
pub const SHA256_SUFFIX: &str = ".sha256";
/// Imager 2.x opens files with this extension as a repository (`src/config.h` MANIFEST_EXTENSION).
pub const IMAGER_SUFFIX: &str = ".rpi-imager-manifest";

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the image gave {got} bytes, but its size was given as {expected}")]
    ImageSize { expected: u64, got: u64 },
    #[error("`{0}` is not a file name (no folders, not empty)")]
    BaseName(String),
    #[error("block map: {0}")]
    Bmap(#[from] BmapError),
    #[error(transparent)]
    Xz(#[from] XzError),
    #[error(transparent)]
    Imager(#[from] ImagerError),
}

/// What to write, and what the builder knows about the image.
#[derive(Debug, Clone)]
pub struct ReleaseRequest<'a> {
    /// The output folder.
    pub dir: &'a Path,
    /// The raw image's file name (`live.raw`); every other name derives from it.
    pub base_name: &'a str,
    /// The raw image's exact length.
    pub image_size: u64,
    /// Byte ranges that hold data (tables, FAT metadata and used clusters, squashfs lengths); the
    /// rest of the image reads as zeros. Any order; overlaps are fine.
    pub data: &'a [Range<u64>],
    /// Write `BASE.xz` (and its `.sha256`).
    pub xz: Option<XzOptions>,
    /// Write `BASE.bmap`.
    pub bmap: bool,
    /// Write `STEM.rpi-imager-manifest` (STEM = BASE without `.raw`/`.img`), whose download is the
    /// `.xz` when one is written, else the raw image.
    pub imager: Option<&'a ImagerMeta>,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Release {
    pub raw: Digest,
    pub xz: Option<Digest>,
    pub block_map: Option<BlockMap>,
    /// Every file written, in the order listed above.
    pub files: Vec<PathBuf>,
}

/// Opens a raw image file and returns it with its length, for [`write_release`].
pub fn open_image(path: &Path) -> Result<(std::fs::File, u64), ReleaseError> {
    let err = |source| ReleaseError::Io { path: path.to_owned(), source };
    let f = std::fs::File::open(path).map_err(err)?;
    let len = f.metadata().map_err(err)?.len();
    Ok((f, len))
}

/// The imager manifest's file name for an image file name.
pub fn imager_file_name(base_name: &str) -> String {
    let stem = base_name
        .strip_suffix(".raw")
        .or_else(|| base_name.strip_suffix(".img"))
        .unwrap_or(base_name);
    format!("{stem}{IMAGER_SUFFIX}")
}

struct Pending {
    file: tempfile::NamedTempFile,
    path: PathBuf,
}

impl Pending {
    fn new(dir: &Path, name: &str) -> Result<Pending, ReleaseError> {
        let path = dir.join(name);
        // Release files are for publishing: readable by all, like any file the umask would allow
        // (tempfile's own default is 0600).
        let file = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .tempfile_in(dir)
            .map_err(|source| ReleaseError::Io { path: path.clone(), source })?;
        Ok(Pending { file, path })
    }

    fn with_text(dir: &Path, name: &str, text: &str) -> Result<Pending, ReleaseError> {
        let mut p = Pending::new(dir, name)?;
        let path = p.path.clone();
        p.file.write_all(text.as_bytes()).map_err(|source| ReleaseError::Io { path, source })?;
        Ok(p)
    }

    fn persist(self) -> Result<PathBuf, ReleaseError> {
        let path = self.path;
        let file = self
            .file
            .persist(&path)
            .map_err(|e| ReleaseError::Io { path: path.clone(), source: e.error })?;
        file.sync_all().map_err(|source| ReleaseError::Io { path: path.clone(), source })?;
        Ok(path)
    }
}

/// Reads the whole image from `image` once and writes the requested files.
pub fn write_release(
    mut image: impl Read,
    req: &ReleaseRequest<'_>,
) -> Result<Release, ReleaseError> {
    if req.base_name.is_empty()
        || req.base_name.contains('/')
        || req.base_name == "."
        || req.base_name == ".."
    {
        return Err(ReleaseError::BaseName(req.base_name.to_owned()));
    }
    let ranges = bmap::block_ranges(req.image_size, req.data)?;
    let raw_path = req.dir.join(req.base_name);
    let xz_name = format!("{}{XZ_SUFFIX}", req.base_name);

    let mut xz_out = match &req.xz {
        Some(opts) => {
            let pending = Pending::new(req.dir, &xz_name)?;
            let out = pending
                .file
                .reopen()
                .map_err(|source| ReleaseError::Io { path: pending.path.clone(), source })?;
            Some((pending, xz::encoder(HashingWriter::new(std::io::BufWriter::new(out)), opts)?))
        }
        None => None,
    };
    let mut ranges_hash = RangeHasher::new(req.image_size, ranges);
    let mut raw_hash = Sha256::new();
    let mut got = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match image.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(ReleaseError::Io { path: raw_path, source }),
        };
        got += n as u64;
        if got > req.image_size {
            return Err(ReleaseError::ImageSize { expected: req.image_size, got });
        }
        let chunk = &buf[..n];
        raw_hash.update(chunk);
        ranges_hash.update(chunk);
        if let Some((pending, enc)) = &mut xz_out {
            enc.write_all(chunk)
                .map_err(|source| ReleaseError::Io { path: pending.path.clone(), source })?;
        }
    }
    if got != req.image_size {
        return Err(ReleaseError::ImageSize { expected: req.image_size, got });
    }
    let raw = Digest { size: got, sha256: hex::encode(raw_hash.finalize()) };
    let block_map =
        ranges_hash.finish().expect("every byte of the image went through the range hasher");

    let mut pending = Vec::new();
    let mut xz_digest = None;
    if let Some((p, enc)) = xz_out {
        let io = |source| ReleaseError::Io { path: p.path.clone(), source };
        let (buffered, d) = enc.finish().map_err(io)?.finish();
        buffered.into_inner().map_err(|e| io(e.into_error()))?;
        pending.push(p);
        pending.push(Pending::with_text(
            req.dir,
            &format!("{xz_name}{SHA256_SUFFIX}"),
            &digest::sha256sum_line(&d.sha256, &xz_name),
        )?);
        xz_digest = Some(d);
    }
    if req.bmap {
        pending.push(Pending::with_text(
            req.dir,
            &format!("{}{BMAP_SUFFIX}", req.base_name),
            &block_map.to_xml(),
        )?);
    }
    pending.push(Pending::with_text(
        req.dir,
        &format!("{}{SHA256_SUFFIX}", req.base_name),
        &digest::sha256sum_line(&raw.sha256, req.base_name),
    )?);
    if let Some(meta) = req.imager {
        let entry = imager::os_entry(meta, &raw, xz_digest.as_ref().unwrap_or(&raw))?;
        pending.push(Pending::with_text(
            req.dir,
            &imager_file_name(req.base_name),
            &imager::repository_json(vec![entry]),
        )?);
    }
    let files = pending.into_iter().map(Pending::persist).collect::<Result<Vec<_>, _>>()?;
    Ok(Release { raw, xz: xz_digest, block_map: req.bmap.then_some(block_map), files })
}

#[cfg(test)]
// One-range lists of byte ranges are test data, not a mistaken `Vec<u64>`.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    #[test]
    fn names_derive_from_the_image_name() {
        assert_eq!(imager_file_name("live.raw"), "live.rpi-imager-manifest");
        assert_eq!(imager_file_name("disk.img"), "disk.rpi-imager-manifest");
        assert_eq!(imager_file_name("disk"), "disk.rpi-imager-manifest");
    }

    fn request<'a>(dir: &'a Path, data: &'a [Range<u64>], size: u64) -> ReleaseRequest<'a> {
        ReleaseRequest {
            dir,
            base_name: "live.raw",
            image_size: size,
            data,
            xz: Some(XzOptions { block_size: 1 << 16, preset: 0, threads: 2 }),
            bmap: true,
            imager: None,
        }
    }

    #[test]
    fn short_or_long_image_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let img = vec![7u8; 100_000];
        let data = [0..100_000];
        let e = write_release(&img[..], &request(dir.path(), &data, 100_001)).unwrap_err();
        assert!(e.to_string().contains("100001"), "{e}");
        let e = write_release(&img[..], &request(dir.path(), &data[..0], 99_999)).unwrap_err();
        assert!(e.to_string().contains("99999"), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing may be left behind");
    }

    #[test]
    fn writes_every_file_with_matching_digests() {
        let dir = tempfile::tempdir().unwrap();
        let mut img = vec![0u8; 300_000];
        img[..10].copy_from_slice(b"0123456789");
        img[200_000..200_100].fill(9);
        let data = [0..10, 200_000..200_100];
        let r = write_release(&img[..], &request(dir.path(), &data, img.len() as u64)).unwrap();
        let names: Vec<String> =
            r.files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(
            names,
            ["live.raw.xz", "live.raw.xz.sha256", "live.raw.bmap", "live.raw.sha256"]
        );
        let xz = std::fs::read(dir.path().join("live.raw.xz")).unwrap();
        assert_eq!(r.xz.as_ref().unwrap().sha256, digest::sha256_hex(&xz));
        assert_eq!(r.raw.sha256, digest::sha256_hex(&img));
        let line = std::fs::read_to_string(dir.path().join("live.raw.sha256")).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&r.files[0]).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o644, "release files are published: world-readable");
        assert_eq!(line, format!("{}  live.raw\n", r.raw.sha256));
        let map = r.block_map.unwrap();
        assert_eq!(map.mapped_blocks_count(), 2);
        assert_eq!(map.ranges[1].sha256, digest::sha256_hex(&img[48 * 4096..49 * 4096]));
    }
}
