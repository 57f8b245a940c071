//! The EL2 binary. Only meaningful for `aarch64-unknown-none`; on the host it is an empty program so
//! that `cargo test --workspace` can run the library's tests.
//!
//! Boot order (each step prints a line): EL2 entry with DAIF masked and VBAR_EL2 set (entry.rs) → early
//! identity map and MMU on → host DT parsed, console chosen from `dtuart=` → final EL2 map → physical
//! GIC → Dom0 memory placed, kernel/initrd/DTB copied and cleaned to PoC → stage 2 → secondary pCPUs
//! parked in the hypervisor → ERET to Dom0 at EL1.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
extern crate alloc;

// Module order is the dependency order: each uses only those above it (and the core crate).
#[cfg(target_os = "none")]
mod arch;
#[cfg(target_os = "none")]
mod console;
#[cfg(target_os = "none")]
mod domu;
#[cfg(target_os = "none")]
mod gic;
#[cfg(target_os = "none")]
mod guest_console;
#[cfg(target_os = "none")]
mod heap;
#[cfg(target_os = "none")]
mod hv;
#[cfg(target_os = "none")]
mod mm;
#[cfg(target_os = "none")]
mod mmio;
#[cfg(target_os = "none")]
mod platform;
#[cfg(target_os = "none")]
mod state;
#[cfg(target_os = "none")]
mod trap;
#[cfg(target_os = "none")]
mod vcpu;
#[cfg(target_os = "none")]
mod virq;
#[cfg(target_os = "none")]
mod watchdog;
