//! `/dev/watchdog` during a trial. The hypervisor starts Dom0's SP805 running at a trial boot
//! (`dom0_watchdog=`), and Linux's watchdog core feeds it only until a program opens the device:
//! from then on the agent's feeding is all that stands between the trial and a reset. So a trial
//! that hangs, or an agent that dies, ends in a reset into the committed slot.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

pub struct Watchdog {
    file: File,
}

impl Watchdog {
    pub fn open(path: &Path) -> io::Result<Watchdog> {
        Ok(Watchdog { file: OpenOptions::new().write(true).open(path)? })
    }

    /// Any write restarts the countdown.
    pub fn feed(&mut self) -> io::Result<()> {
        self.file.write_all(b"\0")
    }

    /// After the commit: the magic close (`V`, then close) stops the watchdog, so the committed
    /// system does not depend on the agent feeding it.
    pub fn disarm(mut self) -> io::Result<()> {
        self.file.write_all(b"V")
    }
}
