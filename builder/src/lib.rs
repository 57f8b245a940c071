//! rpixen: builds a flashable edge-OS disk image from an image manifest.
//!
//! Module map (each owns one concept):
//! - [`manifest`]: the image manifest (YAML) and its validation.
//! - [`image`]: boot scripts, config.txt, FAT, GPT + hybrid MBR, and the `live.raw` assembly.
//! - [`oci`]: OCI image references, registries, layouts and the blob cache.
//! - [`rootfs`]: Dom0 root filesystems (cpio, squashfs) from OCI layers.
//! - [`pkg`]: `pkg/<name>/pkg.yml` packages (pinned .debs, repo builds) as OCI image layouts.
//! - [`cmd`]: one module per CLI subcommand; each turns arguments into calls on the modules below.

pub mod cmd;
pub mod image;
pub mod manifest;
pub mod oci;
pub mod pkg;
pub mod rootfs;
