//! Finding partitions by their GPT label and telling what filesystem they hold.

use std::io::Read;
use std::path::PathBuf;

/// Parses a sysfs `uevent` file: `KEY=VALUE` lines.
pub fn uevent_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// The `/dev` node of the partition whose GPT name (PARTNAME) is `label`.
pub fn find_by_partlabel(label: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir("/sys/class/block").ok()?;
    for e in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(e.path().join("uevent")) else {
            continue;
        };
        if uevent_value(&text, "PARTNAME") == Some(label) {
            let dev = uevent_value(&text, "DEVNAME")?;
            return Some(PathBuf::from("/dev").join(dev));
        }
    }
    None
}

/// Like [`find_by_partlabel`], retrying for up to `wait` (block drivers may still be probing).
pub fn wait_for_partlabel(label: &str, wait: std::time::Duration) -> Option<PathBuf> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        if let Some(p) = find_by_partlabel(label) {
            if p.exists() {
                return Some(p);
            }
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The filesystem type (as mount(2) names it) from the first bytes of a device, by magic number.
pub fn probe(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(b"hsqs") {
        return Some("squashfs");
    }
    if head.len() >= 1082 && head[1080..1082] == [0x53, 0xEF] {
        return Some("ext4");
    }
    if head.len() >= 512
        && head[510..512] == [0x55, 0xAA]
        && (head[54..57] == *b"FAT" || head[82..87] == *b"FAT32")
    {
        return Some("vfat");
    }
    None
}

pub fn probe_device(dev: &std::path::Path) -> Option<&'static str> {
    let mut head = vec![0u8; 4096];
    let mut f = std::fs::File::open(dev).ok()?;
    let n = f.read(&mut head).ok()?;
    probe(&head[..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uevent_keys() {
        let t = "MAJOR=254\nMINOR=2\nDEVNAME=vda2\nDEVTYPE=partition\nPARTN=2\nPARTNAME=IMGA\n";
        assert_eq!(uevent_value(t, "PARTNAME"), Some("IMGA"));
        assert_eq!(uevent_value(t, "DEVNAME"), Some("vda2"));
        assert_eq!(uevent_value(t, "PART"), None);
    }

    #[test]
    fn magic_numbers() {
        assert_eq!(probe(b"hsqs\0\0\0\0"), Some("squashfs"));
        let mut ext = vec![0u8; 2048];
        ext[1080] = 0x53;
        ext[1081] = 0xEF;
        assert_eq!(probe(&ext), Some("ext4"));
        let mut fat = vec![0u8; 512];
        fat[510] = 0x55;
        fat[511] = 0xAA;
        fat[82..87].copy_from_slice(b"FAT32");
        assert_eq!(probe(&fat), Some("vfat"));
        assert_eq!(probe(&[0u8; 4096]), None);
    }
}
