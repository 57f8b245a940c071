//! The `sshd` service (`dom0-init sshd`): Debian's dropbear (package `dropbear`), keys only.
//!
//! Host keys are made on the first boot with `dropbearkey` and kept on PERSIST (`/persist/ssh`), so
//! the device keeps its SSH identity across reboots and updates; nothing of it is in the image.
//! Then this process becomes dropbear (exec), so PID 1 supervises the server itself.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where host keys live when PERSIST is mounted.
pub const PERSIST_KEYS: &str = "/persist/ssh";
/// Where they live otherwise (new ones every boot: said on the console).
pub const RUN_KEYS: &str = "/run/rpixen/ssh";
const KEY_TYPES: [&str; 2] = ["ed25519", "ecdsa"];

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}

/// dropbear's arguments: foreground, log to stderr, no password logins at all (`-s`), our keys.
pub fn dropbear_args(keys: &[PathBuf], port: u16) -> Vec<String> {
    let mut a: Vec<String> = ["-F", "-E", "-s", "-p"].iter().map(|s| s.to_string()).collect();
    a.push(port.to_string());
    for k in keys {
        a.push("-r".into());
        a.push(k.display().to_string());
    }
    a
}

pub fn main() -> i32 {
    let persist = crate::mounts::current_mounts().iter().any(|m| m.target == "/persist");
    let dir = if persist {
        PathBuf::from(PERSIST_KEYS)
    } else {
        say("PERSIST is not mounted: SSH host keys are kept in RAM and change at every boot");
        PathBuf::from(RUN_KEYS)
    };
    let mut keys = Vec::new();
    for t in KEY_TYPES {
        let key = usable_key(&dir, t).or_else(|e| {
            if dir == Path::new(RUN_KEYS) {
                return Err(e);
            }
            // PERSIST unusable (read-only after an error, full): SSH must stay reachable.
            say(&format!(
                "host key {t} in {}: {e}; using a key in {RUN_KEYS} for this boot",
                dir.display()
            ));
            usable_key(Path::new(RUN_KEYS), t)
        });
        match key {
            Ok(path) => keys.push(path),
            Err(e) => say(&format!("host key {t}: {e}")),
        }
    }
    if keys.is_empty() {
        return 1;
    }
    let err = Command::new("dropbear").args(dropbear_args(&keys, 22)).exec();
    say(&format!("cannot start dropbear: {err}"));
    1
}

/// The host key of type `kind` in `dir`: the existing one if dropbear can read it, else a new one
/// (a damaged one is kept beside it as `.damaged` for inspection).
fn usable_key(dir: &Path, kind: &str) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("dropbear_{kind}_host_key"));
    if path.exists() {
        if log_fingerprint(&path) {
            return Ok(path);
        }
        let aside = path.with_extension("damaged");
        std::fs::rename(&path, &aside).map_err(|e| {
            format!("{} is unreadable and cannot be moved aside: {e}", path.display())
        })?;
        say(&format!("host key {} was unreadable; kept as {}", path.display(), aside.display()));
    }
    make_key(kind, &path)?;
    if !log_fingerprint(&path) {
        return Err(format!("{}: dropbear cannot read the key it just made", path.display()));
    }
    Ok(path)
}

/// Made under a temporary name, synced, then renamed: a power cut leaves no half key behind.
fn make_key(kind: &str, path: &Path) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let out = Command::new("dropbearkey")
        .args(["-t", kind, "-f"])
        .arg(&tmp)
        .output()
        .map_err(|e| format!("cannot run dropbearkey: {e}"))?;
    if !out.status.success() {
        return Err(format!("dropbearkey failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let sync = |p: &Path| std::fs::File::open(p).and_then(|f| f.sync_all());
    sync(&tmp).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())?;
    if let Some(dir) = path.parent() {
        sync(dir).map_err(|e| e.to_string())?;
    }
    say(&format!("made host key {} on first boot", path.display()));
    Ok(())
}

/// Logs the key's fingerprint; false when dropbear cannot read the key.
fn log_fingerprint(path: &Path) -> bool {
    let Ok(out) = Command::new("dropbearkey").arg("-y").arg("-f").arg(path).output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    match text.lines().find_map(|l| l.strip_prefix("Fingerprint: ")) {
        Some(fp) if out.status.success() => {
            say(&format!("host key {}: {fp}", path.display()));
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_only_and_foreground() {
        let a = super::dropbear_args(&["/persist/ssh/k".into()], 22);
        assert_eq!(a, ["-F", "-E", "-s", "-p", "22", "-r", "/persist/ssh/k"]);
    }
}
