//! bmaptool's block map, format 2.0 (yoctoproject/bmaptool `src/bmaptool/BmapCreate.py`, read at
//! fe7ab42b): which 4 KiB blocks of the image hold data, each range with the sha256 of its bytes, and
//! the sha256 of the bmap file itself.
//!
//! bmaptool finds the mapped blocks with FIEMAP/SEEK_DATA on a sparse file; a pipe (`docker run … >
//! live.raw`) loses the holes, so the ranges here come from the builder's knowledge of the layout
//! instead (partition tables, each FAT's used clusters, each squashfs's length).

use std::ops::Range;

use sha2::{Digest as _, Sha256};

/// bmaptool's block size; the format allows others, but every bmaptool version and rpi-imager's
/// fastboot path are tested with 4096.
pub const BLOCK_SIZE: u64 = 4096;
pub const VERSION: &str = "2.0";
/// Hex digits of a sha256.
const CHECKSUM_LEN: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BmapError {
    #[error("data range {start}..{end} is not inside the {size}-byte image")]
    Outside { start: u64, end: u64, size: u64 },
    #[error("data range {start}..{end} ends before it starts")]
    Reversed { start: u64, end: u64 },
}

/// Blocks `first..=last` (inclusive, as bmap writes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRange {
    pub first: u64,
    pub last: u64,
}

impl BlockRange {
    pub fn blocks(&self) -> u64 {
        self.last - self.first + 1
    }

    /// The bytes these blocks cover in an image of `image_size` bytes (the last block may be short).
    pub fn bytes(&self, image_size: u64) -> Range<u64> {
        self.first * BLOCK_SIZE..((self.last + 1) * BLOCK_SIZE).min(image_size)
    }
}

/// Whole blocks covering every data byte, sorted, with overlapping and touching ranges merged (as
/// bmaptool's filemap yields them). Empty ranges are ignored.
pub fn block_ranges(image_size: u64, data: &[Range<u64>]) -> Result<Vec<BlockRange>, BmapError> {
    let mut blocks = Vec::with_capacity(data.len());
    for r in data {
        if r.end < r.start {
            return Err(BmapError::Reversed { start: r.start, end: r.end });
        }
        if r.end > image_size {
            return Err(BmapError::Outside { start: r.start, end: r.end, size: image_size });
        }
        if r.start == r.end {
            continue;
        }
        blocks.push(BlockRange { first: r.start / BLOCK_SIZE, last: (r.end - 1) / BLOCK_SIZE });
    }
    blocks.sort_by_key(|b| b.first);
    let mut merged: Vec<BlockRange> = Vec::with_capacity(blocks.len());
    for b in blocks {
        match merged.last_mut() {
            Some(m) if b.first <= m.last + 1 => m.last = m.last.max(b.last),
            _ => merged.push(b),
        }
    }
    Ok(merged)
}

/// A mapped range and the sha256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedRange {
    pub range: BlockRange,
    pub sha256: String,
}

/// Everything a bmap file states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockMap {
    pub image_size: u64,
    pub ranges: Vec<MappedRange>,
}

impl BlockMap {
    pub fn blocks_count(&self) -> u64 {
        self.image_size.div_ceil(BLOCK_SIZE)
    }

    pub fn mapped_blocks_count(&self) -> u64 {
        self.ranges.iter().map(|r| r.range.blocks()).sum()
    }

    /// The bmap file, `BmapFileChecksum` included.
    pub fn to_xml(&self) -> String {
        let zeros = "0".repeat(CHECKSUM_LEN);
        let unsigned = self.xml_with_checksum(&zeros);
        // BmapCreate.py hashes the finished file with the checksum field as ASCII zeros, then writes
        // the digest in place; BmapCopy.py undoes exactly that before comparing.
        let digest = crate::digest::sha256_hex(unsigned.as_bytes());
        self.xml_with_checksum(&digest)
    }

    fn xml_with_checksum(&self, checksum: &str) -> String {
        use std::fmt::Write;
        let blocks = self.blocks_count();
        let mapped = self.mapped_blocks_count();
        let percent = if blocks == 0 { 0.0 } else { mapped as f64 * 100.0 / blocks as f64 };
        let mut x = String::new();
        // The comments follow bmaptool's own output so the file reads the same to its users.
        let _ = write!(
            x,
            r#"<?xml version="1.0" ?>
<!-- This file contains the block map for an image file: the blocks that hold data (partition
     tables, file-system metadata, files). Only these blocks have to be written to the target
     device; `bmaptool copy` writes them and checks each range's checksum. Written by rpixen from
     its own knowledge of the image layout. -->

<bmap version="{VERSION}">
    <!-- Image size in bytes: {human_image} -->
    <ImageSize> {size} </ImageSize>

    <!-- Size of a block in bytes -->
    <BlockSize> {BLOCK_SIZE} </BlockSize>

    <!-- Count of blocks in the image file -->
    <BlocksCount> {blocks} </BlocksCount>

    <!-- Count of mapped blocks: {human_mapped} or {percent:.1}% -->
    <MappedBlocksCount> {mapped} </MappedBlocksCount>

    <!-- Type of checksum used in this file -->
    <ChecksumType> sha256 </ChecksumType>

    <!-- The checksum of this bmap file. When it is calculated, the value of
         the checksum has to be zero (all ASCII "0" symbols).  -->
    <BmapFileChecksum> {checksum} </BmapFileChecksum>

    <!-- The block map which consists of elements which may either be a
         range of blocks or a single block. The 'chksum' attribute
         (if present) is the checksum of this block range. -->
    <BlockMap>
"#,
            human_image = human_size(self.image_size),
            size = self.image_size,
            human_mapped = human_size(mapped * BLOCK_SIZE),
        );
        for r in &self.ranges {
            let BlockRange { first, last } = r.range;
            if first == last {
                let _ = writeln!(x, "        <Range chksum=\"{}\"> {first} </Range>", r.sha256);
            } else {
                let _ =
                    writeln!(x, "        <Range chksum=\"{}\"> {first}-{last} </Range>", r.sha256);
            }
        }
        x.push_str("    </BlockMap>\n</bmap>\n");
        x
    }
}

/// bmaptool's `human_size`, for the comments.
fn human_size(size: u64) -> String {
    if size == 1 {
        return "1 byte".into();
    }
    if size < 512 {
        return format!("{size} bytes");
    }
    let mut s = size as f64;
    for unit in ["KiB", "MiB", "GiB", "TiB"] {
        s /= 1024.0;
        if s < 1024.0 {
            return format!("{s:.1} {unit}");
        }
    }
    format!("{s:.1} EiB")
}

/// Hashes each mapped range while the image streams past once, in order (so the image can come from
/// a pipe and feed the xz encoder in the same pass).
#[derive(Debug)]
pub struct RangeHasher {
    image_size: u64,
    ranges: Vec<BlockRange>,
    done: Vec<MappedRange>,
    current: Sha256,
    /// Bytes seen so far.
    pos: u64,
}

impl RangeHasher {
    pub fn new(image_size: u64, ranges: Vec<BlockRange>) -> Self {
        RangeHasher { image_size, ranges, done: Vec::new(), current: Sha256::new(), pos: 0 }
    }

    /// The next bytes of the image.
    pub fn update(&mut self, chunk: &[u8]) {
        let start = self.pos;
        let end = start + chunk.len() as u64;
        while let Some(r) = self.ranges.get(self.done.len()) {
            let span = r.bytes(self.image_size);
            if span.start >= end {
                break;
            }
            let from = span.start.max(start);
            let to = span.end.min(end);
            if from < to {
                self.current.update(&chunk[(from - start) as usize..(to - start) as usize]);
            }
            if span.end > end {
                break;
            }
            let digest = std::mem::take(&mut self.current).finalize();
            self.done.push(MappedRange { range: *r, sha256: hex::encode(digest) });
        }
        self.pos = end;
    }

    /// The block map, once the whole image went through [`update`](Self::update).
    pub fn finish(self) -> Option<BlockMap> {
        (self.pos == self.image_size && self.done.len() == self.ranges.len())
            .then_some(BlockMap { image_size: self.image_size, ranges: self.done })
    }
}

#[cfg(test)]
// One-range lists of byte ranges are test data, not a mistaken `Vec<u64>`.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use crate::digest::sha256_hex;

    const B: u64 = BLOCK_SIZE;

    #[test]
    fn ranges_round_out_to_blocks_and_merge() {
        let r = block_ranges(
            100 * B,
            &[5 * B + 1..5 * B + 2, 0..10, 4095..4097, 20 * B..22 * B, 7 * B..7 * B],
        )
        .unwrap();
        assert_eq!(
            r,
            [
                BlockRange { first: 0, last: 1 },
                BlockRange { first: 5, last: 5 },
                BlockRange { first: 20, last: 21 }
            ]
        );
        // Touching ranges merge: blocks 1 and 2 are adjacent.
        let r = block_ranges(10 * B, &[B..2 * B, 2 * B..3 * B]).unwrap();
        assert_eq!(r, [BlockRange { first: 1, last: 2 }]);
    }

    #[test]
    fn ranges_outside_the_image_are_refused() {
        let e = block_ranges(10 * B, &[0..10 * B + 1]).unwrap_err();
        assert_eq!(e, BmapError::Outside { start: 0, end: 10 * B + 1, size: 10 * B });
        assert!(e.to_string().contains("0..40961"), "{e}");
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = [5..4];
        assert!(matches!(block_ranges(10 * B, &reversed), Err(BmapError::Reversed { .. })));
    }

    fn image(size: usize) -> Vec<u8> {
        (0..size).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn range_hashes_do_not_depend_on_chunking() {
        let size = 10 * B as usize + 100; // a short last block, as bmaptool allows
        let img = image(size);
        let ranges = vec![
            BlockRange { first: 0, last: 0 },
            BlockRange { first: 3, last: 5 },
            BlockRange { first: 9, last: 10 },
        ];
        let expect: Vec<String> = ranges
            .iter()
            .map(|r| {
                let b = r.bytes(size as u64);
                sha256_hex(&img[b.start as usize..b.end as usize])
            })
            .collect();
        for chunk in [1, 1000, 4096, 5000, size] {
            let mut h = RangeHasher::new(size as u64, ranges.clone());
            for c in img.chunks(chunk) {
                h.update(c);
            }
            let map = h.finish().expect("complete");
            let got: Vec<&str> = map.ranges.iter().map(|r| r.sha256.as_str()).collect();
            assert_eq!(got, expect, "chunk size {chunk}");
        }
        let mut short = RangeHasher::new(size as u64, ranges);
        short.update(&img[..size - 1]);
        assert!(short.finish().is_none(), "a short image must not give a block map");
    }

    #[test]
    fn xml_checksum_is_bmaptools() {
        let map = BlockMap {
            image_size: 821752,
            ranges: vec![
                MappedRange { range: BlockRange { first: 0, last: 1 }, sha256: "a".repeat(64) },
                MappedRange { range: BlockRange { first: 12, last: 12 }, sha256: "b".repeat(64) },
            ],
        };
        let xml = map.to_xml();
        assert!(xml.contains("<BlocksCount> 201 </BlocksCount>"), "{xml}");
        assert!(xml.contains("<MappedBlocksCount> 3 </MappedBlocksCount>"), "{xml}");
        assert!(xml.contains(&format!("<Range chksum=\"{}\"> 0-1 </Range>", "a".repeat(64))));
        assert!(xml.contains(&format!("<Range chksum=\"{}\"> 12 </Range>", "b".repeat(64))));
        // BmapCopy._verify_bmap_checksum: find the stated digest, replace it with zeros, hash.
        let stated =
            xml.split("<BmapFileChecksum> ").nth(1).unwrap().split(' ').next().unwrap().to_owned();
        let zeroed = xml.replacen(&stated, &"0".repeat(64), 1);
        assert_eq!(sha256_hex(zeroed.as_bytes()), stated);
    }

    #[test]
    fn human_size_matches_bmaptool() {
        assert_eq!(human_size(821752), "802.5 KiB");
        assert_eq!(human_size(362 << 20), "362.0 MiB");
        assert_eq!(human_size(100), "100 bytes");
    }
}
