//! dom0-init's integration tests, one binary (one link, one `cargo test` target):
//! - `host`: init as PID 1 of fresh namespaces on the host;
//! - `modules`: module lookup and decompression on Debian's real module tree (dry runs);
//! - `qemu`: init booted by Debian's arm64 kernel on QEMU `virt`.

mod host;
mod modules;
mod qemu;
