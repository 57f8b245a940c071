//! Installing a verified slot artifact into the inactive slot, moving only what changed.
//!
//! 1. Check the manifest's shape ([`artifact::slot_image`]) and that the image fits the inactive
//!    partition.
//! 2. Cut the active slot's partition into chunks with the manifest's chunking and hash them: every
//!    chunk of the new image found there is read from the device, never downloaded.
//! 3. Fetch the other chunks into the [`BlobStore`] (each checked against its digest while it streams;
//!    a partial download resumes with a Range request), after pruning what earlier, abandoned
//!    updates left, within the store's cap.
//! 4. Only then write the inactive partition, sequentially, re-checking each chunk's digest as it is
//!    copied; fsync; drop the cached pages and read the image back, comparing its sha256 with the
//!    manifest's [`artifact::IMAGE_DIGEST`].
//! 5. Prune the store to this version's chunks (a repeated install after a power cut then downloads
//!    nothing).
//!
//! The inactive slot is not bootable while it is written: the caller (the agent) marks it for a trial
//! only after [`install_slot`] returned, so a power cut at any point leaves the device on its active
//! slot.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::ops::ControlFlow;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::artifact::{self, ArtifactError, SlotImage};
use crate::oci::Descriptor;
use crate::registry::Client;
use crate::verify::{self, BlobStore, Verified, VerifyError};

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(
        "{partition}: the slot image of {digest} is {image} bytes, the partition only {partition_size}"
    )]
    TooLarge { partition: PathBuf, digest: String, image: u64, partition_size: u64 },
    #[error("{active} is also the inactive slot: an install never overwrites the running slot")]
    SameSlot { active: PathBuf },
    #[error(
        "{store}: the update needs {need} bytes of chunks the active slot lacks, the store may hold {cap}"
    )]
    StoreFull { store: PathBuf, need: u64, cap: u64 },
    #[error("{source_path}: chunk {digest} at offset {offset} changed since it was checked")]
    Changed { source_path: PathBuf, digest: String, offset: u64 },
    #[error("{partition}: the caller stopped the install before the slot was written")]
    Stopped { partition: PathBuf },
    #[error("{partition}: read back as {actual}, the manifest says {expected}")]
    ReadBack { partition: PathBuf, expected: String, actual: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> InstallError + '_ {
    move |source| InstallError::Io { path: path.to_owned(), source }
}

/// Where an install reads from and writes to.
#[derive(Debug, Clone)]
pub struct Slots<'a> {
    /// The running slot's partition (e.g. `/dev/disk/by-partlabel/IMGA`): the source of reused chunks.
    pub active: &'a Path,
    /// The other slot's partition: written only after every chunk checked out.
    pub inactive: &'a Path,
    /// Downloaded chunks, on PERSIST.
    pub store: &'a BlobStore,
    /// The most the store may hold; an update needing more is refused before any download.
    pub store_cap: u64,
}

/// What an install is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Cutting and hashing the active slot.
    Indexing,
    /// Downloading missing chunks (EVE's `DOWNLOADING`).
    Fetching,
    /// Writing the inactive slot (EVE's `UPDATING`).
    Writing,
    /// Reading the written slot back.
    Checking,
}

/// Running totals, reported to the caller's callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub stage: Stage,
    /// Bytes received from the registry so far.
    pub fetched: u64,
    /// Bytes the download needs in all (missing chunks, less what an earlier attempt kept).
    pub to_fetch: u64,
    /// Bytes of the image taken from the active slot instead of the network.
    pub reused: u64,
    /// Bytes written to the inactive slot.
    pub written: u64,
    pub image_size: u64,
}

/// The figures of a finished install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The manifest installed.
    pub digest: String,
    pub image_size: u64,
    /// Bytes received from the registry by this call.
    pub downloaded: u64,
    /// Bytes of the image read from the active slot.
    pub reused: u64,
    /// Bytes of the image read from chunks an earlier, interrupted attempt had downloaded.
    pub from_store: u64,
    /// Bytes the store freed afterwards.
    pub pruned: u64,
}

/// Installs the slot image of `verified` (whose signature [`verify::verify_signed`] checked) into
/// `slots.inactive`, reading unchanged chunks from `slots.active` and downloading the others into
/// `slots.store`. `progress` hears of every step; returning `ControlFlow::Break` stops a download
/// ([`VerifyError::Cancelled`]; what arrived is kept for the next call) or, on the first
/// [`Stage::Writing`] report, the install before its first write ([`InstallError::Stopped`]).
///
/// Nothing is written to the inactive slot before every chunk is at hand and verified. Errors name
/// the partition, file or digest at fault.
pub fn install_slot(
    client: &Client,
    verified: &Verified,
    slots: &Slots<'_>,
    progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
) -> Result<Installed, InstallError> {
    let image = artifact::slot_image(&verified.digest, &verified.manifest)?;
    if same_file(slots.active, slots.inactive)? {
        return Err(InstallError::SameSlot { active: slots.active.to_owned() });
    }
    let partition_size = device_size(slots.inactive)?;
    if image.size > partition_size {
        return Err(InstallError::TooLarge {
            partition: slots.inactive.to_owned(),
            digest: verified.digest.clone(),
            image: image.size,
            partition_size,
        });
    }
    let mut p = Progress {
        stage: Stage::Indexing,
        fetched: 0,
        to_fetch: 0,
        reused: 0,
        written: 0,
        image_size: image.size,
    };
    let _ = progress(&p);

    let wanted: HashSet<&str> = image.chunks.iter().map(|c| c.digest.as_str()).collect();
    let on_device = index_device(slots.active, &image, &wanted)?;
    let missing = unique(image.chunks.iter().filter(|c| !on_device.contains_key(&c.digest)));
    let need: u64 = missing.iter().map(|c| c.size).sum();
    // Whatever an abandoned update left goes first, so that the cap bounds this update's chunks.
    let keep: HashSet<&str> = missing.iter().map(|c| c.digest.as_str()).collect();
    slots.store.prune(&keep)?;
    if need > slots.store_cap {
        return Err(InstallError::StoreFull {
            store: slots.store.dir.clone(),
            need,
            cap: slots.store_cap,
        });
    }

    p.stage = Stage::Fetching;
    let mut in_store = HashSet::new();
    for c in &missing {
        if slots.store.verified(c)?.is_some() {
            in_store.insert(c.digest.as_str());
        } else {
            p.to_fetch += c.size;
        }
    }
    let _ = progress(&p);
    let mut downloaded = 0;
    let mut paths: HashMap<&str, PathBuf> = HashMap::new();
    for (i, c) in missing.iter().enumerate() {
        let what = format!("slot image chunk {i}");
        let fetched = verify::fetch_blob(client, verified, slots.store, &what, c, &mut |n| {
            p.fetched += n;
            progress(&p).is_continue()
        })?;
        downloaded += fetched.downloaded;
        paths.insert(c.digest.as_str(), fetched.path);
    }

    // The caller's last word before the partition is touched (the agent marks the slot
    // `unused` in STATE here): a Break leaves it unwritten.
    p.stage = Stage::Writing;
    if progress(&p).is_break() {
        return Err(InstallError::Stopped { partition: slots.inactive.to_owned() });
    }
    let from_store = write_image(&image, slots, &on_device, &paths, &in_store, &mut p, progress)?;

    p.stage = Stage::Checking;
    let _ = progress(&p);
    let actual = read_back(slots.inactive, image.size)?;
    if actual != image.digest {
        return Err(InstallError::ReadBack {
            partition: slots.inactive.to_owned(),
            expected: image.digest,
            actual,
        });
    }
    let pruned = slots.store.prune(&keep)?;
    Ok(Installed {
        digest: verified.digest.clone(),
        image_size: image.size,
        downloaded,
        reused: p.reused,
        from_store,
        pruned,
    })
}

/// Each distinct chunk once, in first-use order.
fn unique<'a>(chunks: impl Iterator<Item = &'a Descriptor>) -> Vec<&'a Descriptor> {
    let mut seen = HashSet::new();
    chunks.filter(|c| seen.insert(c.digest.as_str())).collect()
}

/// Whether two paths name the same file or device.
fn same_file(a: &Path, b: &Path) -> Result<bool, InstallError> {
    use std::os::unix::fs::MetadataExt;
    let (ma, mb) =
        (std::fs::metadata(a).map_err(io_err(a))?, std::fs::metadata(b).map_err(io_err(b))?);
    let block = |m: &std::fs::Metadata| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_block_device().then_some(m.rdev())
    };
    Ok((ma.dev(), ma.ino()) == (mb.dev(), mb.ino())
        || (block(&ma).is_some() && block(&ma) == block(&mb)))
}

/// The size of a partition or image file (a block device's metadata says 0: seek to its end).
fn device_size(path: &Path) -> Result<u64, InstallError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    f.seek(SeekFrom::End(0)).map_err(io_err(path))
}

/// Where each wanted chunk lies on the active slot: digest → (offset, length).
fn index_device(
    active: &Path,
    image: &SlotImage,
    wanted: &HashSet<&str>,
) -> Result<HashMap<String, (u64, u64)>, InstallError> {
    let file = File::open(active).map_err(io_err(active))?;
    let mut found = HashMap::new();
    for chunk in image.chunking.chunks(BufReader::with_capacity(1 << 20, file)) {
        let chunk = chunk.map_err(io_err(active))?;
        if wanted.contains(chunk.digest.as_str()) {
            found.entry(chunk.digest).or_insert((chunk.offset, chunk.data.len() as u64));
        }
    }
    Ok(found)
}

/// Writes the image into the inactive partition, chunk after chunk, each re-hashed from its source.
/// Returns the bytes taken from the store's earlier downloads.
fn write_image(
    image: &SlotImage,
    slots: &Slots<'_>,
    on_device: &HashMap<String, (u64, u64)>,
    fetched: &HashMap<&str, PathBuf>,
    in_store: &HashSet<&str>,
    p: &mut Progress,
    progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
) -> Result<u64, InstallError> {
    let mut active = File::open(slots.active).map_err(io_err(slots.active))?;
    let mut out =
        OpenOptions::new().write(true).open(slots.inactive).map_err(io_err(slots.inactive))?;
    let mut buf = Vec::new();
    let mut from_store = 0;
    for c in &image.chunks {
        buf.clear();
        let (source, offset) = match on_device.get(&c.digest) {
            Some(&(offset, len)) => {
                active.seek(SeekFrom::Start(offset)).map_err(io_err(slots.active))?;
                (&mut active).take(len).read_to_end(&mut buf).map_err(io_err(slots.active))?;
                p.reused += c.size;
                (slots.active.to_owned(), offset)
            }
            None => {
                let path = &fetched[c.digest.as_str()];
                File::open(path).and_then(|mut f| f.read_to_end(&mut buf)).map_err(io_err(path))?;
                if in_store.contains(c.digest.as_str()) {
                    from_store += c.size;
                }
                (path.clone(), 0)
            }
        };
        if crate::oci::sha256(&buf) != c.digest || buf.len() as u64 != c.size {
            return Err(InstallError::Changed {
                source_path: source,
                digest: c.digest.clone(),
                offset,
            });
        }
        out.write_all(&buf).map_err(io_err(slots.inactive))?;
        p.written += c.size;
        let _ = progress(p);
    }
    out.sync_all().map_err(io_err(slots.inactive))?;
    Ok(from_store)
}

/// The sha256 of the first `size` bytes of `path`, read from the medium: its cached pages are
/// dropped first (they were synced), so the check sees what the card holds, not what was written.
fn read_back(path: &Path, size: u64) -> Result<String, InstallError> {
    let file = File::open(path).map_err(io_err(path))?;
    // SAFETY: posix_fadvise only reads its integer arguments; the descriptor is open for the call.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(io_err(path)(io::Error::from_raw_os_error(rc)));
    }
    let mut hasher = Sha256::new();
    let n = io::copy(
        &mut BufReader::with_capacity(1 << 20, file).take(size),
        &mut HashOut(&mut hasher),
    )
    .map_err(io_err(path))?;
    if n != size {
        return Err(io_err(path)(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("ended after {n} of {size} bytes"),
        )));
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

struct HashOut<'a>(&'a mut Sha256);

impl Write for HashOut<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
