//! The `nocloud` onboot step (`dom0-init nocloud`): reads the NoCloud files from the boot FAT and
//! CONFIG's files, then applies them: host name, accounts and SSH keys, time zone, and the network
//! configuration the `network` service picks up from [`NETWORK_OVERRIDE`]. Dom0's root filesystem
//! is fresh on every boot, so this runs on every boot and changes only RAM-backed files.

use std::io::Write;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::Path;

use super::{hosts, passwd_and_group, plan, shadow, summary, Provision, Sources};

/// The GPT name of partition 1, where rpi-imager writes the NoCloud files.
pub const BOOT_LABEL: &str = "BOOT";
/// Where the step leaves the network configuration from `network-config` for the `network` service.
pub const NETWORK_OVERRIDE: &str = "/run/rpixen/network.yml";
/// CONFIG's `wpa_supplicant.conf`, copied for the `network` service.
pub const WPA_OVERRIDE: &str = "/run/rpixen/wpa_supplicant.conf";
const BOOT_MOUNT: &str = "/run/rpixen/boot";
const NOCLOUD_FILES: [&str; 3] = ["meta-data", "user-data", "network-config"];

/// Runs the step; the exit code is 0 unless the system could not be changed at all.
pub fn main(config_dir: &Path) -> i32 {
    let mut src = Sources::default();
    read_boot_fat(&mut src);
    let read = |name: &str| -> Option<String> {
        let path = config_dir.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                say(&format!("CONFIG {}: cannot read: {e}", path.display()));
                None
            }
        }
    };
    src.config_authorized_keys = read("authorized_keys");
    src.config_hostname = read("hostname");
    src.config_network_config = read("network-config");
    src.config_wpa_supplicant = read("wpa_supplicant.conf");
    let (provision, log) = plan(&src);
    for l in log {
        say(&l);
    }
    let mut failed = false;
    if let Err(e) = apply(&provision) {
        say(&format!("cannot apply the configuration: {e}"));
        failed = true;
    }
    say(&format!("applied: {}", summary(&provision)));
    i32::from(failed)
}

fn say(line: &str) {
    // stdout goes to the supervisor, which prefixes `[nocloud]` and keeps a log file.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}

/// Mounts the boot FAT read-only for as long as it takes to read the three files.
fn read_boot_fat(src: &mut Sources) {
    let Some(dev) = crate::blockdev::find_by_partlabel(BOOT_LABEL) else {
        say(&format!("boot FAT (GPT label {BOOT_LABEL}) not found: no NoCloud files"));
        return;
    };
    if let Err(e) = std::fs::create_dir_all(BOOT_MOUNT) {
        say(&format!("cannot create {BOOT_MOUNT}: {e}"));
        return;
    }
    let flags = nix::mount::MsFlags::MS_RDONLY
        | nix::mount::MsFlags::MS_NOSUID
        | nix::mount::MsFlags::MS_NODEV
        | nix::mount::MsFlags::MS_NOEXEC;
    if let Err(e) = nix::mount::mount(Some(&dev), BOOT_MOUNT, Some("vfat"), flags, None::<&str>) {
        say(&format!("boot FAT {}: cannot mount (vfat): {e}", dev.display()));
        return;
    }
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for name in NOCLOUD_FILES {
        let path = Path::new(BOOT_MOUNT).join(name);
        let text = match std::fs::read(&path) {
            Ok(b) => {
                found.push(name);
                Some(String::from_utf8_lossy(&b).into_owned())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                missing.push(name);
                None
            }
            Err(e) => {
                say(&format!("boot FAT {name}: cannot read: {e}"));
                None
            }
        };
        match name {
            "meta-data" => src.meta_data = text,
            "user-data" => src.user_data = text,
            _ => src.network_config = text,
        }
    }
    if let Err(e) = nix::mount::umount(BOOT_MOUNT) {
        say(&format!("cannot unmount the boot FAT: {e}"));
    }
    if found.is_empty() {
        say(&format!(
            "boot FAT {}: no NoCloud files (meta-data, user-data, network-config)",
            dev.display()
        ));
    } else {
        say(&format!("boot FAT {}: NoCloud files {}", dev.display(), found.join(", ")));
        for m in missing {
            say(&format!("boot FAT {}: no {m} (skipped)", dev.display()));
        }
    }
}

fn apply(p: &Provision) -> std::io::Result<()> {
    if let Some(h) = &p.hostname {
        nix::unistd::sethostname(h).map_err(std::io::Error::from)?;
        write("/etc/hostname", &format!("{h}\n"), 0o644)?;
        write("/etc/hosts", &hosts(h), 0o644)?;
    }
    let (passwd, group) = passwd_and_group(&p.users);
    write("/etc/passwd", &passwd, 0o644)?;
    write("/etc/group", &group, 0o644)?;
    write("/etc/shadow", &shadow(&p.users), 0o600)?;
    write("/etc/shells", "/bin/sh\n/bin/ash\n", 0o644)?;
    install_keys(Path::new("/root"), 0, &p.root_keys)?;
    for (i, u) in p.users.iter().enumerate() {
        let id = 1000 + i as u32;
        install_keys(&Path::new("/home").join(&u.name), id, &u.keys)?;
    }
    if let Some(tz) = &p.timezone {
        write("/etc/timezone", &format!("{tz}\n"), 0o644)?;
        let zone = Path::new("/usr/share/zoneinfo").join(tz);
        if zone.is_file() && !tz.contains("..") {
            let _ = std::fs::remove_file("/etc/localtime");
            std::os::unix::fs::symlink(&zone, "/etc/localtime")?;
        } else {
            say(&format!("timezone {tz}: kept in /etc/timezone; Dom0 has no zoneinfo for it, so the clock shows UTC"));
        }
    }
    std::fs::create_dir_all("/run/rpixen")?;
    match &p.network {
        Some(n) => {
            write(NETWORK_OVERRIDE, &serde_norway::to_string(n).expect("plain data"), 0o600)?
        }
        None => remove_if_present(NETWORK_OVERRIDE)?,
    }
    match &p.wpa_supplicant {
        Some(text) => write(WPA_OVERRIDE, text, 0o600)?,
        None => remove_if_present(WPA_OVERRIDE)?,
    }
    Ok(())
}

/// `HOME/.ssh/authorized_keys` owned by `uid`, as OpenSSH and dropbear want it (0700 / 0600).
fn install_keys(home: &Path, uid: u32, keys: &[String]) -> std::io::Result<()> {
    let ssh = home.join(".ssh");
    std::fs::create_dir_all(&ssh)?;
    std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700))?;
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o700))?;
    let file = ssh.join("authorized_keys");
    let text: String = keys.iter().map(|k| format!("{k}\n")).collect();
    write(&file, &text, 0o600)?;
    for p in [home, &ssh, &file] {
        chown(p, Some(uid), Some(uid))?;
    }
    Ok(())
}

fn write(path: impl AsRef<Path>, text: &str, mode: u32) -> std::io::Result<()> {
    let path = path.as_ref();
    let with_path =
        |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(with_path)?;
    }
    std::fs::write(path, text).map_err(with_path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(with_path)
}

fn remove_if_present(path: &str) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
