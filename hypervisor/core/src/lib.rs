//! rpixen hypervisor's pure core (no hardware access, no `unsafe`): everything the EL2 binary decides
//! lives here and is tested on the host.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod addr;
pub mod cmdline;
pub mod conmux;
pub mod cpus;
pub mod dom0dt;
pub mod dom0less;
pub mod domudt;
pub mod dt;
pub mod exit;
pub mod fdtr;
pub mod fdtw;
pub mod gicv2;
pub mod guard;
pub mod guest;
pub mod hostdt;
pub mod lifecycle;
pub mod pagetable;
pub mod partition;
pub mod placement;
pub mod psci;
pub mod ratelimit;
pub mod region;
pub mod sp805;
pub mod stage2;
pub mod vgicd;
pub mod virq;
pub mod vuart;

pub use region::Region;
