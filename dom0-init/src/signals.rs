//! Signals PID 1 acts on. Handlers only write the signal number to a pipe (the self-pipe trick);
//! the main loop reads it, so all decisions are made in ordinary code. (A signalfd would need the
//! signals blocked, and a blocked mask is inherited by every child: std's vfork-style spawn on musl
//! does not reset it, and a fork per spawn costs more.)
//!
//! busybox's `poweroff`, `reboot` and `halt` signal PID 1 with SIGUSR2, SIGTERM and SIGUSR1; the
//! kernel sends SIGINT for ctrl-alt-del (once `reboot(RB_DISABLE_CAD)` is set) and SIGPWR for a
//! power event.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::unistd::pipe2;

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
    /// Read end of the self-pipe the handlers write to (None: polling for exits only).
    pipe: Option<(OwnedFd, OwnedFd)>,
}

impl Default for Signals {
    fn default() -> Self {
        Self::new()
    }
}

impl Signals {
    /// Installs the handlers. Call first thing in `main`. If the self-pipe cannot be made, init
    /// still works by polling for exits (and then cannot hear shutdown signals: logged).
    pub fn new() -> Signals {
        let pipe = match pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK) {
            Ok((r, w)) => match crate::sys::route_signals_to(w.as_raw_fd(), &HANDLED) {
                Ok(()) => Some((r, w)),
                Err(e) => {
                    crate::info!("cannot handle signals ({e}): polling for child exits");
                    None
                }
            },
            Err(e) => {
                crate::info!("no signal pipe ({e}): polling for child exits");
                None
            }
        };
        Signals { pipe }
    }

    /// Waits up to `timeout` for signals and returns those that arrived.
    pub fn wait(&self, timeout: Duration) -> Vec<Signal> {
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let Some((r, _)) = &self.pipe else {
            std::thread::sleep(Duration::from_millis(ms.min(100) as u64));
            return Vec::new();
        };
        let mut fds = [PollFd::new(r.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(ms));
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok(n @ 1..) = nix::unistd::read(r, &mut buf) {
            out.extend(buf[..n].iter().filter_map(|b| Signal::try_from(*b as i32).ok()));
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
