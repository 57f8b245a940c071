//! The hostile guest. Only meaningful for `aarch64-unknown-none`; on the host it is an empty program
//! so that `cargo test --workspace` can run the library's tests.
//!
//! Booted by the hypervisor like a Linux kernel (arm64 Image header, x0 = device tree), it reads the
//! GIC, console and memory from the tree, turns its MMU on, starts its other vCPUs with PSCI, runs
//! the attack cases one by one on vCPU 0 (the others help: send SGIs, spin, get switched off), prints
//! `CASE <name> PASS|FAIL <detail>` per case, then `HOSTILE-DONE pass=N fail=M`, then SYSTEM_OFF.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod arch;
#[cfg(target_os = "none")]
mod cases;
#[cfg(target_os = "none")]
mod console;
#[cfg(target_os = "none")]
mod gic;
#[cfg(target_os = "none")]
mod platform;
