//! Reading an image back (`rpixen inspect`): the GPT, the MBR entries and the files on each FAT
//! partition, through the same crates that wrote them.

use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

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
    /// The static DomUs the boot script describes (`/chosen/<name>` `xen,domain` nodes).
    pub domains: Vec<DomainListing>,
    /// The A/B slot-state record on the STATE partition, if the disk has one.
    pub state: Option<StateListing>,
}

/// The STATE partition's two copies and what `boot.scr` makes of them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StateListing {
    pub partition: u32,
    /// Each copy: `seq N: a=STATE b=STATE`, or why it is not a valid record.
    pub copies: Vec<String>,
    /// The newest valid copy's slot states (`None`: no valid copy).
    pub a: Option<String>,
    pub b: Option<String>,
    pub seq: Option<u32>,
    /// The slot `boot.scr` boots next, and the one it falls back to.
    pub boots: String,
    pub then: String,
    /// Whether that boot spends a trial (the slot is `updating`).
    pub trial: bool,
}

/// Reads the state from the STATE partition's bytes (at least its two copies).
pub fn state_listing(partition: u32, bytes: &[u8]) -> StateListing {
    use rpixen_slot_state::machine::{boot_choice, Copies};
    use rpixen_slot_state::record::{Record, RecordError, RECORD_LEN};
    let copy = |i: usize| -> Result<Record, RecordError> {
        let at = i * rpixen_slot_state::COPY_STRIDE_BYTES as usize;
        let sector: [u8; RECORD_LEN] = bytes
            .get(at..at + RECORD_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(RecordError::NotText)?;
        Record::decode(&sector)
    };
    let copies = Copies([copy(0), copy(1)]);
    let newest = copies.newest().map(|(_, r)| r);
    let choice = boot_choice(&copies);
    StateListing {
        partition,
        copies: copies
            .0
            .iter()
            .map(|c| match c {
                Ok(r) => format!("seq {}: a={} b={}", r.seq, r.a, r.b),
                Err(e) => format!("invalid: {e}"),
            })
            .collect(),
        a: newest.map(|r| r.a.to_string()),
        b: newest.map(|r| r.b.to_string()),
        seq: newest.map(|r| r.seq),
        boots: choice.slot.to_string(),
        then: choice.then.to_string(),
        trial: choice.write.is_some(),
    }
}

/// One DomU as the image's second-stage boot script writes its node.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DomainListing {
    pub name: String,
    /// Guest RAM in KiB (the node's `memory`).
    pub memory_kib: u64,
    pub cpus: u32,
    pub vpl011: bool,
    /// `(base, size)` of `xen,static-mem`.
    pub static_mem: Option<(u64, u64)>,
    pub bootargs: String,
    /// The boot-FAT files loaded as its modules, kernel first.
    pub files: Vec<String>,
}

/// Numbers inside `<...>`.
fn cells(line: &str) -> Vec<u64> {
    let inner = line.rsplit_once('<').and_then(|(_, r)| r.split_once('>')).map(|(c, _)| c);
    inner
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|c| match c.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => c.parse().ok(),
        })
        .collect()
}

/// The domains a second-stage script describes: its `xen,domain` nodes, and for each module node the
/// file the script loaded at that module's address.
pub fn domains_from_script(text: &str) -> Vec<DomainListing> {
    let mut files_at: Vec<(u64, String)> = Vec::new();
    let mut addr = None;
    let mut out: Vec<DomainListing> = Vec::new();
    for line in text.lines() {
        if let Some(a) = line.strip_prefix("setenv rpixen_addr 0x") {
            addr = u64::from_str_radix(a.trim(), 16).ok();
        } else if let (Some(f), Some(a)) = (line.strip_prefix("setenv rpixen_file "), addr) {
            files_at.push((a, f.trim().to_owned()));
        }
        let Some(rest) = line.strip_prefix("fdt set /chosen/") else { continue };
        let Some((path, prop)) = rest.split_once(' ') else { continue };
        let (name, module) = match path.split_once('/') {
            Some((n, m)) => (n, Some(m)),
            None => (path, None),
        };
        if module.is_none() && prop == "compatible \"xen,domain\"" {
            out.push(DomainListing { name: name.to_owned(), ..Default::default() });
            continue;
        }
        let Some(d) = out.iter_mut().rev().find(|d| d.name == name) else { continue };
        match module {
            None if prop.starts_with("memory ") => {
                d.memory_kib = cells(prop).iter().fold(0, |acc, c| (acc << 32) | c)
            }
            None if prop.starts_with("cpus ") => {
                d.cpus = cells(prop).first().copied().unwrap_or(0) as u32
            }
            None if prop.starts_with("vpl011") => d.vpl011 = true,
            None if prop.starts_with("xen,static-mem ") => {
                let c = cells(prop);
                if c.len() == 4 {
                    d.static_mem = Some(((c[0] << 32) | c[1], (c[2] << 32) | c[3]));
                }
            }
            Some(_) if prop.starts_with("bootargs ") => {
                d.bootargs = prop["bootargs ".len()..].trim_matches('"').to_owned();
            }
            Some(m) if prop.starts_with("compatible ") => {
                let at = m.strip_prefix("module@").and_then(|a| u64::from_str_radix(a, 16).ok());
                if let Some((_, f)) = files_at.iter().find(|(a, _)| Some(*a) == at) {
                    d.files.push(f.clone());
                }
            }
            _ => {}
        }
    }
    // The script makes the nodes last to first (`fdt mknod` inserts before older siblings): reversed,
    // this is the device tree's order, the one Xen numbers d1, d2, ... by.
    out.reverse();
    out
}

/// The second-stage script's text from a boot FAT, if it has one.
fn second_stage_text(fat: &[u8]) -> Option<String> {
    let fs = fatfs::FileSystem::new(Cursor::new(fat.to_vec()), fatfs::FsOptions::new()).ok()?;
    let mut file = fs.root_dir().open_file(crate::uboot::bootscript::SECOND_STAGE).ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    // A legacy script image: the 64-byte header, then the length table ending in a zero word.
    let mut at = 64;
    while bytes.get(at..at + 4)? != [0, 0, 0, 0] {
        at += 4;
    }
    Some(String::from_utf8_lossy(&bytes[at + 4..]).into_owned())
}

/// What went wrong reading an image back; each names the image and the part of it at fault.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot read the MBR")]
    Mbr {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot read the partition table")]
    Table {
        path: PathBuf,
        #[source]
        source: table::TableError,
    },
    #[error("{path}: cannot read partition {number}")]
    Partition {
        path: PathBuf,
        number: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: partition {number}: the FAT")]
    Fat {
        path: PathBuf,
        number: u32,
        #[source]
        source: std::io::Error,
    },
}

pub fn inspect(path: &Path) -> Result<Report, InspectError> {
    let read = |source| InspectError::Read { path: path.to_owned(), source };
    let mut f = std::fs::File::open(path).map_err(read)?;
    let size = f.metadata().map_err(read)?.len();
    let mut mbr = [0u8; 512];
    f.read_exact(&mut mbr).map_err(|source| InspectError::Mbr { path: path.to_owned(), source })?;
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
    let (disk_guid, partitions) = table::read(path)
        .map_err(|source| InspectError::Table { path: path.to_owned(), source })?;
    let mut filesystems = Vec::new();
    let mut domains = Vec::new();
    let mut state = None;
    for p in &partitions {
        if p.name == rpixen_slot_state::PARTITION_NAME {
            let len = p.size.min(rpixen_slot_state::PARTITION_BYTES) as usize;
            let mut bytes = vec![0u8; len];
            let partition = |source| InspectError::Partition {
                path: path.to_owned(),
                number: p.number,
                source,
            };
            f.seek(SeekFrom::Start(p.offset)).map_err(partition)?;
            f.read_exact(&mut bytes).map_err(partition)?;
            state = Some(state_listing(p.number, &bytes));
            continue;
        }
        let mut head = [0u8; 512];
        let partition =
            |source| InspectError::Partition { path: path.to_owned(), number: p.number, source };
        f.seek(SeekFrom::Start(p.offset)).map_err(partition)?;
        if f.read_exact(&mut head).is_err()
            || head[510..] != [0x55, 0xAA]
            || !(head[0] == 0xEB || head[0] == 0xE9)
        {
            continue;
        }
        let mut data = vec![0u8; p.size as usize];
        f.seek(SeekFrom::Start(p.offset)).map_err(partition)?;
        f.read_exact(&mut data).map_err(partition)?;
        if domains.is_empty() {
            if let Some(text) = second_stage_text(&data) {
                domains = domains_from_script(&text);
            }
        }
        let (label, files) = fat::list(Cursor::new(data)).map_err(|source| InspectError::Fat {
            path: path.to_owned(),
            number: p.number,
            source,
        })?;
        filesystems.push(FatListing { partition: p.number, label, files });
    }
    Ok(Report { size, disk_guid, partitions, mbr: mbr_entries, filesystems, domains, state })
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
    if let Some(st) = &r.state {
        out.push_str(&format!("slot state (partition {}):\n", st.partition));
        for (i, c) in st.copies.iter().enumerate() {
            out.push_str(&format!("  copy {i}: {c}\n"));
        }
        match (&st.a, &st.b) {
            (Some(a), Some(b)) => out.push_str(&format!("  slot a: {a}, slot b: {b}\n")),
            _ => out.push_str("  no valid copy\n"),
        }
        out.push_str(&format!(
            "  boot.scr boots slot {}{}, then slot {}\n",
            st.boots,
            if st.trial { " (its trial boot)" } else { "" },
            st.then
        ));
    }
    if !r.domains.is_empty() {
        out.push_str("domains (/chosen xen,domain nodes):\n");
        for d in &r.domains {
            out.push_str(&format!(
                "  {}: memory {} MiB, {} vCPU{}{}{}, files {}\n",
                d.name,
                d.memory_kib >> 10,
                d.cpus,
                if d.cpus == 1 { "" } else { "s" },
                if d.vpl011 { ", vpl011 console" } else { "" },
                d.static_mem
                    .map(|(b, s)| format!(", static memory {b:#x}+{:#x}", s))
                    .unwrap_or_default(),
                d.files.join(" "),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uboot::bootscript::{second_stage, DomainNode, DtbSource, SecondStage};
    use crate::uboot::load::{plan_with_domains, DomainSizes, Sizes, Window};

    #[test]
    fn domains_read_back_from_the_script() {
        let mib = 1 << 20;
        let (plan, loads) = plan_with_domains(
            Window::for_board(crate::manifest::BoardKind::QemuVirt),
            Sizes { hypervisor: mib, kernel: 30 * mib, initrd: mib },
            512 * mib,
            &[DomainSizes { kernel: 30 * mib, initrd: mib, kernel_of: None }; 2],
        )
        .unwrap();
        let node = |name, i: usize| DomainNode {
            name,
            load: loads[i],
            kernel_file: if i == 0 { "Image" } else { "domains/b/Image" },
            initrd_file: if i == 0 { "domains/a/initrd.img" } else { "domains/b/initrd.img" },
            bootargs: "console=ttyAMA0",
            memory: (128 + 128 * i as u64) * mib,
            cpus: 1 + i as u32,
            vpl011: i == 0,
            static_mem: (i == 1).then_some((0x6000_0000, 256 * mib)),
            passthrough: &[],
        };
        let text = second_stage(&SecondStage {
            plan,
            hypervisor_file: "xen",
            kernel_file: "Image",
            initrd_file: "initrd.img",
            dtb: DtbSource::Firmware,
            hypervisor_args: "",
            dom0_args: "",
            domains: vec![node("a", 0), node("b", 1)],
        });
        let got = domains_from_script(&text);
        assert_eq!(
            got,
            [
                DomainListing {
                    name: "a".into(),
                    memory_kib: 128 << 10,
                    cpus: 1,
                    vpl011: true,
                    static_mem: None,
                    bootargs: "console=ttyAMA0".into(),
                    files: vec!["Image".into(), "domains/a/initrd.img".into()],
                },
                DomainListing {
                    name: "b".into(),
                    memory_kib: 256 << 10,
                    cpus: 2,
                    vpl011: false,
                    static_mem: Some((0x6000_0000, 256 * mib)),
                    bootargs: "console=ttyAMA0".into(),
                    files: vec!["domains/b/Image".into(), "domains/b/initrd.img".into()],
                },
            ]
        );
    }
}
