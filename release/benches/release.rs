//! `cargo bench -p rpixen-release`: on the real qemu-virt `live.raw`, timed in one run against the
//! peer tools, each a median of alternating rounds:
//! - flashing: `bmaptool copy` (our `.bmap`) vs `dd bs=4M conv=fsync` of the raw image onto a file
//!   (target: bmaptool at least 5x faster, its README's own claim);
//! - compression: our multi-block xz vs `xz -T0` with the same preset and block size.

#[path = "../tests/it/image.rs"]
mod image;

use std::path::Path;
use std::process::Command;

use rpixen_release::xz::{XzOptions, DEFAULT_BLOCK_SIZE, DEFAULT_PRESET};
use rpixen_release::{write_release, ReleaseRequest};

const RUNS: usize = 3;

fn sh(script: &str, dir: &Path) {
    let o = Command::new("bash").arg("-ec").arg(script).current_dir(dir).output().unwrap();
    assert!(o.status.success(), "{script}\n{}", String::from_utf8_lossy(&o.stderr));
}

fn main() {
    let f = image::fixture();
    let img = std::fs::read(&f.raw).unwrap();
    let data = image::data_ranges(&img);
    let dir = tempfile::tempdir_in(&f.dir).unwrap();
    let d = dir.path();
    std::fs::copy(&f.raw, d.join("live.raw")).unwrap();
    let threads = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
    let request = |xz: bool, bmap: bool| ReleaseRequest {
        dir: d,
        base_name: "live.raw",
        image_size: img.len() as u64,
        data: &data,
        xz: xz.then_some(XzOptions {
            block_size: DEFAULT_BLOCK_SIZE,
            preset: DEFAULT_PRESET,
            threads,
        }),
        bmap,
        imager: None,
    };
    let release = write_release(&img[..], &request(false, true)).unwrap();
    let map = release.block_map.unwrap();
    let mib = img.len() >> 20;

    // Flashing onto a file: both sync to the disk before they finish.
    let [dd, bmap] = testkit::race(
        RUNS,
        [
            &mut || {
                sh("rm -f t-dd.img; dd if=live.raw of=t-dd.img bs=4M conv=fsync status=none", d)
            },
            &mut || {
                sh("rm -f t-bmap.img; bmaptool -q copy --bmap live.raw.bmap live.raw t-bmap.img", d)
            },
        ],
    );
    println!(
        "flash {mib} MiB ({} of {} blocks mapped): dd {:.2?}, bmaptool copy {:.2?}: bmaptool {:.1}x faster (target >= 5x)",
        map.mapped_blocks_count(),
        map.blocks_count(),
        dd,
        bmap,
        dd.as_secs_f64() / bmap.as_secs_f64()
    );

    // Compression with the same preset, block size and thread count.
    let xz_cmd = format!(
        "xz -T{threads} -{DEFAULT_PRESET} --block-size={DEFAULT_BLOCK_SIZE} -c live.raw > peer.raw.xz"
    );
    let [ours, peer] = testkit::race(
        RUNS,
        [
            &mut || {
                write_release(&img[..], &request(true, false)).unwrap();
            },
            &mut || sh(&xz_cmd, d),
        ],
    );
    let ours_len = std::fs::metadata(d.join("live.raw.xz")).unwrap().len();
    let peer_len = std::fs::metadata(d.join("peer.raw.xz")).unwrap().len();
    let same = std::fs::read(d.join("live.raw.xz")).unwrap()
        == std::fs::read(d.join("peer.raw.xz")).unwrap();
    println!(
        "xz {mib} MiB, {threads} threads, {} MiB blocks: ours {:.2?} ({ours_len} bytes, with sha256 and bmap hashing), \
         `xz -T{threads}` {:.2?} ({peer_len} bytes): ours {:.2}x the peer's speed; byte-identical: {same}",
        DEFAULT_BLOCK_SIZE >> 20,
        ours,
        peer,
        peer.as_secs_f64() / ours.as_secs_f64()
    );
    let [bmap_xz, xz_dd] = testkit::race(
        RUNS,
        [&mut || sh("rm -f t-bmap.img; bmaptool -q copy live.raw.xz t-bmap.img", d), &mut || {
            sh("rm -f t-dd.img; xz -dc -T0 live.raw.xz | dd of=t-dd.img bs=4M iflag=fullblock conv=fsync status=none", d)
        }],
    );
    println!(
        "flash from live.raw.xz: `xz -dc | dd` {:.2?}, `bmaptool copy` {:.2?}: bmaptool {:.1}x faster",
        xz_dd,
        bmap_xz,
        xz_dd.as_secs_f64() / bmap_xz.as_secs_f64()
    );
}
