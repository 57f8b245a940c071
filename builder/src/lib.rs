//! rpixen: builds a flashable edge-OS disk image from an image manifest.
//!
//! Module map (each owns one concept):
//! - [`manifest`]: the image manifest (YAML) and its validation.
//! - [`image`]: boot scripts, config.txt, FAT, GPT + hybrid MBR, and the `live.raw` assembly.
//! - [`cmd`]: one module per CLI subcommand; each turns arguments into calls on the modules below.

pub mod cmd;
pub mod image;
pub mod manifest;
