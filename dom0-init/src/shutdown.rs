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

pub fn shutdown(
    action: Action,
    why: &str,
    sup: &mut Supervisor,
    signals: &Signals,
    mode: &Mode,
) -> ! {
    info!("{why}: {} — stopping services", describe(action));
    sup.stop_all(&mut |d| {
        let _ = signals.wait(d);
    });
    sup.close_logs();
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
    if user_processes() == 0 {
        return;
    }
    let _ = kill(all, Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && user_processes() > 0 {
        let _ = signals.wait(Duration::from_millis(20));
        let _ = reap();
    }
    if user_processes() == 0 {
        return;
    }
    let _ = kill(all, Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline && user_processes() > 0 {
        let _ = signals.wait(Duration::from_millis(20));
        let _ = reap();
    }
}

/// Processes other than init that are alive and not kernel threads. (`kill(-1, 0)` cannot tell:
/// it counts kernel threads, which ignore signals.)
fn user_processes() -> usize {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            is_live_user_process(&stat)
        })
        .count()
}

/// From a /proc/PID/stat line: not a zombie and not a kernel thread (PF_KTHREAD in `flags`).
pub fn is_live_user_process(stat: &str) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let Some(close) = stat.rfind(')') else {
        return false;
    };
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // fields[0] is the state (field 3), fields[6] the flags (field 9).
    let state = fields.first().copied().unwrap_or("Z");
    let flags: u64 = fields.get(6).and_then(|f| f.parse().ok()).unwrap_or(PF_KTHREAD);
    state != "Z" && state != "X" && flags & PF_KTHREAD == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_threads_and_zombies_do_not_count() {
        assert!(is_live_user_process("42 (sh) S 1 42 42 0 -1 4194560 100 0 0 0"));
        assert!(!is_live_user_process("2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0"));
        assert!(!is_live_user_process("43 (a b) c) Z 1 43 43 0 -1 4194560 0 0"));
    }
}
