//! `cargo bench -p rpixen --bench bmap`: writing the release image to a file with `bmaptool copy`
//! and our `.bmap` against `dd conv=fsync` of the whole raw image, timed in one run (interleaved
//! rounds, medians). The image is the user's: `rpixen live qemu-virt --bmap` from this checkout's
//! packages. Both copies end on the disk (bmaptool syncs; dd's conv=fsync), so neither is timing the
//! page cache alone. Target: bmaptool at least 5x faster (bmaptool's own claim for sparse images).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

const RUNS: usize = 5;
/// The packages images/qemu-virt.yml names.
const PACKAGES: [&str; 8] =
    ["agent", "busybox", "dom0-init", "dropbear", "e2fsprogs", "hypervisor", "kernel", "u-boot"];

fn ok(cmd: &mut Command) {
    testkit::run(cmd);
}

fn main() {
    let rpixen = Path::new(env!("CARGO_BIN_EXE_rpixen"));
    let work = testkit::cache_dir().join("bench-bmap");
    let pkg = testkit::build_packages(rpixen, &work.join("pkg"), &PACKAGES);
    let dir = tempfile::tempdir_in(&work).unwrap();
    let d = dir.path();
    let raw = d.join("live.raw");
    ok(Command::new(rpixen)
        .current_dir(testkit::repo_root())
        .args(["--quiet", "live", "qemu-virt", "--bmap", "-o"])
        .arg(&raw)
        .env("RPIXEN_PKG_DIR", &pkg));
    let bmap = d.join("live.raw.bmap");
    let (by_bmap, by_dd) = (d.join("bmaptool.out"), d.join("dd.out"));
    let [t_bmap, t_dd] = testkit::race(
        RUNS,
        [
            &mut || {
                let _ = std::fs::remove_file(&by_bmap);
                ok(Command::new("bmaptool")
                    .args(["-q", "copy", "--bmap"])
                    .arg(&bmap)
                    .arg(&raw)
                    .arg(&by_bmap));
            },
            &mut || {
                let _ = std::fs::remove_file(&by_dd);
                ok(Command::new("dd")
                    .arg(format!("if={}", raw.display()))
                    .arg(format!("of={}", by_dd.display()))
                    .args(["bs=4M", "conv=fsync", "status=none"]));
            },
        ],
    );
    // The comparison is void unless both wrote the image: bmaptool leaves holes where the map says
    // nothing is, which read back as the zeros the image has there.
    ok(Command::new("cmp").arg(&raw).arg(&by_bmap));
    ok(Command::new("cmp").arg(&raw).arg(&by_dd));

    let size = std::fs::metadata(&raw).unwrap().len();
    let mapped = mapped_bytes(&std::fs::read_to_string(&bmap).unwrap());
    let ms = |t: Duration| t.as_secs_f64() * 1e3;
    println!(
        "bmap bench: qemu-virt live.raw of {} MiB, {} MiB mapped ({:.0} %), median of {RUNS} interleaved rounds",
        size >> 20,
        mapped >> 20,
        mapped as f64 * 100.0 / size as f64
    );
    println!("  bmaptool copy --bmap      : {:>8.1} ms", ms(t_bmap));
    println!("  dd bs=4M conv=fsync       : {:>8.1} ms", ms(t_dd));
    let ratio = t_dd.as_secs_f64() / t_bmap.as_secs_f64();
    println!(
        "  bmaptool is {ratio:.1}x faster than dd (target >= 5x: {})",
        if ratio >= 5.0 { "met" } else { "MISSED" }
    );
}

/// Mapped bytes from a bmap 2.0 file: `BlockSize` times the `MappedBlocksCount`.
fn mapped_bytes(xml: &str) -> u64 {
    let field = |tag: &str| -> u64 {
        let open = format!("<{tag}>");
        let at = xml.find(&open).unwrap_or_else(|| panic!("no {open} in the bmap")) + open.len();
        let end = at + xml[at..].find('<').unwrap();
        xml[at..end].trim().parse().unwrap()
    };
    field("BlockSize") * field("MappedBlocksCount")
}
