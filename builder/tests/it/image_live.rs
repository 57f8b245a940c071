//! `rpixen live` and `rpixen inspect` end to end, checked with independent tools: sgdisk, fdisk,
//! fsck.fat, mtools, mkimage, sha256sum.

use crate::image_support;

use std::path::Path;
use std::process::{Command, Stdio};

use image_support::*;

const MIB: u64 = 1 << 20;

fn live(dir: &Path, out: &Path, extra_args: &[&str], envs: &[(&str, &str)]) {
    let s = synthetic(dir, "");
    let mut args = vec![
        "live",
        s.manifest.to_str().unwrap(),
        "--initrd",
        s.initrd.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra_args);
    let o = run_rpixen(&args, envs);
    assert!(o.status.success(), "rpixen live failed: {}", String::from_utf8_lossy(&o.stderr));
}

fn sha256(p: &Path) -> String {
    testkit::run(Command::new("sha256sum").arg(p)).split_whitespace().next().unwrap().to_owned()
}

fn inspect_json(p: &Path) -> serde_json::Value {
    let o = run_rpixen(&["inspect", "--json", p.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn partition_tables_pass_sgdisk_and_fdisk() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("live.raw");
    live(dir.path(), &img, &[], &[]);

    let v = testkit::run(Command::new("sgdisk").arg("-v").arg(&img));
    assert!(v.contains("No problems found"), "{v}");

    let f = testkit::run(Command::new("fdisk").arg("-l").arg(&img));
    assert!(f.contains("Disklabel type: gpt"), "{f}");
    let rows: Vec<&str> = f.lines().filter(|l| l.starts_with(img.to_str().unwrap())).collect();
    assert_eq!(rows.len(), 6, "{f}");
    assert!(
        rows[0].contains(" 2048 ") && rows[0].contains("64M") && rows[0].contains("EFI System"),
        "{f}"
    );
    // Each partition starts on a 1 MiB boundary.
    for r in &rows {
        let start: u64 = r.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert_eq!(start % 2048, 0, "{r}");
    }
    // The hybrid MBR: entry 1 is the boot FAT, FAT32 LBA (0x0c), active; entry 2 the 0xEE protector.
    let mbr = testkit::run(Command::new("fdisk").args(["-l", "-t", "dos"]).arg(&img));
    let entries: Vec<&str> = mbr.lines().filter(|l| l.starts_with(img.to_str().unwrap())).collect();
    assert_eq!(entries.len(), 2, "{mbr}");
    assert!(
        entries[0].contains(" * ") && entries[0].contains("2048") && entries[0].contains(" c "),
        "{mbr}"
    );
    assert!(entries[1].contains(" ee "), "{mbr}");
    // Legacy-BIOS-bootable attribute on the boot FAT (what U-Boot's `part list -bootable` reads).
    let info = testkit::run(Command::new("sgdisk").arg("-i").arg("1").arg(&img));
    assert!(info.contains("Attribute flags: 0000000000000004"), "{info}");
    assert!(info.contains("Partition name: 'BOOT'"), "{info}");

    // The A/B layout: entries 1-5 as before, STATE (6) on the disk before PERSIST, which stays last
    // so that the device can grow it.
    let p = testkit::run(Command::new("sgdisk").arg("-p").arg(&img));
    let entries: Vec<(u64, String)> = p
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let n = w.first()?.parse().ok()?;
            Some((n, w.last()?.to_string()))
        })
        .collect();
    let names: Vec<&str> = entries.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["BOOT", "IMGA", "IMGB", "CONFIG", "PERSIST", "STATE"], "{p}");
    let start = |n: &str| {
        let i = testkit::run(Command::new("sgdisk").arg("-i").arg(n).arg(&img));
        let l = i.lines().find(|l| l.starts_with("First sector:")).unwrap().to_owned();
        l.split_whitespace().nth(2).unwrap().parse::<u64>().unwrap() * 512
    };
    assert_eq!(start("6"), (1 + 64 + 16 + 16 + 8) * MIB, "{p}");
    assert_eq!(start("5"), (1 + 64 + 16 + 16 + 8 + 2) * MIB, "{p}");

    // Well under 1 GiB and sparse on disk.
    let meta = std::fs::metadata(&img).unwrap();
    assert_eq!(meta.len(), (1 + 64 + 16 + 16 + 8 + 2 + 8 + 1) * MIB);
    use std::os::unix::fs::MetadataExt;
    assert!(meta.blocks() * 512 < 20 * MIB, "not sparse: {} blocks", meta.blocks());
}

#[test]
fn boot_and_config_fats_pass_fsck_and_mtools() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("live.raw");
    live(dir.path(), &img, &[], &[("SOURCE_DATE_EPOCH", "1700000000")]);

    let fsck = |fat: &Path, bits: &str| {
        let o = Command::new("fsck.fat").arg("-nv").arg(fat).output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "{}: {text}{}",
            fat.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(text.contains(bits), "{text}");
    };
    let boot = dir.path().join("boot.fat");
    extract(&img, MIB, 64 * MIB, &boot);
    fsck(&boot, "32 bit entries");
    // Both slots: FATs that pass fsck and hold the same bytes (the live image's one slot image).
    let (imga, imgb) = (dir.path().join("imga.fat"), dir.path().join("imgb.fat"));
    extract(&img, 65 * MIB, 16 * MIB, &imga);
    extract(&img, 81 * MIB, 16 * MIB, &imgb);
    fsck(&imga, "entries");
    assert_eq!(sha256(&imga), sha256(&imgb), "IMGB is not a copy of IMGA");

    let at = format!("{}@@{}", img.display(), MIB);
    let listing = testkit::run(Command::new("mdir").arg("-i").arg(&at).arg("::"));
    assert!(listing.contains("RPIXEN-BOOT"), "{listing}");
    // The boot FAT keeps what the firmware and U-Boot read; everything above is in the slot.
    for gone in ["Image", "INITRD", "RPIXEN~1"] {
        assert!(!listing.contains(gone), "{gone} on the boot FAT:\n{listing}");
    }
    let slot_at = format!("{}@@{}", img.display(), 65 * MIB);
    let slot_listing = testkit::run(Command::new("mdir").arg("-i").arg(&slot_at).arg("::"));
    assert!(slot_listing.contains("RPIXEN-SLOT"), "{slot_listing}");
    for (fat, name, src) in [
        (&slot_at, "rpixen-hv.bin", "hv.bin"),
        (&slot_at, "Image", "Image"),
        (&slot_at, "initrd.img", "initrd.img"),
        (&at, "u-boot.bin", "u-boot.bin"),
    ] {
        let out = dir.path().join(format!("out-{name}"));
        testkit::run(Command::new("mcopy").arg("-i").arg(fat).arg(format!("::{name}")).arg(&out));
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(dir.path().join(src)).unwrap(),
            "{name}"
        );
    }
    // Time stamps come from SOURCE_DATE_EPOCH (2023-11-14 22:13:20 UTC).
    let long = testkit::run(Command::new("mdir").arg("-i").arg(&slot_at).arg("::Image"));
    assert!(long.contains("2023-11-14") && long.contains("22:13"), "{long}");

    // Both scripts are valid U-Boot script images.
    for (fat, name, title) in
        [(&at, "boot.scr", "rpixen boot"), (&slot_at, "rpixen.scr", "rpixen second stage")]
    {
        let out = dir.path().join(name);
        testkit::run(Command::new("mcopy").arg("-i").arg(fat).arg(format!("::{name}")).arg(&out));
        let l = testkit::run(Command::new("mkimage").arg("-l").arg(&out));
        assert!(
            l.contains(&format!("Image Name:   {title}")) && l.contains("AArch64 Linux Script"),
            "{l}"
        );
        let txt = dir.path().join(format!("{name}.txt"));
        testkit::run(
            Command::new("dumpimage").args(["-T", "script", "-p", "0", "-o"]).arg(&txt).arg(&out),
        );
        let body = String::from_utf8_lossy(&std::fs::read(&txt).unwrap()[8..]).into_owned();
        if name == "rpixen.scr" {
            assert!(body.contains("setenv rpixen_file rpixen-hv.bin"), "{body}");
            assert!(body.contains("fdt set /chosen xen,xen-bootargs \"console=dtuart dtuart=serial0 dom0_mem=512M${rpixen_hv_extra}\""), "{body}");
            assert!(body.contains("booti 0x50200000 - "), "{body}");
        } else {
            assert!(body.contains("source 0x50000000"), "{body}");
            assert!(body.contains("part number ${devtype} ${devnum} IMGB rpixen_part"), "{body}");
            assert!(body.contains("run rpixen_boot_slot"), "{body}");
        }
    }

    // CONFIG (partition 4) holds the manifest's config_files.
    let cfg_off = (1 + 64 + 16 + 16) * MIB;
    let cfg = dir.path().join("config.fat");
    extract(&img, cfg_off, 8 * MIB, &cfg);
    let fsck = Command::new("fsck.fat").arg("-n").arg(&cfg).output().unwrap();
    assert!(fsck.status.success(), "{}", String::from_utf8_lossy(&fsck.stdout));
    let out = dir.path().join("server");
    testkit::run(
        Command::new("mcopy")
            .arg("-i")
            .arg(format!("{}@@{cfg_off}", img.display()))
            .arg("::etc/server")
            .arg(&out),
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"example.org\n");
}

#[test]
fn inspect_lists_partitions_and_boot_files() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("live.raw");
    live(dir.path(), &img, &[], &[]);
    let j = inspect_json(&img);
    let names: Vec<&str> =
        j["partitions"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["BOOT", "IMGA", "IMGB", "CONFIG", "PERSIST", "STATE"]);
    let files = |i: usize| -> Vec<String> {
        j["filesystems"][i]["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(j["filesystems"][0]["label"], "RPIXEN-BOOT");
    assert_eq!(files(0), ["boot.scr", "u-boot.bin"]);
    for (i, part) in [(1, 2), (2, 3)] {
        assert_eq!(j["filesystems"][i]["partition"], part);
        assert_eq!(j["filesystems"][i]["label"], "RPIXEN-SLOT");
        for f in ["rpixen.scr", "rpixen-hv.bin", "Image", "initrd.img"] {
            assert!(files(i).iter().any(|g| g == f), "{f} not in {:?}", files(i));
        }
    }
    let st = &j["state"];
    assert_eq!(st["partition"], 6);
    assert_eq!(
        (st["a"].as_str(), st["b"].as_str(), st["seq"].as_u64()),
        (Some("active"), Some("unused"), Some(1))
    );
    assert_eq!(
        (st["boots"].as_str(), st["then"].as_str(), st["trial"].as_bool()),
        (Some("a"), Some("b"), Some(false))
    );
    assert_eq!(j["mbr"][0]["kind"], 12);
    assert_eq!(j["mbr"][0]["active"], true);

    let o = run_rpixen(&["inspect", img.to_str().unwrap()], &[]);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("BOOT") && table.contains("legacy-bootable") && table.contains("initrd.img"),
        "{table}"
    );
    assert!(
        table.contains("slot state (partition 6):\n  copy 0: seq 1: a=active b=unused\n")
            && table.contains("boot.scr boots slot a, then slot b"),
        "{table}"
    );
}

#[test]
fn reproducible_and_seeded() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (dir.path().join("a.raw"), dir.path().join("b.raw"), dir.path().join("c.raw"));
    let env = [("SOURCE_DATE_EPOCH", "1650000000")];
    live(dir.path(), &a, &[], &env);
    live(dir.path(), &b, &[], &env);
    assert_eq!(sha256(&a), sha256(&b), "same inputs, different images");
    live(dir.path(), &c, &["--seed", "device-0042"], &env);
    assert_ne!(sha256(&a), sha256(&c));
    let (ja, jc) = (inspect_json(&a), inspect_json(&c));
    assert_ne!(ja["disk_guid"], jc["disk_guid"]);
    for i in 0..6 {
        assert_ne!(ja["partitions"][i]["guid"], jc["partitions"][i]["guid"]);
    }
    // GUIDs are not fixed: other content gives other GUIDs too.
    let d = dir.path().join("d.raw");
    let s = synthetic(dir.path(), "");
    std::fs::write(&s.initrd, b"another initramfs").unwrap();
    let o = run_rpixen(
        &[
            "live",
            s.manifest.to_str().unwrap(),
            "--initrd",
            s.initrd.to_str().unwrap(),
            "-o",
            d.to_str().unwrap(),
        ],
        &env,
    );
    assert!(o.status.success());
    assert_ne!(inspect_json(&d)["disk_guid"], ja["disk_guid"]);
    // Every GUID in an image is distinct.
    let mut guids: Vec<String> =
        ja["partitions"].as_array().unwrap().iter().map(|p| p["guid"].to_string()).collect();
    guids.push(ja["disk_guid"].to_string());
    guids.sort();
    guids.dedup();
    assert_eq!(guids.len(), 7);
}

#[test]
fn stdout_stream_equals_the_sparse_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file.raw");
    live(dir.path(), &file, &[], &[]);
    let s = synthetic(dir.path(), "");
    let streamed = dir.path().join("streamed.raw");
    let out = std::fs::File::create(&streamed).unwrap();
    let status = rpixen()
        .args(["live", s.manifest.to_str().unwrap(), "--initrd", s.initrd.to_str().unwrap()])
        .stdout(Stdio::from(out))
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(sha256(&file), sha256(&streamed));
    // `> file` gets the sparse writer too.
    use std::os::unix::fs::MetadataExt;
    assert!(
        std::fs::metadata(&streamed).unwrap().blocks() * 512 < 20 * MIB,
        "stdout file not sparse"
    );
    // `>>` (append) must not take the positioned path: the image follows what is already there.
    let appended = dir.path().join("appended.raw");
    std::fs::write(&appended, b"").unwrap();
    let out = std::fs::OpenOptions::new().append(true).open(&appended).unwrap();
    let status = rpixen()
        .args(["live", s.manifest.to_str().unwrap(), "--initrd", s.initrd.to_str().unwrap()])
        .stdout(Stdio::from(out))
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(sha256(&file), sha256(&appended));
    // And through a pipe.
    let mut child = rpixen()
        .args(["live", s.manifest.to_str().unwrap(), "--initrd", s.initrd.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let piped = testkit::run(Command::new("sha256sum").stdin(child.stdout.take().unwrap()));
    assert!(child.wait().unwrap().success());
    assert_eq!(piped.split_whitespace().next().unwrap(), sha256(&file));
}

fn only(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn errors_name_the_culprit_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let s = synthetic(dir.path(), "");
    let outdir = dir.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    let out = outdir.join("live.raw");
    let try_live = |manifest: &Path, initrd: &Path| {
        run_rpixen(
            &[
                "live",
                manifest.to_str().unwrap(),
                "--initrd",
                initrd.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
            ],
            &[],
        )
    };

    // A missing host file: named with its manifest field.
    std::fs::remove_file(dir.path().join("hv.bin")).unwrap();
    let o = try_live(&s.manifest, &s.initrd);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("hypervisor.binary") && err.contains("hv.bin"), "{err}");
    assert!(only(&outdir).is_empty(), "{:?}", only(&outdir));

    // A missing --initrd.
    let s = synthetic(dir.path(), "");
    let o = try_live(&s.manifest, &dir.path().join("nope.cpio"));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nope.cpio"));

    // Files that do not fit the slot: the volume and the field to change are named.
    std::fs::write(&s.initrd, vec![1u8; 20 << 20]).unwrap();
    let o = try_live(&s.manifest, &s.initrd);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("RPIXEN-SLOT") && err.contains("partitions"),
        "{err}"
    );
    assert!(only(&outdir).is_empty(), "{:?}", only(&outdir));

    // A hypervisor that booti would refuse.
    std::fs::write(&s.initrd, b"x").unwrap();
    std::fs::write(dir.path().join("hv.bin"), b"not an image").unwrap();
    let err = String::from_utf8_lossy(&try_live(&s.manifest, &s.initrd).stderr).into_owned();
    assert!(err.contains("hypervisor.binary") && err.contains("arm64"), "{err}");

    // An unknown manifest key.
    let s = synthetic(dir.path(), "colour: blue\n");
    let o = try_live(&s.manifest, &s.initrd);
    assert!(String::from_utf8_lossy(&o.stderr).contains("colour"));

    // An unknown board.
    let o = run_rpixen(&["live", "no-such-board", "-o", out.to_str().unwrap()], &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("no-such-board") && err.contains("qemu-virt"),
        "{err}"
    );

    // A bad SOURCE_DATE_EPOCH.
    let s = synthetic(dir.path(), "");
    let o = run_rpixen(
        &[
            "live",
            s.manifest.to_str().unwrap(),
            "--initrd",
            s.initrd.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
        &[("SOURCE_DATE_EPOCH", "yesterday")],
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("SOURCE_DATE_EPOCH"));
    assert!(only(&outdir).is_empty(), "{:?}", only(&outdir));
}

#[test]
fn ctrl_c_removes_the_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = synthetic(dir.path(), "");
    // A large initrd so that the write takes long enough to be interrupted, in slots that hold it.
    let big: Vec<u8> = (0..55u32 << 20).map(|i| (i % 253) as u8 | 1).collect();
    std::fs::write(&s.initrd, &big).unwrap();
    let yaml = std::fs::read_to_string(&s.manifest).unwrap();
    let yaml = yaml.replace("imga: 16M", "imga: 64M").replace("imgb: 16M", "imgb: 64M");
    std::fs::write(&s.manifest, yaml).unwrap();
    let outdir = dir.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    let out = outdir.join("live.raw");
    for _attempt in 0..5 {
        let mut child = rpixen()
            .args([
                "live",
                s.manifest.to_str().unwrap(),
                "--initrd",
                s.initrd.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
            ])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for the temporary file to appear, then interrupt.
        let start = std::time::Instant::now();
        while only(&outdir).is_empty() && start.elapsed().as_secs() < 20 {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
        }
        let seen = only(&outdir);
        testkit::run(Command::new("kill").arg("-INT").arg(child.id().to_string()));
        let status = child.wait().unwrap();
        if seen.iter().any(|n| n.ends_with(".partial")) && status.code() == Some(130) {
            assert!(only(&outdir).is_empty(), "left behind: {:?}", only(&outdir));
            return;
        }
        // Finished before the signal landed: try again from a clean folder.
        let _ = std::fs::remove_file(&out);
    }
    panic!("could not interrupt rpixen while it was writing");
}

#[test]
fn refuses_to_write_the_image_to_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let s = synthetic(dir.path(), "");
    // `script` runs the command on a pseudo-terminal, as an interactive shell would.
    let cmd = format!(
        "'{}' live '{}' --initrd '{}'",
        env!("CARGO_BIN_EXE_rpixen"),
        s.manifest.display(),
        s.initrd.display()
    );
    let o = Command::new("script").args(["-q", "-e", "-c", &cmd, "/dev/null"]).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success(), "{text}");
    assert!(text.contains("refusing to write a disk image to a terminal"), "{text}");
    assert!(text.len() < 1000, "image bytes reached the terminal");
}
