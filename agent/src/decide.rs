//! Every decision the agent makes, as pure functions of what it read: what to do after a boot (from
//! the STATE record and the status file), whether a polled digest is an update, whether the system
//! is healthy, and when a trial commits or gives up.

use init_config::service_status::{ServiceState, ServiceStatus};
use rpixen_slot_state::machine::AfterBoot;
use rpixen_slot_state::record::Slot;

use crate::status::{Status, Step};

/// What the agent does first after it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStart {
    /// This boot is the running slot's trial: watch health, then commit or give up.
    Test,
    /// The other slot's trial ended without a commit: report FALLBACK, remember its digest as
    /// failed, free the slot in STATE.
    Fallback,
    /// The other slot is written and its trial scheduled, but the reboot did not happen (a power
    /// cut, a crash): reboot into it now.
    RebootIntoTrial,
    /// The commit reached STATE but the status file still says TESTING (a cut between the two
    /// writes): report UPDATED.
    FinishCommit,
    /// The record does not describe this boot (the boot script fell back on its own): rewrite it
    /// from the running slot, then poll.
    Repair,
    /// Nothing pending: poll.
    Poll,
}

pub fn on_start(after: AfterBoot, status: &Status, running: Slot) -> OnStart {
    match after {
        AfterBoot::Trial => OnStart::Test,
        AfterBoot::TrialFailed => OnStart::Fallback,
        AfterBoot::TrialPending => OnStart::RebootIntoTrial,
        AfterBoot::Unrecorded => OnStart::Repair,
        AfterBoot::Committed => {
            let testing_here = status.step == Step::Testing
                && status.target.as_ref().is_some_and(|t| Slot::from(t.slot) == running);
            if testing_here {
                OnStart::FinishCommit
            } else {
                OnStart::Poll
            }
        }
    }
}

/// What a polled digest means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnPoll {
    /// The running slot holds it.
    Current,
    /// Its trial failed before: not retried until the reference moves on.
    KnownFailed,
    /// The running slot's contents are not known (a factory image): compare them with the
    /// artifact before deciding.
    Identify,
    /// Install it into the other slot.
    Update,
}

pub fn on_poll(status: &Status, running: Slot, digest: &str) -> OnPoll {
    match status.slots.get(running) {
        Some(a) if a.digest == digest => OnPoll::Current,
        _ if status.failed.iter().any(|d| d == digest) => OnPoll::KnownFailed,
        None => OnPoll::Identify,
        Some(_) => OnPoll::Update,
    }
}

/// Why the system is not healthy right now.
pub fn unhealthy_reason(
    services: Option<&[ServiceStatus]>,
    previous: Option<&[ServiceStatus]>,
    registry: Result<(), String>,
) -> Option<String> {
    let Some(services) = services else {
        return Some("dom0-init publishes no service states".into());
    };
    if let Some(s) = services.iter().find(|s| s.state != ServiceState::Running) {
        return Some(format!("service {} is {}", s.name, s.state.as_str()));
    }
    // Running now but restarted since the last look: a crash loop caught between two crashes.
    if let Some(prev) = previous {
        for s in services {
            if let Some(p) = prev.iter().find(|p| p.name == s.name) {
                if p.starts != s.starts {
                    return Some(format!("service {} restarted ({} starts)", s.name, s.starts));
                }
            }
        }
    }
    registry.err().map(|e| format!("registry unreachable: {e}"))
}

/// The trial's clock, in ms since the agent started watching.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrialClock {
    /// Since when every look found the system healthy.
    pub healthy_since: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not decided: keep feeding the watchdog and look again.
    Wait,
    /// Healthy for the whole window: commit.
    Commit,
    /// The timeout passed without a whole healthy window: go back to the old slot.
    GiveUp,
}

/// One look at the system during a trial, `now_ms` after the watch began.
pub fn trial_step(
    clock: &mut TrialClock,
    now_ms: u64,
    healthy: bool,
    window_ms: u64,
    timeout_ms: u64,
) -> Verdict {
    if !healthy {
        clock.healthy_since = None;
    } else if clock.healthy_since.is_none() {
        clock.healthy_since = Some(now_ms);
    }
    match clock.healthy_since {
        Some(since) if now_ms - since >= window_ms => Verdict::Commit,
        _ if now_ms >= timeout_ms => Verdict::GiveUp,
        _ => Verdict::Wait,
    }
}

/// The failed-digest list after a FALLBACK from `digest` (kept short: only the most recent few
/// matter, as only a reference that moves on brings a new digest).
pub fn remember_failed(failed: &[String], digest: &str) -> Vec<String> {
    const KEEP: usize = 16;
    let mut out: Vec<String> = failed.iter().filter(|d| *d != digest).cloned().collect();
    out.push(digest.to_owned());
    let skip = out.len().saturating_sub(KEEP);
    out.split_off(skip)
}

/// `rpixen.slot=a|b` from the kernel command line: the slot the boot script booted.
pub fn running_slot(cmdline: &str) -> Option<Slot> {
    cmdline.split_whitespace().find_map(|w| Slot::from_name(w.strip_prefix("rpixen.slot=")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{Artifact, SlotName, Target};

    fn art(d: &str) -> Artifact {
        Artifact { digest: d.into(), version: None, image: None }
    }

    fn testing(slot: SlotName) -> Status {
        Status {
            step: Step::Testing,
            target: Some(Target { slot, artifact: art("sha256:2"), polled_at_ms: 0 }),
            ..Status::default()
        }
    }

    #[test]
    fn after_a_boot() {
        let idle = Status::default();
        assert_eq!(on_start(AfterBoot::Trial, &idle, Slot::B), OnStart::Test);
        assert_eq!(on_start(AfterBoot::TrialFailed, &idle, Slot::A), OnStart::Fallback);
        assert_eq!(on_start(AfterBoot::TrialPending, &idle, Slot::A), OnStart::RebootIntoTrial);
        assert_eq!(on_start(AfterBoot::Unrecorded, &idle, Slot::A), OnStart::Repair);
        assert_eq!(on_start(AfterBoot::Committed, &idle, Slot::A), OnStart::Poll);
        // The commit landed in STATE, the status file did not follow.
        let t = testing(SlotName::B);
        assert_eq!(on_start(AfterBoot::Committed, &t, Slot::B), OnStart::FinishCommit);
        assert_eq!(on_start(AfterBoot::Committed, &t, Slot::A), OnStart::Poll);
    }

    #[test]
    fn a_polled_digest() {
        let mut s = Status::default();
        assert_eq!(on_poll(&s, Slot::A, "sha256:1"), OnPoll::Identify);
        s.slots.a = Some(art("sha256:1"));
        assert_eq!(on_poll(&s, Slot::A, "sha256:1"), OnPoll::Current);
        assert_eq!(on_poll(&s, Slot::A, "sha256:2"), OnPoll::Update);
        s.failed = vec!["sha256:2".into()];
        assert_eq!(on_poll(&s, Slot::A, "sha256:2"), OnPoll::KnownFailed);
        assert_eq!(on_poll(&s, Slot::A, "sha256:3"), OnPoll::Update);
        assert_eq!(on_poll(&s, Slot::B, "sha256:2"), OnPoll::KnownFailed);
    }

    fn svc(name: &str, state: ServiceState, starts: u32) -> ServiceStatus {
        ServiceStatus { name: name.into(), state, starts }
    }

    #[test]
    fn health() {
        let up = [svc("network", ServiceState::Running, 1), svc("agent", ServiceState::Running, 1)];
        assert_eq!(unhealthy_reason(Some(&up), Some(&up), Ok(())), None);
        assert_eq!(unhealthy_reason(Some(&up), None, Ok(())), None);
        let r = unhealthy_reason(None, None, Ok(())).unwrap();
        assert!(r.contains("no service states"), "{r}");
        let down = [svc("network", ServiceState::Restarting, 2)];
        assert_eq!(
            unhealthy_reason(Some(&down), None, Ok(())).unwrap(),
            "service network is restarting"
        );
        let again =
            [svc("network", ServiceState::Running, 3), svc("agent", ServiceState::Running, 1)];
        let r = unhealthy_reason(Some(&again), Some(&up), Ok(())).unwrap();
        assert_eq!(r, "service network restarted (3 starts)");
        let r = unhealthy_reason(Some(&up), Some(&up), Err("connection refused".into())).unwrap();
        assert_eq!(r, "registry unreachable: connection refused");
    }

    #[test]
    fn a_trial_commits_after_a_whole_healthy_window_or_gives_up_at_the_timeout() {
        let mut c = TrialClock::default();
        assert_eq!(trial_step(&mut c, 0, false, 10, 50), Verdict::Wait);
        assert_eq!(trial_step(&mut c, 5, true, 10, 50), Verdict::Wait);
        assert_eq!(trial_step(&mut c, 14, true, 10, 50), Verdict::Wait);
        // One bad look restarts the window.
        assert_eq!(trial_step(&mut c, 15, false, 10, 50), Verdict::Wait);
        assert_eq!(trial_step(&mut c, 16, true, 10, 50), Verdict::Wait);
        assert_eq!(trial_step(&mut c, 26, true, 10, 50), Verdict::Commit);
        let mut c = TrialClock::default();
        assert_eq!(trial_step(&mut c, 49, false, 10, 50), Verdict::Wait);
        assert_eq!(trial_step(&mut c, 50, false, 10, 50), Verdict::GiveUp);
        // Healthy at the end but not for a whole window: still gives up.
        let mut c = TrialClock { healthy_since: Some(45) };
        assert_eq!(trial_step(&mut c, 51, true, 10, 50), Verdict::GiveUp);
    }

    #[test]
    fn failed_digests_are_remembered_once_and_bounded() {
        let f = remember_failed(&[], "sha256:3");
        assert_eq!(f, ["sha256:3"]);
        assert_eq!(remember_failed(&f, "sha256:3"), ["sha256:3"]);
        let many: Vec<String> = (0..20).map(|i| format!("sha256:{i}")).collect();
        let f = remember_failed(&many, "sha256:x");
        assert_eq!(f.len(), 16);
        assert_eq!(f.last().unwrap(), "sha256:x");
    }

    #[test]
    fn the_running_slot_from_the_command_line() {
        assert_eq!(running_slot("console=ttyAMA0 rpixen.slot=b quiet"), Some(Slot::B));
        assert_eq!(running_slot("rpixen.slot=a"), Some(Slot::A));
        assert_eq!(running_slot("rpixen.slot=c"), None);
        assert_eq!(running_slot("console=ttyAMA0"), None);
    }
}
