//! Release formats for an rpixen image, the files people who flash Pi-class fleets expect next to
//! `live.raw`:
//! - `live.raw.xz`: multi-block xz ([`xz`]), so `xz -T0` and rpi-imager decode on several threads;
//!   the same bytes whatever the encoder's thread count;
//! - `live.raw.bmap`: bmaptool's block map, format 2.0 ([`bmap`]), from the builder's layout
//!   knowledge rather than from holes in a file;
//! - `live.raw.sha256`, `live.raw.xz.sha256`: `sha256sum -c` lines ([`digest`]);
//! - `live.rpi-imager-manifest`: an rpi-imager repository JSON ([`imager`]);
//! - an SPDX 2.3 JSON SBOM of what the image contains ([`sbom`]).
//!
//! [`release::write_release`] reads the raw image once and writes the first four; [`sbom::document`]
//! builds the SBOM from typed inputs, which [`sbom::inputs`] can gather from the repository.

pub mod bmap;
pub mod date;
pub mod digest;
pub mod imager;
pub mod release;
pub mod sbom;
pub mod xz;

pub use release::{open_image, write_release, Release, ReleaseError, ReleaseRequest};
