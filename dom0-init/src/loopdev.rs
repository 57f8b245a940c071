//! A file as a read-only block device: the squashfs rootfs is a file on its slot's FAT, and the
//! kernel mounts squashfs only from a block device.
//!
//! Two ioctls, written here: the `loopdev` crates generate their bindings with bindgen at build
//! time (libclang on the build host), which the static musl cross build does not have.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `<linux/loop.h>`.
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;
// No LO_FLAGS_AUTOCLEAR: the kernel clears an autoclear device when its last open file closes, and
// ours closes when `attach_read_only` returns, before the mount opens it (the mount then reads a
// 0-sector device: EIO). The root filesystem stays mounted for the life of the system anyway.

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// The `LoopConfig` that attaches `fd` read-only.
fn config(fd: u32) -> LoopConfig {
    LoopConfig {
        fd,
        block_size: 0,
        info: LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: LO_FLAGS_READ_ONLY,
            lo_file_name: [0; 64],
            lo_crypt_name: [0; 64],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        },
        reserved: [0; 8],
    }
}

/// Attaches `file` to a free loop device, read-only; returns the device's path. The `loop` module
/// must be loaded (its `/dev/loop-control` exists).
pub fn attach_read_only(file: &Path) -> Result<PathBuf, String> {
    let ctl = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(|e| format!("/dev/loop-control: {e}"))?;
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number or -1.
    let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
    if n < 0 {
        return Err(format!("no free loop device: {}", std::io::Error::last_os_error()));
    }
    let dev = PathBuf::from(format!("/dev/loop{n}"));
    let backing = File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let device = open_when_present(&dev, Duration::from_secs(2))?;
    let cfg = config(backing.as_raw_fd() as u32);
    // SAFETY: `cfg` is a valid `struct loop_config` that outlives the call; the kernel copies it.
    let r =
        unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CONFIGURE as _, &cfg as *const LoopConfig) };
    if r < 0 {
        return Err(format!(
            "{} on {}: {}",
            file.display(),
            dev.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(dev)
}

/// devtmpfs creates the node as the device appears: wait for it briefly.
fn open_when_present(dev: &Path, wait: Duration) -> Result<File, String> {
    let deadline = Instant::now() + wait;
    loop {
        match File::open(dev) {
            Ok(f) => return Ok(f),
            Err(e) if Instant::now() >= deadline => return Err(format!("{}: {e}", dev.display())),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_matches_the_kernel_layout() {
        // <linux/loop.h>: struct loop_info64 is 232 bytes, struct loop_config 304.
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
        // Read-only (1) and never autoclear (4): see LO_FLAGS_READ_ONLY above.
        assert_eq!(config(7).info.lo_flags, 1);
        assert_eq!(config(7).fd, 7);
    }
}
