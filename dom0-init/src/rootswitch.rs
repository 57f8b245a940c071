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
    let explicit = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("rpixen.root="));
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

/// Tries the switch. Returns (with the reason logged) when there is nothing to switch to or a step
/// failed before the point of no return; on success it does not return.
pub fn try_switch(cmdline: &str) {
    let Some((label, explicit)) = root_label(cmdline) else {
        return;
    };
    if !in_initramfs() {
        return;
    }
    // An explicit label is worth waiting for: the block driver may still be probing.
    let wait = if explicit {
        Duration::from_secs(10)
    } else {
        Duration::ZERO
    };
    let Some(dev) = crate::blockdev::wait_for_partlabel(&label, wait) else {
        if explicit {
            info!("root switch: no partition labelled {label}; staying in the initramfs");
        }
        return;
    };
    if crate::blockdev::probe_device(&dev) != Some("squashfs") {
        if explicit {
            info!(
                "root switch: {} ({label}) holds no squashfs; staying in the initramfs",
                dev.display()
            );
        }
        return;
    }
    if let Err(e) = switch(&dev) {
        info!(
            "root switch into {} failed: {e}; staying in the initramfs",
            dev.display()
        );
    }
}

fn switch(dev: &Path) -> Result<(), String> {
    let dev = dev.to_string_lossy();
    let ro = "/run/rpixen/ro";
    let rw = "/run/rpixen/rw";
    mount_one(&MountSpec::new(
        &dev,
        ro,
        "squashfs",
        MsFlags::MS_RDONLY,
        None,
    ))?;
    mount_one(&MountSpec::new(
        "tmpfs",
        rw,
        "tmpfs",
        MsFlags::empty(),
        Some("mode=0755"),
    ))?;
    for d in ["upper", "work"] {
        std::fs::create_dir_all(format!("{rw}/{d}")).map_err(|e| format!("mkdir {rw}/{d}: {e}"))?;
    }
    let data = format!("lowerdir={ro},upperdir={rw}/upper,workdir={rw}/work");
    mount_one(&MountSpec::new(
        "overlay",
        NEWROOT,
        "overlay",
        MsFlags::empty(),
        Some(&data),
    ))?;
    let init = ["/sbin/init", "/init"]
        .into_iter()
        .find(|p| Path::new(&format!("{NEWROOT}{p}")).exists());
    let Some(init) = init else {
        let _ = nix::mount::umount2(NEWROOT, nix::mount::MntFlags::MNT_DETACH);
        return Err(format!("{dev} has no /sbin/init"));
    };
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
    fn label_from_cmdline() {
        assert_eq!(root_label("console=ttyAMA0"), Some(("IMGA".into(), false)));
        assert_eq!(
            root_label("console=ttyAMA0 rpixen.root=IMGB"),
            Some(("IMGB".into(), true))
        );
        assert_eq!(root_label("rpixen.root=none quiet"), None);
    }
}
