//! The installer's decisions, pure so that host tests cover them: its options, which disk it writes,
//! whether that disk may be written, the order of the writes, and the progress lines.

use std::ops::Range;

/// A sector: the unit of the GPT's headers, which are written last.
pub const SECTOR: u64 = 512;
/// How much of each end of a disk is looked at (and, with `wipe`, cleared) for old data: the MBR,
/// both GPT copies, and every superblock a filesystem or volume manager keeps near either end.
pub const EDGE: u64 = 1 << 20;
const MIB: u64 = 1 << 20;

/// The kernel command-line word that makes Dom0's init an installer (no first-boot steps, no root
/// switch, no mounts by label: any of them could act on the target disk).
pub const INSTALLER_WORD: &str = "rpixen.installer";

/// What the kernel command line asks of the installer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// `rpixen.install.target=NAME` (`vdb`, `nvme0n1` or `/dev/...`): the disk to write.
    pub target: Option<String>,
    /// `rpixen.install.wipe`: overwrite a disk that holds partitions or data.
    pub wipe: bool,
}

pub fn options(cmdline: &str) -> Options {
    let mut o = Options::default();
    for w in cmdline.split_whitespace() {
        if let Some(t) = w.strip_prefix("rpixen.install.target=") {
            o.target = Some(t.trim_start_matches("/dev/").to_owned());
        } else if w == "rpixen.install.wipe" || w == "rpixen.install.wipe=1" {
            o.wipe = true;
        }
    }
    o
}

pub fn is_installer_boot(cmdline: &str) -> bool {
    cmdline.split_whitespace().any(|w| w == INSTALLER_WORD)
}

/// A whole disk as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskInfo {
    /// The kernel's name: `vdb`, `nvme0n1`, `mmcblk0`.
    pub name: String,
    pub bytes: u64,
    pub read_only: bool,
    /// Partitions the kernel found on it.
    pub partitions: usize,
}

/// Internal storage first, as EVE's installer orders transports (NVMe, then eMMC, then SATA/USB,
/// then virtio); names within a kind in the kernel's order.
fn rank(name: &str) -> u8 {
    match name {
        n if n.starts_with("nvme") => 0,
        n if n.starts_with("mmcblk") => 1,
        n if n.starts_with("sd") => 2,
        n if n.starts_with("vd") => 3,
        _ => 4,
    }
}

/// Block devices that are never install targets: an eMMC's boot and RPMB areas, optical drives.
fn never_target(name: &str) -> bool {
    (name.starts_with("mmcblk") && (name.contains("boot") || name.contains("rpmb")))
        || name.starts_with("sr")
        || name.starts_with("mtdblock")
}

/// The disk to write: the one `wanted` names, else the first disk that is not the installer's own
/// boot medium (`boot`), by [`rank`]. The error says what was seen.
pub fn choose_target<'a>(
    disks: &'a [DiskInfo],
    boot: &str,
    wanted: Option<&str>,
) -> Result<&'a DiskInfo, String> {
    let listed = || {
        let names: Vec<String> =
            disks.iter().map(|d| format!("{} ({})", d.name, mib_text(d.bytes))).collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    };
    if let Some(w) = wanted {
        if w == boot {
            return Err(format!(
                "rpixen.install.target={w} names the installer's own boot medium; disks: {}",
                listed()
            ));
        }
        let d = disks.iter().find(|d| d.name == w).ok_or_else(|| {
            format!("rpixen.install.target={w}: no such disk; disks: {}", listed())
        })?;
        if d.read_only {
            return Err(format!("rpixen.install.target={w}: the disk is read-only"));
        }
        return Ok(d);
    }
    let mut candidates: Vec<&DiskInfo> =
        disks.iter().filter(|d| d.name != boot && !d.read_only && !never_target(&d.name)).collect();
    candidates.sort_by(|a, b| (rank(&a.name), &a.name).cmp(&(rank(&b.name), &b.name)));
    candidates.first().copied().ok_or_else(|| {
        format!("no disk to install to besides the boot medium {boot}; disks: {}", listed())
    })
}

/// Refuses a target smaller than the image.
pub fn check_size(target: &DiskInfo, image_bytes: u64) -> Result<(), String> {
    if target.bytes < image_bytes {
        return Err(format!(
            "/dev/{} is too small: it holds {} ({} bytes) and the image needs {} ({} bytes)",
            target.name,
            mib_text(target.bytes),
            target.bytes,
            mib_text(image_bytes),
            image_bytes
        ));
    }
    Ok(())
}

/// What makes a disk "not empty": partitions the kernel found, and recognisable or any non-zero
/// bytes in its first and last [`EDGE`] bytes (`head`, `tail`). Empty means nothing to lose.
pub fn contents(partitions: usize, head: &[u8], tail: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    if partitions > 0 {
        found.push(format!("{partitions} partition(s)"));
    }
    if head.len() >= 1024 && &head[512..520] == b"EFI PART" {
        found.push("a GPT header at LBA 1".to_owned());
    } else if head.len() >= 512 && head[510..512] == [0x55, 0xAA] {
        found.push("an MBR boot signature".to_owned());
    }
    if let Some(fs) = crate::blockdev::probe(head) {
        found.push(format!("a {fs} filesystem"));
    }
    if tail.len() >= 512 && tail[tail.len() - 512..].starts_with(b"EFI PART") {
        found.push("a backup GPT header in the last sector".to_owned());
    }
    if found.is_empty() {
        if let Some(i) = head.iter().position(|&b| b != 0) {
            found.push(format!("data at byte {i}"));
        } else if let Some(i) = tail.iter().position(|&b| b != 0) {
            found.push(format!("data {} bytes before the end", tail.len() - i));
        }
    }
    found
}

/// The byte ranges of an `len`-byte image in the order they are written: everything but the
/// partition tables first, then the backup GPT header (the image's last sector), the MBR, and the
/// primary GPT header last. Until that last sector is written and flushed, the disk has no valid
/// primary GPT, and a disk torn mid-install never looks like a bootable one.
pub fn write_order(len: u64) -> Vec<Range<u64>> {
    debug_assert!(len >= 4 * SECTOR && len.is_multiple_of(SECTOR));
    vec![2 * SECTOR..len - SECTOR, len - SECTOR..len, 0..SECTOR, SECTOR..2 * SECTOR]
}

/// Splits `r` into pieces of at most `block` bytes.
pub fn blocks(r: Range<u64>, block: u64) -> impl Iterator<Item = Range<u64>> {
    (r.start..r.end).step_by(block as usize).map(move |s| s..(s + block).min(r.end))
}

/// Copies `overlay` (bytes that start at `overlay_at` in the image) over `buf` (image bytes that
/// start at `at`) where the two ranges meet: the installer's CONFIG partition replaces the one the
/// image carries.
pub fn apply_overlay(buf: &mut [u8], at: u64, overlay: &[u8], overlay_at: u64) {
    let start = at.max(overlay_at);
    let end = (at + buf.len() as u64).min(overlay_at + overlay.len() as u64);
    if start >= end {
        return;
    }
    let (b, o) = ((start - at) as usize, (start - overlay_at) as usize);
    let n = (end - start) as usize;
    buf[b..b + n].copy_from_slice(&overlay[o..o + n]);
}

/// The progress line after `done` of `total` bytes, when a new tenth has been reached since
/// `last` (the tenth last reported); updates `last`.
pub fn progress(done: u64, total: u64, last: &mut u64) -> Option<String> {
    let tenth = done.saturating_mul(10).checked_div(total).unwrap_or(10);
    if tenth <= *last {
        return None;
    }
    *last = tenth;
    Some(format!(
        "rpixen-install: writing {}% ({} of {} MiB)",
        tenth * 10,
        done / MIB,
        total.div_ceil(MIB)
    ))
}

/// `N MiB` (rounded down; `N KiB` below one MiB).
pub fn mib_text(bytes: u64) -> String {
    if bytes < MIB {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{} MiB", bytes / MIB)
    }
}

/// The payload's description, written by `rpixen installer_raw` as `/etc/rpixen/installer`:
/// `size BYTES` and `sha256 HEX` lines, and a `carry NAME` line for each file of the installer
/// medium's boot FAT that goes onto the target's (the files a user edits after flashing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub size: u64,
    pub sha256: String,
    pub carry: Vec<String>,
}

pub fn parse_payload(text: &str) -> Result<Payload, String> {
    let mut size = None;
    let mut sha = None;
    let mut carry = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once(' ') {
            Some(("size", v)) => {
                size = Some(
                    v.trim().parse::<u64>().map_err(|e| format!("line {}: size: {e}", i + 1))?,
                )
            }
            Some(("sha256", v)) => {
                let v = v.trim();
                if v.len() != 64 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!("line {}: sha256 is not 64 hex digits", i + 1));
                }
                sha = Some(v.to_ascii_lowercase());
            }
            Some(("carry", v)) => {
                let v = v.trim();
                if v.is_empty() || v.contains(['/', '\\']) || v == "." || v == ".." {
                    return Err(format!("line {}: carry: `{v}` is not a file name", i + 1));
                }
                carry.push(v.to_owned());
            }
            _ => return Err(format!("line {}: unknown `{line}`", i + 1)),
        }
    }
    let size = size.ok_or("no `size` line")?;
    if size < 4 * SECTOR || !size.is_multiple_of(SECTOR) {
        return Err(format!("size {size} is not a whole number of sectors"));
    }
    Ok(Payload { size, sha256: sha.ok_or("no `sha256` line")?, carry })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(name: &str, mib: u64) -> DiskInfo {
        DiskInfo { name: name.into(), bytes: mib * MIB, read_only: false, partitions: 0 }
    }

    #[test]
    fn options_from_the_command_line() {
        assert_eq!(options("console=hvc0 rpixen.installer"), Options::default());
        let o = options("rpixen.install.target=/dev/nvme0n1 rpixen.install.wipe quiet");
        assert_eq!(o, Options { target: Some("nvme0n1".into()), wipe: true });
        assert!(is_installer_boot("a rpixen.installer b"));
        assert!(!is_installer_boot("rpixen.installers"));
    }

    #[test]
    fn first_disk_that_is_not_the_boot_medium_internal_storage_first() {
        let disks = [disk("sda", 8000), disk("vda", 200), disk("vdb", 2048)];
        assert_eq!(choose_target(&disks, "vda", None).unwrap().name, "sda");
        let disks = [disk("sda", 8000), disk("mmcblk0", 8000), disk("mmcblk0boot0", 4)];
        assert_eq!(choose_target(&disks, "sda", None).unwrap().name, "mmcblk0");
        let disks = [disk("vdb", 2048), disk("vda", 200), disk("nvme0n1", 100_000)];
        assert_eq!(choose_target(&disks, "vdb", None).unwrap().name, "nvme0n1");
        assert_eq!(choose_target(&disks, "nvme0n1", None).unwrap().name, "vda");
    }

    #[test]
    fn named_target_and_refusals() {
        let mut ro = disk("vdc", 4096);
        ro.read_only = true;
        let disks = [disk("vda", 200), disk("vdb", 2048), ro];
        assert_eq!(choose_target(&disks, "vda", Some("vdb")).unwrap().name, "vdb");
        let e = choose_target(&disks, "vda", Some("vda")).unwrap_err();
        assert!(e.contains("own boot medium"), "{e}");
        let e = choose_target(&disks, "vda", Some("sdz")).unwrap_err();
        assert!(e.contains("no such disk") && e.contains("vdb (2048 MiB)"), "{e}");
        assert!(choose_target(&disks, "vda", Some("vdc")).unwrap_err().contains("read-only"));
        let e = choose_target(&disks[..1], "vda", None).unwrap_err();
        assert!(e.contains("no disk to install to"), "{e}");
    }

    #[test]
    fn size_check_names_both_sizes() {
        assert!(check_size(&disk("vdb", 2048), 105 * MIB).is_ok());
        assert!(check_size(&disk("vdb", 105), 105 * MIB).is_ok());
        let e = check_size(&disk("vdb", 64), 105 * MIB).unwrap_err();
        assert_eq!(
            e,
            format!(
                "/dev/vdb is too small: it holds 64 MiB ({}) and the image needs 105 MiB ({} bytes)",
                format_args!("{} bytes", 64 * MIB),
                105 * MIB
            )
        );
    }

    #[test]
    fn what_makes_a_disk_non_empty() {
        let zero = vec![0u8; EDGE as usize];
        assert!(contents(0, &zero, &zero).is_empty());
        assert_eq!(contents(2, &zero, &zero), ["2 partition(s)"]);
        let mut gpt = zero.clone();
        gpt[510] = 0x55;
        gpt[511] = 0xAA;
        gpt[512..520].copy_from_slice(b"EFI PART");
        let mut tail = zero.clone();
        let n = tail.len();
        tail[n - 512..n - 504].copy_from_slice(b"EFI PART");
        assert_eq!(
            contents(0, &gpt, &tail),
            ["a GPT header at LBA 1", "a backup GPT header in the last sector"]
        );
        let mut ext = zero.clone();
        ext[1080] = 0x53;
        ext[1081] = 0xEF;
        assert_eq!(contents(0, &ext, &zero), ["a ext4 filesystem"]);
        let mut junk = zero.clone();
        junk[4097] = 1;
        assert_eq!(contents(0, &junk, &zero), ["data at byte 4097"]);
        let mut end = zero.clone();
        end[n - 3] = 7;
        assert_eq!(contents(0, &zero, &end), ["data 3 bytes before the end"]);
    }

    #[test]
    fn headers_are_written_last_primary_at_the_very_end() {
        let len = 100 * MIB;
        let order = write_order(len);
        assert_eq!(order.last().unwrap(), &(SECTOR..2 * SECTOR));
        // Every byte exactly once.
        let mut covered: Vec<Range<u64>> = order.clone();
        covered.sort_by_key(|r| r.start);
        let mut at = 0;
        for r in &covered {
            assert_eq!(r.start, at);
            at = r.end;
        }
        assert_eq!(at, len);
        let pieces: Vec<_> = blocks(0..10, 4).collect();
        assert_eq!(pieces, [0..4, 4..8, 8..10]);
    }

    #[test]
    fn overlay_replaces_only_where_ranges_meet() {
        let mut buf = vec![0u8; 8];
        apply_overlay(&mut buf, 100, &[1, 2, 3, 4], 98);
        assert_eq!(buf, [3, 4, 0, 0, 0, 0, 0, 0]);
        let mut buf = vec![0u8; 8];
        apply_overlay(&mut buf, 100, &[1, 2, 3], 106);
        assert_eq!(buf, [0, 0, 0, 0, 0, 0, 1, 2]);
        let mut buf = vec![9u8; 4];
        apply_overlay(&mut buf, 100, &[1], 104);
        assert_eq!(buf, [9; 4]);
    }

    #[test]
    fn progress_once_per_tenth() {
        let mut last = 0;
        let total = 100 * MIB;
        assert_eq!(progress(5 * MIB, total, &mut last), None);
        assert_eq!(
            progress(10 * MIB, total, &mut last).unwrap(),
            "rpixen-install: writing 10% (10 of 100 MiB)"
        );
        assert_eq!(progress(19 * MIB, total, &mut last), None);
        let line = progress(55 * MIB, total, &mut last).unwrap();
        assert_eq!(line, "rpixen-install: writing 50% (55 of 100 MiB)");
        assert_eq!(
            progress(total, total, &mut last).unwrap(),
            "rpixen-install: writing 100% (100 of 100 MiB)"
        );
        assert_eq!(progress(total, total, &mut last), None);
    }

    #[test]
    fn payload_description() {
        let sha = "ab".repeat(32);
        let p = parse_payload(&format!("size 1048576\nsha256 {sha}\n")).unwrap();
        assert_eq!(p, Payload { size: 1 << 20, sha256: sha.clone(), carry: vec![] });
        let p = parse_payload(&format!(
            "size 1048576\nsha256 {sha}\ncarry config.txt\ncarry user-data\n"
        ))
        .unwrap();
        assert_eq!(p.carry, ["config.txt", "user-data"]);
        let e = parse_payload(&format!("size 1048576\nsha256 {sha}\ncarry ../x\n")).unwrap_err();
        assert!(e.contains("line 3: carry"), "{e}");
        assert!(parse_payload("size 1048576\n").unwrap_err().contains("sha256"));
        assert!(parse_payload(&format!("size 1000\nsha256 {sha}"))
            .unwrap_err()
            .contains("sectors"));
        assert!(parse_payload("size 1048576\nsha256 xyz").unwrap_err().contains("64 hex"));
        assert!(parse_payload("colour blue").unwrap_err().contains("line 1"));
    }
}
