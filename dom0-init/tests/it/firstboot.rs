//! First boot's disk steps on disk images made by `sgdisk` (an independent GPT writer), checked by
//! `sgdisk -v`/`-i`: the whole sequence, and a power cut at every point of it followed by the next
//! boot's run, which must end in the same correct state. (The QEMU test `identity` does the same on
//! a real device with the real `mkfs.ext4`.)

use std::path::{Path, PathBuf};
use std::process::Command;

use dom0_init::firstboot::{disk::Disk, gpt, settle_disk, Error, Stop};

const MIB: u64 = 1 << 20;

fn dir(test: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("firstboot").join(test);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn sgdisk(args: &[&str], disk: &Path) -> String {
    testkit::run(Command::new("sgdisk").args(args).arg(disk))
}

/// An image laid out as `rpixen live` does (BOOT, IMGA, IMGB, CONFIG, PERSIST with EVE's types), 64 MiB,
/// copied onto a disk of `disk_mib`.
fn flashed(dir: &Path, name: &str, disk_mib: u64) -> PathBuf {
    let img = dir.join(format!("{name}.raw"));
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(64 * MIB).unwrap();
    sgdisk(
        &[
            "-n",
            "1:2048:+16M",
            "-t",
            "1:C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            "-c",
            "1:BOOT",
            "-A",
            "1:set:2",
            "-n",
            "2:0:+8M",
            "-t",
            "2:5DFBF5F4-2848-4BAC-AA5E-0D9A20B745A6",
            "-c",
            "2:IMGA",
            "-n",
            "3:0:+8M",
            "-t",
            "3:5DFBF5F4-2848-4BAC-AA5E-0D9A20B745A6",
            "-c",
            "3:IMGB",
            "-n",
            "4:0:+4M",
            "-t",
            "4:13307E62-CD9C-4920-8F9B-91B45828B798",
            "-c",
            "4:CONFIG",
            "-n",
            "5:0:+8M",
            "-t",
            "5:5F24425A-2DFA-11E8-A270-7B663FACCC2C",
            "-c",
            "5:PERSIST",
        ],
        &img,
    );
    f.set_len(disk_mib * MIB).unwrap();
    img
}

/// One partition as `sgdisk -i` shows it: (unique GUID, first, last, attribute flags, name).
type Part = (String, u64, u64, String, String);

/// What `sgdisk` says about the disk: its GUID and its partitions.
type Listing = (String, Vec<Part>);

fn listing(disk: &Path) -> Listing {
    let p = sgdisk(&["-p"], disk);
    let disk_guid =
        p.lines().find_map(|l| l.strip_prefix("Disk identifier (GUID): ")).unwrap().to_owned();
    let mut parts = Vec::new();
    for n in 1..=5 {
        let i = sgdisk(&["-i", &n.to_string()], disk);
        let field = |k: &str| {
            i.lines()
                .find_map(|l| l.strip_prefix(k))
                .unwrap_or_else(|| panic!("{k} in:\n{i}"))
                .trim()
                .to_owned()
        };
        let sector = |k: &str| field(k).split_whitespace().next().unwrap().parse::<u64>().unwrap();
        parts.push((
            field("Partition unique GUID:"),
            sector("First sector:"),
            sector("Last sector:"),
            field("Attribute flags:"),
            field("Partition name:"),
        ));
    }
    (disk_guid, parts)
}

fn verify_clean(disk: &Path) {
    let v = sgdisk(&["-v"], disk);
    assert!(v.contains("No problems found."), "sgdisk -v {}:\n{v}", disk.display());
}

/// One boot's disk steps; `cut_at` stops at the n-th point (a power cut there). Returns the points
/// passed and how many times mkfs ran.
fn boot(disk: &Path, cut_at: Option<usize>) -> (Vec<String>, usize, Result<(), Error>) {
    let d = Disk::open(disk, "test").unwrap();
    let mut points = Vec::new();
    let mut mkfs_runs = 0;
    // Different bytes on every call and every boot, like the kernel's source.
    let mut n = points_seed();
    let result = settle_disk(
        &d,
        &mut |_| {
            mkfs_runs += 1;
            Ok(())
        },
        &mut |b: &mut [u8]| {
            for x in b.iter_mut() {
                n = n.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                *x = (n >> 24) as u8;
            }
            Ok(())
        },
        &mut |p: &str| {
            points.push(p.to_owned());
            if Some(points.len()) == cut_at {
                Err(Stop)
            } else {
                Ok(())
            }
        },
    )
    .map(|_| ());
    (points, mkfs_runs, result)
}

fn points_seed() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos()
}

/// The final state every sequence must reach on a disk of `disk_mib`, compared with the image.
fn assert_final(disk: &Path, image: &Listing, disk_mib: u64, attrs: &str) {
    verify_clean(disk);
    let (guid, parts) = listing(disk);
    assert_ne!(guid, image.0, "a fresh disk GUID");
    for (new, old) in parts.iter().zip(&image.1) {
        assert_ne!(new.0, old.0, "partition {} gets a fresh GUID", new.4);
        assert_eq!(new.4, old.4, "names kept");
        assert_eq!(new.1, old.1, "partition {} starts where it did", new.4);
    }
    let sectors = disk_mib * MIB / 512;
    let persist = &parts[4];
    assert_eq!(persist.2, sectors - 34, "PERSIST ends at the last usable sector");
    assert_eq!(persist.3, attrs, "PERSIST's first-boot bits");
    assert_eq!(parts[0].3, "0000000000000004", "BOOT keeps its legacy-bootable attribute");
    for (new, old) in parts[..4].iter().zip(&image.1) {
        assert_eq!(new.2, old.2, "partition {} keeps its end", new.4);
    }
}

#[test]
fn first_boot_renews_guids_and_grows_persist() {
    let d = dir("whole");
    let disk = flashed(&d, "a", 256);
    let image = listing(&disk);
    let (points, mkfs, result) = boot(&disk, None);
    result.unwrap();
    assert_eq!(mkfs, 1);
    assert_eq!(
        points,
        [
            "gpt-backup-entries",
            "gpt-backup",
            "gpt-primary-entries",
            "gpt-primary",
            "mkfs",
            "fs-backup-entries",
            "fs-backup",
            "fs-primary-entries",
            "fs-primary",
        ]
    );
    assert_final(&disk, &image, 256, "0300000000000000");
    // The next boot finds nothing to do.
    let before = std::fs::read(&disk).unwrap();
    let (points, mkfs, result) = boot(&disk, None);
    result.unwrap();
    assert!(points.is_empty() && mkfs == 0, "{points:?}");
    assert!(std::fs::read(&disk).unwrap() == before, "a settled disk is not written");
    // Two copies of one image end with different GUIDs.
    let other = flashed(&d, "b", 256);
    boot(&other, None).2.unwrap();
    assert_ne!(listing(&other).0, listing(&disk).0);
}

#[test]
fn same_size_disk_gets_its_filesystem_made_whatever_persist_held() {
    let d = dir("same-size");
    let disk = flashed(&d, "a", 64);
    let image = listing(&disk);
    // Whatever PERSIST held before first boot (bmaptool leaves it unmapped on a reused card), the
    // filesystem is made: the GUIDs, then mkfs, then its bit.
    let (points, mkfs, result) = boot(&disk, None);
    result.unwrap();
    assert_eq!(mkfs, 1);
    assert_eq!(points.len(), 9, "{points:?}");
    assert_final(&disk, &image, 64, "0300000000000000");
}

#[test]
fn a_power_cut_at_every_point_is_completed_by_the_next_boot() {
    let d = dir("cuts");
    let whole = boot(&flashed(&d, "probe", 256), None).0;
    for (i, point) in whole.iter().enumerate() {
        let disk = flashed(&d, &format!("cut{i}"), 256);
        let image = listing(&disk);
        let (_, mkfs_before, result) = boot(&disk, Some(i + 1));
        assert_eq!(result, Err(Error::Stopped), "cut at {point}");
        // At the cut one copy is valid (the next boot has something to start from).
        let found = Disk::open(&disk, "test").unwrap().found();
        assert!(
            !matches!(gpt::plan(&found), gpt::GptPlan::Unusable(_)),
            "no valid GPT copy after a cut at {point}"
        );
        let (_, mkfs_after, result) = boot(&disk, None);
        result.unwrap_or_else(|e| panic!("boot after a cut at {point}: {e}"));
        // mkfs runs again exactly when the cut came before its bit was written.
        let fs_bit_written = whole.iter().position(|p| p == "fs-backup").unwrap();
        let expected_total = if i >= fs_bit_written { 1 } else { 1 + usize::from(i >= 4) };
        assert_eq!(mkfs_before + mkfs_after, expected_total, "mkfs runs for a cut at {point}");
        assert_final(&disk, &image, 256, "0300000000000000");
    }
}

#[test]
fn a_table_damaged_beyond_both_copies_is_left_alone() {
    let d = dir("unusable");
    let disk = flashed(&d, "a", 64);
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[0u8; 512], 512).unwrap();
    f.write_all_at(&[0u8; 512], 64 * MIB - 512).unwrap();
    let before = std::fs::read(&disk).unwrap();
    let (points, mkfs, result) = boot(&disk, None);
    let err = result.unwrap_err().to_string();
    assert!(err.contains("primary GPT: no \"EFI PART\" signature"), "{err}");
    assert!(points.is_empty() && mkfs == 0);
    assert!(std::fs::read(&disk).unwrap() == before, "nothing written");
}
