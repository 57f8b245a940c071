//! A real `live.raw` from this worktree's builder, and its data ranges.
//!
//! The image: this worktree's `rpixen` (built with cargo), `rpixen pkg build` for each package the
//! qemu-virt manifest uses (into a test folder, with the shared download cache), then `rpixen live
//! qemu-virt` with a fixed SOURCE_DATE_EPOCH.
//!
//! The ranges are read back from the image's own structures, independently of the builder's code,
//! the way the builder will state them from its layout knowledge: the GPT at both ends (protective
//! MBR, headers, entry arrays), then per partition: a FAT's reserved sectors, FATs and root
//! directory in full plus every allocated cluster in full; a squashfs's `bytes_used`; STATE's two
//! records; nothing for an unformatted partition. Free FAT entries and directory tails are zeros that must be written (a
//! stale byte there is a bogus cluster or a bogus file), which is why metadata is mapped whole.
#![allow(dead_code)]
// Lists of byte ranges are the data here; a one-range list is not a mistaken `Vec<u64>`.
#![allow(clippy::single_range_in_vec_init)]

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub const EPOCH: &str = "1700000000";
pub const SECTOR: u64 = 512;
/// The packages images/qemu-virt.yml uses.
pub const PACKAGES: [&str; 8] =
    ["agent", "busybox", "dom0-init", "dropbear", "e2fsprogs", "hypervisor", "kernel", "u-boot"];

pub struct Fixture {
    pub dir: PathBuf,
    pub pkg_dir: PathBuf,
    pub raw: PathBuf,
}

fn build() -> Fixture {
    let started = std::time::Instant::now();
    let dir = testkit::cache_dir().join("release-it");
    let pkg_dir = dir.join("pkg");
    std::fs::create_dir_all(&pkg_dir).unwrap();
    // The rpixen binary is built together with this crate, so cargo resolves the features shared
    // with it (liblzma's `parallel`) once, instead of rebuilding rpixen for a `cargo run -p rpixen`.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    testkit::run(Command::new(cargo).current_dir(testkit::repo_root()).args([
        "build",
        "-q",
        "--release",
        "-p",
        "rpixen",
        "-p",
        "rpixen-release",
    ]));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| testkit::repo_root().join("target"));
    let rpixen = target.join("release/rpixen");
    for p in PACKAGES {
        testkit::run(
            Command::new(&rpixen)
                .current_dir(testkit::repo_root())
                .args(["pkg", "build", &format!("pkg/{p}"), "--cache"])
                .arg(testkit::pkg_cache())
                .arg("-o")
                .arg(pkg_dir.join(p)),
        );
    }
    let raw = dir.join("live.raw");
    testkit::run(
        Command::new(&rpixen)
            .current_dir(testkit::repo_root())
            .args(["live", "qemu-virt", "-o"])
            .arg(&raw)
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .env("RPIXEN_PKG_DIR", &pkg_dir),
    );
    eprintln!("image built in {:?}", started.elapsed());
    Fixture { dir, pkg_dir, raw }
}

/// Built once per test binary run.
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(build)
}

fn u16_at(b: &[u8], o: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[o], b[o + 1]]))
}

fn u32_at(b: &[u8], o: usize) -> u64 {
    u64::from(u32::from_le_bytes(b[o..o + 4].try_into().unwrap()))
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// A GPT partition: its byte span.
#[derive(Debug, Clone)]
pub struct Part {
    pub name: String,
    pub span: Range<u64>,
}

pub fn gpt_parts(img: &[u8]) -> (Vec<Part>, Vec<Range<u64>>) {
    let hdr = &img[SECTOR as usize..2 * SECTOR as usize];
    assert_eq!(&hdr[..8], b"EFI PART", "no primary GPT header");
    let alt = u64_at(hdr, 32);
    let entries_lba = u64_at(hdr, 72);
    let count = u32_at(hdr, 80);
    let size = u32_at(hdr, 84);
    let array = (count * size).div_ceil(SECTOR) * SECTOR;
    let mut tables = vec![0..entries_lba * SECTOR + array];
    let backup = &img[(alt * SECTOR) as usize..((alt + 1) * SECTOR) as usize];
    assert_eq!(&backup[..8], b"EFI PART", "no backup GPT header at LBA {alt}");
    tables.push(u64_at(backup, 72) * SECTOR..(alt + 1) * SECTOR);
    let mut parts = Vec::new();
    for i in 0..count {
        let e = &img[(entries_lba * SECTOR + i * size) as usize..][..size as usize];
        if e[..16].iter().all(|b| *b == 0) {
            continue;
        }
        let name: String =
            char::decode_utf16(e[56..128].chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])))
                .map(|c| c.unwrap_or('?'))
                .take_while(|c| *c != '\0')
                .collect();
        parts.push(Part { name, span: u64_at(e, 32) * SECTOR..(u64_at(e, 40) + 1) * SECTOR });
    }
    (parts, tables)
}

/// Data ranges of a FAT volume (offsets inside it), or `None` if `v` is not one.
fn fat_ranges(v: &[u8]) -> Option<Vec<Range<u64>>> {
    if v.len() < 512
        || v[510..512] != [0x55, 0xaa]
        || !(v[82..87] == *b"FAT32" || v[54..57] == *b"FAT")
    {
        return None;
    }
    let bps = u16_at(v, 11);
    let spc = u64::from(v[13]);
    let reserved = u16_at(v, 14);
    let fats = u64::from(v[16]);
    let root_entries = u16_at(v, 17);
    let total = if u16_at(v, 19) != 0 { u16_at(v, 19) } else { u32_at(v, 32) };
    let fat_size = if u16_at(v, 22) != 0 { u16_at(v, 22) } else { u32_at(v, 36) };
    let root_sectors = (root_entries * 32).div_ceil(bps);
    let data_start = reserved + fats * fat_size + root_sectors;
    let clusters = (total - data_start) / spc;
    let fat = &v[(reserved * bps) as usize..((reserved + fat_size) * bps) as usize];
    let entry = |n: u64| -> u64 {
        if clusters < 4085 {
            let o = (n + n / 2) as usize;
            let w = u16_at(fat, o);
            if n.is_multiple_of(2) {
                w & 0xfff
            } else {
                w >> 4
            }
        } else if clusters < 65525 {
            u16_at(fat, 2 * n as usize)
        } else {
            u32_at(fat, 4 * n as usize) & 0x0fff_ffff
        }
    };
    let mut out = vec![0..data_start * bps];
    let cluster_bytes = spc * bps;
    for n in 2..clusters + 2 {
        if entry(n) != 0 {
            let start = data_start * bps + (n - 2) * cluster_bytes;
            out.push(start..start + cluster_bytes);
        }
    }
    Some(out)
}

/// Data ranges of a squashfs (its `bytes_used`), or `None`.
fn squashfs_ranges(v: &[u8]) -> Option<Vec<Range<u64>>> {
    (v.len() >= 96 && v[..4] == *b"hsqs").then(|| vec![0..u64_at(v, 40)])
}

/// The A/B slot state (rpixen-slot-state): one 512-byte record at 0 and one at 1 MiB.
fn state_ranges(v: &[u8]) -> Vec<Range<u64>> {
    [0u64, 1 << 20]
        .into_iter()
        .filter(|o| (*o as usize) + 512 <= v.len())
        .map(|o| o..o + 512)
        .collect()
}

/// Every byte range of the image that holds data, from its structures.
pub fn data_ranges(img: &[u8]) -> Vec<Range<u64>> {
    let (parts, mut out) = gpt_parts(img);
    for p in parts {
        let v = &img[p.span.start as usize..p.span.end as usize];
        let inner = fat_ranges(v)
            .or_else(|| squashfs_ranges(v))
            .or_else(|| (p.name == "STATE").then(|| state_ranges(v)))
            .unwrap_or_default();
        out.extend(inner.into_iter().map(|r| p.span.start + r.start..p.span.start + r.end));
    }
    out
}

/// Runs a tool, returning its output whatever the status.
pub fn tool(cmd: &mut Command) -> std::process::Output {
    cmd.output().unwrap_or_else(|e| {
        panic!("cannot start {cmd:?} (is it installed? see scripts/setup-host.sh): {e}")
    })
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
