//! sha256 of what passes through a writer, and the `sha256sum` line format.

use std::io::{self, Write};

use sha2::{Digest as _, Sha256};

/// Size and sha256 of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// A writer that hashes and counts everything written through it.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
    size: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter { inner, hash: Sha256::new(), size: 0 }
    }

    /// The inner writer and the digest of what went through.
    pub fn finish(self) -> (W, Digest) {
        (self.inner, Digest { size: self.size, sha256: hex::encode(self.hash.finalize()) })
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// One line as `sha256sum` prints it (text mode: two spaces), which `sha256sum -c` checks.
pub fn sha256sum_line(sha256: &str, file_name: &str) -> String {
    format!("{sha256}  {file_name}\n")
}

/// sha256 of bytes in memory, lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_writer_matches_a_direct_hash() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"ab").unwrap();
        w.write_all(b"c").unwrap();
        let (inner, d) = w.finish();
        assert_eq!(inner, b"abc");
        assert_eq!(d.size, 3);
        // FIPS 180-2 test vector for "abc".
        assert_eq!(d.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(sha256_hex(b"abc"), d.sha256);
    }

    #[test]
    fn sum_line_is_sha256sum_text_mode() {
        assert_eq!(sha256sum_line("00ff", "live.raw"), "00ff  live.raw\n");
    }
}
