//! Signals PID 1 acts on, read synchronously through a signalfd (they are blocked in every thread,
//! so none is lost and no handler runs at an awkward moment).
//!
//! busybox's `poweroff`, `reboot` and `halt` signal PID 1 with SIGUSR2, SIGTERM and SIGUSR1; the
//! kernel sends SIGINT for ctrl-alt-del (once `reboot(RB_DISABLE_CAD)` is set) and SIGPWR for a
//! power event.

use std::os::fd::AsFd;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// What a shutdown ends in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    PowerOff,
    Reboot,
    Halt,
}

/// The action a signal asks for, or None for signals that only wake the loop (SIGCHLD).
pub fn action_for(sig: Signal) -> Option<Action> {
    match sig {
        Signal::SIGUSR2 | Signal::SIGPWR => Some(Action::PowerOff),
        Signal::SIGTERM | Signal::SIGINT => Some(Action::Reboot),
        Signal::SIGUSR1 => Some(Action::Halt),
        _ => None,
    }
}

const HANDLED: [Signal; 7] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGPWR,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGHUP,
];

pub struct Signals {
    fd: Option<SignalFd>,
}

impl Default for Signals {
    fn default() -> Self {
        Self::new()
    }
}

impl Signals {
    /// Blocks the handled signals in the calling thread (threads started later inherit the mask)
    /// and opens the signalfd. Call first thing in `main`. If the signalfd cannot be made, init
    /// still works by polling for exits.
    pub fn new() -> Signals {
        let mut set = SigSet::empty();
        for s in HANDLED {
            set.add(s);
        }
        if let Err(e) = set.thread_block() {
            crate::info!("cannot block signals: {e}");
        }
        let fd = match SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
            Ok(fd) => Some(fd),
            Err(e) => {
                crate::info!("no signalfd ({e}): polling for child exits");
                None
            }
        };
        Signals { fd }
    }

    /// Waits up to `timeout` for signals and returns those that arrived.
    pub fn wait(&self, timeout: Duration) -> Vec<Signal> {
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let Some(fd) = &self.fd else {
            std::thread::sleep(Duration::from_millis(ms.min(100) as u64));
            return Vec::new();
        };
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(ms));
        let mut out = Vec::new();
        while let Ok(Some(info)) = fd.read_signal() {
            if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                out.push(sig);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busybox_signals() {
        assert_eq!(action_for(Signal::SIGUSR2), Some(Action::PowerOff));
        assert_eq!(action_for(Signal::SIGTERM), Some(Action::Reboot));
        assert_eq!(action_for(Signal::SIGUSR1), Some(Action::Halt));
        assert_eq!(action_for(Signal::SIGCHLD), None);
    }
}
