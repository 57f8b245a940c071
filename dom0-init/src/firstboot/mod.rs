//! First boot: the device makes itself its own. Nothing of this is in the image, so every copy of
//! one `live.raw` becomes a different device:
//!
//! 1. `gpt`: fresh disk and partition GUIDs (types, names, other attributes kept), PERSIST grown to the
//!    end of the disk, the backup GPT moved to the end;
//! 2. `mkfs`: an ext4 filesystem on PERSIST (Debian's `mkfs.ext4`, from the `e2fsprogs` package);
//! 3. `identity`: device id and Ed25519 key pair on PERSIST ([`identity`]).
//!
//! Power cuts. Progress lives where the data lives, so every boot re-derives the next step from the
//! disk itself ([`next_step`]):
//! - the GPT has two CRC-checked copies; every rewrite writes the backup at the end of the disk first,
//!   then the primary, each as entries, flush, header, flush. At every instant one copy is valid: the
//!   old primary until the new backup is complete, then the new backup ([`gpt::plan`] decides which
//!   copy wins and what is left to write);
//! - two PERSIST attribute bits in that table record "personalized" and "filesystem ready". The
//!   filesystem bit is written (same two-copy order) only after `mkfs.ext4` finished and was flushed,
//!   so a cut during `mkfs` just makes it again: PERSIST holds nothing yet at that point. Once the bit
//!   is written the filesystem is never made again, so a restart later in first boot keeps what it
//!   already created (the identity). A filesystem found on PERSIST *before* first boot is never
//!   trusted: `bmaptool` leaves PERSIST unmapped, so a reused card still holds the old device's
//!   filesystem there (its logs, keys and identity), and a fresh device must not inherit it;
//! - ext4, not FAT: its journal keeps the metadata consistent across power cuts, which FAT cannot,
//!   and PERSIST holds the device's logs and state for years of unclean power-offs;
//! - the identity files are written with write-flush-rename; `device-id` last marks it complete.
//!
//! Tests stop the sequence at a named point with `rpixen.test.pause=POINT` on the kernel command line
//! (init logs the point and waits there forever, so the test can cut power at that exact state).

pub mod disk;
pub mod gpt;
pub mod identity;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::info;
use gpt::{GptPlan, Table, ATTR_FS_READY};

/// The sequence was stopped at a test point (on the device: paused; in host tests: a simulated cut).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    Io(String),
    Plan(String),
    Stopped,
}

impl From<Stop> for Error {
    fn from(_: Stop) -> Error {
        Error::Stopped
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(e) | Error::Plan(e) => f.write_str(e),
            Error::Stopped => f.write_str("stopped at a test point"),
        }
    }
}

/// What first boot does next, derived from the table on the disk alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Write (part of) the GPT, as [`gpt::plan`] says.
    Gpt(GptPlan),
    /// Make PERSIST's filesystem, then set [`ATTR_FS_READY`].
    MakeFs,
    /// The disk is done; the identity is checked once PERSIST is mounted.
    Identity,
    /// No valid table: touch nothing.
    GiveUp(String),
}

pub fn next_step(plan: &GptPlan) -> Step {
    match plan {
        GptPlan::Unusable(why) => Step::GiveUp(why.clone()),
        GptPlan::Done(t) if t.persist_attrs() & ATTR_FS_READY == 0 => Step::MakeFs,
        GptPlan::Done(_) => Step::Identity,
        other => Step::Gpt(other.clone()),
    }
}

/// `rpixen.test.pause=POINT` from the kernel command line.
pub fn pause_point(cmdline: &str) -> Option<&str> {
    cmdline.split_whitespace().find_map(|w| w.strip_prefix("rpixen.test.pause="))
}

/// Writes `t` as both copies: backup (at the end), then primary. Points: `NAME-backup-entries`,
/// `NAME-backup`, `NAME-primary-entries`, `NAME-primary`.
pub fn write_both(
    disk: &disk::Disk,
    t: &Table,
    name: &str,
    point: &mut dyn FnMut(&str) -> Result<(), Stop>,
) -> Result<(), Error> {
    let backup = t.encode(gpt::Copy::Backup, disk.sectors);
    disk.write_copy(&backup, point, &format!("{name}-backup"))?;
    let primary = t.encode(gpt::Copy::Primary, disk.sectors);
    disk.write_copy(&primary, point, &format!("{name}-primary"))
}

/// GUIDs from the kernel's random source, drawn before any write so that a failing source stops
/// first boot before it touches the disk.
pub struct Pool(pub Vec<[u8; 16]>);

impl gpt::RandomSource for Pool {
    fn bytes16(&mut self) -> [u8; 16] {
        self.0.pop().expect("the pool holds one GUID per entry and one for the disk")
    }
}

/// Brings the GPT to its final state (steps `gpt` and the table half of `mkfs`): loops over
/// [`next_step`] until the table is settled. `mkfs` makes PERSIST's filesystem, whatever PERSIST
/// held before. Returns the table and whether it wrote.
pub fn settle_disk(
    disk: &disk::Disk,
    mkfs: &mut dyn FnMut(&Table) -> Result<(), Error>,
    random: &mut dyn FnMut(&mut [u8]) -> std::io::Result<()>,
    point: &mut dyn FnMut(&str) -> Result<(), Stop>,
) -> Result<(Table, bool), Error> {
    let mut wrote = false;
    // Each pass makes progress; more than a handful means the disk does not keep what is written.
    for _ in 0..6 {
        match next_step(&gpt::plan(&disk.found())) {
            Step::GiveUp(why) => {
                return Err(Error::Plan(format!("{}: {why}", disk.path.display())))
            }
            Step::Identity => return Ok((table_of(disk)?, wrote)),
            Step::MakeFs => {
                let t = table_of(disk)?;
                mkfs(&t)?;
                point("mkfs")?;
                write_both(disk, &t.with_persist_attrs(ATTR_FS_READY), "fs", point)?;
            }
            Step::Gpt(GptPlan::Personalize(t)) => {
                let mut pool = Vec::new();
                for _ in 0..=t.entries().len() {
                    let mut b = [0u8; 16];
                    random(&mut b).map_err(|e| Error::Io(format!("getrandom: {e}")))?;
                    pool.push(b);
                }
                let new = gpt::personalize(&t, disk.sectors, 0, &mut Pool(pool))
                    .map_err(|e| Error::Plan(format!("{}: {e}", disk.path.display())))?;
                write_both(disk, &new, "gpt", point)?;
            }
            Step::Gpt(GptPlan::FinishPrimary(b)) => {
                let c = b.encode(gpt::Copy::Primary, disk.sectors);
                disk.write_copy(&c, point, "finish-primary")?;
            }
            Step::Gpt(GptPlan::RepairBackup(p)) => {
                let c = p.encode(gpt::Copy::Backup, disk.sectors);
                disk.write_copy(&c, point, "repair-backup")?;
            }
            Step::Gpt(GptPlan::Done(_) | GptPlan::Unusable(_)) => {
                unreachable!("next_step maps these")
            }
        }
        wrote = true;
    }
    Err(Error::Plan(format!(
        "{}: the GPT did not settle after repeated writes",
        disk.path.display()
    )))
}

fn table_of(disk: &disk::Disk) -> Result<Table, Error> {
    match gpt::plan(&disk.found()) {
        GptPlan::Done(t) => Ok(t),
        other => Err(Error::Plan(format!("{}: GPT not settled: {other:?}", disk.path.display()))),
    }
}

/// Fills `buf` from the kernel's random source (getrandom(2), which blocks only until the kernel's
/// generator is first seeded).
pub fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the pointer and length describe `rest`, which is valid for writes for the call.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

/// The test pause hook for this boot: logs each point reached and, at the one the command line
/// names, stops forever.
fn pause_hook(cmdline: &str) -> impl FnMut(&str) -> Result<(), Stop> + '_ {
    let wanted = pause_point(cmdline);
    move |p: &str| {
        crate::trace!("first boot: {p} done");
        if wanted == Some(p) {
            info!("first boot: paused after {p} (rpixen.test.pause)");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        Ok(())
    }
}

/// The disk holding rpixen's GPT (a PERSIST partition in either copy), waiting a little for SD
/// cards, whose detection runs after their host driver loaded.
fn find_disk() -> Option<disk::Disk> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        for name in disk::disks() {
            let path = Path::new("/dev").join(&name);
            let Ok(d) = disk::Disk::open(&path, &name) else {
                continue;
            };
            let f = d.found();
            let has_persist =
                |t: &Result<Table, gpt::GptError>| t.as_ref().is_ok_and(|t| t.persist().is_some());
            if has_persist(&f.primary) || has_persist(&f.backup) {
                return Some(d);
            }
        }
        // Only an MMC host without its card yet is worth waiting for; virtio and USB disks are
        // there once their driver's probe returned.
        if Instant::now() >= deadline || !disk::mmc_host_present() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The PERSIST partition's node once the kernel sees it with the size the table gives it,
/// re-reading the table when it does not (after our own writes, or a cut before the re-read).
fn persist_node(d: &disk::Disk, t: &Table) -> Result<PathBuf, Error> {
    let p = t.persist().ok_or_else(|| Error::Plan("no PERSIST partition".into()))?;
    let want = p.last_lba - p.first_lba + 1;
    let matches = || {
        disk::partition(&d.name, p.index + 1).filter(|(node, size)| *size == want && node.exists())
    };
    if let Some((node, _)) = matches() {
        return Ok(node);
    }
    disk::reread(d).map_err(|e| {
        Error::Io(format!(
            "{}: the kernel cannot re-read the partition table: {e}",
            d.path.display()
        ))
    })?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some((node, _)) = matches() {
            return Ok(node);
        }
        if Instant::now() >= deadline {
            return Err(Error::Io(format!(
                "{}: partition {} does not show {want} sectors after re-reading the table",
                d.path.display(),
                p.index + 1
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `mkfs.ext4` on PERSIST: Debian's e2fsprogs, found on PATH.
fn make_ext4(node: &Path) -> Result<(), Error> {
    let started = Instant::now();
    // No reserved blocks: PERSIST is data, and root is its only writer anyway.
    let out = std::process::Command::new("mkfs.ext4")
        .args(["-F", "-q", "-m", "0", "-L", "PERSIST"])
        .arg(node)
        .output()
        .map_err(|e| {
            Error::Io(format!("cannot run mkfs.ext4 (e2fsprogs missing from the rootfs?): {e}"))
        })?;
    if !out.status.success() {
        return Err(Error::Io(format!(
            "mkfs.ext4 {} failed ({}): {}",
            node.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    info!(
        "first boot: ext4 made on PERSIST ({}) in {} ms",
        node.display(),
        started.elapsed().as_millis()
    );
    Ok(())
}

/// Steps `gpt` and `mkfs` on the boot disk. Runs before the root switch, while no partition is in
/// use, so the kernel can re-read the table. Problems are logged; the boot goes on without them.
pub fn prepare_disk(cmdline: &str) {
    let Some(d) = find_disk() else {
        crate::trace!("first boot: no disk with a PERSIST partition");
        return;
    };
    let mut point = pause_hook(cmdline);
    let mut mkfs = |t: &Table| -> Result<(), Error> {
        let node = persist_node(&d, t)?;
        if let Some(fs) = crate::blockdev::probe_device(&node) {
            info!("first boot: PERSIST holds an earlier {fs} (a reused card): made anew");
        }
        make_ext4(&node)
    };
    match settle_disk(&d, &mut mkfs, &mut getrandom, &mut point) {
        Ok((t, wrote)) => {
            if wrote {
                info!(
                    "first boot: GPT of {} written: disk GUID {}, PERSIST to the disk's end",
                    d.path.display(),
                    t.disk_guid.to_text()
                );
            }
            if let Err(e) = persist_node(&d, &t) {
                info!("first boot: {e}");
            }
        }
        Err(e) => info!("first boot: {e}"),
    }
}

/// Step `identity` on the mounted PERSIST at `root`: the device id and key pair, made if missing.
/// Prints the id on the console and returns it.
pub fn identity(root: &Path, cmdline: &str) -> Option<identity::Identity> {
    let mut point = pause_hook(cmdline);
    match identity::ensure(root, &mut getrandom, &mut point) {
        Ok((id, created)) => {
            if created {
                info!("first boot: device key pair and id created on PERSIST");
            }
            info!("device id {} (key {})", id.id, id.public_key);
            Some(id)
        }
        Err(e) => {
            info!("device identity: {e}");
            None
        }
    }
}

/// [`identity`] when PERSIST is mounted on `/persist` (a writable filesystem); None otherwise.
pub fn identity_on_persist(cmdline: &str) -> Option<identity::Identity> {
    let mounted = crate::mounts::current_mounts().iter().any(|m| m.target == "/persist");
    if !mounted {
        info!("no PERSIST mounted: this device has no identity");
        return None;
    }
    identity(Path::new("/persist"), cmdline)
}

/// The readiness line's part: ` id=<device id>` (`none` without PERSIST).
pub fn readiness_part(id: Option<&identity::Identity>) -> String {
    format!(" id={}", id.map(|i| i.id.as_str()).unwrap_or("none"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpt::tests::{image_table, Counter};

    #[test]
    fn steps_follow_the_table() {
        let image = image_table();
        let mine = gpt::personalize(&image, 8192, 0, &mut Counter(0)).unwrap();
        let ready = mine.with_persist_attrs(ATTR_FS_READY);
        assert_eq!(
            next_step(&GptPlan::Personalize(image.clone())),
            Step::Gpt(GptPlan::Personalize(image))
        );
        assert_eq!(next_step(&GptPlan::Done(mine.clone())), Step::MakeFs);
        assert_eq!(next_step(&GptPlan::Done(ready)), Step::Identity);
        assert_eq!(next_step(&GptPlan::Unusable("x".into())), Step::GiveUp("x".into()));
        assert_eq!(
            next_step(&GptPlan::FinishPrimary(mine.clone())),
            Step::Gpt(GptPlan::FinishPrimary(mine))
        );
    }

    #[test]
    fn pause_points_from_the_command_line() {
        assert_eq!(
            pause_point("console=ttyAMA0 rpixen.test.pause=gpt-backup quiet"),
            Some("gpt-backup")
        );
        assert_eq!(pause_point("console=ttyAMA0"), None);
    }
}
