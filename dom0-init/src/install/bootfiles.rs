//! The boot files a user edits on the installer medium (`config.txt`, cloud-init's NoCloud
//! `user-data`, `network-config`, `meta-data`, as rpi-imager writes them onto partition 1), carried
//! onto the target's BOOT FAT.
//!
//! Nothing is written here: both FATs are opened through a [`SectorOverlay`], which reads the
//! medium and keeps every write in memory. The target's edited sectors then join the CONFIG overlay
//! of the one write pass, so they are part of the digest the installer verifies by reading back, and
//! they reach the disk before its partition tables do (a power cut leaves no bootable half-copy).
//! The FAT code is the `fatfs` crate the builder writes these partitions with.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use fatfs::{FileSystem, FsOptions};

const SECTOR: u64 = 512;

/// A partition of a file (`at`, `len` bytes) that reads through to the file and keeps writes, a
/// sector at a time, in memory.
pub struct SectorOverlay<'a> {
    file: &'a File,
    at: u64,
    len: u64,
    pos: u64,
    written: BTreeMap<u64, Vec<u8>>,
}

impl<'a> SectorOverlay<'a> {
    pub fn new(file: &'a File, at: u64, len: u64) -> Self {
        SectorOverlay { file, at, len, pos: 0, written: BTreeMap::new() }
    }

    fn sector(&self, index: u64) -> io::Result<Vec<u8>> {
        if let Some(s) = self.written.get(&index) {
            return Ok(s.clone());
        }
        let mut s = vec![0u8; SECTOR as usize];
        let n = (self.len - index * SECTOR).min(SECTOR) as usize;
        self.file.read_exact_at(&mut s[..n], self.at + index * SECTOR)?;
        Ok(s)
    }

    /// The written bytes as runs of adjacent sectors: (offset in the partition, bytes).
    pub fn runs(&self) -> Vec<(u64, Vec<u8>)> {
        let mut runs: Vec<(u64, Vec<u8>)> = Vec::new();
        for (&i, s) in &self.written {
            match runs.last_mut() {
                Some((at, bytes)) if *at + bytes.len() as u64 == i * SECTOR => {
                    bytes.extend_from_slice(s)
                }
                _ => runs.push((i * SECTOR, s.clone())),
            }
        }
        // A partition that ends inside a sector: nothing past its end.
        if let Some((at, bytes)) = runs.last_mut() {
            bytes.truncate((self.len - *at) as usize);
        }
        runs
    }
}

impl Read for SectorOverlay<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() && self.pos < self.len {
            let (index, within) = (self.pos / SECTOR, (self.pos % SECTOR) as usize);
            let s = self.sector(index)?;
            let n = (buf.len() - done)
                .min(SECTOR as usize - within)
                .min((self.len - self.pos) as usize);
            buf[done..done + n].copy_from_slice(&s[within..within + n]);
            done += n;
            self.pos += n as u64;
        }
        Ok(done)
    }
}

impl Write for SectorOverlay<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            if self.pos >= self.len {
                if done == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "past the partition's end",
                    ));
                }
                break;
            }
            let (index, within) = (self.pos / SECTOR, (self.pos % SECTOR) as usize);
            let mut s = self.sector(index)?;
            let n = (buf.len() - done)
                .min(SECTOR as usize - within)
                .min((self.len - self.pos) as usize);
            s[within..within + n].copy_from_slice(&buf[done..done + n]);
            self.written.insert(index, s);
            done += n;
            self.pos += n as u64;
        }
        Ok(done)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for SectorOverlay<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "seek before the partition's start")
        })?;
        Ok(self.pos)
    }
}

/// The files of `names` that the FAT in `part` holds in its root folder, with their bytes.
pub fn read_files(
    part: &mut SectorOverlay<'_>,
    names: &[String],
) -> io::Result<Vec<(String, Vec<u8>)>> {
    // fatfs reads the boot sector where the storage stands.
    part.seek(SeekFrom::Start(0))?;
    let fs = FileSystem::new(part, FsOptions::new())?;
    let root = fs.root_dir();
    let mut found = Vec::new();
    for name in names {
        match root.open_file(name) {
            Ok(mut f) => {
                let mut data = Vec::new();
                f.read_to_end(&mut data)
                    .map_err(|e| io::Error::new(e.kind(), format!("{name}: {e}")))?;
                found.push((name.clone(), data));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{name}: {e}"))),
        }
    }
    drop(root);
    fs.unmount()?;
    Ok(found)
}

/// Writes `files` into the root folder of the FAT in `part` (replacing files of the same name),
/// skipping those it already holds byte for byte; returns the names written. Then opens the FAT
/// again and reads every file back, so a FAT the edit left inconsistent is caught before any byte
/// reaches the target.
pub fn write_files(
    part: &mut SectorOverlay<'_>,
    files: &[(String, Vec<u8>)],
) -> io::Result<Vec<String>> {
    let current = read_files(part, &files.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>())?;
    let changed: Vec<&(String, Vec<u8>)> =
        files.iter().filter(|f| !current.iter().any(|c| c == *f)).collect();
    if changed.is_empty() {
        return Ok(Vec::new());
    }
    part.seek(SeekFrom::Start(0))?;
    let fs = FileSystem::new(&mut *part, FsOptions::new())?;
    let root = fs.root_dir();
    for (name, data) in &changed {
        let with_name = |e: io::Error| io::Error::new(e.kind(), format!("{name}: {e}"));
        let mut f = root.create_file(name).map_err(with_name)?;
        f.truncate().map_err(with_name)?;
        f.write_all(data).map_err(with_name)?;
        f.flush().map_err(with_name)?;
    }
    drop(root);
    fs.unmount()?;
    let names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    let back = read_files(part, &names)?;
    for (name, data) in files {
        match back.iter().find(|(n, _)| n == name) {
            Some((_, got)) if got == data => {}
            _ => {
                return Err(io::Error::other(format!(
                    "{name} reads back differently from what was written"
                )))
            }
        }
    }
    Ok(changed.into_iter().map(|(n, _)| n.clone()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file holding `len` bytes of 0x5A at `at` (between two other regions).
    fn backing(at: u64, len: u64) -> File {
        let f = tempfile();
        f.write_all_at(&vec![1u8; at as usize], 0).unwrap();
        f.write_all_at(&vec![0x5Au8; len as usize], at).unwrap();
        f.write_all_at(&[2u8; 700], at + len).unwrap();
        f
    }

    fn tempfile() -> File {
        let dir = std::env::temp_dir().join(format!("rpixen-overlay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{:?}", std::thread::current().id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let _ = std::fs::remove_file(&path);
        f
    }

    #[test]
    fn overlay_reads_through_keeps_writes_and_never_touches_the_file() {
        let f = backing(1000, 3000);
        let mut o = SectorOverlay::new(&f, 1000, 3000);
        let mut all = Vec::new();
        o.read_to_end(&mut all).unwrap();
        assert_eq!(all, vec![0x5A; 3000], "reads stop at the partition's end");
        o.seek(SeekFrom::Start(510)).unwrap();
        o.write_all(b"abcd").unwrap();
        o.seek(SeekFrom::End(-2)).unwrap();
        o.write_all(b"zz").unwrap();
        assert!(o.write(b"!").is_err(), "no write past the end");
        o.seek(SeekFrom::Start(508)).unwrap();
        let mut b = [0u8; 8];
        o.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"\x5A\x5Aabcd\x5A\x5A");
        let runs = o.runs();
        assert_eq!(
            runs.iter().map(|(a, b)| (*a, b.len())).collect::<Vec<_>>(),
            [(0, 1024), (2560, 440)]
        );
        assert_eq!(&runs[0].1[510..514], b"abcd");
        assert_eq!(&runs[1].1[438..], b"zz");
        let mut disk = vec![0u8; 3000];
        f.read_exact_at(&mut disk, 1000).unwrap();
        assert_eq!(disk, vec![0x5A; 3000], "the file is unchanged");
    }

    /// A FAT16 volume of `mib` MiB at byte 4096 of a file, holding `files` in its root.
    fn fat(mib: u64, files: &[(&str, &[u8])]) -> (File, u64, u64) {
        let (at, len) = (4096, mib << 20);
        let f = tempfile();
        f.set_len(at + len + 4096).unwrap();
        let mut o = SectorOverlay::new(&f, at, len);
        fatfs::format_volume(&mut o, fatfs::FormatVolumeOptions::new()).unwrap();
        {
            let fs = FileSystem::new(&mut o, FsOptions::new()).unwrap();
            for (name, data) in files {
                fs.root_dir().create_file(name).unwrap().write_all(data).unwrap();
            }
            fs.unmount().unwrap();
        }
        for (a, bytes) in o.runs() {
            f.write_all_at(&bytes, at + a).unwrap();
        }
        (f, at, len)
    }

    #[test]
    fn files_are_replaced_added_and_read_back_in_memory_only() {
        let (f, at, len) = fat(8, &[("config.txt", b"arm_64bit=1\n"), ("u-boot.bin", b"uboot")]);
        let before = {
            let mut b = vec![0u8; len as usize];
            f.read_exact_at(&mut b, at).unwrap();
            b
        };
        let mut o = SectorOverlay::new(&f, at, len);
        let names: Vec<String> = ["config.txt", "user-data", "meta-data"].map(String::from).into();
        let now = read_files(&mut o, &names).unwrap();
        assert_eq!(now, [("config.txt".to_owned(), b"arm_64bit=1\n".to_vec())]);

        let big = vec![b'#'; 70_000];
        let want = vec![
            ("config.txt".to_owned(), b"arm_64bit=1\ngpu_mem=16\n".to_vec()),
            ("user-data".to_owned(), big.clone()),
        ];
        assert_eq!(write_files(&mut o, &want).unwrap(), ["config.txt", "user-data"]);
        assert_eq!(read_files(&mut o, &names).unwrap(), want);
        assert!(
            write_files(&mut o, &want).unwrap().is_empty(),
            "the same bytes are not written twice"
        );
        let mut after = vec![0u8; len as usize];
        f.read_exact_at(&mut after, at).unwrap();
        assert_eq!(after, before, "the backing file is untouched");

        // The changed sectors alone turn the old volume into the new one.
        for (a, bytes) in o.runs() {
            f.write_all_at(&bytes, at + a).unwrap();
        }
        let mut fresh = SectorOverlay::new(&f, at, len);
        assert_eq!(read_files(&mut fresh, &names).unwrap(), want);
        fresh.seek(SeekFrom::Start(0)).unwrap();
        let fs = FileSystem::new(&mut fresh, FsOptions::new()).unwrap();
        let mut uboot = Vec::new();
        fs.root_dir().open_file("u-boot.bin").unwrap().read_to_end(&mut uboot).unwrap();
        assert_eq!(uboot, b"uboot");
    }
}
