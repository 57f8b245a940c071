//! What the state means: which slot boots (the rules `boot.scr` follows, written here once so the
//! script and the agent cannot disagree — the QEMU tests run the real script against this model),
//! and the transitions Dom0's update agent makes.

use crate::record::{Record, RecordError, Slot, SlotState};

/// The two copies as read from the STATE partition, each valid or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copies(pub [Result<Record, RecordError>; 2]);

impl Copies {
    /// The newest valid copy and its index; on equal sequence numbers copy 0 wins, as in the script.
    pub fn newest(&self) -> Option<(usize, Record)> {
        match (&self.0[0], &self.0[1]) {
            (Ok(r0), Ok(r1)) if r1.seq > r0.seq => Some((1, *r1)),
            (Ok(r0), _) => Some((0, *r0)),
            (Err(_), Ok(r1)) => Some((1, *r1)),
            (Err(_), Err(_)) => None,
        }
    }

    /// Where the next write goes: never over the newest valid copy, so a torn write loses at most
    /// the record being written.
    pub fn next_write_index(&self) -> usize {
        match self.newest() {
            Some((i, _)) => 1 - i,
            None => 0,
        }
    }
}

/// The boot script's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootChoice {
    /// Tried first.
    pub slot: Slot,
    /// Tried when `slot` does not boot (a file missing or failing its checksum).
    pub then: Slot,
    /// The record the script writes before it boots, and the copy it goes to: the trial's one shot.
    pub write: Option<(usize, Record)>,
}

/// The slot whose record says `active` (A when both or neither do: the script's default).
fn committed(rec: &Record) -> Slot {
    if rec.b == SlotState::Active && rec.a != SlotState::Active {
        Slot::B
    } else {
        Slot::A
    }
}

/// The slot due for its trial boot: `updating` beside an `active` one.
pub fn trial_due(rec: &Record) -> Option<Slot> {
    Slot::ALL
        .into_iter()
        .find(|&s| rec.state(s) == SlotState::Updating && rec.state(s.other()) == SlotState::Active)
}

/// What `boot.scr` does with these copies:
/// - no valid copy: try A, then B (each slot's own script checks its files, so a torn slot is passed over);
/// - a trial due: write the record with the trial slot `inprogress` (the one shot is spent before the
///   slot runs), then boot it, falling back to the committed slot;
/// - otherwise: the committed slot, then the other.
pub fn boot_choice(copies: &Copies) -> BootChoice {
    let Some((index, rec)) = copies.newest() else {
        return BootChoice { slot: Slot::A, then: Slot::B, write: None };
    };
    if let Some(trial) = trial_due(&rec) {
        let next = rec.with(trial, SlotState::InProgress);
        return BootChoice { slot: trial, then: trial.other(), write: Some((1 - index, next)) };
    }
    let slot = committed(&rec);
    BootChoice { slot, then: slot.other(), write: None }
}

/// What the record says about the boot Dom0 is running, told by the slot it booted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterBoot {
    /// The committed slot, nothing pending.
    Committed,
    /// This boot is the trial of the running slot: commit after a healthy window, else go back.
    Trial,
    /// The other slot's trial ran and did not commit (a reset, a hang, a failed load): the running
    /// slot is the committed one again. EVE reports this as FALLBACK.
    TrialFailed,
    /// The other slot waits for its trial (written, not yet booted).
    TrialPending,
    /// The record does not describe this boot (no valid copy, or the running slot is not the one
    /// it selects): the script fell back to a slot on its own.
    Unrecorded,
}

/// Classifies the running boot.
pub fn after_boot(copies: &Copies, running: Slot) -> AfterBoot {
    let Some((_, rec)) = copies.newest() else {
        return AfterBoot::Unrecorded;
    };
    match (rec.state(running), rec.state(running.other())) {
        (SlotState::InProgress, SlotState::Active) => AfterBoot::Trial,
        (SlotState::Active, SlotState::InProgress) => AfterBoot::TrialFailed,
        (SlotState::Active, SlotState::Updating) => AfterBoot::TrialPending,
        (SlotState::Active, _) if committed(&rec) == running => AfterBoot::Committed,
        _ => AfterBoot::Unrecorded,
    }
}

/// A transition the agent may not make from this record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("slot state {a}/{b} (a/b, seq {seq:#x}): cannot {action}")]
pub struct TransitionError {
    pub a: SlotState,
    pub b: SlotState,
    pub seq: u32,
    pub action: &'static str,
}

fn refuse(rec: &Record, action: &'static str) -> TransitionError {
    TransitionError { a: rec.a, b: rec.b, seq: rec.seq, action }
}

/// Before writing a byte to `target`: mark it unused, so a slot being written is never `updating`
/// (a power cut mid-write leaves a slot no script will try as a trial).
pub fn begin_write(rec: &Record, running: Slot) -> Result<Record, TransitionError> {
    if rec.state(running) != SlotState::Active {
        return Err(refuse(rec, "write the other slot while the running slot is not committed"));
    }
    Ok(rec.with(running.other(), SlotState::Unused))
}

/// After the other slot is written and read back: its one trial boot is due.
pub fn schedule_trial(rec: &Record, running: Slot) -> Result<Record, TransitionError> {
    if rec.state(running) != SlotState::Active || rec.state(running.other()) != SlotState::Unused {
        return Err(refuse(rec, "schedule a trial unless running=active and other=unused"));
    }
    Ok(rec.with(running.other(), SlotState::Updating))
}

/// After a healthy window in the trial: the running slot is committed, the old one free.
pub fn commit(rec: &Record, running: Slot) -> Result<Record, TransitionError> {
    if rec.state(running) != SlotState::InProgress {
        return Err(refuse(rec, "commit a slot that is not in its trial"));
    }
    Ok(rec.with(running, SlotState::Active).with_other_unused(running))
}

/// Back in the committed slot after a failed or abandoned trial: the other slot is free again.
pub fn abandon_trial(rec: &Record, running: Slot) -> Result<Record, TransitionError> {
    if rec.state(running) != SlotState::Active {
        return Err(refuse(rec, "abandon a trial from a slot that is not committed"));
    }
    Ok(rec.with(running.other(), SlotState::Unused))
}

/// Makes the record describe a boot the script chose on its own (no valid copy): the running slot
/// committed, the other unused.
pub fn repair(rec: Option<&Record>, running: Slot) -> Record {
    let seq = rec.map_or(1, |r| r.seq + 1);
    let mut next = Record { seq, a: SlotState::Unused, b: SlotState::Unused };
    match running {
        Slot::A => next.a = SlotState::Active,
        Slot::B => next.b = SlotState::Active,
    }
    next
}

impl Record {
    fn with_other_unused(self, running: Slot) -> Record {
        match running {
            Slot::A => Record { b: SlotState::Unused, ..self },
            Slot::B => Record { a: SlotState::Unused, ..self },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SlotState::*;

    fn rec(seq: u32, a: SlotState, b: SlotState) -> Record {
        Record { seq, a, b }
    }

    fn both(r: Record) -> Copies {
        Copies([Ok(r), Ok(Record { seq: r.seq - 1, ..r })])
    }

    fn torn() -> Result<Record, RecordError> {
        Err(RecordError::Checksum { stored: 0, computed: 1 })
    }

    #[test]
    fn the_newest_valid_copy_wins_and_writes_go_to_the_other() {
        let old = rec(4, Active, Unused);
        let new = rec(5, Active, Updating);
        let c = Copies([Ok(old), Ok(new)]);
        assert_eq!(c.newest(), Some((1, new)));
        assert_eq!(c.next_write_index(), 0);
        let c = Copies([Ok(old), torn()]);
        assert_eq!(c.newest(), Some((0, old)));
        assert_eq!(c.next_write_index(), 1);
        assert_eq!(Copies([torn(), torn()]).newest(), None);
        assert_eq!(Copies([Ok(new), Ok(new)]).newest(), Some((0, new)));
    }

    #[test]
    fn a_trial_is_spent_before_the_slot_boots() {
        let c = Copies([Ok(rec(5, Active, Updating)), Ok(rec(4, Active, Unused))]);
        let choice = boot_choice(&c);
        assert_eq!(choice.slot, Slot::B);
        assert_eq!(choice.then, Slot::A);
        assert_eq!(choice.write, Some((1, rec(6, Active, InProgress))));
    }

    #[test]
    fn a_reset_during_the_trial_boots_the_committed_slot() {
        let choice = boot_choice(&both(rec(6, Active, InProgress)));
        assert_eq!((choice.slot, choice.write), (Slot::A, None));
        let choice = boot_choice(&both(rec(9, InProgress, Active)));
        assert_eq!((choice.slot, choice.then), (Slot::B, Slot::A));
    }

    #[test]
    fn unreadable_state_tries_a_then_b() {
        let choice = boot_choice(&Copies([torn(), torn()]));
        assert_eq!((choice.slot, choice.then, choice.write), (Slot::A, Slot::B, None));
    }

    #[test]
    fn a_torn_newer_copy_falls_back_to_the_older_one() {
        let choice = boot_choice(&Copies([torn(), Ok(rec(3, Unused, Active))]));
        assert_eq!(choice.slot, Slot::B);
    }

    #[test]
    fn the_update_cycle_from_a_to_b_and_back() {
        let r = Record::fresh();
        let r = begin_write(&r, Slot::A).unwrap();
        let r = schedule_trial(&r, Slot::A).unwrap();
        assert_eq!(trial_due(&r), Some(Slot::B));
        let c = Copies([Ok(r), torn()]);
        assert_eq!(after_boot(&c, Slot::A), AfterBoot::TrialPending);
        let (_, r) = boot_choice(&c).write.unwrap();
        let c = Copies([Ok(r), torn()]);
        assert_eq!(after_boot(&c, Slot::B), AfterBoot::Trial);
        assert_eq!(after_boot(&c, Slot::A), AfterBoot::TrialFailed);
        let done = commit(&r, Slot::B).unwrap();
        assert_eq!((done.a, done.b), (Unused, Active));
        assert_eq!(after_boot(&Copies([Ok(done), torn()]), Slot::B), AfterBoot::Committed);
        let back = abandon_trial(&r, Slot::A).unwrap();
        assert_eq!((back.a, back.b), (Active, Unused));
    }

    #[test]
    fn refused_transitions_name_the_state() {
        let r = rec(7, InProgress, Active);
        let err = begin_write(&r, Slot::A).unwrap_err().to_string();
        assert!(err.contains("inprogress/active") && err.contains("0x7"), "{err}");
        assert!(commit(&Record::fresh(), Slot::A).is_err());
        assert!(schedule_trial(&rec(2, Active, Updating), Slot::A).is_err());
    }

    #[test]
    fn a_boot_the_record_did_not_choose_is_unrecorded_and_repaired() {
        assert_eq!(after_boot(&Copies([torn(), torn()]), Slot::B), AfterBoot::Unrecorded);
        let c = both(rec(3, Active, Unused));
        assert_eq!(after_boot(&c, Slot::B), AfterBoot::Unrecorded);
        assert_eq!(repair(None, Slot::B), rec(1, Unused, Active));
        assert_eq!(repair(Some(&rec(3, Active, Unused)), Slot::B), rec(4, Unused, Active));
    }
}
