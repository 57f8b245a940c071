//! A vCPU's pending virtual interrupts and its list registers (Xen's `vgic.c`/`gic-vgic.c` model).
//!
//! Pending interrupts are a set, not a queue: one bit per INTID (plus, for SGIs, one bit per source
//! vCPU, as a real GIC keeps them), so a duplicate coalesces and the set can never overflow (it is
//! bounded by the number of interrupt IDs). `flush` moves the highest-priority enabled ones into list
//! registers, evicting a lower-priority *pending* entry back into the set when all are in use; an
//! interrupt whose physical line was priority-dropped (HW bit) therefore always stays tracked until
//! the guest's EOI deactivates it, or CPU_OFF deactivates it (`cpu_off`).

use core::sync::atomic::{AtomicU8, Ordering};

use crate::cpus::MAX_CPUS;
use crate::gicv2::{Lr, LrState, MAX_INTID};
use crate::vgicd::Distributor;

const WORDS: usize = (MAX_INTID as usize).div_ceil(32);

/// A virtual interrupt to deliver. `hw`: its physical interrupt (same INTID: Dom0 is direct-mapped)
/// was taken and priority-dropped, and the guest's EOI must deactivate it. `source`: an SGI's sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Virq {
    pub intid: u32,
    pub hw: bool,
    pub source: u8,
}

/// Physical INTIDs the binary must deactivate (GICC_DIR), as a bitmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deactivate(pub [u32; WORDS]);

impl Deactivate {
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..MAX_INTID).filter(|i| self.0[(i / 32) as usize] & (1 << (i % 32)) != 0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingSet {
    /// INTIDs 16 and up (SGIs use `sgi_sources`).
    pending: [u32; WORDS],
    hw: [u32; WORDS],
    /// Per SGI, a bit per source vCPU.
    sgi_sources: [u8; 16],
}

impl Default for PendingSet {
    fn default() -> Self {
        Self::new()
    }
}

/// What the binary writes back after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flush {
    /// List registers that changed (bit n = LRn).
    pub dirty: u64,
    /// Deliverable interrupts are still waiting: ask for the underflow maintenance interrupt.
    pub underflow: bool,
}

fn bit(words: &[u32; WORDS], id: u32) -> bool {
    words[(id / 32) as usize] & (1 << (id % 32)) != 0
}

fn set_bit(words: &mut [u32; WORDS], id: u32, on: bool) {
    if on {
        words[(id / 32) as usize] |= 1 << (id % 32);
    } else {
        words[(id / 32) as usize] &= !(1 << (id % 32));
    }
}

impl PendingSet {
    pub const fn new() -> PendingSet {
        PendingSet { pending: [0; WORDS], hw: [0; WORDS], sgi_sources: [0; 16] }
    }

    fn add(&mut self, v: Virq) {
        if v.intid >= MAX_INTID {
            return;
        }
        if v.intid < 16 {
            self.sgi_sources[v.intid as usize] |= 1 << (v.source & 7);
        } else {
            set_bit(&mut self.pending, v.intid, true);
            if v.hw {
                set_bit(&mut self.hw, v.intid, true);
            }
        }
    }

    fn remove(&mut self, v: Virq) {
        if v.intid < 16 {
            self.sgi_sources[v.intid as usize] &= !(1 << (v.source & 7));
        } else {
            set_bit(&mut self.pending, v.intid, false);
            set_bit(&mut self.hw, v.intid, false);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pending.iter().all(|w| *w == 0) && self.sgi_sources.iter().all(|s| *s == 0)
    }

    /// Marks `v` pending and moves what fits into the list registers.
    pub fn raise(&mut self, v: Virq, lrs: &mut [Lr], dist: &Distributor, vcpu: usize) -> Flush {
        self.add(v);
        self.flush(lrs, dist, vcpu)
    }

    fn contains(&self, intid: u32, source: u8) -> bool {
        match intid {
            0..=15 => self.sgi_sources[intid as usize] & (1 << (source & 7)) != 0,
            _ if intid < MAX_INTID => bit(&self.pending, intid),
            _ => false,
        }
    }

    /// The deliverable entry to place next: lowest priority value, then lowest INTID and source.
    fn best(&self, dist: &Distributor, vcpu: usize) -> Option<(u8, Virq)> {
        let mut best: Option<(u8, Virq)> = None;
        let mut consider = |v: Virq| {
            if !dist.enabled(vcpu, v.intid) {
                return;
            }
            let p = dist.priority(vcpu, v.intid);
            if best.is_none_or(|(bp, _)| p < bp) {
                best = Some((p, v));
            }
        };
        for id in 0..16u32 {
            let s = self.sgi_sources[id as usize];
            if s != 0 {
                consider(Virq { intid: id, hw: false, source: s.trailing_zeros() as u8 });
            }
        }
        for (w, &word) in self.pending.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let id = w as u32 * 32 + bits.trailing_zeros();
                bits &= bits - 1;
                consider(Virq { intid: id, hw: bit(&self.hw, id), source: 0 });
            }
        }
        best
    }

    /// Fills the list registers from the set: coalesces with entries already there, then places the
    /// highest-priority enabled interrupts first, evicting lower-priority pending entries. Runs in
    /// the trap path: no allocation.
    pub fn flush(&mut self, lrs: &mut [Lr], dist: &Distributor, vcpu: usize) -> Flush {
        let mut dirty = 0u64;
        // 1. Already in a list register: a pending entry absorbs the duplicate; an active software
        //    entry becomes active and pending. (A HW interrupt cannot fire again while active: its
        //    physical line waits for the guest's deactivation.)
        for (i, l) in lrs.iter_mut().enumerate() {
            let v = Virq { intid: l.vintid(), hw: l.hw(), source: l.source() };
            if l.state() == LrState::Invalid || !self.contains(v.intid, v.source) {
                continue;
            }
            match l.state() {
                LrState::Pending | LrState::PendingActive => self.remove(v),
                LrState::Active if !l.hw() && !bit(&self.hw, v.intid) => {
                    *l = l.with_pending();
                    dirty |= 1 << i;
                    self.remove(v);
                }
                _ => {}
            }
        }
        // 2. The deliverable rest, best first. If the best cannot be placed, nothing worse can.
        let mut left = false;
        for _ in 0..2 * lrs.len() + 1 {
            let Some((prio, v)) = self.best(dist, vcpu) else { break };
            let lr = Lr::pending(v.intid, v.hw, prio, v.source);
            let slot = match lrs.iter().position(|l| l.state() == LrState::Invalid) {
                Some(i) => Some(i),
                None => {
                    // The lowest-priority entry that is only pending, if lower than this one.
                    let victim = lrs
                        .iter()
                        .enumerate()
                        .filter(|(_, l)| {
                            l.state() == LrState::Pending && l.priority() > lr.priority()
                        })
                        .max_by_key(|(_, l)| l.priority())
                        .map(|(i, _)| i);
                    if let Some(i) = victim {
                        let old = lrs[i];
                        self.add(Virq { intid: old.vintid(), hw: old.hw(), source: old.source() });
                    }
                    victim
                }
            };
            match slot {
                Some(i) => {
                    lrs[i] = lr;
                    dirty |= 1 << i;
                    self.remove(v);
                }
                None => {
                    left = true;
                    break;
                }
            }
        }
        if !left && self.best(dist, vcpu).is_some() {
            left = true;
        }
        Flush { dirty, underflow: left }
    }

    /// CPU_OFF: forgets every pending and in-flight interrupt of this vCPU and returns the physical
    /// interrupts to deactivate, so that no line stays active (the timer PPI would never fire again).
    pub fn cpu_off(&mut self, lrs: &mut [Lr]) -> Deactivate {
        let mut d = [0u32; WORDS];
        for l in lrs.iter_mut() {
            if l.hw() && l.state() != LrState::Invalid {
                set_bit(&mut d, l.pintid(), true);
            }
            *l = Lr(0);
        }
        // HW interrupts still waiting in the set were priority-dropped too.
        for (w, h) in d.iter_mut().zip(self.hw.iter()) {
            *w |= *h;
        }
        *self = PendingSet::default();
        Deactivate(d)
    }
}

/// Virtual SGIs posted by one CPU for another: per target, per SGI, a bit per source vCPU. The sender
/// posts, then (after a `dmb ishst`) kicks the target with a physical SGI; the target takes them into
/// its own pending set.
pub struct SgiMailbox {
    slots: [[AtomicU8; 16]; MAX_CPUS],
}

impl Default for SgiMailbox {
    fn default() -> Self {
        Self::new()
    }
}

impl SgiMailbox {
    pub const fn new() -> SgiMailbox {
        SgiMailbox { slots: [const { [const { AtomicU8::new(0) }; 16] }; MAX_CPUS] }
    }

    pub fn post(&self, target: usize, sgi: u8, source: usize) {
        if let Some(t) = self.slots.get(target) {
            t[usize::from(sgi & 15)].fetch_or(1 << (source & 7), Ordering::AcqRel);
        }
    }

    /// Takes every SGI posted for `cpu` into `set`; true if there was any.
    pub fn take_into(&self, cpu: usize, set: &mut PendingSet) -> bool {
        let mut any = false;
        for (sgi, slot) in self.slots[cpu % MAX_CPUS].iter().enumerate() {
            let sources = slot.swap(0, Ordering::AcqRel);
            for s in 0..8u8 {
                if sources & (1 << s) != 0 {
                    set.add(Virq { intid: sgi as u32, hw: false, source: s });
                    any = true;
                }
            }
        }
        any
    }

    /// CPU_OFF: SGIs posted for a vCPU that is going away are dropped, as its GIC state is reset.
    pub fn clear(&self, cpu: usize) {
        for slot in &self.slots[cpu % MAX_CPUS] {
            slot.store(0, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gicv2::gicd;
    use crate::vgicd::Access;

    fn dist() -> Distributor {
        let mut d = Distributor::new(2, 1020 & !31, 0);
        d.access(0, Access { offset: gicd::CTLR, size: 4, write: Some(1) });
        for w in 0..31 {
            d.access(0, Access { offset: gicd::ISENABLER + 4 * w, size: 4, write: Some(!0) });
        }
        d
    }

    /// Guest EOI of everything in the list registers: what Dom0 does when it takes them.
    fn guest_takes_all(lrs: &mut [Lr], seen: &mut alloc::vec::Vec<(u32, u8)>) {
        for l in lrs.iter_mut() {
            if matches!(l.state(), LrState::Pending | LrState::PendingActive) {
                seen.push((l.vintid(), l.source()));
            }
            *l = Lr(0);
        }
    }

    fn drain(
        set: &mut PendingSet,
        lrs: &mut [Lr],
        d: &Distributor,
        seen: &mut alloc::vec::Vec<(u32, u8)>,
    ) {
        for _ in 0..2000 {
            guest_takes_all(lrs, seen);
            if !set.flush(lrs, d, 0).underflow && lrs.iter().all(|l| l.state() == LrState::Invalid)
            {
                break;
            }
        }
    }

    /// Defect 3: the same SGI from the same source, raised many times while the list registers are
    /// busy, is delivered once (as a real GIC coalesces it); from two sources, twice.
    #[test]
    fn defect3_duplicates_coalesce() {
        let d = dist();
        let mut lrs = [Lr(2 << 28 | 60), Lr(2 << 28 | 61), Lr(2 << 28 | 62), Lr(2 << 28 | 63)]; // all active
        let mut set = PendingSet::default();
        for source in [0, 1] {
            for _ in 0..100 {
                set.raise(Virq { intid: 1, hw: false, source }, &mut [], &d, 0);
            }
        }
        set.raise(Virq { intid: 40, hw: true, source: 0 }, &mut [], &d, 0);
        let mut seen = alloc::vec::Vec::new();
        for l in lrs.iter_mut() {
            *l = Lr(0);
        }
        drain(&mut set, &mut lrs, &d, &mut seen);
        seen.sort();
        assert_eq!(seen, [(1, 0), (1, 1), (40, 0)]);
    }

    /// Defect 3: a higher-priority interrupt does not wait behind lower-priority pending ones: it
    /// takes a list register from the lowest-priority pending entry.
    #[test]
    fn defect3_priority_order_kept() {
        let mut d = dist();
        d.access(0, Access { offset: gicd::IPRIORITYR + 50, size: 1, write: Some(0x10) });
        let mut lrs = [Lr(0); 4];
        let mut set = PendingSet::default();
        for id in 60..64 {
            let f = set.raise(Virq { intid: id, hw: true, source: 0 }, &mut lrs, &d, 0);
            assert!(!f.underflow);
        }
        set.raise(Virq { intid: 50, hw: true, source: 0 }, &mut lrs, &d, 0);
        assert!(lrs.iter().any(|l| l.vintid() == 50 && l.state() == LrState::Pending), "{lrs:?}");
    }

    /// Defect 3: nothing is dropped, however many distinct interrupts wait (bounded by the IDs).
    #[test]
    fn defect3_nothing_dropped() {
        let d = dist();
        let mut lrs = [Lr(0); 4];
        let mut set = PendingSet::default();
        for id in 32..992 {
            set.raise(Virq { intid: id, hw: true, source: 0 }, &mut lrs, &d, 0);
        }
        let mut seen = alloc::vec::Vec::new();
        drain(&mut set, &mut lrs, &d, &mut seen);
        assert_eq!(seen.len(), 992 - 32);
    }

    /// Defect 4: CPU_OFF deactivates every HW interrupt it forgets, in a list register (active or
    /// pending) or still waiting in the pending set.
    #[test]
    fn defect4_cpu_off_deactivates_hw_interrupts() {
        let d = dist();
        let mut lrs = [Lr(0); 2];
        let mut set = PendingSet::default();
        set.raise(Virq { intid: 27, hw: true, source: 0 }, &mut lrs, &d, 0);
        lrs[0] = Lr(lrs[0].0 & !(3 << 28) | (2 << 28)); // the guest took it: active
        set.raise(Virq { intid: 40, hw: true, source: 0 }, &mut lrs, &d, 0);
        set.raise(Virq { intid: 41, hw: true, source: 0 }, &mut lrs, &d, 0); // waits in the set
        set.raise(Virq { intid: 2, hw: false, source: 1 }, &mut lrs, &d, 0);
        let off = set.cpu_off(&mut lrs);
        let ids: alloc::vec::Vec<u32> = off.iter().collect();
        assert_eq!(ids, [27, 40, 41]);
        assert!(lrs.iter().all(|l| l.0 == 0));
        let mut seen = alloc::vec::Vec::new();
        drain(&mut set, &mut lrs, &d, &mut seen);
        assert!(seen.is_empty(), "nothing survives CPU_OFF: {seen:?}");
    }

    #[test]
    fn mailbox_coalesces_per_source_and_empties() {
        let d = dist();
        let m = SgiMailbox::new();
        for _ in 0..50 {
            m.post(1, 3, 0);
        }
        m.post(1, 3, 2);
        let mut set = PendingSet::default();
        assert!(m.take_into(1, &mut set));
        assert!(!m.take_into(1, &mut set), "taken");
        let mut lrs = [Lr(0); 4];
        let mut seen = alloc::vec::Vec::new();
        set.flush(&mut lrs, &d, 1);
        guest_takes_all(&mut lrs, &mut seen);
        assert_eq!(seen, [(3, 0), (3, 2)]);
        m.post(2, 1, 1);
        m.clear(2);
        assert!(!m.take_into(2, &mut set));
    }

    /// Defect 7: a PPI the guest disabled (its banked enable bit) stays pending, not delivered, and is
    /// delivered once enabled; it is not lost either.
    #[test]
    fn defect7_guest_ppi_enable_bits_are_honoured() {
        let mut d = Distributor::new(2, 64, 0);
        d.own(27);
        d.access(0, Access { offset: gicd::CTLR, size: 4, write: Some(1) });
        let mut lrs = [Lr(0); 4];
        let mut set = PendingSet::default();
        let f = set.raise(Virq { intid: 27, hw: true, source: 0 }, &mut lrs, &d, 0);
        assert_eq!((f.dirty, lrs[0]), (0, Lr(0)), "disabled PPI placed in a list register");
        assert!(!f.underflow, "no maintenance interrupt for something that cannot be delivered");
        d.access(0, Access { offset: gicd::ISENABLER, size: 4, write: Some(1 << 27) });
        set.flush(&mut lrs, &d, 0);
        assert_eq!((lrs[0].vintid(), lrs[0].hw()), (27, true));
        let f = set.raise(Virq { intid: 27, hw: true, source: 1 }, &mut lrs, &d, 1);
        assert_eq!(f.dirty, 0, "vCPU 1 has its own (disabled) banked view");
    }
}
