//! The disk: GPT with a hybrid MBR ([`table`]), FAT volumes ([`fat`]), the ids derived from content
//! ([`ids`]), the partitions assembled into a sparse [`assemble::Disk`], written out sparse and
//! atomically ([`output`]) and read back ([`inspect`]). Nothing here knows what a board or a manifest
//! is: it takes sizes, names and file sources.

pub mod assemble;
pub mod fat;
pub mod ids;
pub mod inspect;
pub mod output;
pub mod source;
pub mod table;

pub use assemble::{
    assemble, assemble_in_order, volume_chunks, Chunk, Data, Disk, DiskError, Partition,
};

/// Where a `Seek` on an in-memory stand-in for a `len`-byte device lands; `what` names the device
/// in the error for a position before its start.
pub(crate) fn seek_position(
    pos: u64,
    len: u64,
    to: std::io::SeekFrom,
    what: &str,
) -> std::io::Result<u64> {
    let p = match to {
        std::io::SeekFrom::Start(p) => p as i128,
        std::io::SeekFrom::End(d) => len as i128 + d as i128,
        std::io::SeekFrom::Current(d) => pos as i128 + d as i128,
    };
    u64::try_from(p).map_err(|_| std::io::Error::other(format!("seek before the {what} start")))
}
