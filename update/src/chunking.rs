//! Content-defined chunks of a slot image (FastCDC, 2020 variant, as the `fastcdc` crate cuts them).
//! The producer cuts the new image and the device cuts its active slot with the same parameters, so
//! bytes both hold (a file that did not change, even at another offset) fall into chunks with equal
//! digests and are never downloaded. Correctness never depends on the cut points: a chunk is reused
//! only when its sha256 matches; other parameters only cost reuse.

use std::io::{self, Read};

use fastcdc::v2020::{self, StreamCDC};
use sha2::{Digest as _, Sha256};

/// FastCDC's minimum, average and maximum chunk sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunking {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

/// The algorithm name in [`Chunking::annotation`]: the device refuses a manifest cut by another.
const ALGORITHM: &str = "fastcdc-v2020";

impl Chunking {
    /// 64 KiB / 256 KiB / 1 MiB. Measured by the builder's `benches/slot_update.rs` (128 MiB slot,
    /// dom0-init changed in the initrd): 4.4 % of the slot downloaded, 209 layers (33 KB manifest);
    /// 16/64/256 KiB: 3.3 % but 851 layers (133 KB); 256 KiB/1/4 MiB: 11.4 %, 50 layers.
    pub const DEFAULT: Chunking = Chunking { min: 64 << 10, avg: 256 << 10, max: 1 << 20 };

    /// `fastcdc-v2020 min=65536 avg=262144 max=1048576`: the manifest annotation naming the chunking.
    pub fn annotation(&self) -> String {
        format!("{ALGORITHM} min={} avg={} max={}", self.min, self.avg, self.max)
    }

    /// Reads [`Chunking::annotation`]'s form back, checked against the limits FastCDC accepts (it
    /// panics outside them).
    pub fn parse(text: &str) -> Option<Chunking> {
        let mut words = text.split(' ');
        if words.next()? != ALGORITHM {
            return None;
        }
        let mut field = |name: &str| -> Option<u32> {
            words.next()?.strip_prefix(name)?.strip_prefix('=')?.parse().ok()
        };
        let c = Chunking { min: field("min")?, avg: field("avg")?, max: field("max")? };
        if words.next().is_some() {
            return None;
        }
        let ok = (v2020::MINIMUM_MIN..=v2020::MINIMUM_MAX).contains(&c.min)
            && (v2020::AVERAGE_MIN..=v2020::AVERAGE_MAX).contains(&c.avg)
            && (v2020::MAXIMUM_MIN..=v2020::MAXIMUM_MAX).contains(&c.max)
            && c.min <= c.avg
            && c.avg <= c.max;
        ok.then_some(c)
    }

    /// The chunks of `source`, in order: offset, bytes and `sha256:` digest.
    pub fn chunks<R: Read>(&self, source: R) -> impl Iterator<Item = io::Result<Chunk>> {
        StreamCDC::new(source, self.min, self.avg, self.max).map(|r| {
            let c = r.map_err(|e| match e {
                v2020::Error::IoError(e) => e,
                other => io::Error::other(other.to_string()),
            })?;
            let digest = format!("sha256:{}", hex::encode(Sha256::digest(&c.data)));
            Ok(Chunk { offset: c.offset, data: c.data, digest })
        })
    }
}

/// One content-defined chunk.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub offset: u64,
    pub data: Vec<u8>,
    pub digest: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_round_trips_and_bad_parameters_are_refused() {
        let d = Chunking::DEFAULT;
        assert_eq!(d.annotation(), "fastcdc-v2020 min=65536 avg=262144 max=1048576");
        assert_eq!(Chunking::parse(&d.annotation()), Some(d));
        for bad in [
            "fastcdc-v2016 min=65536 avg=262144 max=1048576",
            "fastcdc-v2020 min=65536 avg=262144",
            "fastcdc-v2020 min=65536 avg=262144 max=1048576 x=1",
            "fastcdc-v2020 min=1 avg=262144 max=1048576",
            "fastcdc-v2020 min=65536 avg=262144 max=4294967295",
            "fastcdc-v2020 min=262144 avg=65536 max=1048576",
        ] {
            assert_eq!(Chunking::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_insertion_moves_the_cut_points_with_it() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let data: Vec<u8> = (0..4_000_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let mut shifted = data[..1_000_000].to_vec();
        shifted.extend_from_slice(b"twelve bytes");
        shifted.extend_from_slice(&data[1_000_000..]);
        let digests = |d: &[u8]| -> Vec<String> {
            Chunking::DEFAULT.chunks(d).map(|c| c.unwrap().digest).collect()
        };
        let (a, b) = (digests(&data), digests(&shifted));
        let changed = b.iter().filter(|d| !a.contains(d)).count();
        assert!(a.len() > 8 && changed <= 2, "{changed} of {} chunks changed", b.len());
        let total: usize = Chunking::DEFAULT.chunks(&data[..]).map(|c| c.unwrap().data.len()).sum();
        assert_eq!(total, data.len());
    }
}
