//! A whole disk image as a list of non-zero chunks at offsets: the tables at both ends and each
//! partition's content. Everything else is zero, which lets [`super::output`] write a sparse file
//! and never hold the full disk in memory.

use std::ops::Range;

use uuid::Uuid;

use super::fat::Volume;
use super::ids::Ids;
use super::source::Shared;
use super::table::{self, Part, TableError, SECTOR};

pub const MIB: u64 = 1 << 20;

/// A partition to place: its GPT identity, size and content (chunks at offsets inside the
/// partition; the rest is zero).
#[derive(Debug, Clone)]
pub struct Partition {
    pub name: String,
    pub type_guid: Uuid,
    pub size: u64,
    pub attrs: u64,
    pub content: Vec<Chunk>,
    /// Byte ranges inside the partition that a copy must write besides `content`: a FAT's zero
    /// metadata sectors (see [`super::fat::mapped_ranges`]).
    pub mapped: Vec<Range<u64>>,
}

/// What a chunk holds: bytes in memory, or a range of a [`Source`](super::source::Source).
#[derive(Debug, Clone)]
pub enum Data {
    Bytes(Vec<u8>),
    Source { source: Shared, offset: u64, len: u64 },
}

/// Content at an offset.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub offset: u64,
    pub data: Data,
}

impl Chunk {
    pub fn bytes(offset: u64, data: Vec<u8>) -> Chunk {
        Chunk { offset, data: Data::Bytes(data) }
    }

    pub fn len(&self) -> u64 {
        match &self.data {
            Data::Bytes(b) => b.len() as u64,
            Data::Source { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn end(&self) -> u64 {
        self.offset + self.len()
    }
}

/// A FAT volume as partition content, and its mapped ranges.
pub fn volume_chunks(v: Volume) -> (Vec<Chunk>, Vec<Range<u64>>) {
    let mapped = v.mapped;
    let mut out: Vec<Chunk> = v.meta.into_iter().map(|(o, b)| Chunk::bytes(o, b)).collect();
    out.extend(v.extents.into_iter().map(|e| Chunk {
        offset: e.offset,
        data: Data::Source { source: e.source, offset: e.source_offset, len: e.len },
    }));
    out.sort_by_key(|c| c.offset);
    (out, mapped)
}

#[derive(Debug, Clone)]
pub struct Disk {
    pub len: u64,
    /// Sorted by offset, non-overlapping.
    pub chunks: Vec<Chunk>,
    pub disk_guid: Uuid,
    pub parts: Vec<Part>,
    /// Sorted, merged byte ranges that a copy onto a used card must write, for a block map: the
    /// tables at both ends in full, every chunk, and each partition's extra `mapped` ranges.
    /// A partition without content (IMGB, PERSIST) is mapped only over its first [`WIPE`] bytes,
    /// so no stale file-system signature from the card's past survives there.
    pub mapped: Vec<Range<u64>>,
}

/// How much of an empty partition a copy zeroes: its first MiB holds every superblock and magic
/// a mount or probe looks at (ext4 at 1 KiB, squashfs and FAT at 0).
pub const WIPE: u64 = MIB;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("partition {name}: content of {have} bytes does not fit its {size} bytes")]
    TooBig { name: String, have: u64, size: u64 },
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("internal error: two pieces of content overlap at byte {at}")]
    Overlap { at: u64 },
}

/// Lays partitions out from 1 MiB, each rounded up to 1 MiB, and 1 MiB at the end for the backup GPT.
/// GUIDs come from `ids` (disk: "disk"; partition N: "partition N").
pub fn assemble(partitions: Vec<Partition>, ids: &Ids) -> Result<Disk, DiskError> {
    let order: Vec<usize> = (0..partitions.len()).collect();
    assemble_in_order(partitions, &order, ids)
}

/// As [`assemble`], with the partitions placed on the disk in `disk_order` (indexes into
/// `partitions`, which stay in table order: entry N is `partitions[N - 1]`). A partition added to a
/// known layout thus keeps the other entries' numbers while the one that grows stays last.
pub fn assemble_in_order(
    partitions: Vec<Partition>,
    disk_order: &[usize],
    ids: &Ids,
) -> Result<Disk, DiskError> {
    let mut sorted = disk_order.to_vec();
    sorted.sort_unstable();
    assert!(
        sorted.iter().copied().eq(0..partitions.len()),
        "disk_order is a permutation of the partitions"
    );
    let mut offset = MIB;
    let mut parts: Vec<Option<Part>> = vec![None; partitions.len()];
    let mut chunks = Vec::new();
    let mut mapped = Vec::new();
    let mut partitions: Vec<Option<Partition>> = partitions.into_iter().map(Some).collect();
    for &i in disk_order {
        let p = partitions[i].take().expect("each index once");
        let size = p.size.div_ceil(MIB) * MIB;
        let have = p.content.iter().map(Chunk::end).max().unwrap_or(0);
        if have > size {
            return Err(DiskError::TooBig { name: p.name, have, size });
        }
        parts[i] = Some(Part {
            name: p.name,
            type_guid: p.type_guid,
            guid: ids.uuid(&format!("partition {}", i + 1)),
            first_lba: offset / SECTOR,
            last_lba: (offset + size) / SECTOR - 1,
            attrs: p.attrs,
        });
        if p.content.iter().all(Chunk::is_empty) && p.mapped.is_empty() {
            mapped.push(offset..offset + WIPE.min(size));
        }
        mapped.extend(p.mapped.iter().map(|r| offset + r.start..offset + r.end));
        chunks.extend(
            p.content
                .into_iter()
                .filter(|c| !c.is_empty())
                .map(|c| Chunk { offset: offset + c.offset, ..c }),
        );
        offset += size;
    }
    let parts: Vec<Part> = parts.into_iter().map(|p| p.expect("every entry placed")).collect();
    chunks.sort_by_key(|c| c.offset);
    if let Some(w) = chunks.windows(2).find(|w| w[0].end() > w[1].offset) {
        return Err(DiskError::Overlap { at: w[1].offset });
    }
    let len = offset + MIB;
    let disk_guid = ids.uuid("disk");
    let tables = table::write(len, disk_guid, &parts)?;
    chunks.insert(0, Chunk::bytes(0, tables.head));
    chunks.push(Chunk::bytes(len - tables.tail.len() as u64, tables.tail));
    mapped.extend(chunks.iter().map(|c| c.offset..c.end()));
    Ok(Disk { len, chunks, disk_guid, parts, mapped: merge(mapped) })
}

/// Sorts ranges and merges those that overlap or touch.
fn merge(mut v: Vec<Range<u64>>) -> Vec<Range<u64>> {
    v.retain(|r| r.start < r.end);
    v.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_mib_aligned() {
        let ids = Ids::new([0; 32], None);
        let p = |n: &str, size| Partition {
            name: n.into(),
            type_guid: Uuid::nil(),
            size,
            attrs: 0,
            content: vec![Chunk::bytes(0, vec![1; 10])],
            mapped: Vec::new(),
        };
        let d = assemble(vec![p("A", 3 * MIB + 1), p("B", MIB)], &ids).unwrap();
        assert_eq!(d.parts[0].first_lba, 2048);
        assert_eq!(d.parts[1].first_lba, 2048 + 4 * 2048);
        assert_eq!(d.len, 7 * MIB);
        assert!(d.chunks.windows(2).all(|w| w[0].end() <= w[1].offset));
        let tables = table::END_BYTES;
        assert_eq!(
            d.mapped,
            [0..tables, MIB..MIB + 10, 5 * MIB..5 * MIB + 10, 7 * MIB - tables..7 * MIB]
        );
        let empty = Partition { content: Vec::new(), mapped: Vec::new(), ..p("E", 3 * MIB) };
        let fat = Partition { mapped: vec![0..4096, 8192..9000], ..p("F", MIB) };
        let d = assemble(vec![empty, fat], &ids).unwrap();
        assert_eq!(
            d.mapped[1..4],
            [MIB..2 * MIB, 4 * MIB..4 * MIB + 4096, 4 * MIB + 8192..4 * MIB + 9000]
        );
        let err = assemble(
            vec![Partition { content: vec![Chunk::bytes(0, vec![0; 2 << 20])], ..p("C", MIB) }],
            &ids,
        )
        .unwrap_err();
        assert!(err.to_string().contains("partition C"), "{err}");
    }
}
