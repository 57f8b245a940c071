//! The release files of a real image, checked by the tools their users run: xz, sha256sum,
//! bmaptool (Debian's bmap-tools), fsck.fat, and rpi-imager's own JSON schema through jsonschema.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use rpixen_release::imager::ImagerMeta;
use rpixen_release::xz::XzOptions;
use rpixen_release::{date, write_release, Release, ReleaseRequest};
use sha2::{Digest as _, Sha256};

use crate::image::{self, fixture, s, tool};

const BLOCK: u64 = 32 << 20;

fn meta() -> ImagerMeta {
    ImagerMeta {
        name: "rpixen (QEMU virt)".into(),
        description: "Edge OS: rpixen hypervisor, Dom0 Linux, OCI-built rootfs".into(),
        icon: "https://example.invalid/rpixen/icon.png".into(),
        url: "https://example.invalid/rpixen/live.raw.xz".into(),
        release_date: date::release_date(image::EPOCH.parse().unwrap()).unwrap(),
        devices: vec!["pi4-64bit".into()],
        website: Some("https://example.invalid/rpixen".into()),
        architecture: Some("armv8".into()),
        bmap_url: Some("https://example.invalid/rpixen/live.raw.bmap".into()),
    }
}

/// Writes every release file of the fixture image into `out` with `threads` encoder threads.
fn write_into(out: &Path, threads: u32) -> Release {
    let f = fixture();
    let img = std::fs::read(&f.raw).unwrap();
    let data = image::data_ranges(&img);
    let meta = meta();
    let req = ReleaseRequest {
        dir: out,
        base_name: "live.raw",
        image_size: img.len() as u64,
        data: &data,
        xz: Some(XzOptions { block_size: BLOCK, preset: 6, threads }),
        bmap: true,
        imager: Some(&meta),
    };
    // From a pipe-like reader: nothing may depend on seeking or holes.
    let r = write_release(&img[..], &req).unwrap();
    std::fs::copy(&f.raw, out.join("live.raw")).unwrap();
    r
}

/// The release files written once (2 threads) for the tests that only read them.
fn release() -> &'static (PathBuf, Release) {
    static R: OnceLock<(PathBuf, Release)> = OnceLock::new();
    R.get_or_init(|| {
        let out = fixture().dir.join("release");
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).unwrap();
        let started = std::time::Instant::now();
        let r = write_into(&out, 2);
        eprintln!("release files written in {:?}", started.elapsed());
        (out, r)
    })
}

/// A scratch folder next to the fixture (the system /tmp may be too small for image copies).
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(&fixture().dir).unwrap()
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

#[test]
fn ranges_cover_every_nonzero_byte_of_the_image() {
    // The premise of the other tests: outside the derived ranges the image is zeros, so a bmap copy
    // onto a zeroed file gives the whole image back.
    let img = std::fs::read(&fixture().raw).unwrap();
    let mut data = image::data_ranges(&img);
    data.sort_by_key(|r| r.start);
    let mut pos = 0u64;
    for r in data.iter().chain(std::iter::once(&(img.len() as u64..img.len() as u64))) {
        if r.start > pos {
            let gap = &img[pos as usize..r.start as usize];
            if let Some(i) = gap.iter().position(|b| *b != 0) {
                panic!("non-zero byte at {} outside every data range", pos + i as u64);
            }
        }
        pos = pos.max(r.end);
    }
    let mapped: u64 = data.iter().map(|r| r.end - r.start).sum();
    eprintln!("image {} bytes, {} data ranges, {} data bytes", img.len(), data.len(), mapped);
    // Data: the FATs' contents, slot A's twice (IMGB starts as IMGA's copy); the rest is holes.
    assert!(mapped < img.len() as u64 / 2, "a live image is mostly empty space");
}

#[test]
fn xz_is_multi_block_reproducible_and_decodes_to_the_image() {
    let (a, ra) = release();
    let b = scratch();
    let started = std::time::Instant::now();
    // 3 threads on a 2-core machine: another split of the work, for no extra wall time.
    let rb = write_into(b.path(), 3);
    eprintln!("release files written with 3 threads in {:?}", started.elapsed());
    let xa = std::fs::read(a.join("live.raw.xz")).unwrap();
    let xb = std::fs::read(b.path().join("live.raw.xz")).unwrap();
    assert!(xa == xb, "xz output differs between 2 and 3 encoder threads");
    assert_eq!(ra.xz, rb.xz);
    drop(b);

    let t = tool(Command::new("xz").args(["-t", s(&a.join("live.raw.xz"))]));
    assert!(t.status.success(), "xz -t: {}", String::from_utf8_lossy(&t.stderr));
    let l = tool(Command::new("xz").args(["--robot", "-l", s(&a.join("live.raw.xz"))]));
    let list = String::from_utf8_lossy(&l.stdout);
    // `file\t<streams>\t<blocks>\t<compressed>\t<uncompressed>\t...`
    let file =
        list.lines().find(|l| l.starts_with("file\t")).unwrap_or_else(|| panic!("xz -l: {list}"));
    let cols: Vec<&str> = file.split('\t').collect();
    let blocks: u64 = cols[2].parse().unwrap();
    let uncompressed: u64 = cols[4].parse().unwrap();
    assert_eq!(uncompressed, ra.raw.size);
    assert_eq!(blocks, ra.raw.size.div_ceil(BLOCK), "{list}");
    assert!(blocks > 1);

    let mut child = Command::new("xz")
        .args(["-dc", "-T0", s(&a.join("live.raw.xz"))])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut h = Sha256::new();
    let mut n = 0u64;
    let mut out = child.stdout.take().unwrap();
    let mut buf = vec![0; 1 << 20];
    loop {
        let k = out.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    assert!(child.wait().unwrap().success());
    assert_eq!((n, hex::encode(h.finalize())), (ra.raw.size, sha256_file(&fixture().raw)));

    // sha256sum checks both sum files against the files next to them.
    let c = tool(
        Command::new("sha256sum")
            .args(["-c", "live.raw.sha256", "live.raw.xz.sha256"])
            .current_dir(a),
    );
    assert!(
        c.status.success(),
        "sha256sum -c: {}{}",
        String::from_utf8_lossy(&c.stdout),
        String::from_utf8_lossy(&c.stderr)
    );
    eprintln!("xz: {} blocks, {} -> {} bytes", blocks, ra.raw.size, ra.xz.as_ref().unwrap().size);
}

/// A target file of the image's size filled with a pattern, standing in for a used SD card.
fn dirty_target(dir: &Path, len: u64) -> PathBuf {
    let p = dir.join("target.img");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
    let chunk = vec![0xa5u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
    p
}

/// A loop device over a file, detached on drop: bmaptool truncates a regular-file target, so a
/// target that keeps its old bytes (a used SD card) has to be a block device.
struct Loop(String);

impl Loop {
    fn attach(file: &Path) -> Loop {
        let o = tool(Command::new("losetup").args(["--find", "--show", s(file)]));
        assert!(
            o.status.success(),
            "losetup (root and loop devices needed): {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Loop(String::from_utf8_lossy(&o.stdout).trim().to_owned())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

fn bmaptool_copy(src: &Path, dest: &str) -> String {
    // bmaptool finds live.raw.bmap next to live.raw.xz by itself.
    let o = tool(Command::new("bmaptool").args(["copy", s(src), dest]));
    let log =
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "bmaptool copy: {log}");
    assert!(log.contains("live.raw.bmap"), "bmaptool did not use our bmap: {log}");
    log
}

#[test]
fn bmaptool_copy_writes_the_mapped_bytes_and_the_filesystems_check() {
    let (out, r) = release();
    let d = scratch();
    let raw = std::fs::read(&fixture().raw).unwrap();
    let map = r.block_map.as_ref().unwrap();

    // Onto a new file: bmaptool sizes it and writes the mapped blocks; the rest reads as zeros, so
    // the file equals the image.
    let file = d.path().join("new.img");
    bmaptool_copy(&out.join("live.raw.xz"), s(&file));
    assert!(
        std::fs::read(&file).unwrap() == raw,
        "bmaptool copy onto a new file does not give the image back"
    );
    std::fs::remove_file(&file).unwrap();

    // Onto a used card: a block device full of old bytes.
    let target = dirty_target(d.path(), r.raw.size);
    {
        let dev = Loop::attach(&target);
        bmaptool_copy(&out.join("live.raw.xz"), &dev.0);
    }
    let got = std::fs::read(&target).unwrap();
    assert_eq!(got.len(), raw.len());
    for m in &map.ranges {
        let b = m.range.bytes(map.image_size);
        assert!(
            got[b.start as usize..b.end as usize] == raw[b.start as usize..b.end as usize],
            "mapped blocks {:?} differ",
            m.range
        );
    }
    // Unmapped blocks were left alone: bmaptool skipped them.
    let untouched = got.iter().filter(|b| **b == 0xa5).count() as u64;
    assert!(
        untouched > r.raw.size / 2,
        "bmaptool wrote more than the mapped blocks ({untouched} old bytes left)"
    );

    // Every FAT on the used card is whole: its metadata was mapped in full.
    let (parts, _) = image::gpt_parts(&got);
    let mut checked = 0;
    for p in parts.iter().filter(|p| p.name == "BOOT" || p.name == "CONFIG") {
        let vol = d.path().join(format!("{}.fat", p.name));
        std::fs::write(&vol, &got[p.span.start as usize..p.span.end as usize]).unwrap();
        let f = tool(Command::new("fsck.fat").arg("-n").arg(&vol));
        assert!(
            f.status.success(),
            "fsck.fat -n {} after bmaptool copy: {}",
            p.name,
            String::from_utf8_lossy(&f.stdout)
        );
        checked += 1;
    }
    assert_eq!(checked, 2);
    eprintln!(
        "bmap: {} of {} blocks mapped in {} ranges; {untouched} old bytes left on the used card",
        map.mapped_blocks_count(),
        map.blocks_count(),
        map.ranges.len()
    );
}

#[test]
#[ignore = "3 minutes of bmaptool's Python checksumming; CI's 40 minutes: make test-long"]
fn bmaptool_refuses_a_corrupted_range_and_a_corrupted_bmap() {
    let (out, r) = release();
    let d = scratch();
    let map = r.block_map.as_ref().unwrap();
    // Flip one byte in the middle of the largest mapped range.
    let biggest = map.ranges.iter().max_by_key(|m| m.range.blocks()).unwrap();
    let span = biggest.range.bytes(map.image_size);
    let mut img = std::fs::read(&fixture().raw).unwrap();
    let at = ((span.start + span.end) / 2) as usize;
    img[at] ^= 0xff;
    let bad = d.path().join("bad.raw");
    std::fs::write(&bad, &img).unwrap();
    let target = d.path().join("t.img");
    let o = tool(Command::new("bmaptool").args([
        "copy",
        "--bmap",
        s(&out.join("live.raw.bmap")),
        s(&bad),
        s(&target),
    ]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "bmaptool accepted an image with a corrupted range");
    assert!(err.contains("checksum mismatch"), "{err}");

    // A bmap whose text was altered fails its own BmapFileChecksum.
    let text = std::fs::read_to_string(out.join("live.raw.bmap")).unwrap();
    let first = &map.ranges[0];
    let edited =
        text.replacen(&format!("{}\"> 0", first.sha256), &format!("{}\"> 1", first.sha256), 1);
    assert_ne!(edited, text);
    let bmap = d.path().join("edited.bmap");
    std::fs::write(&bmap, edited).unwrap();
    let o = tool(Command::new("bmaptool").args([
        "copy",
        "--bmap",
        s(&bmap),
        s(&fixture().raw),
        s(&target),
    ]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("checksum mismatch for bmap file"), "{err}");
}

#[test]
fn imager_manifest_matches_the_files_and_rpi_imagers_schema() {
    let (out, _) = release();
    let d = scratch();
    let text = std::fs::read_to_string(out.join("live.rpi-imager-manifest")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let list = v["os_list"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    let e = &list[0];
    // Digests and sizes computed here, from the files on disk.
    let raw = out.join("live.raw");
    let xz = out.join("live.raw.xz");
    assert_eq!(e["extract_size"], std::fs::metadata(&raw).unwrap().len());
    assert_eq!(e["extract_sha256"], sha256_file(&raw));
    assert_eq!(e["image_download_size"], std::fs::metadata(&xz).unwrap().len());
    assert_eq!(e["image_download_sha256"], sha256_file(&xz));
    assert_eq!(e["init_format"], "cloudinit");
    assert_eq!(e["devices"], serde_json::json!(["pi4-64bit"]));

    // rpi-imager's schema: every field its OS-entry branch requires, each of the declared type.
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../data/os-list-schema.json")).unwrap();
    let os_entry = &schema["properties"]["os_list"]["items"]["anyOf"][0];
    let required = os_entry["required"].as_array().unwrap();
    assert!(required.len() >= 9, "the schema's OS entry lists its required fields");
    for f in required {
        assert!(e.get(f.as_str().unwrap()).is_some(), "missing required field {f}");
    }
    // And the schema checked by an independent validator (Debian's python3-jsonschema), against
    // the OS-entry branch itself so that the folder branches cannot match instead.
    let mut branch = os_entry.clone();
    branch["$schema"] = schema["$schema"].clone();
    let schema_file = d.path().join("os-entry-schema.json");
    std::fs::write(&schema_file, serde_json::to_string(&branch).unwrap()).unwrap();
    let entry_file = d.path().join("entry.json");
    std::fs::write(&entry_file, serde_json::to_string(e).unwrap()).unwrap();
    let o = tool(Command::new("/usr/bin/jsonschema").arg("-i").arg(&entry_file).arg(&schema_file));
    assert!(
        o.status.success(),
        "jsonschema: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // The validator does reject an entry the schema forbids, so the pass above means something.
    let mut wrong = e.clone();
    wrong["init_format"] = "cloud-init".into();
    std::fs::write(&entry_file, serde_json::to_string(&wrong).unwrap()).unwrap();
    let o = tool(Command::new("/usr/bin/jsonschema").arg("-i").arg(&entry_file).arg(&schema_file));
    assert!(!o.status.success(), "jsonschema accepted init_format `cloud-init`");

    // The whole file against the whole schema: the `imager.devices` list a `--repo` load needs
    // (a device for the entry's tag) is well-formed too.
    assert_eq!(v["imager"]["devices"][0]["tags"], serde_json::json!(["pi4-64bit"]));
    let full_schema = d.path().join("os-list-schema.json");
    std::fs::write(&full_schema, include_str!("../data/os-list-schema.json")).unwrap();
    let o = tool(
        Command::new("/usr/bin/jsonschema")
            .arg("-i")
            .arg(out.join("live.rpi-imager-manifest"))
            .arg(&full_schema),
    );
    assert!(
        o.status.success(),
        "jsonschema (whole file): {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
