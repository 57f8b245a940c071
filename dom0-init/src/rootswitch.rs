//! Leaving the initramfs for the squashfs rootfs of this boot's slot: mount it read-only under a
//! tmpfs overlay, move the early mounts into it, free the initramfs, make it `/` and exec its init.
//!
//! The partition is chosen by `rpixen.root=LABEL` on the kernel command line (`none` disables the
//! switch), else by `rpixen.slot=a|b` (IMGA|IMGB: what `boot.scr` booted), else IMGA. The rootfs
//! is the partition itself when it is a squashfs, or the file `rootfs.squashfs` on it when it is a
//! slot's FAT (the live image's layout); with neither, a cpio-only image boots on. Only without
//! `rpixen.slot=` is the other slot tried: a slot's kernel runs its own slot's rootfs or none.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::MsFlags;

use crate::info;
use crate::mounts::{mount_one, MountSpec};

const NEWROOT: &str = "/newroot";
/// The squashfs file on a slot's FAT (the builder's `live::slot::ROOTFS_NAME`).
pub const SLOT_ROOTFS: &str = "rootfs.squashfs";

/// Where to look for the rootfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootChoice {
    pub label: String,
    /// Named on the command line (`rpixen.root=` or `rpixen.slot=`): worth waiting for.
    pub explicit: bool,
    /// The other slot may be tried when this one holds no usable rootfs.
    pub fallback: bool,
}

/// Which partition to look at, from the kernel command line; None: do not switch.
pub fn root_choice(cmdline: &str) -> Option<RootChoice> {
    let word = |key: &str| cmdline.split_whitespace().find_map(|w| w.strip_prefix(key));
    let slot = word("rpixen.slot=").and_then(|s| match s {
        "a" => Some("IMGA"),
        "b" => Some("IMGB"),
        _ => None,
    });
    match (word("rpixen.root="), slot) {
        (Some("none"), _) => None,
        (Some(label), _) => {
            Some(RootChoice { label: label.to_owned(), explicit: true, fallback: slot.is_none() })
        }
        (None, Some(label)) => {
            Some(RootChoice { label: label.to_owned(), explicit: true, fallback: false })
        }
        (None, None) => {
            Some(RootChoice { label: "IMGA".to_owned(), explicit: false, fallback: true })
        }
    }
}

/// Whether `/` is the initramfs (ramfs or tmpfs) — the only place a switch makes sense.
pub fn in_initramfs() -> bool {
    match nix::sys::statfs::statfs("/") {
        Ok(s) => {
            let t = s.filesystem_type();
            // RAMFS_MAGIC (0x858458f6) is in neither nix nor libc for every target.
            t == nix::sys::statfs::TMPFS_MAGIC || t.0 as u64 == 0x8584_58f6
        }
        Err(_) => false,
    }
}

/// The other slot of the A/B pair, tried when the chosen one cannot be used.
pub fn other_slot(label: &str) -> Option<&'static str> {
    match label {
        "IMGA" => Some("IMGB"),
        "IMGB" => Some("IMGA"),
        _ => None,
    }
}

/// Tries the switch: the chosen slot, then (without `rpixen.slot=`) the other one. Returns (with
/// the reasons logged) when none can be used; on success it does not return.
pub fn try_switch(cmdline: &str) {
    let Some(choice) = root_choice(cmdline) else {
        return;
    };
    if !in_initramfs() {
        return;
    }
    let mut slots = vec![choice.label.clone()];
    if choice.fallback {
        slots.extend(other_slot(&choice.label).map(str::to_owned));
    }
    for (n, slot) in slots.iter().enumerate() {
        // A named partition is worth waiting for: the block driver may still be probing.
        let wait = if choice.explicit && n == 0 { Duration::from_secs(10) } else { Duration::ZERO };
        let (reason, quiet) = match crate::blockdev::wait_for_partlabel(slot, wait) {
            None => (format!("no partition labelled {slot}"), false),
            Some(dev) => match rootfs_device(&dev) {
                Err((why, quiet)) => (format!("{} ({slot}): {why}", dev.display()), quiet),
                Ok(rootfs) => match switch(&rootfs) {
                    Err(Failure::Before(e)) => {
                        undo_slot_mount();
                        (format!("{} ({slot}): {e}", rootfs.display()), false)
                    }
                    Err(Failure::After(e)) => {
                        // Mounts have moved: there is no going back. Init carries on where it is.
                        info!("root switch into {}: {e}", rootfs.display());
                        return;
                    }
                    Ok(never) => match never {},
                },
            },
        };
        // A cpio image's slot holds no rootfs: only say so when a raw partition was asked for.
        if choice.explicit && !quiet {
            let next = slots
                .get(n + 1)
                .map(|s| format!("trying {s}"))
                .unwrap_or("staying in the initramfs".into());
            info!("root switch: {reason}; {next}");
        }
    }
}

const SLOT_MOUNT: &str = "/run/rpixen/slot";

/// The block device holding the squashfs: `dev` itself, or a loop device over the slot FAT's
/// `rootfs.squashfs`. Err: why not, and whether that is the normal case of a cpio-only image (a
/// slot FAT without the file), not worth a console line.
fn rootfs_device(dev: &Path) -> Result<PathBuf, (String, bool)> {
    match crate::blockdev::probe_device(dev) {
        Some("squashfs") => Ok(dev.to_owned()),
        Some("vfat") => {
            let source = dev.to_string_lossy();
            mount_one(&MountSpec::new(&source, SLOT_MOUNT, "vfat", MsFlags::MS_RDONLY, None))
                .map_err(|e| (e, false))?;
            let file = Path::new(SLOT_MOUNT).join(SLOT_ROOTFS);
            if !file.is_file() {
                undo_slot_mount();
                return Err((format!("no {SLOT_ROOTFS} in the slot"), true));
            }
            crate::modules::load_all(&["loop".to_owned()], false);
            crate::loopdev::attach_read_only(&file).map_err(|e| {
                undo_slot_mount();
                (e, false)
            })
        }
        _ => Err(("holds no squashfs".to_owned(), false)),
    }
}

fn undo_slot_mount() {
    let _ = nix::mount::umount2(SLOT_MOUNT, nix::mount::MntFlags::MNT_DETACH);
}

/// Mounts `dev` under an overlay at NEWROOT and enters it. Returns only on failure; a failure before
/// the mounts are moved leaves the initramfs as it was.
fn switch(dev: &Path) -> Result<std::convert::Infallible, Failure> {
    let dev = dev.to_string_lossy();
    let init = prepare(&dev).map_err(|e| {
        undo_prepare();
        Failure::Before(e)
    })?;
    enter(&dev, init).map_err(Failure::After)
}

/// Where a switch failed: before the point of no return (the initramfs is intact, the other slot
/// can be tried) or after it.
enum Failure {
    Before(String),
    After(String),
}

const RO: &str = "/run/rpixen/ro";
const RW: &str = "/run/rpixen/rw";

/// squashfs read-only + tmpfs upper layer as an overlay on NEWROOT; returns the init it holds.
fn prepare(dev: &str) -> Result<&'static str, String> {
    mount_one(&MountSpec::new(dev, RO, "squashfs", MsFlags::MS_RDONLY, None))?;
    mount_one(&MountSpec::new("tmpfs", RW, "tmpfs", MsFlags::empty(), Some("mode=0755")))?;
    for d in ["upper", "work"] {
        std::fs::create_dir_all(format!("{RW}/{d}")).map_err(|e| format!("mkdir {RW}/{d}: {e}"))?;
    }
    let data = format!("lowerdir={RO},upperdir={RW}/upper,workdir={RW}/work");
    mount_one(&MountSpec::new("overlay", NEWROOT, "overlay", MsFlags::empty(), Some(&data)))?;
    ["/sbin/init", "/init"]
        .into_iter()
        .find(|p| Path::new(&format!("{NEWROOT}{p}")).exists())
        .ok_or_else(|| "no /sbin/init in it".to_owned())
}

fn undo_prepare() {
    for m in [NEWROOT, RW, RO] {
        let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn enter(dev: &str, init: &str) -> Result<std::convert::Infallible, String> {
    // The point of no return: move the live mounts into the new root.
    for m in ["/dev", "/proc", "/sys", "/run", "/tmp"] {
        let target = format!("{NEWROOT}{m}");
        let _ = std::fs::create_dir_all(&target);
        if let Err(e) = nix::mount::mount(
            Some(m),
            target.as_str(),
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        ) {
            info!("root switch: cannot move {m}: {e}");
        }
    }
    free_initramfs();
    std::env::set_current_dir(NEWROOT).map_err(|e| format!("chdir {NEWROOT}: {e}"))?;
    nix::mount::mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| format!("move {NEWROOT} to /: {e}"))?;
    nix::unistd::chroot(".").map_err(|e| format!("chroot: {e}"))?;
    let _ = std::env::set_current_dir("/");
    info!("root switch: {dev} (squashfs) + tmpfs overlay is /; exec {init}");
    let err = std::process::Command::new(init).exec();
    Err(format!("exec {init}: {err}"))
}

/// Deletes the initramfs's files (they would pin RAM forever), staying on its filesystem.
fn free_initramfs() {
    let Ok(root) = std::fs::metadata("/") else {
        return;
    };
    let Ok(entries) = std::fs::read_dir("/") else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p == Path::new(NEWROOT) {
            continue;
        }
        remove_on_device(&p, root.dev());
    }
}

fn remove_on_device(p: &Path, dev: u64) {
    let Ok(meta) = std::fs::symlink_metadata(p) else {
        return;
    };
    if meta.dev() != dev {
        return;
    }
    if meta.is_dir() {
        if let Ok(entries) = std::fs::read_dir(p) {
            for e in entries.flatten() {
                remove_on_device(&e.path(), dev);
            }
        }
        let _ = std::fs::remove_dir(p);
    } else {
        let _ = std::fs::remove_file(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ab_slots_pair_up() {
        assert_eq!(other_slot("IMGA"), Some("IMGB"));
        assert_eq!(other_slot("IMGB"), Some("IMGA"));
        assert_eq!(other_slot("ROOT"), None);
    }

    #[test]
    fn choice_from_cmdline() {
        let c = |label: &str, explicit, fallback| {
            Some(RootChoice { label: label.into(), explicit, fallback })
        };
        assert_eq!(root_choice("console=ttyAMA0"), c("IMGA", false, true));
        assert_eq!(root_choice("console=ttyAMA0 rpixen.root=IMGB"), c("IMGB", true, true));
        assert_eq!(root_choice("rpixen.root=none quiet rpixen.slot=a"), None);
        // The slot boot.scr booted: its own rootfs or none.
        assert_eq!(root_choice("console=hvc0 rpixen.slot=b"), c("IMGB", true, false));
        assert_eq!(root_choice("rpixen.slot=a"), c("IMGA", true, false));
        assert_eq!(root_choice("rpixen.slot=b rpixen.root=ROOT"), c("ROOT", true, false));
        assert_eq!(root_choice("rpixen.slot=x"), c("IMGA", false, true));
    }
}
