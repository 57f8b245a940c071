//! Writing a [`Disk`]: streamed to stdout (a file or pipe, never a terminal), or to `-o FILE` as a
//! sparse file, atomically: a temporary file in the same folder, renamed into place when complete,
//! removed on error and on Ctrl-C.

use std::io::{IsTerminal, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

use super::assemble::{Data, Disk};

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("refusing to write a disk image to a terminal: redirect stdout (`rpixen live > live.raw`) or use -o FILE")]
    Terminal,
    #[error("cannot write the image to stdout")]
    Stdout(#[source] std::io::Error),
    #[error("cannot write {path}")]
    File { path: PathBuf, source: std::io::Error },
}

/// Zero-block granularity for holes: blocks of this size that are all zero are not written.
const BLOCK: usize = 64 << 10;
static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

/// The temporary file to remove if the user interrupts us.
static PENDING: Mutex<Option<PathBuf>> = Mutex::new(None);
static HANDLER: Once = Once::new();

fn install_interrupt_handler() {
    HANDLER.call_once(|| {
        // An error means another handler is installed already (a host program); it then owns Ctrl-C.
        let _ = ctrlc::set_handler(|| {
            if let Some(p) = PENDING.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = std::fs::remove_file(p);
            }
            crate::report::warn("interrupted; nothing written");
            std::process::exit(130);
        });
    });
}

/// Writes the image to stdout: sparse when stdout is a fresh regular file (`rpixen live > live.raw`),
/// otherwise streamed, zeros included (pipes, `docker run ... > file`).
pub fn to_stdout(disk: &Disk) -> Result<(), OutputError> {
    let stdout = std::io::stdout();
    if stdout.is_terminal() {
        return Err(OutputError::Terminal);
    }
    if let Some(file) = stdout_as_fresh_file(&stdout) {
        return write_sparse(disk, &file).map_err(OutputError::Stdout);
    }
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    stream(disk, &mut out).map_err(OutputError::Stdout)?;
    out.flush().map_err(OutputError::Stdout)
}

/// Stdout as a file we may write at offsets: a regular, empty file at position 0, not opened for
/// appending (`>>` would make every positioned write an append; Linux reports the open flags in
/// /proc/self/fdinfo).
fn stdout_as_fresh_file(stdout: &std::io::Stdout) -> Option<std::fs::File> {
    use std::io::Seek;
    use std::os::fd::AsFd;
    let mut file = std::fs::File::from(stdout.as_fd().try_clone_to_owned().ok()?);
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() != 0 || file.stream_position().ok()? != 0 {
        return None;
    }
    let info = std::fs::read_to_string("/proc/self/fdinfo/1").ok()?;
    let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?.trim();
    let flags = u32::from_str_radix(flags, 8).ok()?;
    const O_APPEND: u32 = 0o2000;
    (flags & O_APPEND == 0).then_some(file)
}

/// Writes every byte of the image, zeros included, in order.
pub fn stream(disk: &Disk, out: &mut impl Write) -> std::io::Result<()> {
    let mut pos = 0u64;
    for c in &disk.chunks {
        write_zeros(out, c.offset - pos)?;
        match &c.data {
            Data::Bytes(b) => out.write_all(b)?,
            Data::Source { source, offset, len } => source.copy_range(*offset, *len, out)?,
        }
        pos = c.end();
    }
    write_zeros(out, disk.len - pos)
}

fn write_zeros(out: &mut impl Write, mut n: u64) -> std::io::Result<()> {
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        out.write_all(&ZEROS[..k])?;
        n -= k as u64;
    }
    Ok(())
}

/// Writes the image to `path` as a sparse file, atomically.
pub fn to_file(disk: &Disk, path: &Path) -> Result<(), OutputError> {
    let err = |source| OutputError::File { path: path.to_owned(), source };
    install_interrupt_handler();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .tempfile_in(dir)
        .map_err(err)?;
    *PENDING.lock().unwrap_or_else(|e| e.into_inner()) = Some(tmp.path().to_owned());
    let result = write_sparse(disk, tmp.as_file()).and_then(|()| {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))
    });
    let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    *pending = None;
    match result {
        Ok(()) => {
            tmp.persist(path).map_err(|e| err(e.error))?;
            Ok(())
        }
        // Dropping `tmp` removes the partial file.
        Err(e) => Err(err(e)),
    }
}

/// Writes each chunk at its offset and sets the length; holes stay holes. In-memory chunks skip
/// their all-zero blocks; source ranges are copied file to file (`copy_file_range`).
pub fn write_sparse(disk: &Disk, file: &std::fs::File) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom};
    file.set_len(disk.len)?;
    for c in &disk.chunks {
        let data = match &c.data {
            Data::Bytes(b) => b,
            Data::Source { source, offset, len } => {
                let mut f = file;
                f.seek(SeekFrom::Start(c.offset))?;
                source.copy_range(*offset, *len, &mut f)?;
                continue;
            }
        };
        let mut run_start: Option<usize> = None;
        let blocks = data.len().div_ceil(BLOCK);
        for b in 0..=blocks {
            let zero = b == blocks || {
                let s = b * BLOCK;
                let e = (s + BLOCK).min(data.len());
                is_zero(&data[s..e])
            };
            match (zero, run_start) {
                (false, None) => run_start = Some(b * BLOCK),
                (true, Some(s)) => {
                    let e = (b * BLOCK).min(data.len());
                    file.write_all_at(&data[s..e], c.offset + s as u64)?;
                    run_start = None;
                }
                _ => {}
            }
        }
    }
    Ok(())
}

fn is_zero(b: &[u8]) -> bool {
    // OR-folding fixed 64-byte lanes vectorises; a plain `all` would stop at every byte.
    let mut lanes = b.chunks_exact(64);
    lanes.all(|c| c.iter().fold(0u8, |a, x| a | x) == 0)
        && lanes.remainder().iter().all(|x| *x == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::assemble::Chunk;

    fn disk() -> Disk {
        let mut data = vec![0u8; 3 * BLOCK + 5];
        data[BLOCK + 1] = 9;
        data[3 * BLOCK + 4] = 7;
        Disk {
            len: 1 << 20,
            chunks: vec![
                Chunk::bytes(0, vec![1; 10]),
                Chunk::bytes(4096, data),
                Chunk {
                    offset: 512 << 10,
                    data: crate::disk::assemble::Data::Source {
                        source: std::sync::Arc::new(crate::disk::source::Source::Memory(vec![
                            3;
                            1000
                        ])),
                        offset: 10,
                        len: 900,
                    },
                },
            ],
            disk_guid: uuid::Uuid::nil(),
            parts: vec![],
            mapped: vec![],
        }
    }

    #[test]
    fn sparse_and_stream_agree() {
        let d = disk();
        let mut streamed = Vec::new();
        stream(&d, &mut streamed).unwrap();
        assert_eq!(streamed.len(), 1 << 20);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.raw");
        to_file(&d, &p).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), streamed);
        // Only the image is left in the folder.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
