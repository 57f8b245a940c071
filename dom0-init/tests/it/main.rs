//! dom0-init's integration tests, one binary (one link, one `cargo test` target):
//! - `firstboot`: first boot's GPT steps and power cuts on `sgdisk`-made disk images;
//! - `host`: init as PID 1 of fresh namespaces on the host;
//! - `identity`: first-boot identity, power cuts and module coldplug, booted through the image's
//!   U-Boot scripts on QEMU `virt`;
//! - `modules`: module lookup and decompression on Debian's real module tree (dry runs);
//! - `net`: network, NoCloud and SSH on `rpixen live` images booted through U-Boot and Xen;
//! - `qemu`: init booted by Debian's arm64 kernel on QEMU `virt`;
//! - `user_image`: `images/qemu-virt.yml` as `rpixen live` builds it, booted as `make run` does:
//!   NoCloud, SSH, DHCP, coldplug, and first boot on a reused card;
//! - `wifi`: the rpi4 rootfs's Wi-Fi firmware and wpa_supplicant, read by cpio and run by qemu-aarch64.

mod firstboot;
mod host;
mod identity;
mod modules;
mod net;
mod qemu;
mod user_image;
mod wifi;
