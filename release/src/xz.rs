//! Multi-block xz through liblzma's own multi-threaded encoder (`lzma_stream_encoder_mt`, the one
//! `xz -T` uses), via the `liblzma` crate.
//!
//! Why this encoder: it cuts the input into fixed-size blocks, compresses each independently and
//! stores both sizes in every block header. That is what lets `xz -T0`, and rpi-imager through
//! libarchive, decode on several threads; and since a block depends only on its own input and the
//! options, the output is the same bytes whatever the thread count (checked by the tests).
//! Writing our own per-block encoder plus index would redo what liblzma does and ship a format
//! writer we would have to keep correct ourselves.

use std::io::Write;

use liblzma::stream::{Check, MtStreamBuilder};
use liblzma::write::XzEncoder;

/// Default block size: 32 MiB gives a 362 MiB image 12 blocks (parallel decode on up to 8 threads,
/// rpi-imager's limit) while costing little ratio against xz's 24 MiB default for `-6`.
pub const DEFAULT_BLOCK_SIZE: u64 = 32 << 20;
pub const DEFAULT_PRESET: u32 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XzOptions {
    /// Uncompressed bytes per block.
    pub block_size: u64,
    /// xz preset 0–9.
    pub preset: u32,
    /// Encoder threads (at least 1); does not change the output.
    pub threads: u32,
}

impl Default for XzOptions {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
        XzOptions { block_size: DEFAULT_BLOCK_SIZE, preset: DEFAULT_PRESET, threads }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum XzError {
    #[error("xz options: {0} (block size {1} bytes, preset {2}, {3} threads)")]
    Options(liblzma::stream::Error, u64, u32, u32),
}

/// An encoder writing a multi-block `.xz` (CRC64 check, xz's default) to `out`; call `finish()`.
pub fn encoder<W: Write>(out: W, opts: &XzOptions) -> Result<XzEncoder<W>, XzError> {
    let stream = MtStreamBuilder::new()
        .threads(opts.threads.max(1))
        .block_size(opts.block_size)
        .preset(opts.preset)
        .check(Check::Crc64)
        .encoder()
        .map_err(|e| XzError::Options(e, opts.block_size, opts.preset, opts.threads))?;
    Ok(XzEncoder::new_stream(out, stream))
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn compress(data: &[u8], threads: u32, block_size: u64) -> Vec<u8> {
        let mut e = encoder(Vec::new(), &XzOptions { block_size, preset: 1, threads }).unwrap();
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn output_is_the_same_for_any_thread_count_and_decodes() {
        let data: Vec<u8> =
            (0..3_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 % 17).collect();
        let one = compress(&data, 1, 1 << 20);
        let three = compress(&data, 3, 1 << 20);
        assert_eq!(one, three);
        let mut back = Vec::new();
        liblzma::read::XzDecoder::new(&one[..]).read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn bad_options_name_them() {
        let e = encoder(Vec::new(), &XzOptions { block_size: 1 << 20, preset: 42, threads: 1 })
            .err()
            .expect("refused");
        assert!(e.to_string().contains("preset 42"), "{e}");
    }
}
