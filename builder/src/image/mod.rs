//! The disk image: boot scripts, config.txt, load-address plan, FAT and GPT writers, and their assembly
//! into a flashable `live.raw`.

pub mod uimage;
pub mod bootscript;
pub mod configtxt;
pub mod layout;
pub mod fat;
pub mod table;
pub mod ids;
pub mod disk;
pub mod output;
pub mod dtb;
pub mod files;
pub mod live;
pub mod inspect;
pub mod source;

/// Where a `Seek` on an in-memory stand-in for a `len`-byte device lands; `what` names the device
/// in the error for a position before its start.
pub(crate) fn seek_position(pos: u64, len: u64, to: std::io::SeekFrom, what: &str) -> std::io::Result<u64> {
    let p = match to {
        std::io::SeekFrom::Start(p) => p as i128,
        std::io::SeekFrom::End(d) => len as i128 + d as i128,
        std::io::SeekFrom::Current(d) => pos as i128 + d as i128,
    };
    u64::try_from(p).map_err(|_| std::io::Error::other(format!("seek before the {what} start")))
}
