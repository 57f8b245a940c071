//! A/B slots on a real boot (issue 14): Debian's qemu_arm64 U-Boot runs the live image's `boot.scr`,
//! which reads the STATE partition and loads the chosen slot's `rpixen.scr` from IMGA or IMGB. The
//! state is written between boots with rpixen-slot-state, as Dom0's update agent writes it:
//! 1. a fresh image boots slot A (Dom0 sees `rpixen.slot=a`, no watchdog armed);
//! 2. with B's trial due, `boot.scr` records the trial as spent, then boots B with `dom0_watchdog=`;
//! 3. after that boot ends without a commit (a reset during the trial), A boots again;
//! 4. with IMGA's file system destroyed, `boot.scr` falls back to B's copy.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rpixen_slot_state::machine::{begin_write, schedule_trial, Copies};
use rpixen_slot_state::record::{Record, Slot, SlotState, RECORD_LEN};
use rpixen_slot_state::COPY_STRIDE_BYTES;
use testkit::{Qemu, QemuArgs};

use crate::common::*;

const LIMIT: Duration = Duration::from_secs(420);

/// `(start, size)` in bytes of the partition named `name`, as sgdisk reads the table.
fn partition(img: &Path, name: &str) -> (u64, u64) {
    let table = testkit::run(Command::new("sgdisk").arg("-p").arg(img));
    let row = table
        .lines()
        .find(|l| l.split_whitespace().last() == Some(name))
        .unwrap_or_else(|| panic!("no partition {name}:\n{table}"));
    let f: Vec<u64> = row.split_whitespace().take(3).map(|w| w.parse().unwrap()).collect();
    (f[1] * 512, (f[2] - f[1] + 1) * 512)
}

fn read_copies(img: &Path, state: u64) -> Copies {
    let f = std::fs::File::open(img).unwrap();
    let copy = |i: u64| {
        let mut s = [0u8; RECORD_LEN];
        f.read_exact_at(&mut s, state + i * COPY_STRIDE_BYTES).unwrap();
        Record::decode(&s)
    };
    Copies([copy(0), copy(1)])
}

/// Writes `rec` as the agent does: over the copy that is not the newest.
fn write_record(img: &Path, state: u64, rec: &Record) {
    let index = read_copies(img, state).next_write_index() as u64;
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.write_all_at(&rec.encode(), state + index * COPY_STRIDE_BYTES).unwrap();
}

fn newest(img: &Path, state: u64) -> Record {
    read_copies(img, state).newest().expect("a valid copy").1
}

/// Boots the image until `until` shows on the console (failing at once on `wrong`); returns the
/// console.
fn boot(args: &QemuArgs, until: &str, wrong: &str, may_fail_to_load: bool) -> String {
    let mut failures: Vec<&str> = FAILURES
        .iter()
        .copied()
        .filter(|f| !(may_fail_to_load && f.starts_with("rpixen: cannot load")))
        .collect();
    failures.push(wrong);
    let mut q = Qemu::start_with(args, 1);
    let out = q.wait_for(until, &failures, LIMIT).unwrap_or_else(|e| panic!("{e}"));
    out.output
}

#[test]
fn boot_scr_boots_slot_a_then_a_trial_of_b_once_then_a_again() {
    let dir = tempfile::tempdir().unwrap();
    let uboot = testkit::debian_package("u-boot-qemu").join("usr/lib/u-boot/qemu_arm64/u-boot.bin");
    let manifest = live_manifest(
        dir.path(),
        "qemu-virt",
        &uboot,
        None,
        "serial0",
        "console=dtuart dtuart=serial0 sync_console",
        "console=ttyAMA0 earlycon rdinit=/init",
    );
    let initrd = initramfs(dir.path(), "echo \"dom0 cmdline: $(cat /proc/cmdline) :end\"");
    let img = dir.path().join("live.raw");
    rpixen_live(&manifest, &initrd, &img);
    let (state, _) = partition(&img, "STATE");
    assert_eq!(
        read_copies(&img, state).newest().map(|(_, r)| (r.a, r.b)),
        Some((SlotState::Active, SlotState::Unused))
    );
    let args = QemuArgs::virt().smp(2).bios(&uboot).disk(&img);

    // 1. A fresh image: slot A, whose Dom0 sees it; no watchdog outside a trial.
    let out = boot(&args, ":end", "rpixen.slot=b", false);
    assert!(out.contains("rpixen: booting slot a (state a=active b=unused seq=1)"), "{out}");
    assert!(out.contains("rpixen: running rpixen.scr of slot a"), "{out}");
    assert!(
        out.contains("dom0 cmdline: console=ttyAMA0 earlycon rdinit=/init rpixen.slot=a"),
        "{out}"
    );
    assert!(!out.contains("dom0_watchdog"), "{out}");

    // 2. The agent wrote B and scheduled its trial: B boots once, with the watchdog running.
    let running = newest(&img, state);
    let writing = begin_write(&running, Slot::A).unwrap();
    write_record(&img, state, &writing);
    let trial = schedule_trial(&writing, Slot::A).unwrap();
    write_record(&img, state, &trial);
    let out = boot(&args, ":end", "rpixen.slot=a", false);
    assert!(out.contains("rpixen: trial of slot b recorded"), "{out}");
    assert!(out.contains("rpixen: running rpixen.scr of slot b"), "{out}");
    assert!(out.contains("dom0_watchdog=60\""), "the hypervisor's command line:\n{out}");
    assert!(out.contains("running from boot (dom0_watchdog=)"), "{out}");
    assert!(
        out.contains(
            "dom0 cmdline: console=ttyAMA0 earlycon rdinit=/init rpixen.slot=b watchdog.open_timeout=180"
        ),
        "{out}"
    );
    let after = newest(&img, state);
    assert_eq!((after.a, after.b), (SlotState::Active, SlotState::InProgress));

    // 3. That boot ended without a commit (Dom0 powered off): the next one boots A.
    let out = boot(&args, "rpixen.slot=a", "rpixen.slot=b", false);
    assert!(out.contains("rpixen: booting slot a (state a=active b=inprogress"), "{out}");
    assert!(out.contains("rpixen: running rpixen.scr of slot a"), "{out}");
    assert!(!out.contains("dom0_watchdog"), "{out}");
    assert_eq!(newest(&img, state), after, "a normal boot writes no state");

    // 4. IMGA's boot sector gone: U-Boot cannot read slot A and boots B's copy.
    let (imga, _) = partition(&img, "IMGA");
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all_at(&[0u8; 4096], imga).unwrap();
    drop(f);
    let out = boot(&args, "rpixen.slot=b", "rpixen.slot=a", true);
    assert!(out.contains("rpixen: cannot load rpixen.scr of slot a"), "{out}");
    assert!(out.contains("rpixen: slot a did not boot: trying slot b"), "{out}");
}
