//! Reproducible identities: disk and partition GUIDs derived from the image content and an optional
//! seed, FAT volume ids and time stamps from `SOURCE_DATE_EPOCH`.
//!
//! No GUID is fixed: two images with different content, or the same content and a different `--seed`,
//! never share GUIDs (EVE's static GUIDs broke installs on disks holding another EVE). BLAKE3 keeps the
//! content hash cheap next to the copy itself.

use uuid::Uuid;

/// The `SOURCE_DATE_EPOCH` default when the variable is unset: 1980-01-01, the FAT epoch, so that
/// builds are reproducible without it.
pub const DEFAULT_EPOCH: u64 = 315_532_800;

/// Reads `SOURCE_DATE_EPOCH`.
pub fn source_date_epoch() -> Result<u64, String> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|t| *t <= u64::from(u32::MAX))
            .ok_or_else(|| format!("SOURCE_DATE_EPOCH=`{v}` is not a Unix time in seconds")),
        Err(_) => Ok(DEFAULT_EPOCH),
    }
}

/// A running hash of everything that goes into the image.
#[derive(Debug, Clone, Default)]
pub struct ContentHash(blake3::Hasher);

impl ContentHash {
    pub fn new() -> ContentHash {
        ContentHash(blake3::Hasher::new())
    }

    /// Adds a named item (length-prefixed, so item boundaries are unambiguous).
    pub fn add(&mut self, name: &str, data: &[u8]) {
        self.0.update(&(name.len() as u64).to_le_bytes());
        self.0.update(name.as_bytes());
        self.0.update(&(data.len() as u64).to_le_bytes());
        self.0.update(data);
    }

    /// Adds a named source, streaming host files through a reused buffer.
    pub fn add_source(
        &mut self,
        name: &str,
        source: &super::source::Source,
    ) -> std::io::Result<()> {
        self.0.update(&(name.len() as u64).to_le_bytes());
        self.0.update(name.as_bytes());
        self.0.update(&source.len().to_le_bytes());
        match source {
            // Memory-mapped by blake3 (as b3sum does): no copy through a read buffer.
            super::source::Source::Host { path, len } => {
                let now = std::fs::metadata(path)?.len();
                if now != *len {
                    return Err(std::io::Error::other(format!(
                        "{} changed while the image was built ({len} bytes expected, {now} found)",
                        path.display()
                    )));
                }
                self.0.update_mmap(path)?;
                Ok(())
            }
            super::source::Source::Memory(v) => {
                self.0.update(v);
                Ok(())
            }
        }
    }

    pub fn finish(&self) -> [u8; 32] {
        *self.0.finalize().as_bytes()
    }
}

/// Derives identities from a key (content hash + seed).
#[derive(Debug, Clone)]
pub struct Ids {
    key: [u8; 32],
}

impl Ids {
    pub fn new(content: [u8; 32], seed: Option<&str>) -> Ids {
        let mut h = blake3::Hasher::new_derive_key("rpixen live.raw identities v1");
        h.update(&content);
        if let Some(seed) = seed {
            h.update(b"seed");
            h.update(seed.as_bytes());
        }
        Ids { key: *h.finalize().as_bytes() }
    }

    fn bytes(&self, purpose: &str) -> [u8; 32] {
        *blake3::keyed_hash(&self.key, purpose.as_bytes()).as_bytes()
    }

    /// A version-4-shaped UUID (random bits, RFC 9562 variant) for `purpose`.
    pub fn uuid(&self, purpose: &str) -> Uuid {
        let b = self.bytes(purpose);
        uuid::Builder::from_random_bytes(b[..16].try_into().expect("16 bytes")).into_uuid()
    }

    pub fn u32(&self, purpose: &str) -> u32 {
        let b = self.bytes(purpose);
        u32::from_le_bytes(b[..4].try_into().expect("4 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_and_content_change_every_id() {
        let a = Ids::new([1; 32], None);
        let b = Ids::new([1; 32], Some("device-42"));
        let c = Ids::new([2; 32], None);
        assert_eq!(a.uuid("disk"), Ids::new([1; 32], None).uuid("disk"));
        assert_ne!(a.uuid("disk"), b.uuid("disk"));
        assert_ne!(a.uuid("disk"), c.uuid("disk"));
        assert_ne!(a.uuid("disk"), a.uuid("part 1"));
        assert_eq!(a.uuid("disk").get_version_num(), 4);
    }

    #[test]
    fn content_hash_separates_items() {
        let mut x = ContentHash::new();
        x.add("ab", b"c");
        let mut y = ContentHash::new();
        y.add("a", b"bc");
        assert_ne!(x.finish(), y.finish());
    }
}
