//! rpixen-agent, the device side of fleet updates (issue 14): a service in Dom0, supervised by
//! dom0-init, that follows a registry reference and moves the device to what it names through the
//! A/B slots' one-shot trial.
//!
//! - [`config`]: `update.yml` on CONFIG (pure parsing).
//! - [`decide`]: every decision, pure: after a boot, on a poll, trial health and verdict.
//! - [`status`]: the status file on PERSIST (EVE's step names), written atomically.
//! - [`run`]: the loop and its I/O: registry, STATE, slot writes, watchdog, reboot.
//! - [`watchdog`]: `/dev/watchdog` during a trial.

pub mod config;
pub mod decide;
pub mod run;
pub mod status;
pub mod watchdog;
