//! The hypervisor's hardware-independent logic. It builds for the host too, so it has unit tests.
#![cfg_attr(not(test), no_std)]
