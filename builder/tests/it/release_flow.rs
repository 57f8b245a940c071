//! `rpixen live --release --imager-url` and `rpixen sbom` on a real image, checked by the tools their
//! users run: xz (integrity, block count), sha256sum, rpi-imager's JSON schema (jsonschema),
//! pyspdxtools, and `bmaptool copy` of the `.xz` onto a *used* target file, whose FATs fsck.fat then
//! checks and which the fresh-clone test boots (instead of the plain image: one QEMU for both).

use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};

/// What a user on an old card has where the image leaves blocks alone: never zero, so a block the
/// map should have covered shows up as garbage (a bogus FAT entry, a bad superblock).
const STALE: u8 = 0xA5;

fn tool(cmd: &mut Command) -> std::process::Output {
    cmd.output().unwrap_or_else(|e| {
        panic!("cannot start {cmd:?} (is it installed? see scripts/setup-host.sh): {e}")
    })
}

fn ok(cmd: &mut Command) -> String {
    let o = tool(cmd);
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn sha256_file(p: &Path) -> String {
    let mut h = Sha256::new();
    let mut f = std::fs::File::open(p).unwrap();
    let mut buf = vec![0; 1 << 20];
    loop {
        match f.read(&mut buf).unwrap() {
            0 => return hex::encode(h.finalize()),
            n => h.update(&buf[..n]),
        }
    }
}

/// The block ranges (`first-last`, inclusive) of a `.bmap`, as byte ranges.
fn bmap_ranges(xml: &str) -> Vec<Range<u64>> {
    let block: u64 = xml
        .split("<BlockSize>")
        .nth(1)
        .and_then(|t| t.split("</BlockSize>").next())
        .and_then(|n| n.trim().parse().ok())
        .expect("BlockSize");
    xml.split("<Range")
        .skip(1)
        .map(|r| {
            let body = r.split('>').nth(1).unwrap().split('<').next().unwrap().trim();
            let (a, b) = body.split_once('-').unwrap_or((body, body));
            let (a, b): (u64, u64) = (a.trim().parse().unwrap(), b.trim().parse().unwrap());
            a * block..(b + 1) * block
        })
        .collect()
}

/// A loop device over a file, detached on drop.
struct Loop(String);

impl Loop {
    fn attach(file: &Path) -> Loop {
        let dev = ok(Command::new("losetup").args(["--find", "--show"]).arg(file));
        Loop(dev.trim().to_owned())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// A GPT partition's byte span by name (`partx`).
fn partition(image: &Path, name: &str) -> Range<u64> {
    let table = ok(Command::new("partx").args(["-g", "-b", "-o", "START,SIZE,NAME"]).arg(image));
    table
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&name)).then(|| {
                let start: u64 = f[0].parse::<u64>().unwrap() * 512;
                start..start + f[1].parse::<u64>().unwrap()
            })
        })
        .unwrap_or_else(|| panic!("no partition {name} in:\n{table}"))
}

fn read_range(f: &mut std::fs::File, r: &Range<u64>) -> Vec<u8> {
    use std::io::{Seek, SeekFrom};
    let mut v = vec![0; (r.end - r.start) as usize];
    f.seek(SeekFrom::Start(r.start)).unwrap();
    f.read_exact(&mut v).unwrap();
    v
}

/// Writes the release files of `board` with `rpixen` (the clone's, with `env`), checks them against
/// `want` (the image `make live` wrote) and returns a used-card copy made by `bmaptool copy`, for the
/// caller to boot.
pub fn check_release(
    rpixen: &Path,
    repo: &Path,
    env: &[(&str, &Path)],
    want: &Path,
    dir: &Path,
) -> PathBuf {
    let started = std::time::Instant::now();
    let raw = dir.join("live.raw");
    let mut cmd = Command::new(rpixen);
    cmd.current_dir(repo)
        .args(["live", "qemu-virt", "-o"])
        .arg(&raw)
        .args(["--release", "--imager-url", "https://example.invalid/rpixen/live.raw.xz"])
        .args(["--imager-device", "pi4-64bit"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    ok(&mut cmd);
    eprintln!("rpixen live --release: {:?}", started.elapsed());
    assert_eq!(
        sha256_file(&raw),
        sha256_file(want),
        "live --release wrote other bytes than make live"
    );
    let xz = dir.join("live.raw.xz");
    let bmap = dir.join("live.raw.bmap");

    // xz: intact, several blocks (parallel decoding), decodes to the image.
    ok(Command::new("xz").arg("-t").arg(&xz));
    let list = ok(Command::new("xz").args(["-l", "--robot"]).arg(&xz));
    let file_line = list.lines().find(|l| l.starts_with("file\t")).expect("xz -l file line");
    let blocks: u64 = file_line.split('\t').nth(2).unwrap().parse().unwrap();
    assert!(blocks > 1, "xz -l shows {blocks} block(s):\n{list}");
    // sha256sum -c, as a user checks a download.
    ok(Command::new("sha256sum").current_dir(dir).args([
        "-c",
        "live.raw.sha256",
        "live.raw.xz.sha256",
    ]));

    // rpi-imager's repository: every required field, of the schema's types (jsonschema), and the
    // digests and sizes of the files on disk.
    let text = std::fs::read_to_string(dir.join("live.rpi-imager-manifest")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let e = &v["os_list"][0];
    assert_eq!(e["extract_size"], std::fs::metadata(&raw).unwrap().len());
    assert_eq!(e["extract_sha256"], sha256_file(&raw));
    assert_eq!(e["image_download_size"], std::fs::metadata(&xz).unwrap().len());
    assert_eq!(e["image_download_sha256"], sha256_file(&xz));
    assert_eq!(e["init_format"], "cloudinit");
    assert_eq!(e["url"], "https://example.invalid/rpixen/live.raw.xz");
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo.join("release/tests/data/os-list-schema.json")).unwrap(),
    )
    .unwrap();
    let os_entry = &schema["properties"]["os_list"]["items"]["anyOf"][0];
    for f in os_entry["required"].as_array().unwrap() {
        assert!(e.get(f.as_str().unwrap()).is_some(), "missing required field {f}");
    }
    let mut branch = os_entry.clone();
    branch["$schema"] = schema["$schema"].clone();
    let schema_file = dir.join("os-entry-schema.json");
    std::fs::write(&schema_file, serde_json::to_string(&branch).unwrap()).unwrap();
    let entry_file = dir.join("entry.json");
    std::fs::write(&entry_file, serde_json::to_string(e).unwrap()).unwrap();
    ok(Command::new("/usr/bin/jsonschema").arg("-i").arg(&entry_file).arg(&schema_file));

    // The SBOM of the same board, validated by spdx-tools; it names the image file it describes.
    let spdx = dir.join("live.spdx.json");
    let mut cmd = Command::new(rpixen);
    cmd.current_dir(repo).args(["sbom", "qemu-virt", "--image"]).arg(&raw).arg("-o").arg(&spdx);
    for (k, v) in env {
        cmd.env(k, v);
    }
    ok(&mut cmd);
    ok(Command::new("pyspdxtools").arg("-i").arg(&spdx));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&spdx).unwrap()).unwrap();
    let packages = doc["packages"].as_array().unwrap();
    let image =
        packages.iter().find(|p| p["packageFileName"] == "live.raw").expect("image package");
    assert_eq!(image["checksums"][0]["checksumValue"], sha256_file(&raw));
    for kind in ["pkg:oci/", "pkg:deb/debian/", "pkg:cargo/"] {
        assert!(
            packages.iter().any(|p| p["externalRefs"].as_array().is_some_and(|r| r
                .iter()
                .any(|r| r["referenceLocator"].as_str().is_some_and(|l| l.starts_with(kind))))),
            "the SBOM has no {kind} package"
        );
    }

    // bmaptool copy onto a used card: a loop device over a file of stale bytes (bmaptool truncates a
    // regular file, so only a block device keeps what the map leaves alone, as a card does).
    let card = dir.join("card.raw");
    let len = std::fs::metadata(&raw).unwrap().len();
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&card).unwrap();
        let chunk = vec![STALE; 1 << 20];
        for _ in 0..len.div_ceil(1 << 20) {
            f.write_all(&chunk).unwrap();
        }
        f.set_len(len).unwrap();
    }
    let started = std::time::Instant::now();
    {
        let dev = Loop::attach(&card);
        ok(Command::new("bmaptool").args(["copy", "--bmap"]).arg(&bmap).arg(&xz).arg(&dev.0));
    }
    eprintln!("bmaptool copy live.raw.xz onto a used card: {:?}", started.elapsed());
    let ranges = bmap_ranges(&std::fs::read_to_string(&bmap).unwrap());
    let mapped: u64 = ranges.iter().map(|r| r.end - r.start).sum();
    // Mapped: the FATs' contents, slot A's twice (IMGB starts as IMGA's copy); the rest is holes.
    assert!(mapped < len / 2, "the map covers {mapped} of {len} bytes: not sparse");
    let (mut a, mut b) = (std::fs::File::open(&raw).unwrap(), std::fs::File::open(&card).unwrap());
    for r in &ranges {
        assert!(read_range(&mut a, r) == read_range(&mut b, r), "mapped bytes {r:?} differ");
    }
    // bmaptool left the rest alone (so the stale bytes are really there for the boot to survive).
    let persist = partition(&card, "PERSIST");
    let tail = persist.end - 4096..persist.end;
    assert!(read_range(&mut b, &tail).iter().all(|x| *x == STALE), "PERSIST's tail was written");
    // Each FAT on the used card is sound: its metadata was mapped in full.
    for name in ["BOOT", "IMGA", "IMGB", "CONFIG"] {
        let p = partition(&card, name);
        let vol = dir.join(format!("{name}.fat"));
        std::fs::write(&vol, read_range(&mut b, &p)).unwrap();
        ok(Command::new("fsck.fat").arg("-n").arg(&vol));
        std::fs::remove_file(&vol).unwrap();
    }
    eprintln!("bmap: {mapped} of {len} bytes mapped in {} ranges", ranges.len());
    card
}
