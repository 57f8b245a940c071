//! The U-Boot legacy image format, for scripts (`mkimage -A arm64 -T script -C none`).
//!
//! Written by hand rather than through a crate: the format is a 64-byte big-endian header plus a length
//! table, and no maintained crate writes it. The layout follows u-boot `include/image.h` and
//! `tools/mkimage.c`: for `IH_TYPE_SCRIPT` the payload is one big-endian u32 length per file, a zero
//! terminator, then the file bytes. The output is byte-identical to `mkimage` given the same
//! `SOURCE_DATE_EPOCH` (checked against the real tool in `tests/image_uimage.rs`).

/// `IH_MAGIC`.
pub const MAGIC: u32 = 0x2705_1956;
/// `IH_OS_LINUX`, mkimage's default operating system.
const OS_LINUX: u8 = 5;
/// `IH_ARCH_ARM64`.
const ARCH_ARM64: u8 = 22;
/// `IH_TYPE_SCRIPT`.
pub const TYPE_SCRIPT: u8 = 6;
/// `IH_COMP_NONE`.
const COMP_NONE: u8 = 0;
/// `IH_NMLEN`.
pub const NAME_LEN: usize = 32;
/// Header size in bytes.
pub const HEADER_LEN: usize = 64;

/// What goes into the header besides the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptImage<'a> {
    /// `-n`: at most 32 bytes are kept, as mkimage does.
    pub name: &'a str,
    /// `-a` and `-e` (mkimage sets the entry to the load address when `-e` is absent).
    pub load: u32,
    pub entry: u32,
    /// `ih_time`: `SOURCE_DATE_EPOCH`.
    pub time: u32,
}

/// Wraps a U-Boot script into a legacy image, as `mkimage -A arm64 -T script -C none` does.
pub fn script(meta: &ScriptImage<'_>, script: &[u8]) -> Vec<u8> {
    let len = u32::try_from(script.len()).expect("a boot script is far below 4 GiB");
    let mut data = Vec::with_capacity(8 + script.len());
    data.extend_from_slice(&len.to_be_bytes());
    data.extend_from_slice(&0u32.to_be_bytes());
    data.extend_from_slice(script);

    let mut header = [0u8; HEADER_LEN];
    header[0..4].copy_from_slice(&MAGIC.to_be_bytes());
    header[8..12].copy_from_slice(&meta.time.to_be_bytes());
    header[12..16].copy_from_slice(&(data.len() as u32).to_be_bytes());
    header[16..20].copy_from_slice(&meta.load.to_be_bytes());
    header[20..24].copy_from_slice(&meta.entry.to_be_bytes());
    header[24..28].copy_from_slice(&crc32fast::hash(&data).to_be_bytes());
    header[28] = OS_LINUX;
    header[29] = ARCH_ARM64;
    header[30] = TYPE_SCRIPT;
    header[31] = COMP_NONE;
    let name = meta.name.as_bytes();
    let n = name.len().min(NAME_LEN);
    header[32..32 + n].copy_from_slice(&name[..n]);
    let hcrc = crc32fast::hash(&header);
    header[4..8].copy_from_slice(&hcrc.to_be_bytes());

    let mut out = Vec::with_capacity(HEADER_LEN + data.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(&data);
    out
}

/// Why bytes are not a script image.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("shorter than a U-Boot image header")]
    Short,
    #[error("bad magic {0:#010x} (not a U-Boot legacy image)")]
    Magic(u32),
    #[error("header checksum mismatch")]
    HeaderCrc,
    #[error("data checksum mismatch")]
    DataCrc,
    #[error("image type {0} is not a script")]
    NotScript(u8),
}

/// Reads back the script text of a script image, checking both checksums (as U-Boot's `source` does).
pub fn parse_script(image: &[u8]) -> Result<(String, Vec<u8>), ParseError> {
    if image.len() < HEADER_LEN + 8 {
        return Err(ParseError::Short);
    }
    let be = |o: usize| u32::from_be_bytes(image[o..o + 4].try_into().expect("4 bytes"));
    if be(0) != MAGIC {
        return Err(ParseError::Magic(be(0)));
    }
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(&image[..HEADER_LEN]);
    header[4..8].fill(0);
    if crc32fast::hash(&header) != be(4) {
        return Err(ParseError::HeaderCrc);
    }
    let size = be(12) as usize;
    let data = image.get(HEADER_LEN..HEADER_LEN + size).ok_or(ParseError::Short)?;
    if crc32fast::hash(data) != be(24) {
        return Err(ParseError::DataCrc);
    }
    if image[30] != TYPE_SCRIPT {
        return Err(ParseError::NotScript(image[30]));
    }
    let name_bytes = &image[32..64];
    let name_end = name_bytes.iter().position(|b| *b == 0).unwrap_or(NAME_LEN);
    let name = String::from_utf8_lossy(&name_bytes[..name_end]).into_owned();
    let len = u32::from_be_bytes(data[0..4].try_into().expect("4 bytes")) as usize;
    let body = data.get(8..8 + len).ok_or(ParseError::Short)?;
    Ok((name, body.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_layout() {
        let meta = ScriptImage { name: "boot", load: 0x1000, entry: 0x1000, time: 1_700_000_000 };
        let img = script(&meta, b"echo hi\n");
        assert_eq!(img.len(), 64 + 8 + 8);
        assert_eq!(&img[64..72], &[0, 0, 0, 8, 0, 0, 0, 0]);
        let (name, body) = parse_script(&img).unwrap();
        assert_eq!(name, "boot");
        assert_eq!(body, b"echo hi\n");
    }

    #[test]
    fn corruption_is_detected() {
        let meta = ScriptImage { name: "x", load: 0, entry: 0, time: 0 };
        let mut img = script(&meta, b"echo hi\n");
        let last = img.len() - 1;
        img[last] ^= 1;
        assert_eq!(parse_script(&img), Err(ParseError::DataCrc));
        img[last] ^= 1;
        img[40] ^= 1;
        assert_eq!(parse_script(&img), Err(ParseError::HeaderCrc));
    }

    #[test]
    fn long_names_are_cut_at_32_bytes() {
        let long = "n".repeat(40);
        let meta = ScriptImage { name: &long, load: 0, entry: 0, time: 0 };
        let (name, _) = parse_script(&script(&meta, b"x")).unwrap();
        assert_eq!(name.len(), 32);
    }
}
