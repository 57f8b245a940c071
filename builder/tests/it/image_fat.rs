//! FAT volumes written by `rpixen::disk::fat`, checked with dosfstools and mtools.

use std::process::Command;

use std::sync::Arc;

use rpixen::disk::fat::{build, Entry, Spec};
use rpixen::disk::source::Source;

struct F<'a> {
    path: &'a str,
    data: &'a [u8],
}

fn check(spec: &Spec<'_>, files: &[F<'_>]) {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("fat.img");
    // Half the files come from host files (copied at output time), half from memory.
    let sources: Vec<Arc<Source>> = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if i % 2 == 0 {
                let p = dir.path().join(format!("src{i}"));
                std::fs::write(&p, f.data).unwrap();
                Arc::new(Source::host(p).unwrap())
            } else {
                Arc::new(Source::Memory(f.data.to_vec()))
            }
        })
        .collect();
    let entries: Vec<Entry<'_>> =
        files.iter().zip(&sources).map(|(f, s)| Entry { path: f.path, source: s }).collect();
    std::fs::write(&img, build(spec, &entries).unwrap().to_bytes().unwrap()).unwrap();
    let fsck = Command::new("fsck.fat").arg("-n").arg(&img).output().unwrap();
    let report =
        String::from_utf8_lossy(&fsck.stdout).into_owned() + &String::from_utf8_lossy(&fsck.stderr);
    assert!(fsck.status.success(), "fsck.fat -n rejected the volume:\n{report}");
    assert!(
        !report.contains("Free cluster summary wrong") && !report.contains("differ"),
        "{report}"
    );
    for f in files {
        let out = dir.path().join("out");
        let _ = std::fs::remove_file(&out);
        testkit::run(
            Command::new("mcopy")
                .arg("-n")
                .arg("-i")
                .arg(&img)
                .arg(format!("::{}", f.path))
                .arg(&out),
        );
        assert_eq!(std::fs::read(&out).unwrap(), f.data, "{}", f.path);
    }
    let listing = testkit::run(Command::new("mdir").arg("-i").arg(&img).arg("::"));
    assert!(
        listing.contains(&format!("Volume in drive : is {}", spec.label.to_uppercase())),
        "{listing}"
    );
}

#[test]
fn fat32_boot_volume_with_folders_passes_fsck() {
    let kernel: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    let spec = Spec {
        label: "RPIXEN-BOOT",
        size: 64 << 20,
        fat32: true,
        volume_id: 0xdead_beef,
        epoch: 1_700_000_000,
    };
    let mut files = vec![
        F { path: "config.txt", data: b"arm_64bit=1\n" },
        F { path: "boot.scr", data: b"script" },
        F { path: "Image", data: &kernel },
        F { path: "overlays/disable-bt.dtbo", data: b"dtbo" },
        F { path: "overlays/deeper/a-long-file-name.txt", data: b"deep" },
    ];
    // Enough entries that the folder spans several clusters.
    let names: Vec<String> = (0..40).map(|i| format!("overlays/overlay-number-{i}.dtbo")).collect();
    for n in &names {
        files.push(F { path: n, data: n.as_bytes() });
    }
    check(&spec, &files);
}

#[test]
fn small_config_volume_passes_fsck() {
    let spec = Spec { label: "CONFIG", size: 8 << 20, fat32: false, volume_id: 7, epoch: 0 };
    check(
        &spec,
        &[F { path: "etc/server", data: b"example.org\n" }, F { path: "README", data: b"hi\n" }],
    );
}
