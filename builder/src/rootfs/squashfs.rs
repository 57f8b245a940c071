//! The tree as a squashfs (v4, zstd) through the `backhand` crate.
//!
//! backhand writes neither hard links nor xattrs: a hard-link group becomes separate inodes whose data
//! blocks are shared (backhand de-duplicates identical files), and xattrs are dropped with a warning.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use backhand::compression::Compressor;
use backhand::{FilesystemCompressor, FilesystemWriter, NodeHeader};

use super::tree::{Kind, Tree, ROOT};

#[derive(Debug, thiserror::Error)]
pub enum SquashfsError {
    #[error("squashfs: entry `{path}`")]
    Entry { path: String, source: backhand::BackhandError },
    #[error("squashfs: writing the filesystem")]
    Write(#[source] backhand::BackhandError),
}

/// Linux's `new_encode_dev`, the device number squashfs stores.
fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// Writes `tree` as a squashfs to `out`. Returns warnings (what the format could not keep).
pub fn write_squashfs(
    tree: &Tree,
    out: &mut (impl std::io::Write + std::io::Seek),
) -> Result<Vec<String>, SquashfsError> {
    let mut fs = FilesystemWriter::default();
    fs.set_compressor(
        FilesystemCompressor::new(Compressor::Zstd, None).map_err(SquashfsError::Write)?,
    );
    fs.set_time(0);
    let root = tree.node(ROOT);
    fs.set_root_mode(root.meta.mode as u16);
    fs.set_root_uid(root.meta.uid);
    fs.set_root_gid(root.meta.gid);
    let mut warnings = Vec::new();
    let mut err = None;
    tree.walk_all(|path, id| {
        if id == ROOT || err.is_some() {
            return;
        }
        let node = tree.node(id);
        let header = NodeHeader::new(
            node.meta.mode as u16,
            node.meta.uid,
            node.meta.gid,
            node.meta.mtime.min(u32::MAX as u64) as u32,
        );
        if !node.meta.xattrs.is_empty() {
            warnings.push(format!(
                "squashfs: xattrs of `/{}` dropped (not supported by the writer)",
                String::from_utf8_lossy(path)
            ));
        }
        let p = std::path::Path::new(OsStr::from_bytes(path)).to_owned();
        let r = match &node.kind {
            Kind::Dir(_) => fs.push_dir(&p, header),
            Kind::File(data) => fs.push_file(std::io::Cursor::new(data.as_slice()), &p, header),
            Kind::Symlink(t) => {
                fs.push_symlink(std::path::PathBuf::from(OsStr::from_bytes(t)), &p, header)
            }
            Kind::CharDev { major, minor } => {
                fs.push_char_device(encode_dev(*major, *minor), &p, header)
            }
            Kind::BlockDev { major, minor } => {
                fs.push_block_device(encode_dev(*major, *minor), &p, header)
            }
            Kind::Fifo => fs.push_fifo(&p, header),
        };
        if let Err(e) = r {
            err = Some(SquashfsError::Entry {
                path: String::from_utf8_lossy(path).into_owned(),
                source: e,
            });
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    fs.write(out).map_err(SquashfsError::Write)?;
    Ok(warnings)
}
