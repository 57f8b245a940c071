//! rpixen: builds a flashable edge-OS disk image from an image manifest.
//!
//! Module map (each owns one concept):
//! - [`manifest`]: the image manifest (YAML) and its validation.
//! - [`cmd`]: one module per CLI subcommand; each turns arguments into calls on the modules below.

pub mod cmd;
pub mod manifest;
