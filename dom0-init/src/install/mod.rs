//! The installer role (`/proc/self/exe install`, an onboot step of the image `rpixen installer_raw`
//! writes): EVE's installer for boards that install to internal storage. It writes the live image
//! carried in its own `INSTALLER` partition onto another disk of the device, then powers off.
//!
//! 1. Finds its boot medium (the disk with the `INSTALLER` partition) and reads the payload's size
//!    and sha256 from `/etc/rpixen/installer` (written by the builder into this initramfs).
//! 2. Picks the target ([`plan::choose_target`]) and refuses one that is too small or not empty
//!    unless `rpixen.install.wipe` is given: the message names the disk and what it holds, and
//!    nothing is written.
//! 3. Reads the payload once and checks its sha256 before touching the target, so a damaged installer
//!    medium writes nothing. The same pass hashes what will be written: the payload with its CONFIG
//!    partition replaced by the installer medium's own CONFIG (which the user may have edited), and
//!    the boot files the builder lists (`carry`: config.txt, NoCloud's user-data…) copied from the
//!    medium's BOOT FAT into the image's ([`bootfiles`]).
//! 4. Writes in [`plan::write_order`] (partition tables last, primary GPT header very last), with
//!    progress lines, flushing between steps.
//! 5. Drops the target's cached pages and reads it back, comparing sha256; on a mismatch it clears
//!    both GPT headers again so the disk cannot boot half right.
//! 6. Asks PID 1 for an orderly power-off (SIGUSR2, as busybox `poweroff` does).

pub mod bootfiles;
pub mod plan;

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::firstboot::gpt;
use plan::{DiskInfo, Payload, SECTOR};

/// Where the builder describes the payload.
pub const PAYLOAD_FILE: &str = "/etc/rpixen/installer";
/// The GPT name of the installer medium's partition that holds the live image.
pub const PAYLOAD_LABEL: &str = "INSTALLER";
const CONFIG_LABEL: &str = "CONFIG";
const BOOT_LABEL: &str = "BOOT";
/// Reads and writes go in blocks of this size.
const BLOCK: u64 = 4 << 20;

/// Why the installer stopped.
#[derive(Debug)]
enum Stop {
    /// Before any write to the target.
    Refused(String),
    /// After writing had begun; the target's GPT headers are cleared where possible.
    Failed(String),
}

fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub fn main() -> i32 {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let options = plan::options(&cmdline);
    match install(&options) {
        Ok(target) => {
            say(&format!(
                "rpixen-install: done: {} holds the image; powering off (remove the installer medium, then power on)",
                target.display()
            ));
            // SIGUSR2 is init's power-off request (what busybox `poweroff` sends).
            if let Err(e) = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(1),
                nix::sys::signal::Signal::SIGUSR2,
            ) {
                say(&format!("rpixen-install: cannot ask init to power off: {e}"));
                return 1;
            }
            0
        }
        Err(Stop::Refused(why)) => {
            say(&format!("rpixen-install: refused: {why}"));
            say("rpixen-install: nothing was written");
            2
        }
        Err(Stop::Failed(why)) => {
            say(&format!("rpixen-install: FAILED: {why}"));
            say("rpixen-install: the target's partition tables were cleared; it will not boot");
            1
        }
    }
}

/// A partition as sysfs shows it.
#[derive(Debug, Clone)]
struct SysPart {
    name: String,
    start: u64,
    bytes: u64,
}

fn read_sys(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

fn sys_disks() -> Vec<DiskInfo> {
    crate::firstboot::disk::disks()
        .into_iter()
        .filter_map(|name| {
            let sectors: u64 = read_sys(format!("/sys/block/{name}/size"))?.parse().ok()?;
            let read_only = read_sys(format!("/sys/block/{name}/ro")).as_deref() == Some("1");
            let partitions = sys_partitions(&name).len();
            Some(DiskInfo { name, bytes: sectors * SECTOR, read_only, partitions })
        })
        .collect()
}

fn sys_partitions(disk: &str) -> Vec<(String, SysPart)> {
    let Ok(entries) = std::fs::read_dir(format!("/sys/block/{disk}")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        if !p.join("partition").exists() {
            continue;
        }
        let uevent = read_sys(p.join("uevent")).unwrap_or_default();
        let label = crate::blockdev::uevent_value(&uevent, "PARTNAME").unwrap_or("").to_owned();
        let num = |f: &str| read_sys(p.join(f)).and_then(|s| s.parse::<u64>().ok());
        if let (Some(start), Some(size)) = (num("start"), num("size")) {
            let name = e.file_name().to_string_lossy().into_owned();
            out.push((label, SysPart { name, start: start * SECTOR, bytes: size * SECTOR }));
        }
    }
    out
}

/// The disk holding the `INSTALLER` partition, and that partition; waits for slow block drivers.
fn boot_medium(wait: Duration) -> Result<(String, SysPart), Stop> {
    let deadline = Instant::now() + wait;
    loop {
        for d in crate::firstboot::disk::disks() {
            if let Some((_, p)) = sys_partitions(&d).into_iter().find(|(l, _)| l == PAYLOAD_LABEL) {
                return Ok((d, p));
            }
        }
        if Instant::now() >= deadline {
            return Err(Stop::Refused(format!(
                "no disk has a partition named {PAYLOAD_LABEL} (the installer's payload)"
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn install(options: &plan::Options) -> Result<PathBuf, Stop> {
    let refused = Stop::Refused;
    let text = std::fs::read_to_string(PAYLOAD_FILE)
        .map_err(|e| refused(format!("{PAYLOAD_FILE}: {e}")))?;
    let payload =
        plan::parse_payload(&text).map_err(|e| refused(format!("{PAYLOAD_FILE}: {e}")))?;
    let (boot, part) = boot_medium(Duration::from_secs(15))?;
    say(&format!(
        "rpixen-install: installer medium /dev/{boot}, image of {} in /dev/{} (sha256 {})",
        plan::mib_text(payload.size),
        part.name,
        payload.sha256
    ));
    if part.bytes < payload.size {
        return Err(refused(format!(
            "/dev/{}: partition of {} bytes is smaller than the image's {} bytes",
            part.name, part.bytes, payload.size
        )));
    }
    let boot_path = PathBuf::from("/dev").join(&boot);
    let medium =
        File::open(&boot_path).map_err(|e| refused(format!("{}: {e}", boot_path.display())))?;
    let config = installer_config(&boot, &medium)?;
    let (config_at, len) = payload_partition(&medium, &part, &payload, CONFIG_LABEL)?;
    if len != config.len() as u64 {
        return Err(refused(format!(
            "the image in /dev/{}: its {CONFIG_LABEL} partition holds {len} bytes, the installer's {}",
            part.name,
            config.len()
        )));
    }
    let mut overlays = vec![(config_at, config)];
    overlays.extend(carried_boot_files(&boot, &medium, &part, &payload)?);

    // Block drivers of other buses (NVMe, USB, MMC) may still be probing: wait a little for a
    // second disk before giving up.
    let deadline = Instant::now() + Duration::from_secs(10);
    let target = loop {
        let disks = sys_disks();
        match plan::choose_target(&disks, &boot, options.target.as_deref()) {
            Ok(t) => break t.clone(),
            Err(e) if Instant::now() >= deadline => return Err(refused(e)),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    };
    let target_path = PathBuf::from("/dev").join(&target.name);
    say(&format!(
        "rpixen-install: target {} ({})",
        target_path.display(),
        plan::mib_text(target.bytes)
    ));
    plan::check_size(&target, payload.size).map_err(refused)?;
    let found = {
        let f = File::open(&target_path)
            .map_err(|e| refused(format!("{}: {e}", target_path.display())))?;
        let edge = plan::EDGE.min(target.bytes);
        let mut head = vec![0u8; edge as usize];
        let mut tail = vec![0u8; edge as usize];
        f.read_exact_at(&mut head, 0)
            .and_then(|()| f.read_exact_at(&mut tail, target.bytes - edge))
            .map_err(|e| refused(format!("{}: reading: {e}", target_path.display())))?;
        plan::contents(target.partitions, &head, &tail)
    };
    if !found.is_empty() && !options.wipe {
        return Err(refused(format!(
            "{} is not empty: it holds {}; add rpixen.install.wipe to the kernel command line \
             (rpixen installer_raw --wipe) to overwrite it",
            target_path.display(),
            found.join(", ")
        )));
    }

    // One pass over the payload before any write: its digest, and the digest of what will be
    // written (the payload with the installer's CONFIG in place of its own).
    say("rpixen-install: checking the image");
    let mut image_hash = Sha256::new();
    let mut expected = Sha256::new();
    let mut buf = vec![0u8; BLOCK as usize];
    for r in plan::blocks(0..payload.size, BLOCK) {
        let b = &mut buf[..(r.end - r.start) as usize];
        medium
            .read_exact_at(b, part.start + r.start)
            .map_err(|e| refused(format!("/dev/{}: reading at {}: {e}", part.name, r.start)))?;
        image_hash.update(&*b);
        for (at, bytes) in &overlays {
            plan::apply_overlay(b, r.start, bytes, *at);
        }
        expected.update(&*b);
    }
    let got = plan::hex(&image_hash.finalize());
    if got != payload.sha256 {
        return Err(refused(format!(
            "/dev/{}: the image's sha256 is {got}, not {} as {PAYLOAD_FILE} records: the installer medium is damaged",
            part.name, payload.sha256
        )));
    }
    let expected = plan::hex(&expected.finalize());

    // O_EXCL on a block device fails while anything has it (or a partition of it) mounted.
    let out = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_EXCL)
        .open(&target_path)
        .map_err(|e| refused(format!("{}: cannot open for writing: {e}", target_path.display())))?;
    let failed = |what: String| {
        // Without both headers the disk holds no partition table any tool or kernel accepts.
        let zero = vec![0u8; SECTOR as usize];
        let _ = out.write_all_at(&zero, SECTOR);
        let _ = out.write_all_at(&zero, payload.size - SECTOR);
        let _ = out.sync_all();
        Stop::Failed(what)
    };
    let io_fail = |at: u64, e: io::Error| format!("{}: at byte {at}: {e}", target_path.display());

    if options.wipe && !found.is_empty() {
        let edge = plan::EDGE.min(target.bytes);
        let zeros = vec![0u8; edge as usize];
        out.write_all_at(&zeros, 0)
            .and_then(|()| out.write_all_at(&zeros, target.bytes - edge))
            .and_then(|()| out.sync_all())
            .map_err(|e| failed(io_fail(0, e)))?;
        say(&format!(
            "rpixen-install: wiped {} (it held {})",
            target_path.display(),
            found.join(", ")
        ));
    }

    let mut done = 0u64;
    let mut last = 0u64;
    for range in plan::write_order(payload.size) {
        for r in plan::blocks(range, BLOCK) {
            let b = &mut buf[..(r.end - r.start) as usize];
            medium
                .read_exact_at(b, part.start + r.start)
                .map_err(|e| failed(format!("/dev/{}: reading at {}: {e}", part.name, r.start)))?;
            for (at, bytes) in &overlays {
                plan::apply_overlay(b, r.start, bytes, *at);
            }
            out.write_all_at(b, r.start).map_err(|e| failed(io_fail(r.start, e)))?;
            done += r.end - r.start;
            if let Some(line) = plan::progress(done, payload.size, &mut last) {
                say(&line);
            }
        }
        // Each step is on the disk before the next begins: the headers follow complete data.
        out.sync_all().map_err(|e| failed(io_fail(done, e)))?;
    }

    say("rpixen-install: verifying by reading back");
    // Clean pages of the device are dropped, so the read below comes from the disk, not from what
    // this process just wrote into the page cache.
    nix::fcntl::posix_fadvise(&out, 0, 0, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED)
        .map_err(|e| failed(format!("{}: dropping cached pages: {e}", target_path.display())))?;
    let mut back = Sha256::new();
    for r in plan::blocks(0..payload.size, BLOCK) {
        let b = &mut buf[..(r.end - r.start) as usize];
        out.read_exact_at(b, r.start).map_err(|e| failed(io_fail(r.start, e)))?;
        back.update(&*b);
    }
    let back = plan::hex(&back.finalize());
    if back != expected {
        return Err(failed(format!(
            "{} reads back with sha256 {back}, not the {expected} written",
            target_path.display()
        )));
    }
    say(&format!(
        "rpixen-install: verified {} of {} (sha256 {back}), CONFIG from the installer medium",
        plan::mib_text(payload.size),
        target_path.display()
    ));
    Ok(target_path)
}

/// The installer medium's CONFIG partition, whole: it replaces the image's CONFIG on the target.
fn installer_config(boot: &str, medium: &File) -> Result<Vec<u8>, Stop> {
    let (_, p) = sys_partitions(boot)
        .into_iter()
        .find(|(l, _)| l == CONFIG_LABEL)
        .ok_or_else(|| Stop::Refused(format!("/dev/{boot} has no {CONFIG_LABEL} partition")))?;
    let mut data = vec![0u8; p.bytes as usize];
    medium
        .read_exact_at(&mut data, p.start)
        .map_err(|e| Stop::Refused(format!("/dev/{}: reading {CONFIG_LABEL}: {e}", p.name)))?;
    Ok(data)
}

/// The medium's BOOT files that the payload description names (`carry`), written into the image's
/// BOOT FAT in memory: the changed sectors, at their offsets in the image. Refused (nothing written)
/// when either FAT cannot be read or the edit does not read back.
fn carried_boot_files(
    boot: &str,
    medium: &File,
    part: &SysPart,
    payload: &Payload,
) -> Result<Vec<(u64, Vec<u8>)>, Stop> {
    if payload.carry.is_empty() {
        return Ok(Vec::new());
    }
    let (_, mp) = sys_partitions(boot)
        .into_iter()
        .find(|(l, _)| l == BOOT_LABEL)
        .ok_or_else(|| Stop::Refused(format!("/dev/{boot} has no {BOOT_LABEL} partition")))?;
    let mut from = bootfiles::SectorOverlay::new(medium, mp.start, mp.bytes);
    let files = bootfiles::read_files(&mut from, &payload.carry).map_err(|e| {
        Stop::Refused(format!("/dev/{}: reading the {BOOT_LABEL} FAT: {e}", mp.name))
    })?;
    let (boot_at, boot_len) = payload_partition(medium, part, payload, BOOT_LABEL)?;
    let mut to = bootfiles::SectorOverlay::new(medium, part.start + boot_at, boot_len);
    let written = bootfiles::write_files(&mut to, &files).map_err(|e| {
        Stop::Refused(format!("the image in /dev/{}: its {BOOT_LABEL} FAT: {e}", part.name))
    })?;
    if !written.is_empty() {
        say(&format!(
            "rpixen-install: {} from the installer medium's {BOOT_LABEL} partition",
            written.join(", ")
        ));
    }
    Ok(to.runs().into_iter().map(|(at, bytes)| (boot_at + at, bytes)).collect())
}

/// Where the image's partition `label` starts and how long it is, from the image's primary GPT.
fn payload_partition(
    medium: &File,
    part: &SysPart,
    payload: &Payload,
    label: &str,
) -> Result<(u64, u64), Stop> {
    let bad = |e: String| Stop::Refused(format!("the image in /dev/{}: {e}", part.name));
    let mut sector = vec![0u8; SECTOR as usize];
    medium.read_exact_at(&mut sector, part.start + SECTOR).map_err(|e| bad(e.to_string()))?;
    let h = gpt::Header::parse(&sector, 1).map_err(|e| bad(format!("primary GPT: {e}")))?;
    let entries_end = (h.entries_lba + h.entries_sectors()) * SECTOR;
    if entries_end > payload.size {
        return Err(bad("GPT entries lie outside the image".into()));
    }
    let mut entries = vec![0u8; (h.entries_sectors() * SECTOR) as usize];
    medium
        .read_exact_at(&mut entries, part.start + h.entries_lba * SECTOR)
        .map_err(|e| bad(e.to_string()))?;
    let t = gpt::Table::from_copy(&h, &entries).map_err(|e| bad(format!("GPT entries: {e}")))?;
    let c = t
        .entries()
        .into_iter()
        .find(|e| e.name == label)
        .ok_or_else(|| bad(format!("no {label} partition")))?;
    let (at, len) = (c.first_lba * SECTOR, (c.last_lba - c.first_lba + 1) * SECTOR);
    if at + len > payload.size {
        return Err(bad(format!(
            "its {label} partition ends past the image's {} bytes",
            payload.size
        )));
    }
    Ok((at, len))
}
