//! The STATE partition as Dom0 reads and writes it (a block device such as
//! `/dev/disk/by-partlabel/STATE`, or an image file in tests).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::machine::Copies;
use crate::record::{Record, RECORD_LEN};
use crate::COPY_STRIDE_BYTES;

/// Why the STATE partition could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: copy {index} reads back different bytes than were written")]
    ReadBack { path: PathBuf, index: usize },
    #[error("{path}: {len} bytes is too small for the slot state (it needs {needed})")]
    TooSmall { path: PathBuf, len: u64, needed: u64 },
}

/// An open STATE partition.
pub struct StateDevice {
    file: File,
    path: PathBuf,
}

fn offset(index: usize) -> u64 {
    index as u64 * COPY_STRIDE_BYTES
}

impl StateDevice {
    /// Opens the partition for reading and writing.
    pub fn open(path: &Path) -> Result<StateDevice, DeviceError> {
        let io = |source| DeviceError::Io { path: path.to_owned(), source };
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(io)?;
        let dev = StateDevice { file, path: path.to_owned() };
        let len = dev.len()?;
        let needed = offset(1) + RECORD_LEN as u64;
        if len < needed {
            return Err(DeviceError::TooSmall { path: path.to_owned(), len, needed });
        }
        Ok(dev)
    }

    fn io(&self) -> impl FnOnce(io::Error) -> DeviceError + '_ {
        move |source| DeviceError::Io { path: self.path.clone(), source }
    }

    fn len(&self) -> Result<u64, DeviceError> {
        // Block devices report length 0 in their metadata; seeking to the end gives their size.
        use std::io::Seek;
        (&self.file).seek(io::SeekFrom::End(0)).map_err(self.io())
    }

    fn read_copy(&self, index: usize) -> Result<[u8; RECORD_LEN], DeviceError> {
        let mut sector = [0u8; RECORD_LEN];
        self.file.read_exact_at(&mut sector, offset(index)).map_err(self.io())?;
        Ok(sector)
    }

    /// Both copies, each decoded or with the reason it is not a record.
    pub fn read(&self) -> Result<Copies, DeviceError> {
        Ok(Copies([Record::decode(&self.read_copy(0)?), Record::decode(&self.read_copy(1)?)]))
    }

    /// Writes `record` over the copy that is not the newest valid one, makes it durable, and reads
    /// it back. A power cut at any moment leaves the newest valid copy as it was.
    pub fn write(&self, current: &Copies, record: &Record) -> Result<usize, DeviceError> {
        let index = current.next_write_index();
        self.write_copy(index, record)?;
        Ok(index)
    }

    fn write_copy(&self, index: usize, record: &Record) -> Result<(), DeviceError> {
        let sector = record.encode();
        self.file.write_all_at(&sector, offset(index)).map_err(self.io())?;
        self.file.sync_data().map_err(self.io())?;
        if self.read_copy(index)? != sector {
            return Err(DeviceError::ReadBack { path: self.path.clone(), index });
        }
        Ok(())
    }
}

/// The STATE partition's bytes in a fresh image: both copies of [`Record::fresh`], as
/// `(offset in the partition, sector)`; the rest of the partition is zeros.
pub fn initial_copies() -> [(u64, [u8; RECORD_LEN]); 2] {
    let sector = Record::fresh().encode();
    [(offset(0), sector), (offset(1), sector)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{begin_write, boot_choice, schedule_trial};
    use crate::record::{Slot, SlotState};

    fn partition() -> (tempfile::NamedTempFile, StateDevice) {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(crate::PARTITION_BYTES).unwrap();
        for (off, sector) in initial_copies() {
            file.as_file().write_all_at(&sector, off).unwrap();
        }
        let dev = StateDevice::open(file.path()).unwrap();
        (file, dev)
    }

    #[test]
    fn writes_alternate_between_copies_and_never_touch_the_newest() {
        let (_f, dev) = partition();
        let c = dev.read().unwrap();
        assert_eq!(c.newest(), Some((0, Record::fresh())));
        let r = begin_write(&Record::fresh(), Slot::A).unwrap();
        assert_eq!(dev.write(&c, &r).unwrap(), 1);
        let c = dev.read().unwrap();
        assert_eq!(c.0[0], Ok(Record::fresh()));
        let r = schedule_trial(&r, Slot::A).unwrap();
        assert_eq!(dev.write(&c, &r).unwrap(), 0);
        let c = dev.read().unwrap();
        assert_eq!(c.newest().unwrap().1.b, SlotState::Updating);
        assert_eq!(boot_choice(&c).slot, Slot::B);
    }

    #[test]
    fn a_torn_write_leaves_the_previous_state() {
        let (f, dev) = partition();
        let c = dev.read().unwrap();
        let next = Record::fresh().with(Slot::B, SlotState::Updating);
        // The first 200 bytes of the new sector reached the disk, the rest is the old one.
        let new = next.encode();
        let mut torn = Record::fresh().encode();
        torn[..200].copy_from_slice(&new[..200]);
        f.as_file().write_all_at(&torn, offset(c.next_write_index())).unwrap();
        let after = dev.read().unwrap();
        assert!(after.0[1].is_err());
        assert_eq!(after.newest(), Some((0, Record::fresh())));
        assert_eq!(boot_choice(&after).slot, Slot::A);
    }

    #[test]
    fn a_partition_too_small_is_refused_by_name() {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(4096).unwrap();
        let err = StateDevice::open(file.path()).err().unwrap().to_string();
        assert!(
            err.contains(&file.path().display().to_string()) && err.contains("too small"),
            "{err}"
        );
    }
}
