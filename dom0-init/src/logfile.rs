//! A service's log file, `<name>.log`, with one rotation (`<name>.log.1`) so a service that logs in
//! a loop cannot fill PERSIST.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

/// Default size at which a log file is rotated.
pub const MAX_BYTES: u64 = 1 << 20;

pub struct LogFile {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max: u64,
}

impl LogFile {
    pub fn open(path: PathBuf, max: u64) -> std::io::Result<LogFile> {
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(LogFile { path, file: Some(file), size, max })
    }

    /// Appends `<ms> <text>`; rotates first when the line would pass the limit.
    pub fn write_line(&mut self, ms: u128, text: &str) {
        let line = format!("{ms:>8} {text}\n");
        if self.size > 0 && self.size + line.len() as u64 > self.max {
            self.rotate();
        }
        if let Some(f) = self.file.as_mut() {
            if f.write_all(line.as_bytes()).is_ok() {
                self.size += line.len() as u64;
            }
        }
    }

    fn rotate(&mut self) {
        self.file = None;
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        let _ = std::fs::rename(&self.path, &old);
        self.file = OpenOptions::new().create(true).append(true).open(&self.path).ok();
        self.size = 0;
    }

    /// Flushes to disk and closes (before filesystems are unmounted).
    pub fn close(&mut self) {
        if let Some(f) = self.file.take() {
            let _ = f.sync_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_once_at_the_limit() {
        let dir = std::env::temp_dir().join(format!("dom0-init-logfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("svc.log");
        let mut log = LogFile::open(path.clone(), 100).unwrap();
        for i in 0..30 {
            log.write_line(i, "0123456789");
        }
        log.close();
        let current = std::fs::read_to_string(&path).unwrap();
        let previous = std::fs::read_to_string(dir.join("svc.log.1")).unwrap();
        assert!(current.len() <= 100 && previous.len() <= 100, "{current:?} {previous:?}");
        assert!(current.ends_with("      29 0123456789\n"), "{current:?}");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2, "one old file only");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
