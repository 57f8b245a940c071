//! The newc ("070701") cpio archive the kernel unpacks as an initramfs, gzip- or zstd-compressed.
//!
//! The newc writer is hand-written: the format is one fixed ASCII header per entry, and the kernel's
//! reader has rules the cpio crates do not expose (a hard-link group shares an inode number and carries
//! its data on the first member only, since `init/initramfs.c` links the later names to the first).
//! gzip goes through [`crate::oci::gzip::parallel_gzip`]: ONE member, as the kernel only accepts a
//! compressed member that ends with a complete archive, so several gzip members are not an option.

use std::collections::HashSet;
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
    let mut written: HashSet<NodeId> = HashSet::new();
    let mut err = Ok(());
    tree.walk_all(|path, id| {
        if err.is_err() {
            return;
        }
        let node = tree.node(id);
        let name: &[u8] = if id == ROOT { b"." } else { path };
        let first = written.insert(id);
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
    let size = u32::try_from(data.len()).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, "newc cpio cannot hold a file of 4 GiB or more")
    })?;
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
pub fn write_compressed(
    tree: &Tree,
    compression: CpioCompression,
    out: &mut impl Write,
) -> io::Result<()> {
    let mut raw = Vec::new();
    write_newc(tree, &mut raw)?;
    match compression {
        CpioCompression::None => out.write_all(&raw),
        CpioCompression::Gzip => crate::oci::gzip::parallel_gzip(&raw, 6, out),
        CpioCompression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(out, 9)?;
            enc.include_checksum(true)?;
            enc.write_all(&raw)?;
            enc.finish().map(|_| ())
        }
    }
}
