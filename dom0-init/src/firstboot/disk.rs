//! The disk side of first boot: finding the disk that carries rpixen's GPT, reading both copies,
//! writing a copy in its safe order (entries, flush, header, flush), and having the kernel read
//! the new table.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::gpt::{EncodedCopy, Found, GptError, Header, Table, SECTOR};

/// A whole disk opened for reading and writing.
pub struct Disk {
    pub path: PathBuf,
    /// The kernel's name (`vda`, `mmcblk0`), for its sysfs folder.
    pub name: String,
    pub sectors: u64,
    file: File,
}

impl Disk {
    pub fn open(path: &Path, name: &str) -> io::Result<Disk> {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
        let bytes = io::Seek::seek(&mut &file, io::SeekFrom::End(0))?;
        Ok(Disk { path: path.to_owned(), name: name.to_owned(), sectors: bytes / SECTOR, file })
    }

    fn read(&self, lba: u64, sectors: u64) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; (sectors * SECTOR) as usize];
        self.file.read_exact_at(&mut buf, lba * SECTOR)?;
        Ok(buf)
    }

    /// One copy: the header at `lba` and the entries it points to.
    fn read_copy(&self, lba: u64) -> Result<Table, GptError> {
        let io_err = |e: io::Error| GptError::BadEntryArray(format!("cannot read: {e}"));
        let sector = self.read(lba, 1).map_err(io_err)?;
        let h = Header::parse(&sector, lba)?;
        if h.entries_lba == 0 || h.entries_lba + h.entries_sectors() > self.sectors {
            return Err(GptError::BadEntryArray(format!(
                "entries at LBA {} lie outside the disk",
                h.entries_lba
            )));
        }
        let entries = self.read(h.entries_lba, h.entries_sectors()).map_err(io_err)?;
        Table::from_copy(&h, &entries)
    }

    /// Both copies: the primary at LBA 1 and the one at the last sector of the disk.
    pub fn found(&self) -> Found {
        Found { primary: self.read_copy(1), backup: self.read_copy(self.sectors - 1) }
    }

    /// Writes one copy, entries first: until its header is written (and flushed after them), the
    /// copy is invalid rather than wrong. `point` is called after each flush with the stage reached.
    pub fn write_copy(
        &self,
        c: &EncodedCopy,
        point: &mut dyn FnMut(&str) -> Result<(), super::Stop>,
        name: &str,
    ) -> Result<(), super::Error> {
        let w = |lba: u64, bytes: &[u8]| -> Result<(), super::Error> {
            self.file
                .write_all_at(bytes, lba * SECTOR)
                .and_then(|()| self.file.sync_data())
                .map_err(|e| {
                    super::Error::Io(format!("{}: writing LBA {lba}: {e}", self.path.display()))
                })
        };
        w(c.entries_lba, &c.entries)?;
        point(&format!("{name}-entries"))?;
        w(c.header_lba, &c.header)?;
        point(name)?;
        Ok(())
    }
}

/// Whole disks the kernel knows (not partitions, not RAM or loop devices), by name.
pub fn disks() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !["loop", "ram", "zram", "dm-", "md", "nbd"].iter().any(|p| n.starts_with(p)))
        .filter(|n| {
            std::fs::read_to_string(format!("/sys/block/{n}/size")).is_ok_and(|s| s.trim() != "0")
        })
        .collect();
    out.sort();
    out
}

/// Whether any MMC host exists (an SD card may still be being detected).
pub fn mmc_host_present() -> bool {
    std::fs::read_dir("/sys/class/mmc_host").is_ok_and(|mut d| d.next().is_some())
}

/// The `/dev` node and sysfs size (sectors) of partition number `number` of disk `disk`, as the
/// kernel currently sees it.
pub fn partition(disk: &str, number: usize) -> Option<(PathBuf, u64)> {
    let entries = std::fs::read_dir(format!("/sys/block/{disk}")).ok()?;
    for e in entries.flatten() {
        let p = e.path();
        let Ok(n) = std::fs::read_to_string(p.join("partition")) else {
            continue;
        };
        if n.trim() != number.to_string() {
            continue;
        }
        let size = std::fs::read_to_string(p.join("size")).ok()?.trim().parse().ok()?;
        return Some((Path::new("/dev").join(e.file_name()), size));
    }
    None
}

nix::ioctl_none!(blkrrpart, 0x12, 95);

/// Asks the kernel to read the partition table again (fails with EBUSY while a partition is in use).
pub fn reread(disk: &Disk) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: BLKRRPART takes no argument; the descriptor is an open block device for the call.
    unsafe { blkrrpart(disk.file.as_raw_fd()) }.map_err(io::Error::from)?;
    Ok(())
}
