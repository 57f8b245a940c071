//! The orderly end: stop services (newest first, each with its timeout), kill what is left, sync,
//! unmount, then reboot(2). PID 1 never returns from here.

use std::time::{Duration, Instant};

use nix::sys::reboot::RebootMode;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::info;
use crate::services::{reap, Supervisor};
use crate::signals::{Action, Signals};
use crate::Mode;

pub fn shutdown(action: Action, why: &str, sup: &mut Supervisor, signals: &Signals, mode: &Mode) -> ! {
    info!("{why}: {} — stopping services", describe(action));
    sup.stop_all(&mut |d| {
        let _ = signals.wait(d);
    });
    if nix::unistd::getpid().as_raw() == 1 {
        // Only PID 1 may signal "every process": from anywhere else kill(-1) would reach the host's.
        kill_everything(signals);
    }
    nix::unistd::sync();
    if mode.host {
        crate::mounts::unmount_all(&mode.mounted);
    } else {
        crate::mounts::unmount_system();
    }
    nix::unistd::sync();
    info!("{} now", describe(action));
    if mode.may_reboot() {
        let how = match action {
            Action::PowerOff => RebootMode::RB_POWER_OFF,
            Action::Reboot => RebootMode::RB_AUTOBOOT,
            Action::Halt => RebootMode::RB_HALT_SYSTEM,
        };
        let Err(e) = nix::sys::reboot::reboot(how);
        info!("reboot(2) failed: {e}");
    } else {
        info!("host mode outside a PID namespace: exiting instead of reboot(2)");
        std::process::exit(0);
    }
    // Still here: PID 1 must not exit (the kernel would panic). Keep reaping, quietly.
    loop {
        let _ = signals.wait(Duration::from_secs(60));
        let _ = reap();
    }
}

fn describe(action: Action) -> &'static str {
    match action {
        Action::PowerOff => "power-off",
        Action::Reboot => "reboot",
        Action::Halt => "halt",
    }
}

/// SIGTERM to every process, a short grace, then SIGKILL, reaping all the while.
fn kill_everything(signals: &Signals) {
    let all = Pid::from_raw(-1);
    if kill(all, Signal::SIGTERM).is_err() {
        return; // ESRCH: nothing left
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let _ = signals.wait(Duration::from_millis(50));
        let _ = reap();
        if kill(all, None).is_err() {
            return;
        }
    }
    let _ = kill(all, Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline && kill(all, None).is_ok() {
        let _ = signals.wait(Duration::from_millis(20));
        let _ = reap();
    }
}
