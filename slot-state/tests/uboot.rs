//! The slot-choice script in Debian's real U-Boot (`u-boot-qemu`, QEMU `virt`), checked against the
//! Rust model (`machine::boot_choice`): for each state of the two copies, U-Boot must try the slots
//! the model names, in its order, and leave on the disk exactly the record the model writes.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rpixen_slot_state::machine::{boot_choice, Copies};
use rpixen_slot_state::record::{Record, Slot, SlotState, RECORD_LEN};
use rpixen_slot_state::{uboot, COPY_STRIDE_BYTES, PARTITION_BYTES};
use testkit::{run, Qemu, QemuArgs};

const MIB: u64 = 1 << 20;
const BOOT_START: u64 = MIB;
const BOOT_BYTES: u64 = 16 * MIB;
const STATE_START: u64 = BOOT_START + BOOT_BYTES;
/// Free RAM on QEMU virt (RAM starts at 0x4000_0000) away from where U-Boot puts scripts.
const SCRATCH: u64 = 0x4800_0000;

/// One case: the two sectors on the STATE partition and the slot whose boot "fails".
struct Case {
    name: &'static str,
    sectors: [[u8; RECORD_LEN]; 2],
    broken: Option<Slot>,
}

fn rec(seq: u32, a: SlotState, b: SlotState) -> [u8; RECORD_LEN] {
    Record { seq, a, b }.encode()
}

/// A sector whose first bytes are a newer record and the rest an older one: a torn write.
fn torn(new: [u8; RECORD_LEN], old: [u8; RECORD_LEN]) -> [u8; RECORD_LEN] {
    let mut s = old;
    s[..100].copy_from_slice(&new[..100]);
    s
}

/// A record with a valid checksum but a state U-Boot and the model must both refuse.
fn unknown_state(seq: u32) -> [u8; RECORD_LEN] {
    let mut s = [b'\n'; RECORD_LEN];
    let text = format!("rpixen_a=busy\nrpixen_b=active\nrpixen_seq={seq:x}\n");
    s[..text.len()].copy_from_slice(text.as_bytes());
    let crc = crc32(&s[..RECORD_LEN - 4]);
    s[RECORD_LEN - 4..].copy_from_slice(&crc.to_be_bytes());
    s
}

fn crc32(bytes: &[u8]) -> u32 {
    // The same CRC as the crate's (zlib's); computed here by a second implementation: Python's.
    let hex = run(Command::new("python3")
        .args(["-c", "import sys,zlib; print(zlib.crc32(sys.stdin.buffer.read()))"])
        .stdin(tempfile_with(bytes)));
    hex.trim().parse().unwrap()
}

fn tempfile_with(bytes: &[u8]) -> std::fs::File {
    let f = tempfile::tempfile().unwrap();
    f.write_all_at(bytes, 0).unwrap();
    f
}

fn cases() -> Vec<Case> {
    use SlotState::*;
    vec![
        Case { name: "fresh image", sectors: [rec(1, Active, Unused); 2], broken: None },
        Case {
            name: "b committed",
            sectors: [rec(3, Unused, Active), rec(2, Active, Unused)],
            broken: None,
        },
        Case {
            name: "trial of b due",
            sectors: [rec(5, Active, Updating), rec(4, Active, Unused)],
            broken: None,
        },
        Case {
            name: "trial of a due, newest in copy 1",
            sectors: [rec(7, Unused, Active), rec(8, Updating, Active)],
            broken: None,
        },
        Case {
            name: "reset during the trial of b",
            sectors: [rec(5, Active, Updating), rec(6, Active, InProgress)],
            broken: None,
        },
        Case {
            name: "torn newer copy",
            sectors: [
                torn(rec(4, Active, Updating), rec(2, Active, Unused)),
                rec(3, Unused, Active),
            ],
            broken: None,
        },
        Case {
            name: "both copies unreadable, slot a broken",
            sectors: [[0; RECORD_LEN], [0xff; RECORD_LEN]],
            broken: Some(Slot::A),
        },
        Case {
            name: "trial slot b does not load",
            sectors: [rec(5, Active, Updating), rec(4, Active, Unused)],
            broken: Some(Slot::B),
        },
        Case {
            name: "checksummed record with an unknown state",
            sectors: [rec(2, Active, Unused), unknown_state(9)],
            broken: None,
        },
    ]
}

/// The test's `rpixen_boot_slot`: says which slot it would boot, then powers off unless that slot is
/// the broken one (then it returns, as a slot whose files fail to load does).
fn boot_script(broken: Option<Slot>) -> String {
    let broken = broken.map_or("none", |s| s.name());
    format!(
        "setenv rpixen_test_broken {broken}\n\
         setenv rpixen_boot_slot 'echo \"rpixen-test: boot ${{rpixen_slot}}\"; \
         if test ${{rpixen_slot}} != ${{rpixen_test_broken}}; then poweroff; fi'\n{}poweroff\n",
        uboot::choose_slot(SCRATCH)
    )
}

fn make_disk(dir: &Path, case: &Case) -> std::path::PathBuf {
    let disk = dir.join("disk.img");
    let f = std::fs::File::create(&disk).unwrap();
    f.set_len(STATE_START + PARTITION_BYTES + 2 * MIB).unwrap();
    drop(f);
    run(Command::new("sgdisk")
        .arg(format!("-n1:{}:+16M", BOOT_START / 512))
        .args(["-t1:0700", "-c1:BOOT"])
        .arg(format!("-n2:{}:+{}", STATE_START / 512, PARTITION_BYTES / 512 - 1))
        .args(["-c2:STATE"])
        .arg(&disk));
    let fat = dir.join("boot.fat");
    run(Command::new("mkfs.fat").arg("-C").arg(&fat).arg((BOOT_BYTES / 1024).to_string()));
    let script = dir.join("boot.txt");
    std::fs::write(&script, boot_script(case.broken)).unwrap();
    let scr = dir.join("boot.scr");
    run(Command::new("mkimage")
        .args(["-A", "arm64", "-T", "script", "-C", "none", "-d"])
        .arg(&script)
        .arg(&scr));
    run(Command::new("mcopy").arg("-i").arg(&fat).arg(&scr).arg("::/boot.scr"));
    let disk_file = OpenOptions::new().write(true).open(&disk).unwrap();
    disk_file.write_all_at(&std::fs::read(&fat).unwrap(), BOOT_START).unwrap();
    for (i, sector) in case.sectors.iter().enumerate() {
        disk_file.write_all_at(sector, STATE_START + i as u64 * COPY_STRIDE_BYTES).unwrap();
    }
    disk
}

fn read_sectors(disk: &Path) -> [[u8; RECORD_LEN]; 2] {
    let f = std::fs::File::open(disk).unwrap();
    let mut out = [[0u8; RECORD_LEN]; 2];
    for (i, s) in out.iter_mut().enumerate() {
        f.read_exact_at(s, STATE_START + i as u64 * COPY_STRIDE_BYTES).unwrap();
    }
    out
}

/// The slots the test's stub reported, in order.
fn booted(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| l.trim().strip_prefix("rpixen-test: boot "))
        .map(|s| s.trim().to_owned())
        .collect()
}

#[test]
fn uboot_follows_the_model_for_every_state() {
    let u_boot = testkit::uboot_qemu();
    let mut failures = Vec::new();
    for case in cases() {
        let dir = tempfile::tempdir().unwrap();
        let disk = make_disk(dir.path(), &case);
        let copies = Copies(case.sectors.map(|s| Record::decode(&s)));
        let choice = boot_choice(&copies);
        let mut want_boots = vec![choice.slot.name().to_owned()];
        if case.broken == Some(choice.slot) {
            want_boots.push(choice.then.name().to_owned());
        }
        let mut want_sectors = case.sectors;
        if let Some((index, record)) = choice.write {
            want_sectors[index] = record.encode();
        }

        let args = QemuArgs::virt_el1().smp(1).memory("1G").bios(&u_boot).disk(&disk);
        let mut qemu = Qemu::start_with(&args, 1);
        let exited = qemu.wait_exit(Duration::from_secs(300));
        let output = qemu.output();
        drop(qemu);
        if let Err(e) = exited {
            failures.push(format!("{}: {e}", case.name));
            continue;
        }
        let got_boots = booted(&output);
        let got_sectors = read_sectors(&disk);
        if got_boots != want_boots || got_sectors != want_sectors {
            failures.push(format!(
                "{}: booted {got_boots:?}, model {want_boots:?}; copies on disk {:?}, model {:?}\n{}",
                case.name,
                got_sectors.map(|s| Record::decode(&s)),
                want_sectors.map(|s| Record::decode(&s)),
                output.lines().filter(|l| l.contains("rpixen")).collect::<Vec<_>>().join("\n")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
