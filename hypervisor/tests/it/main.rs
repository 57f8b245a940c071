//! The hypervisor's integration tests, one binary: host checks of the real device trees, and QEMU
//! boots (virt directly, virt through U-Boot, raspi4b, the Xen image with our binary dropped in).
//! QEMU tests run one QEMU each; run them with `--test-threads=1` on a small machine.

mod common;
mod host_dtb;
mod live_boot;
mod raspi4b_boot;
mod slots_boot;
mod virt_boot;
mod watchdog;
mod xen_dropin;
