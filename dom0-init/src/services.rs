//! Starting and supervising programs: `onboot` steps, services with restart policy and back-off, and
//! the console shell. Output of each service goes, line by line, to the console as `[name] line`
//! and to `<log_dir>/<name>.log`.
//!
//! Children are never waited for through `std::process::Child`: PID 1 reaps every process with
//! `waitpid(-1)` (see `reap`), and hands the exits of its own children to [`Supervisor::on_exit`].

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use init_config::service_status::{self, ServiceState, ServiceStatus};
use init_config::{Restart, Service};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::info;
use crate::logfile::LogFile;

/// The longest piece of a service's output line that is held in memory.
const MAX_LINE: u64 = 64 * 1024;

/// How a child ended, reduced to what restart policy needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit status {c}"),
            Exit::Signal(s) => match Signal::try_from(*s) {
                Ok(sig) => write!(f, "signal {}", sig.as_str()),
                Err(_) => write!(f, "signal {s}"),
            },
        }
    }
}

/// Collects every child that has ended (orphans inherited by PID 1 included).
pub fn reap() -> Vec<(Pid, Exit)> {
    let mut out = Vec::new();
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => out.push((pid, Exit::Code(code))),
            Ok(WaitStatus::Signaled(pid, sig, _)) => out.push((pid, Exit::Signal(sig as i32))),
            Ok(WaitStatus::StillAlive) | Err(_) => return out,
            Ok(_) => {}
        }
    }
}

/// What a restart policy decides after an exit.
pub fn should_restart(policy: Restart, exit: Exit) -> bool {
    match policy {
        Restart::Always => true,
        Restart::OnFailure => !exit.success(),
        Restart::Never => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Service,
    Onboot,
    /// The console shell: its stdio is the console, it gets its own session.
    Console,
}

/// A log file shared by a service's output pump and init's notes about it.
type SharedLog = Arc<Mutex<Option<LogFile>>>;

struct Unit {
    spec: Service,
    kind: Kind,
    pid: Option<Pid>,
    started_at: Instant,
    /// Restarts since the last run that lasted `reset_after_ms`.
    attempt: u32,
    next_start: Option<Instant>,
    log: SharedLog,
    /// Times started since boot (published, so a crash loop shows even while it is running).
    starts: u32,
}

pub struct Supervisor {
    units: Vec<Unit>,
    log_dir: Option<PathBuf>,
    console: Option<PathBuf>,
    t0: Instant,
    stopping: bool,
    /// Where the services' states are published ([`service_status`]); None: not published.
    status_file: Option<PathBuf>,
}

impl Supervisor {
    /// `console`: the terminal device for the console shell (None: init's own stdin/stdout).
    pub fn new(log_dir: Option<PathBuf>, console: Option<PathBuf>, t0: Instant) -> Supervisor {
        if let Some(dir) = &log_dir {
            if let Err(e) = std::fs::create_dir_all(dir) {
                info!("cannot create log folder {}: {e}", dir.display());
            }
        }
        Supervisor { units: Vec::new(), log_dir, console, t0, stopping: false, status_file: None }
    }

    /// Publishes the services' states at `path` from now on, on every change.
    pub fn publish_status(&mut self, path: PathBuf) {
        self.status_file = Some(path);
        self.publish();
    }

    /// The services' states (onboot steps and the console are not services).
    pub fn statuses(&self) -> Vec<ServiceStatus> {
        self.units
            .iter()
            .filter(|u| u.kind == Kind::Service)
            .map(|u| ServiceStatus {
                name: u.spec.name.clone(),
                state: unit_state(u.pid.is_some(), u.next_start.is_some()),
                starts: u.starts,
            })
            .collect()
    }

    fn publish(&self) {
        let Some(path) = &self.status_file else { return };
        // On tmpfs: a rename is enough for readers to see one whole version, no fsync needed.
        let tmp = path.with_extension("tmp");
        let text = service_status::render(&self.statuses());
        let result = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&tmp, text))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = result {
            info!("cannot publish service states to {}: {e}", path.display());
        }
    }

    /// Adds a unit. Services and the console start on the next [`Supervisor::start_due`]; an onboot
    /// step waits for an explicit [`Supervisor::start`].
    pub fn add(&mut self, spec: Service, kind: Kind) -> usize {
        let log = Arc::new(Mutex::new(self.open_log(&spec.name)));
        let now = Instant::now();
        self.units.push(Unit {
            spec,
            kind,
            pid: None,
            started_at: now,
            attempt: 0,
            next_start: (kind != Kind::Onboot).then_some(now),
            log,
            starts: 0,
        });
        self.units.len() - 1
    }

    fn open_log(&self, name: &str) -> Option<LogFile> {
        let dir = self.log_dir.as_ref()?;
        let path = dir.join(format!("{name}.log"));
        match LogFile::open(path.clone(), crate::logfile::MAX_BYTES) {
            Ok(f) => Some(f),
            Err(e) => {
                info!("cannot open log file {}: {e}", path.display());
                None
            }
        }
    }

    /// A note from init about unit `i`, on the console and in its log file.
    fn note(&self, i: usize, text: &str) {
        let u = &self.units[i];
        info!("[{}] {text}", u.spec.name);
        write_log(&u.log, self.t0, &format!("dom0-init: {text}"));
    }

    /// Starts unit `i` now. On failure the unit is treated as having exited with status 127.
    pub fn start(&mut self, i: usize) {
        self.units[i].next_start = None;
        let kind = self.units[i].kind;
        let result = self.spawn(i);
        let u = &mut self.units[i];
        u.started_at = Instant::now();
        u.starts = u.starts.saturating_add(1);
        match result {
            Ok(pid) => {
                u.pid = Some(pid);
                let attempt = u.attempt;
                let msg = if attempt == 0 {
                    format!("started, pid {pid}")
                } else {
                    format!("started, pid {pid} (restart {attempt})")
                };
                self.note(i, &msg);
            }
            Err(e) => {
                let argv = u.spec.argv().join(" ");
                self.note(i, &format!("cannot start `{argv}`: {e}"));
                // An onboot step that cannot start is over; the next one runs.
                if kind != Kind::Onboot {
                    self.after_exit(i, Exit::Code(127));
                }
            }
        }
        self.publish();
    }

    fn spawn(&self, i: usize) -> std::io::Result<Pid> {
        let u = &self.units[i];
        let argv = u.spec.argv();
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        for e in &u.spec.env {
            if let Some((k, v)) = e.split_once('=') {
                cmd.env(k, v);
            }
        }
        if let Some(cwd) = &u.spec.cwd {
            cmd.current_dir(cwd);
        }
        if let Some(gid) = u.spec.gid {
            std::os::unix::process::CommandExt::gid(&mut cmd, gid);
        }
        if let Some(uid) = u.spec.uid {
            std::os::unix::process::CommandExt::uid(&mut cmd, uid);
        }
        if u.kind == Kind::Console {
            let (stdin, stdout, stderr) = match &self.console {
                Some(dev) => {
                    let f = OpenOptions::new().read(true).write(true).open(dev)?;
                    (Stdio::from(f.try_clone()?), Stdio::from(f.try_clone()?), Stdio::from(f))
                }
                None => (Stdio::inherit(), Stdio::inherit(), Stdio::inherit()),
            };
            cmd.stdin(stdin).stdout(stdout).stderr(stderr);
            crate::sys::new_session_with_tty(&mut cmd);
            let child = cmd.spawn()?;
            return Ok(Pid::from_raw(child.id() as i32));
        }
        // Its own process group, so stopping a service also stops what it started.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let (reader, writer) = std::io::pipe()?;
        cmd.stdin(Stdio::null()).stdout(writer.try_clone()?).stderr(writer);
        let child = cmd.spawn()?;
        drop(cmd); // closes our copies of the pipe's write end, so the pump sees EOF when the child ends
        let name = u.spec.name.clone();
        let log = u.log.clone();
        let t0 = self.t0;
        let pump = std::thread::Builder::new().name(format!("log-{name}")).spawn(move || {
            let mut r = BufReader::new(reader);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                // A line longer than MAX_LINE is passed on in pieces rather than buffered whole.
                match r.by_ref().take(MAX_LINE).read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&buf);
                        let text = text.trim_end_matches(['\n', '\r']);
                        crate::log::line(&format!("[{name}] {text}"));
                        write_log(&log, t0, text);
                    }
                }
            }
        });
        if let Err(e) = pump {
            info!("[{}] no log thread ({e}); its output is lost", u.spec.name);
        }
        Ok(Pid::from_raw(child.id() as i32))
    }

    /// Handles the exit of `pid`; returns false when it is none of ours (an orphan).
    pub fn on_exit(&mut self, pid: Pid, exit: Exit) -> bool {
        let Some(i) = self.units.iter().position(|u| u.pid == Some(pid)) else {
            return false;
        };
        self.units[i].pid = None;
        if self.units[i].kind == Kind::Onboot {
            let level = if exit.success() { "finished" } else { "failed" };
            self.note(i, &format!("{level} ({exit})"));
            return true;
        }
        self.after_exit(i, exit);
        self.publish();
        true
    }

    fn after_exit(&mut self, i: usize, exit: Exit) {
        let u = &self.units[i];
        let policy = if u.kind == Kind::Console { Restart::Always } else { u.spec.restart() };
        if self.stopping || !should_restart(policy, exit) {
            self.note(i, &format!("exited ({exit}); not restarted"));
            return;
        }
        let backoff = u.spec.backoff();
        let ran = u.started_at.elapsed();
        let u = &mut self.units[i];
        if ran >= Duration::from_millis(backoff.reset_after_ms) {
            u.attempt = 0;
        }
        u.attempt = u.attempt.saturating_add(1);
        let delay = backoff.delay_ms(u.attempt);
        u.next_start = Some(Instant::now() + Duration::from_millis(delay));
        self.note(i, &format!("exited ({exit}); restart in {delay} ms"));
    }

    /// Starts every unit whose time has come.
    pub fn start_due(&mut self) {
        if self.stopping {
            return;
        }
        let now = Instant::now();
        for i in 0..self.units.len() {
            if self.units[i].next_start.is_some_and(|t| t <= now) {
                self.start(i);
            }
        }
    }

    /// When the next restart is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.units.iter().filter_map(|u| u.next_start).min()
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.units[i].pid.is_some()
    }

    /// Stops every unit, most recently added first: SIGTERM to its process group, then SIGKILL once
    /// its stop timeout has passed. `wait` blocks until a child may have exited (or a timeout).
    pub fn stop_all(&mut self, wait: &mut dyn FnMut(Duration)) {
        self.stopping = true;
        for u in &mut self.units {
            u.next_start = None;
        }
        for i in (0..self.units.len()).rev() {
            let Some(pid) = self.units[i].pid else {
                continue;
            };
            let timeout = Duration::from_millis(self.units[i].spec.stop_timeout_ms());
            let group = Pid::from_raw(-pid.as_raw());
            let (first, name) = if self.units[i].kind == Kind::Console {
                (Signal::SIGHUP, "SIGHUP")
            } else {
                (Signal::SIGTERM, "SIGTERM")
            };
            self.note(i, &format!("stopping (pid {pid}, {name})"));
            let _ = kill(group, first).or_else(|_| kill(pid, first));
            let deadline = Instant::now() + timeout;
            while self.units[i].pid.is_some() && Instant::now() < deadline {
                wait(
                    deadline
                        .saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(100)),
                );
                for (p, exit) in reap() {
                    self.on_exit(p, exit);
                }
            }
            if let Some(pid) = self.units[i].pid {
                self.note(i, &format!("did not stop within {} ms: SIGKILL", timeout.as_millis()));
                let _ = kill(group, Signal::SIGKILL);
                let _ = kill(pid, Signal::SIGKILL);
                while self.units[i].pid.is_some() {
                    wait(Duration::from_millis(50));
                    for (p, exit) in reap() {
                        self.on_exit(p, exit);
                    }
                }
            }
        }
    }

    /// Closes every log file (before filesystems are unmounted at shutdown).
    pub fn close_logs(&mut self) {
        for u in &self.units {
            if let Ok(mut f) = u.log.lock() {
                if let Some(mut f) = f.take() {
                    f.close();
                }
            }
        }
    }
}

/// A service's published state: running, or waiting for its restart, or over.
fn unit_state(running: bool, restart_due: bool) -> ServiceState {
    match (running, restart_due) {
        (true, _) => ServiceState::Running,
        (false, true) => ServiceState::Restarting,
        (false, false) => ServiceState::Stopped,
    }
}

fn write_log(log: &SharedLog, t0: Instant, text: &str) {
    if let Ok(mut f) = log.lock() {
        if let Some(f) = f.as_mut() {
            f.write_line(t0.elapsed().as_millis(), text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies() {
        assert!(should_restart(Restart::Always, Exit::Code(0)));
        assert!(should_restart(Restart::OnFailure, Exit::Code(1)));
        assert!(should_restart(Restart::OnFailure, Exit::Signal(9)));
        assert!(!should_restart(Restart::OnFailure, Exit::Code(0)));
        assert!(!should_restart(Restart::Never, Exit::Code(1)));
    }

    #[test]
    fn published_states_count_starts_and_leave_out_onboot_steps() {
        let mut sup = Supervisor::new(None, None, Instant::now());
        let svc = |name: &str| Service {
            name: name.into(),
            command: vec!["/nonexistent/binary".into()],
            ..Service::default()
        };
        sup.add(svc("step"), Kind::Onboot);
        let i = sup.add(svc("net"), Kind::Service);
        assert_eq!(sup.statuses()[0].state, ServiceState::Restarting); // due, not yet started
        sup.start(i); // cannot start: counted, and a restart is due
        let s = sup.statuses();
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].name.as_str(), s[0].state, s[0].starts),
            ("net", ServiceState::Restarting, 1)
        );
        assert_eq!(unit_state(true, false), ServiceState::Running);
        assert_eq!(unit_state(false, false), ServiceState::Stopped);
    }

    #[test]
    fn exit_display() {
        assert_eq!(Exit::Code(3).to_string(), "exit status 3");
        assert_eq!(Exit::Signal(15).to_string(), "signal SIGTERM");
    }
}
