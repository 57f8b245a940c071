//! One copy of the slot state: a 512-byte sector of `key=value` text lines, the form U-Boot's
//! `env export -t` writes and `env import -t` reads, with a CRC-32 of the text in its last 4 bytes
//! (big-endian, as U-Boot's `crc32 ADDR LEN DEST` stores it). One sector, because a sector write is
//! the unit a disk completes or does not: a torn write damages one copy, never both.

use std::fmt;

/// Bytes of one copy: one sector.
pub const RECORD_LEN: usize = 512;
/// Bytes covered by the checksum; the CRC-32 follows them.
pub const BODY_LEN: usize = RECORD_LEN - 4;

/// One of the two slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// `a` or `b`: the name in the record's keys, the boot script and the kernel command line.
    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    /// The slot a name stands for (`a`/`b`, as the kernel command line's `rpixen.slot=` gives it).
    pub fn from_name(name: &str) -> Option<Slot> {
        match name {
            "a" => Some(Slot::A),
            "b" => Some(Slot::B),
            _ => None,
        }
    }

    /// The record's key for this slot's state.
    pub fn key(self) -> &'static str {
        match self {
            Slot::A => "rpixen_a",
            Slot::B => "rpixen_b",
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A slot's state, with EVE's names for its IMGA/IMGB partition states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlotState {
    /// The committed slot: booted unless a trial is due.
    Active,
    /// Written and verified, waiting for its one trial boot.
    Updating,
    /// Its trial boot has started (the boot script consumed `Updating`); committed or abandoned by Dom0.
    InProgress,
    /// Holds nothing to boot.
    Unused,
}

impl SlotState {
    pub const ALL: [SlotState; 4] =
        [SlotState::Active, SlotState::Updating, SlotState::InProgress, SlotState::Unused];

    pub fn name(self) -> &'static str {
        match self {
            SlotState::Active => "active",
            SlotState::Updating => "updating",
            SlotState::InProgress => "inprogress",
            SlotState::Unused => "unused",
        }
    }

    fn from_name(name: &str) -> Option<SlotState> {
        SlotState::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for SlotState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The sequence key: the copy with the larger number is the newer one.
pub const SEQ_KEY: &str = "rpixen_seq";

/// The whole state: both slots and a sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// Grows by one per write. U-Boot's `itest` compares it as a signed hex number, so it stays
    /// below 2^31 (a write a minute for four thousand years).
    pub seq: u32,
    pub a: SlotState,
    pub b: SlotState,
}

/// Why a copy is not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error(
        "checksum mismatch: the record says {stored:#010x}, its text hashes to {computed:#010x}"
    )]
    Checksum { stored: u32, computed: u32 },
    #[error("the record is not text")]
    NotText,
    #[error("line `{0}` is not key=value")]
    NotKeyValue(String),
    #[error("`{key}` appears twice")]
    Duplicate { key: String },
    #[error("`{0}` is missing")]
    Missing(&'static str),
    #[error("`{key}={value}`: {reason}")]
    BadValue { key: &'static str, value: String, reason: &'static str },
}

impl Record {
    /// The state `rpixen live` writes: slot A committed, B empty.
    pub fn fresh() -> Record {
        Record { seq: 1, a: SlotState::Active, b: SlotState::Unused }
    }

    pub fn state(&self, slot: Slot) -> SlotState {
        match slot {
            Slot::A => self.a,
            Slot::B => self.b,
        }
    }

    /// The same record with one slot's state changed and the sequence advanced.
    pub fn with(&self, slot: Slot, state: SlotState) -> Record {
        let mut next = Record { seq: self.seq + 1, ..*self };
        match slot {
            Slot::A => next.a = state,
            Slot::B => next.b = state,
        }
        next
    }

    /// The sector: the lines U-Boot's `env export -t` writes for these variables (sorted by name,
    /// numbers in lower-case hex as `setexpr` prints them), padded with newlines, then the CRC-32.
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let text = format!(
            "{}={}\n{}={}\n{}={:x}\n",
            Slot::A.key(),
            self.a,
            Slot::B.key(),
            self.b,
            SEQ_KEY,
            self.seq
        );
        let mut out = [b'\n'; RECORD_LEN];
        out[..text.len()].copy_from_slice(text.as_bytes());
        let crc = crc32fast::hash(&out[..BODY_LEN]);
        out[BODY_LEN..].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// Reads one copy. The text ends at the first NUL (U-Boot's export ends with one) or at the
    /// checksum; empty lines are padding. Keys other than the three are ignored, as U-Boot's
    /// `env import -t ... rpixen_a rpixen_b rpixen_seq` ignores them.
    pub fn decode(sector: &[u8; RECORD_LEN]) -> Result<Record, RecordError> {
        let stored = u32::from_be_bytes(sector[BODY_LEN..].try_into().expect("4 bytes"));
        let computed = crc32fast::hash(&sector[..BODY_LEN]);
        if stored != computed {
            return Err(RecordError::Checksum { stored, computed });
        }
        let body = &sector[..BODY_LEN];
        let end = body.iter().position(|&b| b == 0).unwrap_or(BODY_LEN);
        let text = std::str::from_utf8(&body[..end]).map_err(|_| RecordError::NotText)?;
        let (mut seq, mut a, mut b) = (None, None, None);
        for line in text.split('\n').filter(|l| !l.is_empty()) {
            let (key, value) =
                line.split_once('=').ok_or_else(|| RecordError::NotKeyValue(line.to_owned()))?;
            let field = match key {
                SEQ_KEY => &mut seq,
                k if k == Slot::A.key() => &mut a,
                k if k == Slot::B.key() => &mut b,
                _ => continue,
            };
            if field.replace(value).is_some() {
                return Err(RecordError::Duplicate { key: key.to_owned() });
            }
        }
        let seq = seq.ok_or(RecordError::Missing(SEQ_KEY))?;
        let seq = parse_seq(seq)?;
        Ok(Record { seq, a: parse_state(Slot::A, a)?, b: parse_state(Slot::B, b)? })
    }
}

fn parse_seq(value: &str) -> Result<u32, RecordError> {
    let bad = |reason| RecordError::BadValue { key: SEQ_KEY, value: value.to_owned(), reason };
    if value.is_empty() || value.len() > 8 || !value.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad("not a hex number of at most 8 digits"));
    }
    let seq = u32::from_str_radix(value, 16).map_err(|_| bad("not a hex number"))?;
    if seq >= 1 << 31 {
        return Err(bad("U-Boot's itest compares it as signed: it must stay below 0x80000000"));
    }
    Ok(seq)
}

fn parse_state(slot: Slot, value: Option<&str>) -> Result<SlotState, RecordError> {
    let value = value.ok_or(RecordError::Missing(slot.key()))?;
    SlotState::from_name(value).ok_or_else(|| RecordError::BadValue {
        key: slot.key(),
        value: value.to_owned(),
        reason: "not one of active, updating, inprogress, unused",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_what_uboot_exports_and_decodes_it_back() {
        let rec = Record { seq: 0x20, a: SlotState::Active, b: SlotState::InProgress };
        let sector = rec.encode();
        assert!(sector.starts_with(b"rpixen_a=active\nrpixen_b=inprogress\nrpixen_seq=20\n\n"));
        assert_eq!(Record::decode(&sector), Ok(rec));
    }

    #[test]
    fn the_checksum_is_uboots_crc32_big_endian() {
        // U-Boot 2025.01 `crc32` printed 4d30cc50 for this body and stored bytes 4d 30 cc 50.
        let mut body = b"rpixen_seq=1f\nrpixen_a=active\nrpixen_b=unused\n".to_vec();
        body.resize(BODY_LEN, b'\n');
        assert_eq!(crc32fast::hash(&body), 0x4d30cc50);
    }

    #[test]
    fn a_nul_ends_the_text_as_uboots_export_does() {
        let mut sector = [b'\n'; RECORD_LEN];
        let text = b"rpixen_a=unused\nrpixen_b=active\nrpixen_seq=7\n\0garbage=1";
        sector[..text.len()].copy_from_slice(text);
        let crc = crc32fast::hash(&sector[..BODY_LEN]);
        sector[BODY_LEN..].copy_from_slice(&crc.to_be_bytes());
        let rec = Record::decode(&sector).unwrap();
        assert_eq!((rec.seq, rec.a, rec.b), (7, SlotState::Unused, SlotState::Active));
    }

    #[test]
    fn any_flipped_byte_is_a_checksum_error() {
        let sector = Record::fresh().encode();
        for i in [0, 5, 100, BODY_LEN - 1, BODY_LEN, RECORD_LEN - 1] {
            let mut bad = sector;
            bad[i] ^= 0x40;
            assert!(matches!(Record::decode(&bad), Err(RecordError::Checksum { .. })), "byte {i}");
        }
    }

    #[test]
    fn zeros_are_not_a_record() {
        assert!(matches!(Record::decode(&[0; RECORD_LEN]), Err(RecordError::Checksum { .. })));
    }

    fn sealed(text: &str) -> [u8; RECORD_LEN] {
        let mut sector = [b'\n'; RECORD_LEN];
        sector[..text.len()].copy_from_slice(text.as_bytes());
        let crc = crc32fast::hash(&sector[..BODY_LEN]);
        sector[BODY_LEN..].copy_from_slice(&crc.to_be_bytes());
        sector
    }

    #[test]
    fn checksummed_but_wrong_records_name_the_key() {
        let cases = [
            ("rpixen_a=active\nrpixen_b=unused\n", "`rpixen_seq` is missing"),
            ("rpixen_a=active\nrpixen_seq=2\n", "`rpixen_b` is missing"),
            ("rpixen_a=busy\nrpixen_b=unused\nrpixen_seq=2\n", "`rpixen_a=busy`"),
            ("rpixen_a=active\nrpixen_b=unused\nrpixen_seq=zz\n", "`rpixen_seq=zz`"),
            ("rpixen_a=active\nrpixen_b=unused\nrpixen_seq=80000000\n", "below 0x80000000"),
            ("rpixen_a=active\nrpixen_a=unused\nrpixen_b=unused\nrpixen_seq=2\n", "twice"),
            ("rpixen_a=active\njunk\n", "`junk` is not key=value"),
        ];
        for (text, want) in cases {
            let err = Record::decode(&sealed(text)).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn with_changes_one_slot_and_advances_the_sequence() {
        let next = Record::fresh().with(Slot::B, SlotState::Updating);
        assert_eq!(next, Record { seq: 2, a: SlotState::Active, b: SlotState::Updating });
    }
}
