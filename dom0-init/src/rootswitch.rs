//! Leaving the initramfs for the squashfs rootfs on IMGA (or IMGB): mount it read-only under a
//! tmpfs overlay, move the early mounts into it, free the initramfs, make it `/` and exec its init.
//!
//! The partition is chosen by `rpixen.root=LABEL` on the kernel command line (`none` disables the
//! switch), else IMGA. Only a squashfs there triggers the switch, so a cpio-only image boots on.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

use nix::mount::MsFlags;

use crate::info;
use crate::mounts::{mount_one, MountSpec};

const NEWROOT: &str = "/newroot";

/// Which label to look for, from the kernel command line; None: do not switch.
pub fn root_label(cmdline: &str) -> Option<(String, bool)> {
    let explicit = cmdline.split_whitespace().find_map(|w| w.strip_prefix("rpixen.root="));
    match explicit {
        Some("none") => None,
        Some(label) => Some((label.to_owned(), true)),
        None => Some(("IMGA".to_owned(), false)),
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

/// Tries the switch: the chosen slot, then the other one. Returns (with the reasons logged) when
/// neither can be used; on success it does not return.
pub fn try_switch(cmdline: &str) {
    let Some((label, explicit)) = root_label(cmdline) else {
        return;
    };
    if !in_initramfs() {
        return;
    }
    let mut slots = vec![label.clone()];
    slots.extend(other_slot(&label).map(str::to_owned));
    for (n, slot) in slots.iter().enumerate() {
        // An explicit label is worth waiting for: the block driver may still be probing.
        let wait = if explicit && n == 0 { Duration::from_secs(10) } else { Duration::ZERO };
        let reason = match crate::blockdev::wait_for_partlabel(slot, wait) {
            None => format!("no partition labelled {slot}"),
            Some(dev) if crate::blockdev::probe_device(&dev) != Some("squashfs") => {
                format!("{} ({slot}) holds no squashfs", dev.display())
            }
            Some(dev) => match switch(&dev) {
                Err(Failure::Before(e)) => format!("{} ({slot}): {e}", dev.display()),
                Err(Failure::After(e)) => {
                    // Mounts have moved: there is no going back. Init carries on where it is.
                    info!("root switch into {}: {e}", dev.display());
                    return;
                }
                Ok(never) => match never {},
            },
        };
        // The default IMGA of a cpio image is empty: only say so when a switch was asked for.
        if explicit {
            let next = slots
                .get(n + 1)
                .map(|s| format!("trying {s}"))
                .unwrap_or("staying in the initramfs".into());
            info!("root switch: {reason}; {next}");
        }
    }
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
    fn label_from_cmdline() {
        assert_eq!(root_label("console=ttyAMA0"), Some(("IMGA".into(), false)));
        assert_eq!(root_label("console=ttyAMA0 rpixen.root=IMGB"), Some(("IMGB".into(), true)));
        assert_eq!(root_label("rpixen.root=none quiet"), None);
    }
}
