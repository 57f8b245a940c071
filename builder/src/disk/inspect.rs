//! Reading an image back (`rpixen inspect`): the GPT, the MBR entries and the files on each FAT
//! partition, through the same crates that wrote them.

use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::Path;

use super::fat::{self, Listed};
use super::table::{self, ListedPart};

#[derive(Debug, Clone, serde::Serialize)]
pub struct MbrEntry {
    pub index: usize,
    pub active: bool,
    pub kind: u8,
    pub first_lba: u32,
    pub sectors: u32,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FatListing {
    pub partition: u32,
    pub label: String,
    pub files: Vec<Listed>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub size: u64,
    pub disk_guid: String,
    pub partitions: Vec<ListedPart>,
    pub mbr: Vec<MbrEntry>,
    pub filesystems: Vec<FatListing>,
}

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("{path}: {message}")]
    Bad { path: String, message: String },
}

pub fn inspect(path: &Path) -> Result<Report, InspectError> {
    let bad = |message: String| InspectError::Bad { path: path.display().to_string(), message };
    let mut f = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let size = f.metadata().map_err(|e| bad(e.to_string()))?.len();
    let mut mbr = [0u8; 512];
    f.read_exact(&mut mbr).map_err(|e| bad(format!("cannot read the MBR: {e}")))?;
    let mbr_entries = (0..4)
        .filter_map(|i| {
            let e = &mbr[446 + 16 * i..462 + 16 * i];
            (e[4] != 0).then(|| MbrEntry {
                index: i + 1,
                active: e[0] == 0x80,
                kind: e[4],
                first_lba: u32::from_le_bytes(e[8..12].try_into().expect("4 bytes")),
                sectors: u32::from_le_bytes(e[12..16].try_into().expect("4 bytes")),
            })
        })
        .collect();
    let (disk_guid, partitions) = table::read(path).map_err(|e| bad(e.to_string()))?;
    let mut filesystems = Vec::new();
    for p in &partitions {
        let mut head = [0u8; 512];
        f.seek(SeekFrom::Start(p.offset)).map_err(|e| bad(e.to_string()))?;
        if f.read_exact(&mut head).is_err()
            || head[510..] != [0x55, 0xAA]
            || !(head[0] == 0xEB || head[0] == 0xE9)
        {
            continue;
        }
        let mut data = vec![0u8; p.size as usize];
        f.seek(SeekFrom::Start(p.offset)).map_err(|e| bad(e.to_string()))?;
        f.read_exact(&mut data).map_err(|e| bad(format!("partition {}: {e}", p.number)))?;
        let (label, files) = fat::list(Cursor::new(data))
            .map_err(|e| bad(format!("partition {} FAT: {e}", p.number)))?;
        filesystems.push(FatListing { partition: p.number, label, files });
    }
    Ok(Report { size, disk_guid, partitions, mbr: mbr_entries, filesystems })
}

/// The human-readable table.
pub fn render(r: &Report) -> String {
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let mut out = format!("disk: {:.1} MiB, GUID {}\n", mib(r.size), r.disk_guid);
    out.push_str(&format!(
        "{:>2}  {:<8} {:>10} {:>10}  {:<36}  {}\n",
        "#", "name", "start MiB", "size MiB", "type", "guid"
    ));
    for p in &r.partitions {
        out.push_str(&format!(
            "{:>2}  {:<8} {:>10.1} {:>10.1}  {:<36}  {}{}\n",
            p.number,
            p.name,
            mib(p.offset),
            mib(p.size),
            p.type_guid,
            p.guid,
            if p.attrs & table::ATTR_LEGACY_BOOTABLE != 0 { "  legacy-bootable" } else { "" }
        ));
    }
    out.push_str("MBR:\n");
    for e in &r.mbr {
        out.push_str(&format!(
            "  {}: type {:#04x}{} start {} sectors {}\n",
            e.index,
            e.kind,
            if e.active { " active" } else { "" },
            e.first_lba,
            e.sectors
        ));
    }
    for fs in &r.filesystems {
        out.push_str(&format!("partition {} FAT \"{}\":\n", fs.partition, fs.label));
        for f in &fs.files {
            out.push_str(&format!("  {:>10}  {}\n", f.size, f.path));
        }
    }
    out
}
