//! The builder's integration tests, one binary (one link, one process start per `cargo test`): each
//! module checks one concern with real tools (sgdisk, fsck.fat, mkimage, dtc, cpio, unsquashfs,
//! skopeo), a real registry on 127.0.0.1 and real QEMU boots.
//!
//! `common` and `image_support` hold the fixtures several modules share; what other crates' tests need
//! too lives in `testkit`.

mod common;
mod image_support;

mod cli_errors;
mod cli_report;
mod domains_ours;
mod domains_xen;
mod image_dtb;
mod image_fat;
mod image_live;
mod image_modules;
mod image_qemu;
mod image_uimage;
mod installer;
mod oci_boot;
mod oci_cli;
mod oci_layout;
mod oci_registry;
mod oci_rootfs;
mod pkg_build;
mod pkg_flow;
mod pkg_verify;
mod release_flow;
mod source_build;
mod update_cli;
