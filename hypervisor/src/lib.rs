//! The hypervisor's hardware-independent logic. It builds for the host too, so it has unit tests.
//!
//! Everything here is pure: it reads device trees and command lines, decides where Dom0 goes, builds
//! translation tables into caller-provided memory, and decides what a trapped guest access means.
//! The EL2 binary (`main.rs` and `arch/`) applies those decisions to the hardware.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod cmdline;
pub mod dom0dt;
pub mod dt;
pub mod hostdt;
pub mod pagetable;
pub mod placement;
pub mod psci;
pub mod region;
pub mod vgicd;
pub mod vuart;

pub use region::Region;
