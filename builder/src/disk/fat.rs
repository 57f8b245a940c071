//! FAT file systems (the boot FAT32 and the small CONFIG FAT), built in memory with the `fatfs` crate.
//!
//! `fatfs` 0.3.6 writes two things in sub-directories that `fsck.fat -n` rejects: long-name entries in
//! front of the `.` and `..` entries, and a `..` entry that points at cluster 2 (the FAT32 root) where
//! the specification wants 0. [`fix_directories`] repairs both after the crate has written the volume,
//! walking the directory tree with a small raw reader; files in the root (the usual boot FAT) need no
//! repair. Every FAT we write is checked with `fsck.fat -n` in `tests/image_live.rs`.

use std::cell::RefCell;
use std::io::{Read, Seek, SeekFrom, Write};
use std::rc::Rc;

use fatfs::{
    Date, DateTime, FatType, FileSystem, FormatVolumeOptions, FsOptions, Time, TimeProvider,
};

use super::source::Shared;

#[derive(Debug, thiserror::Error)]
pub enum FatError {
    #[error("FAT {label}: {what}")]
    Io { label: String, what: String, source: std::io::Error },
    #[error("FAT {label}: the files need {need} bytes but the partition holds {have}; raise its size in `partitions:`")]
    Full { label: String, need: u64, have: u64 },
    #[error("FAT {label}: `{name}` is not a usable file name")]
    BadName { label: String, name: String },
}

/// How to format a volume.
#[derive(Debug, Clone)]
pub struct Spec<'a> {
    /// Volume label (at most 11 characters, upper-cased).
    pub label: &'a str,
    pub size: u64,
    pub fat32: bool,
    pub volume_id: u32,
    /// Time stamp for every entry: `SOURCE_DATE_EPOCH`.
    pub epoch: u64,
}

/// One file to put on the volume; `path` may contain `/` for sub-directories.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub path: &'a str,
    pub source: &'a Shared,
}

/// A run of file content at an offset of the volume.
#[derive(Debug, Clone)]
pub struct Extent {
    pub offset: u64,
    pub source: Shared,
    pub source_offset: u64,
    pub len: u64,
}

/// A built volume: its metadata (boot sectors, FATs, directories) as byte runs, and where each file's
/// content goes. Everything else is zero.
#[derive(Debug, Clone)]
pub struct Volume {
    pub size: u64,
    pub meta: Vec<(u64, Vec<u8>)>,
    pub extents: Vec<Extent>,
    /// What a copy onto a used card must write ([`mapped_ranges`]): `meta` and `extents` leave out
    /// zero sectors of the FATs and of directories, which must overwrite whatever the card held.
    pub mapped: Vec<std::ops::Range<u64>>,
}

impl Volume {
    /// The whole volume in memory (tests, small volumes).
    pub fn to_bytes(&self) -> std::io::Result<Vec<u8>> {
        let mut v = vec![0u8; self.size as usize];
        for (off, data) in &self.meta {
            v[*off as usize..*off as usize + data.len()].copy_from_slice(data);
        }
        for e in &self.extents {
            let mut w =
                std::io::Cursor::new(&mut v[e.offset as usize..(e.offset + e.len) as usize]);
            e.source.copy_range(e.source_offset, e.len, &mut w)?;
        }
        Ok(v)
    }
}

/// A fixed time for every directory entry, so that images are reproducible.
#[derive(Debug)]
struct FixedTime(DateTime);

impl TimeProvider for FixedTime {
    fn get_current_date(&self) -> Date {
        self.0.date
    }
    fn get_current_date_time(&self) -> DateTime {
        self.0
    }
}

/// Converts Unix seconds to a FAT time stamp (UTC), clamped to FAT's 1980..=2107 range.
pub fn dos_time(epoch: u64) -> DateTime {
    const MIN: u64 = 315_532_800; // 1980-01-01
    let t = epoch.max(MIN);
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u16;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u16;
    let year = (yoe + era * 400 + i64::from(month <= 2)).min(2107) as u16;
    DateTime {
        date: Date { year, month, day },
        time: Time {
            hour: (secs / 3600) as u16,
            min: (secs / 60 % 60) as u16,
            sec: (secs % 60) as u16,
            millis: 0,
        },
    }
}

fn label_bytes(label: &str) -> [u8; 11] {
    let mut out = [b' '; 11];
    for (o, c) in out.iter_mut().zip(label.bytes().map(|b| b.to_ascii_uppercase())) {
        *o = c;
    }
    out
}

/// Page size of the metadata store: one sector, so that metadata pages never share bytes with file
/// content (clusters are whole sectors).
const PAGE: usize = 512;
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// Where file-content writes go while a file is being written: recorded, not stored.
#[derive(Debug, Default)]
struct Capture {
    active: bool,
    data_offset: u64,
    runs: Vec<(u64, u64)>,
}

/// The storage fatfs writes to: sector-sized pages, materialised only when something non-zero lands in them.
/// While [`Capture::active`], writes into the data region (file content, which we write as zeros)
/// are recorded as runs instead; the content is copied from its [`Source`](super::source::Source)
/// at output time, so it never passes through memory here.
#[derive(Debug)]
struct Pages {
    len: u64,
    pos: u64,
    pages: Vec<Option<Box<[u8; PAGE]>>>,
    capture: Rc<RefCell<Capture>>,
}

impl Pages {
    fn new(len: u64) -> Pages {
        Pages {
            len,
            pos: 0,
            pages: (0..len.div_ceil(PAGE as u64)).map(|_| None).collect(),
            capture: Rc::default(),
        }
    }
}

impl Medium for Pages {
    fn len(&self) -> usize {
        self.len as usize
    }
    fn get(&self, off: usize, out: &mut [u8]) {
        let mut done = 0;
        while done < out.len() {
            let p = (off + done) / PAGE;
            let o = (off + done) % PAGE;
            let n = (PAGE - o).min(out.len() - done);
            match &self.pages[p] {
                Some(page) => out[done..done + n].copy_from_slice(&page[o..o + n]),
                None => out[done..done + n].fill(0),
            }
            done += n;
        }
    }
    fn put(&mut self, off: usize, data: &[u8]) {
        let mut done = 0;
        while done < data.len() {
            let p = (off + done) / PAGE;
            let o = (off + done) % PAGE;
            let n = (PAGE - o).min(data.len() - done);
            let piece = &data[done..done + n];
            match &mut self.pages[p] {
                Some(page) => page[o..o + n].copy_from_slice(piece),
                slot @ None => {
                    if piece.iter().any(|b| *b != 0) {
                        let mut page = Box::new([0u8; PAGE]);
                        page[o..o + n].copy_from_slice(piece);
                        *slot = Some(page);
                    }
                }
            }
            done += n;
        }
    }
}

impl Read for Pages {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        self.get(self.pos as usize, &mut buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for Pages {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let end = self.pos + buf.len() as u64;
        if end > self.len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "No space left on the volume",
            ));
        }
        let mut cap = self.capture.borrow_mut();
        if cap.active && self.pos >= cap.data_offset {
            match cap.runs.last_mut() {
                Some((start, len)) if *start + *len == self.pos => *len += buf.len() as u64,
                _ => cap.runs.push((self.pos, buf.len() as u64)),
            }
        } else {
            drop(cap);
            self.put(self.pos as usize, buf);
        }
        self.pos = end;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Seek for Pages {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = super::seek_position(self.pos, self.len, to, "volume")?;
        Ok(self.pos)
    }
}

/// Formats a volume and lays out `files` in it.
pub fn build(spec: &Spec<'_>, files: &[Entry<'_>]) -> Result<Volume, FatError> {
    let label = spec.label.to_owned();
    let io = |what: String| {
        let label = label.clone();
        move |source| FatError::Io { label, what, source }
    };
    let payload: u64 = files.iter().map(|f| f.source.len()).sum();
    if payload > spec.size {
        return Err(FatError::Full { label: label.clone(), need: payload, have: spec.size });
    }
    let mut disk = Pages::new(spec.size);
    let capture = disk.capture.clone();
    let mut opts =
        FormatVolumeOptions::new().volume_id(spec.volume_id).volume_label(label_bytes(spec.label));
    if spec.fat32 {
        opts = opts.fat_type(FatType::Fat32);
    }
    fatfs::format_volume(&mut disk, opts).map_err(io("format".into()))?;
    disk.seek(SeekFrom::Start(0)).map_err(io("seek".into()))?;
    capture.borrow_mut().data_offset =
        geometry(&disk).map_err(io("read back the boot sector".into()))?.data_offset as u64;

    // TimeProvider must be 'static in fatfs 0.3; one small leak per volume built.
    let clock: &'static FixedTime = Box::leak(Box::new(FixedTime(dos_time(spec.epoch))));
    let mut extents = Vec::new();
    {
        let fs = FileSystem::new(
            &mut disk,
            FsOptions::new().time_provider(clock).update_accessed_date(false),
        )
        .map_err(io("mount".into()))?;
        for f in files {
            let path = f.path.trim_start_matches('/');
            if path.is_empty() || path.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
                return Err(FatError::BadName { label: label.clone(), name: f.path.to_owned() });
            }
            let root = fs.root_dir();
            let (dir, name) = match path.rsplit_once('/') {
                Some((d, n)) => {
                    let mut cur = root;
                    for part in d.split('/') {
                        cur = cur
                            .create_dir(part)
                            .map_err(|e| full_or(e, &label, payload, spec.size, d))?;
                    }
                    (cur, n)
                }
                None => (root, path),
            };
            let mut file =
                dir.create_file(name).map_err(|e| full_or(e, &label, payload, spec.size, path))?;
            file.truncate().map_err(io(format!("truncate {path}")))?;
            // Write zeros of the right length: fatfs allocates the clusters and chains them; the
            // runs it writes to are recorded and later filled from the source.
            capture.borrow_mut().active = true;
            let mut left = f.source.len();
            let mut result = Ok(());
            while left > 0 && result.is_ok() {
                let n = left.min(ZEROS.len() as u64) as usize;
                result = file.write_all(&ZEROS[..n]);
                left -= n as u64;
            }
            let runs = {
                let mut c = capture.borrow_mut();
                c.active = false;
                std::mem::take(&mut c.runs)
            };
            result.map_err(|e| full_or(e, &label, payload, spec.size, path))?;
            let mut at = 0;
            for (offset, len) in runs {
                extents.push(Extent { offset, source: f.source.clone(), source_offset: at, len });
                at += len;
            }
            file.flush().map_err(io(format!("close {path}")))?;
        }
        fs.unmount().map_err(io("unmount".into()))?;
    }
    fix_directories(&mut disk).map_err(io("repair folders".into()))?;

    // Coalesce the materialised pages into runs.
    let mut meta: Vec<(u64, Vec<u8>)> = Vec::new();
    for (i, page) in disk.pages.iter().enumerate() {
        if let Some(page) = page {
            let off = (i * PAGE) as u64;
            let n = (spec.size - off).min(PAGE as u64) as usize;
            match meta.last_mut() {
                Some((start, data)) if *start + data.len() as u64 == off => {
                    data.extend_from_slice(&page[..n])
                }
                _ => meta.push((off, page[..n].to_vec())),
            }
        }
    }
    let mapped = mapped_ranges(&disk).map_err(io("read back the FAT".into()))?;
    Ok(Volume { size: spec.size, meta, extents, mapped })
}

/// The byte ranges of a volume that hold its state: everything before the data region (reserved
/// sectors, every FAT in full, the FAT12/16 root directory) and every allocated cluster in full.
/// A free FAT entry or a directory's tail is zero in the image and must be zero on the card too, or
/// a stale byte there reads as a bogus cluster chain or file, so those are mapped even when zero.
pub fn mapped_ranges(m: &impl Medium) -> std::io::Result<Vec<std::ops::Range<u64>>> {
    let g = geometry(m)?;
    let mut out = Vec::new();
    out.push(0..g.data_offset as u64);
    for c in 2..g.clusters as u32 + 2 {
        if g.entry(m, c) != 0 {
            let start = (g.data_offset + (c as usize - 2) * g.cluster_bytes) as u64;
            match out.last_mut() {
                Some(last) if last.end == start => last.end += g.cluster_bytes as u64,
                _ => out.push(start..start + g.cluster_bytes as u64),
            }
        }
    }
    Ok(out)
}

fn full_or(e: std::io::Error, label: &str, need: u64, have: u64, path: &str) -> FatError {
    if e.to_string().to_ascii_lowercase().contains("no space")
        || e.kind() == std::io::ErrorKind::WriteZero
    {
        FatError::Full { label: label.to_owned(), need, have }
    } else {
        FatError::Io { label: label.to_owned(), what: format!("write {path}"), source: e }
    }
}

/// Byte-addressed access to a volume, in memory or paged.
pub trait Medium {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn get(&self, off: usize, out: &mut [u8]);
    fn put(&mut self, off: usize, data: &[u8]);
    fn bytes(&self, off: usize, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.get(off, &mut v);
        v
    }
}

impl Medium for Vec<u8> {
    fn len(&self) -> usize {
        self.as_slice().len()
    }
    fn get(&self, off: usize, out: &mut [u8]) {
        out.copy_from_slice(&self[off..off + out.len()]);
    }
    fn put(&mut self, off: usize, data: &[u8]) {
        self[off..off + data.len()].copy_from_slice(data);
    }
}

/// Geometry read from a boot sector, enough to walk directories.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    cluster_bytes: usize,
    fat_offset: usize,
    /// FAT12 = 12, FAT16 = 16, FAT32 = 32.
    bits: u32,
    /// FAT12/16: the fixed root directory region.
    root_offset: usize,
    root_bytes: usize,
    /// FAT32: the root directory's first cluster.
    root_cluster: u32,
    data_offset: usize,
    /// Data clusters, numbered from 2.
    clusters: usize,
}

fn geometry(m: &impl Medium) -> std::io::Result<Geometry> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not a FAT boot sector");
    if m.len() < 512 {
        return Err(bad());
    }
    let v = m.bytes(0, 512);
    if v[510..512] != [0x55, 0xAA] {
        return Err(bad());
    }
    let le16 = |o: usize| u16::from_le_bytes([v[o], v[o + 1]]) as usize;
    let le32 = |o: usize| u32::from_le_bytes(v[o..o + 4].try_into().expect("4 bytes")) as usize;
    let bps = le16(11);
    let spc = v[13] as usize;
    let reserved = le16(14);
    let fats = v[16] as usize;
    let root_entries = le16(17);
    let total = if le16(19) != 0 { le16(19) } else { le32(32) };
    let fat_sectors = if le16(22) != 0 { le16(22) } else { le32(36) };
    if bps == 0 || spc == 0 {
        return Err(bad());
    }
    let root_sectors = (root_entries * 32).div_ceil(bps);
    let data_sector = reserved + fats * fat_sectors + root_sectors;
    let clusters = total.saturating_sub(data_sector) / spc;
    let bits = if clusters < 4085 {
        12
    } else if clusters < 65525 {
        16
    } else {
        32
    };
    Ok(Geometry {
        cluster_bytes: bps * spc,
        fat_offset: reserved * bps,
        bits,
        root_offset: (reserved + fats * fat_sectors) * bps,
        root_bytes: root_entries * 32,
        root_cluster: if bits == 32 { le32(44) as u32 } else { 0 },
        data_offset: data_sector * bps,
        clusters,
    })
}

impl Geometry {
    /// Cluster `c`'s FAT entry: 0 when free.
    fn entry(&self, m: &impl Medium, c: u32) -> u32 {
        let c = c as usize;
        match self.bits {
            12 => {
                let b = m.bytes(self.fat_offset + c + c / 2, 2);
                let w = u16::from_le_bytes([b[0], b[1]]);
                u32::from(if c.is_multiple_of(2) { w & 0xFFF } else { w >> 4 })
            }
            16 => {
                let b = m.bytes(self.fat_offset + 2 * c, 2);
                u32::from(u16::from_le_bytes([b[0], b[1]]))
            }
            _ => {
                let b = m.bytes(self.fat_offset + 4 * c, 4);
                u32::from_le_bytes(b.try_into().expect("4 bytes")) & 0x0FFF_FFFF
            }
        }
    }

    fn next(&self, m: &impl Medium, c: u32) -> Option<u32> {
        let n = self.entry(m, c);
        let end = match self.bits {
            12 => 0xFF8,
            16 => 0xFFF8,
            _ => 0x0FFF_FFF8,
        };
        (n >= 2 && n < end).then_some(n)
    }

    /// Byte ranges of a cluster chain.
    fn chain(&self, m: &impl Medium, first: u32) -> Vec<std::ops::Range<usize>> {
        let mut out = Vec::new();
        let mut c = Some(first);
        while let Some(cl) = c {
            let start = self.data_offset + (cl as usize - 2) * self.cluster_bytes;
            out.push(start..start + self.cluster_bytes);
            if out.len() > m.len() / self.cluster_bytes {
                break; // a loop in the FAT; never produced by fatfs, but do not spin
            }
            c = self.next(m, cl);
        }
        out
    }
}

const ATTR_LFN: u8 = 0x0F;
const ATTR_DIR: u8 = 0x10;

fn entries(m: &impl Medium, ranges: &[std::ops::Range<usize>]) -> Vec<[u8; 32]> {
    let mut out = Vec::new();
    for r in ranges {
        let v = m.bytes(r.start, r.len());
        for e in v.chunks_exact(32) {
            if e[0] == 0 {
                return out;
            }
            out.push(e.try_into().expect("32 bytes"));
        }
    }
    out
}

fn first_cluster(e: &[u8; 32]) -> u32 {
    (u32::from(u16::from_le_bytes([e[20], e[21]])) << 16)
        | u32::from(u16::from_le_bytes([e[26], e[27]]))
}

fn is_dot(e: &[u8; 32]) -> bool {
    e[0..11] == *b".          " || e[0..11] == *b"..         "
}

/// Repairs what fatfs writes into sub-directories (see the module comment). Idempotent.
pub fn fix_directories(v: &mut impl Medium) -> std::io::Result<()> {
    let g = geometry(v)?;
    let root = if g.bits == 32 {
        g.chain(v, g.root_cluster)
    } else {
        std::iter::once(g.root_offset..g.root_offset + g.root_bytes).collect()
    };
    let mut todo: Vec<(Vec<std::ops::Range<usize>>, bool)> = vec![(root, true)];
    while let Some((ranges, is_root)) = todo.pop() {
        let mut list = entries(v, &ranges);
        if !is_root {
            // Drop the long-name entries in front of `.` and `..` and point a root `..` at cluster 0.
            let mut fixed: Vec<[u8; 32]> = Vec::with_capacity(list.len());
            let mut pending: Vec<[u8; 32]> = Vec::new();
            for e in list {
                if e[11] == ATTR_LFN && e[0] != 0xE5 {
                    pending.push(e);
                    continue;
                }
                if !is_dot(&e) {
                    fixed.append(&mut pending);
                }
                pending.clear();
                fixed.push(e);
            }
            list = fixed;
            if let Some(dotdot) = list.iter_mut().find(|e| e[0..11] == *b"..         ") {
                let parent = first_cluster(dotdot);
                if parent == g.root_cluster && g.bits == 32 {
                    dotdot[20..22].fill(0);
                    dotdot[26..28].fill(0);
                }
            }
            let mut bytes: Vec<u8> = list.iter().flatten().copied().collect();
            for r in &ranges {
                let n = r.len().min(bytes.len());
                let mut cluster = vec![0u8; r.len()];
                cluster[..n].copy_from_slice(&bytes[..n]);
                v.put(r.start, &cluster);
                bytes.drain(..n);
            }
        }
        for e in &list {
            if e[0] != 0xE5 && e[11] != ATTR_LFN && e[11] & ATTR_DIR != 0 && !is_dot(e) {
                let c = first_cluster(e);
                if c >= 2 {
                    todo.push((g.chain(v, c), false));
                }
            }
        }
    }
    Ok(())
}

/// A file read back from a FAT volume (for `rpixen inspect` and tests).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listed {
    pub path: String,
    pub size: u64,
}

/// Lists every file on a FAT volume, using the same crate that wrote it.
pub fn list<T: Read + Write + Seek>(volume: T) -> std::io::Result<(String, Vec<Listed>)> {
    let fs = FileSystem::new(volume, FsOptions::new())?;
    let label = fs.volume_label().trim_end().to_owned();
    let mut out = Vec::new();
    let mut todo = vec![(String::new(), fs.root_dir())];
    while let Some((prefix, dir)) = todo.pop() {
        for e in dir.iter() {
            let e = e?;
            let name = e.file_name();
            if name == "." || name == ".." {
                continue;
            }
            let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
            if e.is_dir() {
                todo.push((path, e.to_dir()));
            } else {
                out.push(Listed { path, size: e.len() });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((label, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::source::Source;
    use std::io::Cursor;

    #[test]
    fn dos_time_converts_civil_dates() {
        let t = dos_time(1_700_000_000); // 2023-11-14 22:13:20 UTC
        assert_eq!((t.date.year, t.date.month, t.date.day), (2023, 11, 14));
        assert_eq!((t.time.hour, t.time.min, t.time.sec), (22, 13, 20));
        assert_eq!(dos_time(0).date.year, 1980);
        let leap = dos_time(951_782_400); // 2000-02-29
        assert_eq!((leap.date.month, leap.date.day), (2, 29));
    }

    #[test]
    fn build_and_list_round_trip() {
        let spec = Spec {
            label: "boot",
            size: 64 << 20,
            fat32: true,
            volume_id: 0x1234_5678,
            epoch: 1_700_000_000,
        };
        let src = |v: Vec<u8>| std::sync::Arc::new(Source::Memory(v));
        let (a, b, c) =
            (src(b"arm_64bit=1\n".to_vec()), src(b"x".to_vec()), src(vec![7u8; 3 << 20]));
        let files = [
            Entry { path: "config.txt", source: &a },
            Entry { path: "overlays/a.dtbo", source: &b },
            Entry { path: "Image", source: &c },
        ];
        let v = build(&spec, &files).unwrap().to_bytes().unwrap();
        let (label, listed) = list(Cursor::new(v.clone())).unwrap();
        assert_eq!(label, "BOOT");
        let names: Vec<_> = listed.iter().map(|l| (l.path.as_str(), l.size)).collect();
        assert_eq!(names, [("Image", 3 << 20), ("config.txt", 12), ("overlays/a.dtbo", 1)]);
        // Same input, same bytes.
        assert_eq!(v, build(&spec, &files).unwrap().to_bytes().unwrap());
    }

    #[test]
    fn mapped_ranges_cover_metadata_and_used_clusters_only() {
        for fat32 in [true, false] {
            let size = if fat32 { 64 << 20 } else { 8 << 20 };
            let spec = Spec { label: "V", size, fat32, volume_id: 7, epoch: 1_700_000_000 };
            let a = std::sync::Arc::new(Source::Memory(vec![9u8; 100_000]));
            let b = std::sync::Arc::new(Source::Memory(b"x".to_vec()));
            let vol = build(
                &spec,
                &[Entry { path: "a.bin", source: &a }, Entry { path: "d/e/b", source: &b }],
            )
            .unwrap();
            let inside = |o: u64, n: u64| vol.mapped.iter().any(|r| r.start <= o && o + n <= r.end);
            for (o, d) in &vol.meta {
                assert!(inside(*o, d.len() as u64), "metadata at {o} not mapped");
            }
            for e in &vol.extents {
                assert!(inside(e.offset, e.len), "file content at {} not mapped", e.offset);
            }
            let g = geometry(&vol.to_bytes().unwrap()).unwrap();
            let first = &vol.mapped[0];
            assert!(first.start == 0 && first.end >= g.data_offset as u64, "every FAT in full");
            let total: u64 = vol.mapped.iter().map(|r| r.end - r.start).sum();
            // a.bin's clusters, b's, and three directory clusters (root on FAT32, d, e).
            let dirs = if fat32 { 3 } else { 2 };
            let clusters = 100_000u64.div_ceil(g.cluster_bytes as u64) + 1 + dirs;
            assert_eq!(total, g.data_offset as u64 + clusters * g.cluster_bytes as u64);
            assert!(vol.mapped.windows(2).all(|w| w[0].end < w[1].start), "sorted, merged");
        }
    }

    #[test]
    fn too_small_is_a_named_error() {
        let spec = Spec { label: "CONFIG", size: 1 << 20, fat32: false, volume_id: 1, epoch: 0 };
        let big = std::sync::Arc::new(Source::Memory(vec![1u8; 2 << 20]));
        let err = build(&spec, &[Entry { path: "x", source: &big }]).unwrap_err().to_string();
        assert!(err.contains("CONFIG") && err.contains("partitions"), "{err}");
    }
}
