//! GUID partition tables as first boot rewrites them: parsing and CRC-checking both copies, the new
//! table (fresh GUIDs, PERSIST to the end of the disk), and the decision of what to write so that a
//! power cut at any moment leaves at least one valid copy that the next boot completes from.
//!
//! Pure code (bytes in, bytes out); [`super::disk`] does the I/O. Hand-written rather than the `gpt`
//! crate the builder uses: PID 1 needs only these ~300 lines, must keep unknown entry fields and
//! bytes exactly, and must decide from two possibly inconsistent copies, which that crate does not
//! expose.

pub const SECTOR: u64 = 512;
const SIGNATURE: &[u8; 8] = b"EFI PART";
const REVISION_1_0: u32 = 0x0001_0000;
const HEADER_SIZE: u32 = 92;

/// EVE's PERSIST partition type, `5F24425A-2DFA-11E8-A270-7B663FACCC2C`, in GPT's on-disk byte order.
pub const TYPE_PERSIST: Guid =
    Guid(guid_bytes(0x5F24_425A, 0x2DFA, 0x11E8, [0xA2, 0x70, 0x7B, 0x66, 0x3F, 0xAC, 0xCC, 0x2C]));

/// Attribute bits 48-63 belong to the partition type; rpixen uses two on PERSIST to record first-boot
/// progress in the table itself, where it is CRC-checked and written with the table's two-copy order.
/// Bit 56: the disk and partitions have their own GUIDs and PERSIST reaches the end of the disk.
pub const ATTR_PERSONALIZED: u64 = 1 << 56;
/// Bit 57: PERSIST holds its filesystem (made on this device, or found there before first boot).
pub const ATTR_FS_READY: u64 = 1 << 57;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Guid(pub [u8; 16]);

const fn guid_bytes(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]
}

impl Guid {
    pub const ZERO: Guid = Guid([0; 16]);

    /// A version-4 (random) GUID from 16 random bytes, in on-disk (mixed-endian) order.
    pub fn random_v4(mut b: [u8; 16]) -> Guid {
        b[7] = (b[7] & 0x0F) | 0x40; // the version nibble is the top of field 3, stored little-endian
        b[8] = (b[8] & 0x3F) | 0x80; // RFC 4122 variant
        Guid(b)
    }

    /// The usual text form (`sgdisk` prints it in upper case).
    pub fn to_text(self) -> String {
        let b = self.0;
        format!(
            "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
            b[14], b[15]
        )
    }
}

/// IEEE CRC-32, as the GPT header and entry array carry it.
pub fn crc32(data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(data);
    h.finalize()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GptError {
    NoSignature,
    BadHeaderSize(u32),
    HeaderCrc { stored: u32, computed: u32 },
    NotAtItsLba { stored: u64, read_at: u64 },
    BadEntryArray(String),
    EntriesCrc { stored: u32, computed: u32 },
}

impl std::fmt::Display for GptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GptError::NoSignature => write!(f, "no \"EFI PART\" signature"),
            GptError::BadHeaderSize(s) => write!(f, "header size {s} is not 92..=512"),
            GptError::HeaderCrc { stored, computed } => {
                write!(f, "header CRC {stored:#010x} but the header sums to {computed:#010x}")
            }
            GptError::NotAtItsLba { stored, read_at } => {
                write!(f, "header says it is at LBA {stored} but was read at LBA {read_at}")
            }
            GptError::BadEntryArray(why) => write!(f, "partition entry array: {why}"),
            GptError::EntriesCrc { stored, computed } => {
                write!(f, "entry array CRC {stored:#010x} but the entries sum to {computed:#010x}")
            }
        }
    }
}

/// The header fields of one copy (where it is and where its entries are).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub my_lba: u64,
    pub alternate_lba: u64,
    pub first_usable: u64,
    pub last_usable: u64,
    pub disk_guid: Guid,
    pub entries_lba: u64,
    pub num_entries: u32,
    pub entry_size: u32,
    pub entries_crc: u32,
}

impl Header {
    /// Parses and CRC-checks the header sector read at `lba`.
    pub fn parse(sector: &[u8], lba: u64) -> Result<Header, GptError> {
        let u32_at = |o: usize| u32::from_le_bytes(sector[o..o + 4].try_into().unwrap_or([0; 4]));
        let u64_at = |o: usize| u64::from_le_bytes(sector[o..o + 8].try_into().unwrap_or([0; 8]));
        if sector.len() < SECTOR as usize || &sector[..8] != SIGNATURE {
            return Err(GptError::NoSignature);
        }
        let size = u32_at(12);
        if !(HEADER_SIZE..=SECTOR as u32).contains(&size) {
            return Err(GptError::BadHeaderSize(size));
        }
        let mut copy = sector[..size as usize].to_vec();
        copy[16..20].fill(0);
        let (stored, computed) = (u32_at(16), crc32(&copy));
        if stored != computed {
            return Err(GptError::HeaderCrc { stored, computed });
        }
        let my_lba = u64_at(24);
        if my_lba != lba {
            return Err(GptError::NotAtItsLba { stored: my_lba, read_at: lba });
        }
        let mut guid = [0u8; 16];
        guid.copy_from_slice(&sector[56..72]);
        let h = Header {
            my_lba,
            alternate_lba: u64_at(32),
            first_usable: u64_at(40),
            last_usable: u64_at(48),
            disk_guid: Guid(guid),
            entries_lba: u64_at(72),
            num_entries: u32_at(80),
            entry_size: u32_at(84),
            entries_crc: u32_at(88),
        };
        if h.entry_size < 128
            || !h.entry_size.is_multiple_of(8)
            || h.num_entries == 0
            || h.num_entries > 1024
        {
            return Err(GptError::BadEntryArray(format!(
                "{} entries of {} bytes",
                h.num_entries, h.entry_size
            )));
        }
        Ok(h)
    }

    pub fn entries_bytes(&self) -> u64 {
        self.num_entries as u64 * self.entry_size as u64
    }

    pub fn entries_sectors(&self) -> u64 {
        self.entries_bytes().div_ceil(SECTOR)
    }
}

/// What both copies of a GPT share: everything but the copy's own location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub disk_guid: Guid,
    pub first_usable: u64,
    pub last_usable: u64,
    pub num_entries: u32,
    pub entry_size: u32,
    /// The entry array as stored (`num_entries * entry_size` bytes), so unknown fields survive.
    pub entries: Vec<u8>,
}

/// One used entry, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub index: usize,
    pub type_guid: Guid,
    pub guid: Guid,
    pub first_lba: u64,
    pub last_lba: u64,
    pub attrs: u64,
    pub name: String,
}

impl Table {
    /// A copy from its header (already checked) and the bytes read at its entry LBA.
    pub fn from_copy(h: &Header, entries: &[u8]) -> Result<Table, GptError> {
        let n = h.entries_bytes() as usize;
        let Some(entries) = entries.get(..n) else {
            return Err(GptError::BadEntryArray(format!(
                "{} bytes read, {n} needed",
                entries.len()
            )));
        };
        let computed = crc32(entries);
        if computed != h.entries_crc {
            return Err(GptError::EntriesCrc { stored: h.entries_crc, computed });
        }
        Ok(Table {
            disk_guid: h.disk_guid,
            first_usable: h.first_usable,
            last_usable: h.last_usable,
            num_entries: h.num_entries,
            entry_size: h.entry_size,
            entries: entries.to_vec(),
        })
    }

    fn raw(&self, i: usize) -> &[u8] {
        let s = self.entry_size as usize;
        &self.entries[i * s..i * s + 128]
    }

    fn raw_mut(&mut self, i: usize) -> &mut [u8] {
        let s = self.entry_size as usize;
        &mut self.entries[i * s..i * s + 128]
    }

    /// The used entries (type GUID not zero), in table order.
    pub fn entries(&self) -> Vec<Entry> {
        (0..self.num_entries as usize)
            .filter_map(|i| {
                let r = self.raw(i);
                let g = |o: usize| {
                    let mut b = [0u8; 16];
                    b.copy_from_slice(&r[o..o + 16]);
                    Guid(b)
                };
                let u = |o: usize| u64::from_le_bytes(r[o..o + 8].try_into().unwrap_or([0; 8]));
                let type_guid = g(0);
                if type_guid == Guid::ZERO {
                    return None;
                }
                let units: Vec<u16> = r[56..128]
                    .chunks(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .take_while(|c| *c != 0)
                    .collect();
                Some(Entry {
                    index: i,
                    type_guid,
                    guid: g(16),
                    first_lba: u(32),
                    last_lba: u(40),
                    attrs: u(48),
                    name: String::from_utf16_lossy(&units),
                })
            })
            .collect()
    }

    /// The PERSIST entry: EVE's PERSIST type, as rpixen and EVE lay disks out.
    pub fn persist(&self) -> Option<Entry> {
        self.entries().into_iter().find(|e| e.type_guid == TYPE_PERSIST)
    }

    pub fn persist_attrs(&self) -> u64 {
        self.persist().map(|e| e.attrs).unwrap_or(0)
    }

    fn set_u64(&mut self, i: usize, offset: usize, v: u64) {
        self.raw_mut(i)[offset..offset + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// This table with PERSIST's attribute bits `bits` set.
    pub fn with_persist_attrs(&self, bits: u64) -> Table {
        let mut t = self.clone();
        if let Some(p) = self.persist() {
            t.set_u64(p.index, 48, p.attrs | bits);
        }
        t
    }

    /// The header sector and entry array of one copy on a disk of `disk_sectors`.
    pub fn encode(&self, which: Copy, disk_sectors: u64) -> EncodedCopy {
        let last = disk_sectors - 1;
        let entry_sectors = (self.entries.len() as u64).div_ceil(SECTOR);
        let (my_lba, alternate_lba, entries_lba) = match which {
            Copy::Primary => (1, last, 2),
            Copy::Backup => (last, 1, last - entry_sectors),
        };
        let mut h = vec![0u8; SECTOR as usize];
        h[..8].copy_from_slice(SIGNATURE);
        h[8..12].copy_from_slice(&REVISION_1_0.to_le_bytes());
        h[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&alternate_lba.to_le_bytes());
        h[40..48].copy_from_slice(&self.first_usable.to_le_bytes());
        h[48..56].copy_from_slice(&self.last_usable.to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.0);
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&self.num_entries.to_le_bytes());
        h[84..88].copy_from_slice(&self.entry_size.to_le_bytes());
        h[88..92].copy_from_slice(&crc32(&self.entries).to_le_bytes());
        let crc = crc32(&h[..HEADER_SIZE as usize]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        let mut entries = self.entries.clone();
        entries.resize((entry_sectors * SECTOR) as usize, 0);
        EncodedCopy { header_lba: my_lba, header: h, entries_lba, entries }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copy {
    Primary,
    Backup,
}

/// One copy as bytes to write: the entries first, then the header that vouches for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedCopy {
    pub header_lba: u64,
    pub header: Vec<u8>,
    pub entries_lba: u64,
    pub entries: Vec<u8>,
}

/// Sixteen random bytes per GUID the new table needs.
pub trait RandomSource {
    fn bytes16(&mut self) -> [u8; 16];
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    NoPersist,
    PersistNotLast { after: String },
    DiskTooSmall { needed: u64, have: u64 },
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlanError::NoPersist => {
                write!(f, "the GPT has no PERSIST partition (type {})", TYPE_PERSIST.to_text())
            }
            PlanError::PersistNotLast { after } => {
                write!(f, "PERSIST cannot grow: partition {after} lies after it")
            }
            PlanError::DiskTooSmall { needed, have } => {
                write!(f, "the disk has {have} sectors but its partitions need {needed}")
            }
        }
    }
}

/// The device's own table: new disk and partition GUIDs (type GUIDs, names, other attributes
/// kept), the usable area up to the backup at the end of a disk of `disk_sectors`, PERSIST grown
/// to its end and marked [`ATTR_PERSONALIZED`] (plus `extra_attrs`).
pub fn personalize(
    t: &Table,
    disk_sectors: u64,
    extra_attrs: u64,
    rng: &mut dyn RandomSource,
) -> Result<Table, PlanError> {
    let persist = t.persist().ok_or(PlanError::NoPersist)?;
    if let Some(after) =
        t.entries().into_iter().find(|e| e.index != persist.index && e.last_lba > persist.last_lba)
    {
        return Err(PlanError::PersistNotLast { after: after.name });
    }
    let entry_sectors = (t.entries.len() as u64).div_ceil(SECTOR);
    // The backup's entries and header take the last entry_sectors + 1 sectors.
    let last_usable = disk_sectors
        .checked_sub(entry_sectors + 2)
        .filter(|l| *l >= persist.first_lba)
        .ok_or(PlanError::DiskTooSmall {
            needed: persist.first_lba + entry_sectors + 2,
            have: disk_sectors,
        })?;
    let mut n = t.clone();
    n.disk_guid = Guid::random_v4(rng.bytes16());
    n.last_usable = last_usable;
    for e in t.entries() {
        let guid = Guid::random_v4(rng.bytes16());
        n.raw_mut(e.index)[16..32].copy_from_slice(&guid.0);
    }
    n.set_u64(persist.index, 40, last_usable);
    n.set_u64(persist.index, 48, persist.attrs | ATTR_PERSONALIZED | extra_attrs);
    Ok(n)
}

/// What one read of the disk found: each copy parsed and checked, or why not.
#[derive(Debug, Clone)]
pub struct Found {
    pub primary: Result<Table, GptError>,
    /// The copy at the last sector of the disk.
    pub backup: Result<Table, GptError>,
}

/// What to write next. Every write puts the backup at the end of the disk first, then the primary,
/// each as entries-then-header with a flush in between, so at every moment one copy is valid: the
/// old primary until the new backup is complete, then the new backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GptPlan {
    /// Both copies valid, equal, personalized.
    Done(Table),
    /// The table as found is the image's: write the device's own (backup, then primary).
    Personalize(Table),
    /// A valid backup at the end is newer than the primary (a write stopped between the two):
    /// copy it to the primary.
    FinishPrimary(Table),
    /// The primary is the device's but the end of the disk holds no valid backup (an older write
    /// never got there, or the card was copied to a larger one): write the backup.
    RepairBackup(Table),
    /// Neither copy is valid: nothing is written.
    Unusable(String),
}

/// Decides from what was found. A valid backup at the end of the disk is never older than the
/// primary, because every write does the backup first: when the two differ, the backup wins.
pub fn plan(found: &Found) -> GptPlan {
    let personalized = |t: &Table| t.persist_attrs() & ATTR_PERSONALIZED != 0;
    match (&found.primary, &found.backup) {
        (Ok(p), Ok(b)) if personalized(b) => {
            if p == b {
                GptPlan::Done(p.clone())
            } else {
                GptPlan::FinishPrimary(b.clone())
            }
        }
        (Ok(p), _) if personalized(p) => GptPlan::RepairBackup(p.clone()),
        (Ok(p), _) => GptPlan::Personalize(p.clone()),
        (Err(_), Ok(b)) if personalized(b) => GptPlan::FinishPrimary(b.clone()),
        (Err(_), Ok(b)) => GptPlan::Personalize(b.clone()),
        (Err(p), Err(b)) => GptPlan::Unusable(format!("primary GPT: {p}; backup GPT: {b}")),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub struct Counter(pub u8);
    impl RandomSource for Counter {
        fn bytes16(&mut self) -> [u8; 16] {
            self.0 += 1;
            [self.0; 16]
        }
    }

    pub fn entry(ty: Guid, guid: u8, first: u64, last: u64, attrs: u64, name: &str) -> Vec<u8> {
        let mut e = vec![0u8; 128];
        e[..16].copy_from_slice(&ty.0);
        e[16..32].fill(guid);
        e[32..40].copy_from_slice(&first.to_le_bytes());
        e[40..48].copy_from_slice(&last.to_le_bytes());
        e[48..56].copy_from_slice(&attrs.to_le_bytes());
        for (i, u) in name.encode_utf16().enumerate() {
            e[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
        }
        e
    }

    const TYPE_EFI: Guid = Guid(guid_bytes(
        0xC12A_7328,
        0xF81F,
        0x11D2,
        [0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B],
    ));

    /// An image's table: BOOT 2048..4095 (bootable attribute), PERSIST 4096..6143, on 8192 sectors.
    pub fn image_table() -> Table {
        let mut entries = entry(TYPE_EFI, 0xA1, 2048, 4095, 1 << 2, "BOOT");
        entries.extend(entry(TYPE_PERSIST, 0xA2, 4096, 6143, 0, "PERSIST"));
        entries.resize(128 * 128, 0);
        Table {
            disk_guid: Guid([0xD0; 16]),
            first_usable: 34,
            last_usable: 8192 - 34,
            num_entries: 128,
            entry_size: 128,
            entries,
        }
    }

    #[test]
    fn crc_is_ieee() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn type_guid_text() {
        assert_eq!(TYPE_PERSIST.to_text(), "5F24425A-2DFA-11E8-A270-7B663FACCC2C");
        let g = Guid::random_v4([0xFF; 16]);
        let text = g.to_text();
        assert_eq!(&text[14..15], "4", "version 4: {text}");
        assert_eq!(&text[19..20], "B", "variant 10xx: {text}");
    }

    #[test]
    fn copies_round_trip_and_point_at_each_other() {
        let t = image_table();
        for which in [Copy::Primary, Copy::Backup] {
            let c = t.encode(which, 8192);
            let h = Header::parse(&c.header, c.header_lba).unwrap();
            assert_eq!(Table::from_copy(&h, &c.entries).unwrap(), t);
            match which {
                Copy::Primary => {
                    assert_eq!((h.my_lba, h.alternate_lba, h.entries_lba), (1, 8191, 2))
                }
                Copy::Backup => {
                    assert_eq!((h.my_lba, h.alternate_lba, h.entries_lba), (8191, 1, 8191 - 32))
                }
            }
        }
    }

    #[test]
    fn damaged_copies_are_rejected_with_the_reason() {
        let t = image_table();
        let c = t.encode(Copy::Primary, 8192);
        let mut bad = c.header.clone();
        bad[50] ^= 1;
        assert!(matches!(Header::parse(&bad, 1), Err(GptError::HeaderCrc { .. })));
        assert_eq!(
            Header::parse(&c.header, 8191).unwrap_err(),
            GptError::NotAtItsLba { stored: 1, read_at: 8191 }
        );
        assert_eq!(Header::parse(&[0u8; 512], 1).unwrap_err(), GptError::NoSignature);
        let h = Header::parse(&c.header, 1).unwrap();
        let mut entries = c.entries.clone();
        entries[200] ^= 1;
        let err = Table::from_copy(&h, &entries).unwrap_err();
        assert!(matches!(err, GptError::EntriesCrc { .. }), "{err}");
        assert!(err.to_string().starts_with("entry array CRC"), "{err}");
    }

    #[test]
    fn personalize_renews_guids_keeps_the_rest_and_grows_persist() {
        let t = image_table();
        let disk = 4 * 8192;
        let n = personalize(&t, disk, 0, &mut Counter(0)).unwrap();
        assert_ne!(n.disk_guid, t.disk_guid);
        assert_eq!(n.last_usable, disk - 34);
        let (old, new) = (t.entries(), n.entries());
        assert_eq!(old.len(), new.len());
        for (o, e) in old.iter().zip(&new) {
            assert_ne!(o.guid, e.guid, "{}", e.name);
            assert_eq!((o.type_guid, &o.name, o.first_lba), (e.type_guid, &e.name, e.first_lba));
        }
        let guids: std::collections::BTreeSet<Guid> =
            new.iter().map(|e| e.guid).chain([n.disk_guid]).collect();
        assert_eq!(guids.len(), 3, "every GUID its own");
        assert_eq!(new[0].last_lba, 4095);
        assert_eq!(new[0].attrs, 1 << 2, "other attributes kept");
        assert_eq!(new[1].last_lba, disk - 34, "PERSIST reaches the last usable sector");
        assert_eq!(new[1].attrs, ATTR_PERSONALIZED);
        // The backup of the new table fits exactly at the end.
        let b = n.encode(Copy::Backup, disk);
        assert_eq!(b.entries_lba, n.last_usable + 1);
        assert_eq!(b.header_lba, disk - 1);
        // Same size disk: PERSIST keeps its end at the last usable sector; extra bits are set too.
        let same = personalize(&t, 8192, ATTR_FS_READY, &mut Counter(9)).unwrap();
        assert_eq!(same.persist().unwrap().last_lba, 8192 - 34);
        assert_eq!(same.persist_attrs(), ATTR_PERSONALIZED | ATTR_FS_READY);
    }

    #[test]
    fn personalize_refuses_what_it_cannot_do() {
        let mut t = image_table();
        t.entries[128..256].fill(0);
        assert_eq!(personalize(&t, 8192, 0, &mut Counter(0)), Err(PlanError::NoPersist));
        let mut t = image_table();
        t.entries[256..384].copy_from_slice(&entry(TYPE_EFI, 3, 6144, 7000, 0, "DATA"));
        assert_eq!(
            personalize(&t, 8192, 0, &mut Counter(0)).unwrap_err().to_string(),
            "PERSIST cannot grow: partition DATA lies after it"
        );
        assert!(matches!(
            personalize(&image_table(), 4000, 0, &mut Counter(0)),
            Err(PlanError::DiskTooSmall { .. })
        ));
    }

    #[test]
    fn plan_covers_every_state_a_power_cut_can_leave() {
        let image = image_table();
        let mine = personalize(&image, 8192, 0, &mut Counter(0)).unwrap();
        let mine_fs = mine.with_persist_attrs(ATTR_FS_READY);
        let bad = || Err(GptError::NoSignature);
        let f = |p: Result<Table, GptError>, b: Result<Table, GptError>| {
            plan(&Found { primary: p, backup: b })
        };
        // As flashed: the image's primary; its backup at the end (same-size disk) or none (larger).
        assert_eq!(f(Ok(image.clone()), Ok(image.clone())), GptPlan::Personalize(image.clone()));
        assert_eq!(f(Ok(image.clone()), bad()), GptPlan::Personalize(image.clone()));
        // Cut while writing the new backup: the old primary is still valid, so start over.
        // Cut after the backup, before or while writing the primary: finish from the backup.
        assert_eq!(f(Ok(image.clone()), Ok(mine.clone())), GptPlan::FinishPrimary(mine.clone()));
        assert_eq!(f(bad(), Ok(mine.clone())), GptPlan::FinishPrimary(mine.clone()));
        // Done; and the same for a later update (the filesystem bit) of a personalized table.
        assert_eq!(f(Ok(mine.clone()), Ok(mine.clone())), GptPlan::Done(mine.clone()));
        assert_eq!(
            f(Ok(mine.clone()), Ok(mine_fs.clone())),
            GptPlan::FinishPrimary(mine_fs.clone())
        );
        assert_eq!(f(Ok(mine.clone()), bad()), GptPlan::RepairBackup(mine.clone()));
        // The image's primary lost (only possible by damage): its backup is as good.
        assert_eq!(f(bad(), Ok(image.clone())), GptPlan::Personalize(image));
        assert!(matches!(f(bad(), bad()), GptPlan::Unusable(_)));
    }
}
