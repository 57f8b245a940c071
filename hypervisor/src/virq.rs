//! Interrupt flow for a vCPU: physical interrupts arrive at EL2 (HCR_EL2.IMO) and are forwarded through
//! the list registers; the decisions (pending set, coalescing, priority order, what to deactivate) are
//! `rpixen_hv_core::virq`'s, this module reads and writes the GIC around them.

use rpixen_hv_core::gicv2::{gich, Lr, VTIMER_INTID};
use rpixen_hv_core::vgicd::Distributor;
use rpixen_hv_core::virq::{Flush, PendingSet, Virq};

use crate::state::Hv;

/// The physical SGI one CPU sends another to make it look at its SGI mailbox (or wake from `park`).
pub const KICK_SGI: u32 = 1;
/// Most list registers GICv2 has.
const MAX_LRS: usize = 64;

/// Reads this CPU's list registers, lets the core decide, writes back what changed.
fn with_lrs(
    hv: &Hv,
    cpu: usize,
    f: impl FnOnce(&mut PendingSet, &mut [Lr], &Distributor, usize) -> Flush,
) {
    let gic = &hv.gic;
    let mut lrs = [Lr(0); MAX_LRS];
    let lrs = &mut lrs[..gic.nr_lrs.min(MAX_LRS)];
    gic.read_lrs(lrs);
    let (dom, vcpu) = hv.on(cpu);
    let flush = {
        let dist = dom.dist.lock();
        f(&mut hv.percpu.get(cpu).pending, lrs, &dist, vcpu)
    };
    for (i, l) in lrs.iter().enumerate() {
        if flush.dirty & (1 << i) != 0 {
            gic.write_lr(i, *l);
        }
    }
    // Underflow maintenance interrupt while deliverable interrupts wait for a list register.
    gic.set_hcr(gich::HCR_EN | if flush.underflow { gich::HCR_UIE } else { 0 });
}

/// Makes `v` pending on this CPU's vCPU.
pub fn inject(hv: &Hv, cpu: usize, v: Virq) {
    with_lrs(hv, cpu, |set, lrs, dist, vcpu| set.raise(v, lrs, dist, vcpu));
}

/// Moves what waits into free list registers (after an enable, or on the maintenance interrupt).
pub fn flush(hv: &Hv, cpu: usize) {
    with_lrs(hv, cpu, |set, lrs, dist, vcpu| {
        hv.sgis.take_into(cpu, set);
        set.flush(lrs, dist, vcpu)
    });
}

/// The guest on physical CPU `cpu` wrote GICD_SGIR: `targets` are vCPUs of its domain. Mailboxes are
/// per physical CPU; the source is the sender's vCPU.
pub fn send_sgi(hv: &Hv, cpu: usize, intid: u8, targets: u8) {
    let (dom, from) = hv.on(cpu);
    for t in 0..dom.nr_vcpus {
        if targets & (1 << t) == 0 {
            continue;
        }
        let p = dom.pcpu(t);
        hv.sgis.post(p, intid, from);
        if t != from {
            // send_sgi orders the mailbox store before the SGI (dmb ishst).
            hv.gic.send_sgi(hv.if_mask(p), KICK_SGI);
        }
    }
    if targets & (1 << from) != 0 {
        flush(hv, cpu);
    }
}

/// What `handle_irq` saw that the caller acts on.
pub struct Taken {
    /// The guest's timer ticked: time to poll the console.
    pub tick: bool,
}

/// Physical IRQs taken while a guest ran.
pub fn handle_irq(hv: &Hv, cpu: usize) -> Taken {
    let gic = &hv.gic;
    let mut tick = false;
    loop {
        let iar = gic.iar();
        let id = iar & 0x3FF;
        if id >= 1020 {
            break;
        }
        gic.eoi(iar);
        if id == KICK_SGI || id == hv.maint_intid {
            gic.deactivate(iar);
            flush(hv, cpu);
        } else if id == crate::watchdog::HYP_TIMER_INTID {
            // Re-armed or disabled before the deactivation, so the level is low by then.
            crate::watchdog::check(hv);
            gic.deactivate(iar);
        } else if id == VTIMER_INTID || (id >= 32 && hv.on(cpu).0.dist.lock().owns(id)) {
            // Priority dropped only: the guest's EOI deactivates it (HW bit), or CPU_OFF does.
            tick |= id == VTIMER_INTID;
            inject(hv, cpu, Virq { intid: id, hw: true, source: 0 });
        } else {
            gic.deactivate(iar);
        }
    }
    Taken { tick }
}

/// PSCI CPU_OFF: forgets this vCPU's interrupts, deactivating every physical one it held (a timer
/// PPI left active would never fire again after the next CPU_ON), its posted SGIs and its active
/// priorities.
pub fn cpu_off(hv: &Hv, cpu: usize) {
    let gic = &hv.gic;
    let mut lrs = [Lr(0); MAX_LRS];
    let lrs = &mut lrs[..gic.nr_lrs.min(MAX_LRS)];
    gic.read_lrs(lrs);
    let deactivate = hv.percpu.get(cpu).pending.cpu_off(lrs);
    for (i, l) in lrs.iter().enumerate() {
        gic.write_lr(i, *l);
    }
    for id in deactivate.iter() {
        gic.deactivate(id);
    }
    hv.sgis.clear(cpu);
    let (dom, vcpu) = hv.on(cpu);
    let ppis = dom.dist.lock().reset_banked(vcpu);
    gic.disable(0, ppis);
    gic.clear_apr();
    gic.set_hcr(gich::HCR_EN);
}
