//! A whole disk image as a list of non-zero chunks at offsets: the tables at both ends and each
//! partition's content. Everything else is zero, which lets [`super::output`] write a sparse file
//! and never hold the full disk in memory.

use uuid::Uuid;

use super::ids::Ids;
use super::table::{self, Part, TableError, SECTOR};

pub const MIB: u64 = 1 << 20;

/// A partition to place: its GPT identity, size and content (shorter than the size; the rest is zero).
#[derive(Debug, Clone)]
pub struct Partition {
    pub name: String,
    pub type_guid: Uuid,
    pub size: u64,
    pub attrs: u64,
    pub content: Vec<u8>,
}

/// Bytes at an offset.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub offset: u64,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Disk {
    pub len: u64,
    /// Sorted by offset, non-overlapping.
    pub chunks: Vec<Chunk>,
    pub disk_guid: Uuid,
    pub parts: Vec<Part>,
}

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("partition {name}: content of {have} bytes does not fit its {size} bytes")]
    TooBig { name: String, have: u64, size: u64 },
    #[error(transparent)]
    Table(#[from] TableError),
}

/// Lays partitions out from 1 MiB, each rounded up to 1 MiB, and 1 MiB at the end for the backup GPT.
/// GUIDs come from `ids` (disk: "disk"; partition N: "partition N").
pub fn assemble(partitions: Vec<Partition>, ids: &Ids) -> Result<Disk, DiskError> {
    let mut offset = MIB;
    let mut parts = Vec::new();
    let mut chunks = Vec::new();
    for (i, p) in partitions.into_iter().enumerate() {
        let size = p.size.div_ceil(MIB) * MIB;
        if p.content.len() as u64 > size {
            return Err(DiskError::TooBig { name: p.name, have: p.content.len() as u64, size });
        }
        parts.push(Part {
            name: p.name,
            type_guid: p.type_guid,
            guid: ids.uuid(&format!("partition {}", i + 1)),
            first_lba: offset / SECTOR,
            last_lba: (offset + size) / SECTOR - 1,
            attrs: p.attrs,
        });
        if !p.content.is_empty() {
            chunks.push(Chunk { offset, data: p.content });
        }
        offset += size;
    }
    let len = offset + MIB;
    let disk_guid = ids.uuid("disk");
    let tables = table::write(len, disk_guid, &parts)?;
    chunks.insert(0, Chunk { offset: 0, data: tables.head });
    chunks.push(Chunk { offset: len - tables.tail.len() as u64, data: tables.tail });
    Ok(Disk { len, chunks, disk_guid, parts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_mib_aligned() {
        let ids = Ids::new([0; 32], None);
        let p = |n: &str, size| Partition { name: n.into(), type_guid: Uuid::nil(), size, attrs: 0, content: vec![1; 10] };
        let d = assemble(vec![p("A", 3 * MIB + 1), p("B", MIB)], &ids).unwrap();
        assert_eq!(d.parts[0].first_lba, 2048);
        assert_eq!(d.parts[1].first_lba, 2048 + 4 * 2048);
        assert_eq!(d.len, 7 * MIB);
        assert!(d.chunks.windows(2).all(|w| w[0].offset + w[0].data.len() as u64 <= w[1].offset));
        let err = assemble(vec![Partition { content: vec![0; 2 << 20], ..p("C", MIB) }], &ids).unwrap_err();
        assert!(err.to_string().contains("partition C"), "{err}");
    }
}
