//! The partition tables: GPT (written by the `gpt` crate) and a hybrid MBR whose entry 1 is the boot FAT
//! (type 0x0C, active), so Pis whose EEPROM reads only the MBR still find their firmware, plus the 0xEE
//! entry that marks the disk as GPT (EVE's `sgdisk -h` + `fdisk` `M a 1 t 1 c` result).
//!
//! The `gpt` crate writes through a seekable device. The tables live only in the first and last
//! sectors of the disk, so [`HeadTail`] gives the crate a device of the full disk length that keeps
//! just those two ends in memory; the partition contents are placed by the caller.

use std::io::{Read, Seek, SeekFrom, Write};

use gpt::partition_types::{OperatingSystem, Type};
use uuid::Uuid;

pub const SECTOR: u64 = 512;
/// Bytes at each end of the disk that the tables may use: MBR + GPT header + 128 entries = 34 sectors.
pub const END_BYTES: u64 = 34 * SECTOR;

pub const TYPE_EFI: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// EVE's IMGA/IMGB type (CoreOS "usr", what gptprio looks for).
pub const TYPE_IMG: &str = "5DFBF5F4-2848-4BAC-AA5E-0D9A20B745A6";
pub const TYPE_CONFIG: &str = "13307E62-CD9C-4920-8F9B-91B45828B798";
pub const TYPE_PERSIST: &str = "5F24425A-2DFA-11E8-A270-7B663FACCC2C";
/// The A/B slot-state record (rpixen-slot-state); found by name (`STATE`), the type only keeps
/// tools that probe Linux data partitions away from it.
pub const TYPE_STATE: &str = "5194614F-5778-480C-BA50-9FAD0A89B723";
/// GPT attribute bit 2: legacy BIOS bootable (U-Boot's `part list -bootable` looks for it).
pub const ATTR_LEGACY_BOOTABLE: u64 = 1 << 2;

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    // The gpt crate's errors say "GPT ..." themselves; the caller says which disk.
    #[error(transparent)]
    Gpt(#[from] gpt::GptError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// One partition, in sectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub name: String,
    pub type_guid: Uuid,
    pub guid: Uuid,
    pub first_lba: u64,
    pub last_lba: u64,
    pub attrs: u64,
}

/// The table bytes: `head` goes at offset 0, `tail` at `len - tail.len()`.
#[derive(Debug, Clone)]
pub struct Tables {
    pub head: Vec<u8>,
    pub tail: Vec<u8>,
}

/// A device of `len` bytes that stores only its first and last [`END_BYTES`]; other reads are zeros.
#[derive(Debug)]
pub struct HeadTail {
    len: u64,
    pos: u64,
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl HeadTail {
    fn new(len: u64) -> HeadTail {
        HeadTail {
            len,
            pos: 0,
            head: vec![0; END_BYTES as usize],
            tail: vec![0; END_BYTES as usize],
        }
    }
    fn tail_start(&self) -> u64 {
        self.len - END_BYTES
    }
}

impl Read for HeadTail {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            let p = self.pos + i as u64;
            *b = if p < END_BYTES {
                self.head[p as usize]
            } else if p >= self.tail_start() {
                self.tail[(p - self.tail_start()) as usize]
            } else {
                0
            };
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for HeadTail {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let end = self.pos + buf.len() as u64;
        if end <= END_BYTES {
            self.head[self.pos as usize..end as usize].copy_from_slice(buf);
        } else if self.pos >= self.tail_start() && end <= self.len {
            let s = (self.pos - self.tail_start()) as usize;
            self.tail[s..s + buf.len()].copy_from_slice(buf);
        } else {
            return Err(std::io::Error::other(format!(
                "table write outside the disk ends at {}",
                self.pos
            )));
        }
        self.pos = end;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Seek for HeadTail {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = super::seek_position(self.pos, self.len, to, "disk")?;
        Ok(self.pos)
    }
}

/// Writes the GPT (primary and backup) and the hybrid MBR for `parts` on a disk of `len` bytes.
/// `parts[0]` is the boot FAT that MBR entry 1 describes.
pub fn write(len: u64, disk_guid: Uuid, parts: &[Part]) -> Result<Tables, TableError> {
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .change_partition_count(true)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .create_from_device(HeadTail::new(len), Some(disk_guid))?;
    let map = parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let part = gpt::partition::Partition {
                part_type_guid: Type { guid: p.type_guid, os: OperatingSystem::None },
                part_guid: p.guid,
                first_lba: p.first_lba,
                last_lba: p.last_lba,
                flags: p.attrs,
                name: p.name.clone(),
            };
            (i as u32 + 1, part)
        })
        .collect();
    disk.update_partitions(map)?;
    let mut dev = disk.write()?;
    let sectors = len / SECTOR;
    let boot = &parts[0];
    dev.head[..512].copy_from_slice(&hybrid_mbr(
        boot.first_lba,
        boot.last_lba - boot.first_lba + 1,
        sectors,
    ));
    Ok(Tables { head: dev.head, tail: dev.tail })
}

/// CHS for an LBA with the usual 255 heads x 63 sectors; past cylinder 1023 the 0xFE 0xFF 0xFF marker.
fn chs(lba: u64) -> [u8; 3] {
    let (heads, spt) = (255u64, 63u64);
    let c = lba / (heads * spt);
    if c > 1023 {
        return [0xFE, 0xFF, 0xFF];
    }
    let h = (lba / spt) % heads;
    let s = lba % spt + 1;
    [h as u8, (s as u8) | (((c >> 8) as u8) << 6), c as u8]
}

fn mbr_entry(out: &mut [u8], active: bool, kind: u8, first: u64, count: u64) {
    out[0] = if active { 0x80 } else { 0 };
    out[1..4].copy_from_slice(&chs(first));
    out[4] = kind;
    out[5..8].copy_from_slice(&chs(first + count - 1));
    out[8..12].copy_from_slice(&(first.min(u32::MAX as u64) as u32).to_le_bytes());
    out[12..16].copy_from_slice(&(count.min(u32::MAX as u64) as u32).to_le_bytes());
}

/// The hybrid MBR: entry 1 = the boot FAT (0x0C FAT32 LBA, active), entry 2 = 0xEE covering the GPT
/// structures in front of it.
pub fn hybrid_mbr(boot_first: u64, boot_sectors: u64, _disk_sectors: u64) -> [u8; 512] {
    let mut mbr = [0u8; 512];
    mbr_entry(&mut mbr[446..462], true, 0x0C, boot_first, boot_sectors);
    mbr_entry(&mut mbr[462..478], false, 0xEE, 1, boot_first - 1);
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    mbr
}

/// A partition read back from an image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ListedPart {
    pub number: u32,
    pub name: String,
    pub type_guid: String,
    pub guid: String,
    pub first_lba: u64,
    pub last_lba: u64,
    pub offset: u64,
    pub size: u64,
    pub attrs: u64,
}

/// Reads the GPT of an image file with the same crate that wrote it.
pub fn read(path: &std::path::Path) -> Result<(String, Vec<ListedPart>), TableError> {
    let disk = gpt::GptConfig::new().writable(false).open(path)?;
    let parts = disk
        .partitions()
        .iter()
        .filter(|(_, p)| p.is_used())
        .map(|(n, p)| ListedPart {
            number: *n,
            name: p.name.clone(),
            type_guid: p.part_type_guid.guid.to_string(),
            guid: p.part_guid.to_string(),
            first_lba: p.first_lba,
            last_lba: p.last_lba,
            offset: p.first_lba * SECTOR,
            size: (p.last_lba - p.first_lba + 1) * SECTOR,
            attrs: p.flags,
        })
        .collect();
    Ok((disk.guid().to_string(), parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mbr_entries() {
        let m = hybrid_mbr(2048, 131_072, 1 << 20);
        assert_eq!(&m[446..447], &[0x80]);
        assert_eq!(m[450], 0x0C);
        assert_eq!(u32::from_le_bytes(m[454..458].try_into().unwrap()), 2048);
        assert_eq!(m[466], 0xEE);
        assert_eq!(u32::from_le_bytes(m[470..474].try_into().unwrap()), 1);
        assert_eq!(u32::from_le_bytes(m[474..478].try_into().unwrap()), 2047);
        assert_eq!(&m[510..], &[0x55, 0xAA]);
        assert_eq!(chs(0), [0, 1, 0]);
        assert_eq!(chs(2048), [32, 33, 0]);
    }
}
