//! rpixen: builds a flashable edge-OS disk image from an image manifest.
//!
//! Data flows one way, and each module owns one concept (see DESIGN.md):
//! - [`manifest`]: the image manifest (YAML) and its validation.
//! - [`oci`]: OCI image references, registries, layouts and the blob cache.
//! - [`rootfs`]: Dom0 root filesystems (cpio, squashfs) from OCI layers; reading one file of an image.
//! - [`pkg`]: `pkg/<name>/pkg.yml` packages (pinned .debs, repo builds) as OCI image layouts.
//! - [`uboot`]: what U-Boot reads: boot scripts, script images, config.txt, the load-address plan.
//! - [`disk`]: GPT + hybrid MBR, FAT, content-derived ids, sparse output, inspection.
//! - [`live`]: assembling `live.raw` (and the netboot tree) from a manifest.
//! - [`installer`]: `installer.raw`, which boots to an installer carrying the live image.
//! - [`error`]: cause chains shared by the modules' error types; [`report`]: what users see.
//!
//! The command line (clap, anyhow) lives in the binary target (`main.rs`, `cli/`).

pub mod disk;
pub mod error;
pub mod installer;
pub mod live;
pub mod manifest;
pub mod oci;
pub mod pkg;
pub mod report;
pub mod rootfs;
pub mod uboot;
