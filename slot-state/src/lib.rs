//! The A/B slot state of an rpixen disk.
//!
//! Everything above U-Boot lives twice, in slots A and B; which one boots is decided by a record
//! on the small `STATE` partition, kept as two copies one MiB apart, each one sector with a CRC-32.
//! U-Boot's boot script ([`uboot::choose_slot`]) and Dom0's update agent ([`device::StateDevice`])
//! read the newest valid copy and write over the other one, so a torn write never loses the state.
//! The states and the one-shot trial follow EVE's IMGA/IMGB scheme (`active`, `updating`,
//! `inprogress`, `unused`): [`machine`] holds the rules, once.

pub mod device;
pub mod machine;
pub mod record;
pub mod uboot;

/// The GPT partition name U-Boot looks the state up by.
pub const PARTITION_NAME: &str = "STATE";
/// Copy 1 sits this far after copy 0: another erase block on any card, so one interrupted erase
/// cannot take both.
pub const COPY_STRIDE_BYTES: u64 = 1 << 20;
/// [`COPY_STRIDE_BYTES`] in 512-byte blocks, as the boot script addresses it.
pub const COPY_STRIDE_BLOCKS: u64 = COPY_STRIDE_BYTES / 512;
/// The partition's size.
pub const PARTITION_BYTES: u64 = 2 << 20;
