//! Per-domain power decisions. Dom0 is the control domain: its SYSTEM_OFF/SYSTEM_RESET keep their
//! board-wide meaning. A DomU's only stop or restart that DomU: SYSTEM_OFF stops it, SYSTEM_RESET
//! restarts it alone from pristine copies of its kernel and initrd (Xen cannot restart a dom0less
//! domain; Bao has no guest reset). A DomU that faults in a way no guest should (an unexpected
//! exception class, an SError, executing outside its RAM) is stopped with a console line; the
//! other domains run on. Data accesses to addresses it does not own are refused with an abort, as
//! for Dom0, so a probing guest sees architectural behaviour rather than dying.
//!
//! A stop or restart asked on one vCPU must take every vCPU of the domain out of the guest (each
//! runs on its own physical CPU): `Lifecycle` counts them out; the last one does the work.

use crate::psci::Call;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dom0,
    DomU,
}

/// What a PSCI call or a fault does beyond the calling vCPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Power the board off (Dom0's SYSTEM_OFF).
    BoardOff,
    /// Reset the board (Dom0's SYSTEM_RESET).
    BoardReset,
    /// Stop this domain: its vCPUs park, its physical CPUs idle.
    StopDomain,
    /// Restart this domain alone from its pristine kernel and initrd.
    RestartDomain,
    /// Inject an abort into the vCPU and carry on.
    InjectAbort,
}

/// SYSTEM_OFF and SYSTEM_RESET per domain kind; `None` for calls that concern only the vCPU.
pub fn system_call(kind: Kind, call: Call) -> Option<Action> {
    match (kind, call) {
        (Kind::Dom0, Call::SystemOff) => Some(Action::BoardOff),
        (Kind::Dom0, Call::SystemReset) => Some(Action::BoardReset),
        (Kind::DomU, Call::SystemOff) => Some(Action::StopDomain),
        (Kind::DomU, Call::SystemReset) => Some(Action::RestartDomain),
        _ => None,
    }
}

/// Guest faults the hypervisor has to decide on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A data access to an address the domain does not own.
    DeniedAccess,
    /// An instruction fetch outside the domain's RAM.
    FetchOutsideRam,
    /// An exception class the hypervisor does not handle.
    UnexpectedTrap,
    /// An SError taken from the guest.
    SError,
}

pub fn on_fault(kind: Kind, fault: Fault) -> Action {
    match (kind, fault) {
        (_, Fault::DeniedAccess) => Action::InjectAbort,
        // Dom0 owns the board: stopping it would stop the device; it gets the architectural
        // answer (abort / undefined instruction / virtual SError) as today.
        (Kind::Dom0, _) => Action::InjectAbort,
        (Kind::DomU, _) => Action::StopDomain,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Running,
    /// Leaving the guest for `Action::StopDomain` or `Action::RestartDomain`.
    Leaving(Action),
    Stopped,
}

/// One domain's run state and which of its vCPUs are still in the guest (bit n = vCPU n).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifecycle {
    pub state: State,
    in_guest: u64,
}

/// What a vCPU leaving the guest has to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    /// Park; another vCPU finishes.
    Park,
    /// The last one out: the domain is stopped (print it) and this vCPU parks.
    Stopped,
    /// The last one out: scrub RAM, reload kernel, initrd and device tree, start vCPU 0.
    Reload,
}

impl Lifecycle {
    pub const fn new() -> Self {
        Lifecycle { state: State::Stopped, in_guest: 0 }
    }

    /// vCPU `v` entered the guest (boot, CPU_ON, restart).
    pub fn entered(&mut self, v: usize) {
        self.state = State::Running;
        self.in_guest |= 1 << v;
    }

    /// vCPU `v` left for good (CPU_OFF): it no longer needs to be called out.
    pub fn cpu_off(&mut self, v: usize) {
        self.in_guest &= !(1 << v);
    }

    /// Asks the domain to stop or restart. Returns false when a stop or restart is already under
    /// way (the first one wins).
    pub fn request(&mut self, action: Action) -> bool {
        if self.state != State::Running {
            return false;
        }
        debug_assert!(matches!(action, Action::StopDomain | Action::RestartDomain));
        self.state = State::Leaving(action);
        true
    }

    /// Whether vCPU `v` must leave the guest now (checked on each of its exits and kicks).
    pub fn must_leave(&self, v: usize) -> bool {
        matches!(self.state, State::Leaving(_)) && self.in_guest & (1 << v) != 0
    }

    /// vCPU `v` has left the guest.
    pub fn left(&mut self, v: usize) -> Leave {
        self.in_guest &= !(1 << v);
        match self.state {
            State::Leaving(action) if self.in_guest == 0 => {
                if action == Action::RestartDomain {
                    self.state = State::Running;
                    Leave::Reload
                } else {
                    self.state = State::Stopped;
                    Leave::Stopped
                }
            }
            _ => Leave::Park,
        }
    }
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_calls_are_board_wide_only_for_dom0() {
        assert_eq!(system_call(Kind::Dom0, Call::SystemOff), Some(Action::BoardOff));
        assert_eq!(system_call(Kind::Dom0, Call::SystemReset), Some(Action::BoardReset));
        assert_eq!(system_call(Kind::DomU, Call::SystemOff), Some(Action::StopDomain));
        assert_eq!(system_call(Kind::DomU, Call::SystemReset), Some(Action::RestartDomain));
        assert_eq!(system_call(Kind::DomU, Call::CpuOff), None);
        assert_eq!(system_call(Kind::DomU, Call::Version), None);
    }

    #[test]
    fn faults_stop_a_domu_but_not_dom0() {
        assert_eq!(on_fault(Kind::DomU, Fault::UnexpectedTrap), Action::StopDomain);
        assert_eq!(on_fault(Kind::DomU, Fault::SError), Action::StopDomain);
        assert_eq!(on_fault(Kind::DomU, Fault::FetchOutsideRam), Action::StopDomain);
        assert_eq!(on_fault(Kind::DomU, Fault::DeniedAccess), Action::InjectAbort);
        assert_eq!(on_fault(Kind::Dom0, Fault::UnexpectedTrap), Action::InjectAbort);
        assert_eq!(on_fault(Kind::Dom0, Fault::SError), Action::InjectAbort);
    }

    #[test]
    fn restart_waits_for_every_vcpu_and_the_last_reloads() {
        let mut l = Lifecycle::new();
        l.entered(0);
        l.entered(1);
        assert!(l.request(Action::RestartDomain));
        assert!(!l.request(Action::StopDomain), "the first request wins");
        assert!(l.must_leave(0) && l.must_leave(1));
        assert_eq!(l.left(1), Leave::Park);
        assert!(!l.must_leave(1));
        assert_eq!(l.left(0), Leave::Reload);
        assert_eq!(l.state, State::Running);
        l.entered(0);
        assert!(!l.must_leave(0));
    }

    #[test]
    fn stop_ends_stopped_and_skips_vcpus_already_off() {
        let mut l = Lifecycle::new();
        l.entered(0);
        l.entered(1);
        l.cpu_off(1);
        assert!(l.request(Action::StopDomain));
        assert!(!l.must_leave(1));
        assert_eq!(l.left(0), Leave::Stopped);
        assert_eq!(l.state, State::Stopped);
        assert!(!l.request(Action::RestartDomain), "a stopped domain stays stopped");
    }
}
