//! The newc ("070701") cpio archive the kernel unpacks as an initramfs, gzip- or zstd-compressed.
//!
//! The newc writer is hand-written: the format is one fixed ASCII header per entry, and the kernel's
//! reader has rules the cpio crates do not expose (a hard-link group shares an inode number and carries
//! its data on the first member only, since `init/initramfs.c` links the later names to the first).
//! gzip is compressed in parallel blocks joined into ONE deflate stream, as pigz does: the kernel only
//! accepts a compressed member that ends with a complete archive, so several gzip members are not an option.

use std::collections::HashMap;
use std::io::{self, Write};

use super::tree::{Kind, NodeId, Tree, ROOT};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpioCompression {
    None,
    Gzip,
    Zstd,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
const S_IFBLK: u32 = 0o060000;
const S_IFIFO: u32 = 0o010000;

/// Writes `tree` as an uncompressed newc archive. Entries come parents first, names sorted; the root is `.`.
pub fn write_newc(tree: &Tree, out: &mut impl Write) -> io::Result<()> {
    let counts = tree.link_counts();
    let mut written: HashMap<NodeId, ()> = HashMap::new();
    let mut err = Ok(());
    tree.walk_all(|path, id| {
        if err.is_err() {
            return;
        }
        let node = tree.node(id);
        let name: &[u8] = if id == ROOT { b"." } else { path };
        let first = written.insert(id, ()).is_none();
        let (kind_bits, data, rdev): (u32, &[u8], (u32, u32)) = match &node.kind {
            Kind::Dir(_) => (S_IFDIR, b"", (0, 0)),
            Kind::File(d) => (S_IFREG, if first { d.as_slice() } else { b"" }, (0, 0)),
            Kind::Symlink(t) => (S_IFLNK, t.as_slice(), (0, 0)),
            Kind::CharDev { major, minor } => (S_IFCHR, b"", (*major, *minor)),
            Kind::BlockDev { major, minor } => (S_IFBLK, b"", (*major, *minor)),
            Kind::Fifo => (S_IFIFO, b"", (0, 0)),
        };
        let nlink = match node.kind {
            Kind::Dir(_) => 2 + tree.subdirs(id),
            _ => counts.get(&id).copied().unwrap_or(1),
        };
        let h = Header {
            ino: id as u32 + 1,
            mode: kind_bits | node.meta.mode,
            uid: node.meta.uid,
            gid: node.meta.gid,
            nlink,
            mtime: node.meta.mtime.min(u32::MAX as u64) as u32,
            rdev,
        };
        err = write_entry(out, &h, name, data);
    });
    err?;
    let trailer = Header { ino: 0, mode: 0, uid: 0, gid: 0, nlink: 1, mtime: 0, rdev: (0, 0) };
    write_entry(out, &trailer, b"TRAILER!!!", b"")
}

struct Header {
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u32,
    rdev: (u32, u32),
}

fn write_entry(out: &mut impl Write, h: &Header, name: &[u8], data: &[u8]) -> io::Result<()> {
    let size = u32::try_from(data.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "newc cpio cannot hold a file of 4 GiB or more"))?;
    let header = format!(
        "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
        h.ino,
        h.mode,
        h.uid,
        h.gid,
        h.nlink,
        h.mtime,
        size,
        0,
        0,
        h.rdev.0,
        h.rdev.1,
        name.len() + 1,
        0
    );
    out.write_all(header.as_bytes())?;
    out.write_all(name)?;
    out.write_all(&[0])?;
    pad4(out, 110 + name.len() + 1)?;
    out.write_all(data)?;
    pad4(out, data.len())
}

fn pad4(out: &mut impl Write, len: usize) -> io::Result<()> {
    out.write_all(&[0u8; 3][..(4 - len % 4) % 4])
}

/// Writes `tree` as a compressed newc archive.
pub fn write_compressed(tree: &Tree, compression: CpioCompression, out: &mut impl Write) -> io::Result<()> {
    let mut raw = Vec::new();
    write_newc(tree, &mut raw)?;
    match compression {
        CpioCompression::None => out.write_all(&raw),
        CpioCompression::Gzip => parallel_gzip(&raw, 6, out),
        CpioCompression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(out, 9)?;
            enc.include_checksum(true)?;
            enc.write_all(&raw)?;
            enc.finish().map(|_| ())
        }
    }
}

/// Block size for parallel deflate: large enough that restarting the dictionary per block costs little.
const BLOCK: usize = 1 << 20;

/// One gzip member whose deflate stream is the concatenation of independently compressed blocks, each
/// ended with a sync flush (byte-aligned, non-final) and the last with a final block (pigz's scheme).
pub fn parallel_gzip(data: &[u8], level: u32, out: &mut impl Write) -> io::Result<()> {
    let blocks: Vec<&[u8]> = if data.is_empty() { vec![data] } else { data.chunks(BLOCK).collect() };
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(blocks.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Vec<u8>>> = blocks.iter().map(|_| Default::default()).collect();
    let crc = std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(block) = blocks.get(i) else { break };
                let last = i + 1 == blocks.len();
                *results[i].lock().expect("no panics while held") = deflate_block(block, level, last);
            });
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(data);
        crc.finalize()
    });
    // gzip header: magic, deflate, no flags, mtime 0, no extra flags, OS unknown (reproducible).
    out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255])?;
    for r in results {
        out.write_all(&r.into_inner().expect("no panics while held"))?;
    }
    out.write_all(&crc.to_le_bytes())?;
    out.write_all(&(data.len() as u32).to_le_bytes())
}

fn deflate_block(block: &[u8], level: u32, last: bool) -> Vec<u8> {
    let mut c = flate2::Compress::new(flate2::Compression::new(level), false);
    let mut out = Vec::with_capacity(block.len() / 2 + 1024);
    let flush = if last { flate2::FlushCompress::Finish } else { flate2::FlushCompress::Sync };
    loop {
        let consumed = c.total_in() as usize;
        let status = c.compress_vec(&block[consumed..], &mut out, flush).expect("deflate on memory cannot fail");
        let done = c.total_in() as usize == block.len()
            && match flush {
                flate2::FlushCompress::Finish => status == flate2::Status::StreamEnd,
                _ => out.len() < out.capacity(),
            };
        if done {
            return out;
        }
        out.reserve(64 * 1024);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn parallel_gzip_is_one_valid_member() {
        let data: Vec<u8> = (0..3 * BLOCK + 12345).map(|i| (i % 251) as u8 ^ (i / 7000) as u8).collect();
        let mut gz = Vec::new();
        parallel_gzip(&data, 6, &mut gz).unwrap();
        let mut back = Vec::new();
        // GzDecoder (not MultiGzDecoder) reads exactly one member.
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        assert!(gz.len() < data.len() / 2);
        let mut empty = Vec::new();
        parallel_gzip(b"", 6, &mut empty).unwrap();
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&empty[..]).read_to_end(&mut back).unwrap();
        assert!(back.is_empty());
    }
}
