//! Dom0 root filesystems: OCI layers unpacked into an in-memory [`tree::Tree`], extra files added, and
//! the tree written as a compressed newc cpio ([`cpio`]) or a squashfs ([`squashfs`]).

pub mod build;
pub mod cpio;
pub mod modules;
pub mod squashfs;
pub mod tree;
pub mod unpack;

pub use build::{build, BuildReport, RootfsError};
pub use unpack::read_file;
