//! gzip compression on all cores with output every gzip reader accepts: the input is cut into blocks
//! compressed independently, each ended with a sync flush (byte-aligned, non-final) and the last with a
//! final block, joined into ONE deflate stream in one gzip member (pigz's scheme). Block boundaries do
//! not depend on the thread count, so the output is reproducible. Hand-written because the parallel gzip
//! crates bring thread pools and channels for what is a dozen lines over `flate2::Compress`.

use std::io::{self, Write};

/// Block size for parallel deflate: large enough that restarting the dictionary per block costs little.
const BLOCK: usize = 1 << 20;

/// Compresses `data` as one gzip member (mtime 0, no name) at `level`, blocks in parallel.
pub fn parallel_gzip(data: &[u8], level: u32, out: &mut impl Write) -> io::Result<()> {
    let blocks: Vec<&[u8]> =
        if data.is_empty() { vec![data] } else { data.chunks(BLOCK).collect() };
    let threads =
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(blocks.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Vec<u8>>> =
        blocks.iter().map(|_| Default::default()).collect();
    let crc = std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(block) = blocks.get(i) else { break };
                let last = i + 1 == blocks.len();
                *results[i].lock().expect("no panics while held") =
                    deflate_block(block, level, last);
            });
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(data);
        crc.finalize()
    });
    // gzip header: magic, deflate, no flags, mtime 0, no extra flags, OS unknown (reproducible).
    out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255])?;
    for r in results {
        out.write_all(&r.into_inner().expect("no panics while held"))?;
    }
    out.write_all(&crc.to_le_bytes())?;
    out.write_all(&(data.len() as u32).to_le_bytes())
}

fn deflate_block(block: &[u8], level: u32, last: bool) -> Vec<u8> {
    let mut c = flate2::Compress::new(flate2::Compression::new(level), false);
    let mut out = Vec::with_capacity(block.len() / 2 + 1024);
    let flush = if last { flate2::FlushCompress::Finish } else { flate2::FlushCompress::Sync };
    loop {
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&block[consumed..], &mut out, flush)
            .expect("deflate on memory cannot fail");
        let done = c.total_in() as usize == block.len()
            && match flush {
                flate2::FlushCompress::Finish => status == flate2::Status::StreamEnd,
                _ => out.len() < out.capacity(),
            };
        if done {
            return out;
        }
        out.reserve(64 * 1024);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn parallel_gzip_is_one_valid_member() {
        let data: Vec<u8> =
            (0..3 * BLOCK + 12345).map(|i| (i % 251) as u8 ^ (i / 7000) as u8).collect();
        let mut gz = Vec::new();
        parallel_gzip(&data, 6, &mut gz).unwrap();
        let mut back = Vec::new();
        // GzDecoder (not MultiGzDecoder) reads exactly one member.
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        assert!(gz.len() < data.len() / 2);
        let mut empty = Vec::new();
        parallel_gzip(b"", 6, &mut empty).unwrap();
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&empty[..]).read_to_end(&mut back).unwrap();
        assert!(back.is_empty());
    }
}
