//! The U-Boot script image writer against the real `mkimage` and `dumpimage` (u-boot-tools).

use std::process::Command;

use rpixen::uboot::uimage::{script, ScriptImage};

fn mkimage(dir: &std::path::Path, name: &str, addr: u32, epoch: u32, body: &[u8]) -> Vec<u8> {
    let src = dir.join("script.txt");
    let out = dir.join("mk.scr");
    std::fs::write(&src, body).unwrap();
    let a = format!("{addr:#x}");
    testkit::run(
        Command::new("mkimage")
            .env("SOURCE_DATE_EPOCH", epoch.to_string())
            .args([
                "-A", "arm64", "-T", "script", "-C", "none", "-a", &a, "-e", &a, "-n", name, "-d",
            ])
            .arg(&src)
            .arg(&out),
    );
    std::fs::read(&out).unwrap()
}

#[test]
fn byte_identical_to_mkimage() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, u32, u32, &[u8]); 4] = [
        ("boot.scr", 0x4020_0000, 1_700_000_000, b"echo hello\nboot\n"),
        ("rpixen second stage", 0x1000_0000, 0, b"setenv a b\n"),
        // Odd length: mkimage does not pad the last (only) file.
        ("x", 0, 315_532_800, b"echo 123"),
        ("a-name-longer-than-thirty-two-bytes-for-sure", 0xC0_0000, 42, &[b'#'; 4097]),
    ];
    for (name, addr, epoch, body) in cases {
        let ours = script(&ScriptImage { name, load: addr, entry: addr, time: epoch }, body);
        let theirs = mkimage(dir.path(), name, addr, epoch, body);
        assert_eq!(ours, theirs, "case {name:?}");
    }
}

#[test]
fn mkimage_lists_and_dumpimage_extracts() {
    let dir = tempfile::tempdir().unwrap();
    let body = b"echo second stage\nsource ${scriptaddr}\n";
    let img = script(
        &ScriptImage { name: "rpixen", load: 0x5000_0000, entry: 0x5000_0000, time: 1_600_000_000 },
        body,
    );
    let path = dir.path().join("ours.scr");
    std::fs::write(&path, &img).unwrap();

    let listing = testkit::run(Command::new("mkimage").env("TZ", "UTC").arg("-l").arg(&path));
    assert!(listing.contains("Image Name:   rpixen"), "{listing}");
    assert!(listing.contains("AArch64 Linux Script (uncompressed)"), "{listing}");
    assert!(listing.contains("Load Address: 50000000"), "{listing}");
    assert!(listing.contains("Created:      Sun Sep 13 12:26:40 2020"), "{listing}");

    let extracted = dir.path().join("out.txt");
    testkit::run(
        Command::new("dumpimage")
            .args(["-T", "script", "-p", "0", "-o"])
            .arg(&extracted)
            .arg(&path),
    );
    // dumpimage hands back the whole data part: the length table, then the script.
    let mut expected = (body.len() as u32).to_be_bytes().to_vec();
    expected.extend_from_slice(&[0, 0, 0, 0]);
    expected.extend_from_slice(body);
    assert_eq!(std::fs::read(&extracted).unwrap(), expected);
    assert!(listing.contains(&format!("Image 0: {} Bytes", body.len())), "{listing}");
}
