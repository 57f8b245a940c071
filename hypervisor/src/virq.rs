//! Interrupt flow for Dom0: physical interrupts arrive at EL2 (HCR_EL2.IMO), and are forwarded through
//! the list registers. SPIs and the virtual-timer PPI carry the HW bit (Dom0's EOI on GICV deactivates
//! the physical interrupt); virtual SGIs from Dom0's IPIs are software entries, and a physical SGI kicks
//! the target CPU so that it fills its own (banked) list registers.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};

use rpixen_hypervisor::vgicd::{lr_value, Banked};

use crate::{arch, hv, MAX_CPUS};

/// The physical SGI one CPU sends another to make it look at its pending virtual SGIs.
pub const KICK_SGI: u32 = 1;
/// Virtual timer PPI (CNTV), INTID 27 on both boards.
pub const VTIMER_INTID: u32 = 27;

/// State only its own CPU touches, with IRQs masked at EL2.
pub struct PerCpu<T>([UnsafeCell<T>; MAX_CPUS]);
// SAFETY: slot n is only accessed on CPU n (see `mine`), never concurrently.
unsafe impl<T> Sync for PerCpu<T> {}

impl<T> PerCpu<T> {
    pub const fn new(v: [UnsafeCell<T>; MAX_CPUS]) -> Self {
        PerCpu(v)
    }
    #[allow(clippy::mut_from_ref)]
    pub fn mine(&self) -> &mut T {
        // SAFETY: see the Sync impl; EL2 runs with IRQs masked, so there is no re-entry either.
        unsafe { &mut *self.0[arch::cpu_index()].get() }
    }
}

pub struct Overflow {
    lrs: [u32; 64],
    n: usize,
}

static OVERFLOW: PerCpu<Overflow> = PerCpu::new([const { UnsafeCell::new(Overflow { lrs: [0; 64], n: 0 }) }; MAX_CPUS]);
pub static BANKED: PerCpu<Banked> =
    PerCpu::new([const { UnsafeCell::new(Banked { enable: 0, priority: [0xA0; 32] }) }; MAX_CPUS]);
/// Pending virtual SGIs per target vCPU: for each SGI, a mask of source vCPUs.
static SGI_PENDING: [[AtomicU8; 16]; MAX_CPUS] = [const { [const { AtomicU8::new(0) }; 16] }; MAX_CPUS];
/// The distributor's virtual GICD_CTLR.
pub static VGICD_CTLR: AtomicU32 = AtomicU32::new(0);

fn same_interrupt(a: u32, b: u32) -> bool {
    let key = |v: u32| if v & (1 << 31) != 0 { v & 0x3FF } else { v & 0x1FFF };
    key(a) == key(b)
}

fn try_place(lr: u32) -> bool {
    let gic = &hv().gic;
    let elsr = gic.elsr();
    for i in 0..gic.nr_lrs {
        if elsr & (1 << i) == 0 {
            let cur = gic.lr(i);
            if same_interrupt(cur, lr) {
                // Already there: pending stays pending (edge coalescing); active gains pending.
                if cur & (1 << 31) == 0 && (cur >> 28) & 3 == 2 {
                    gic.set_lr(i, cur | (1 << 28));
                }
                return true;
            }
        }
    }
    for i in 0..gic.nr_lrs {
        if elsr & (1 << i) != 0 {
            gic.set_lr(i, lr);
            return true;
        }
    }
    false
}

/// Queues a virtual interrupt on this CPU.
pub fn inject(lr: u32) {
    if !try_place(lr) {
        let o = OVERFLOW.mine();
        if o.n < o.lrs.len() {
            o.lrs[o.n] = lr;
            o.n += 1;
        }
        // Underflow maintenance interrupt: fires when at most one LR is in use.
        hv().gic.set_hcr(0b11);
    }
}

fn refill() {
    let o = OVERFLOW.mine();
    let mut kept = 0;
    for i in 0..o.n {
        let lr = o.lrs[i];
        if !try_place(lr) {
            o.lrs[kept] = lr;
            kept += 1;
        }
    }
    o.n = kept;
    hv().gic.set_hcr(if kept == 0 { 1 } else { 0b11 });
}

/// Dom0 wrote GICD_SGIR on vCPU `from`.
pub fn send_sgi(from: usize, intid: u32, targets: u8) {
    let me = arch::cpu_index();
    for (t, pending) in SGI_PENDING.iter().enumerate().take(hv().nr_cpus) {
        if targets & (1 << t) == 0 {
            continue;
        }
        pending[intid as usize].fetch_or(1 << from, Ordering::AcqRel);
        if t == me {
            drain_sgis();
        } else {
            hv().gic.send_sgi(1 << t, KICK_SGI);
        }
    }
}

fn drain_sgis() {
    let me = arch::cpu_index();
    let prio = BANKED.mine().priority;
    for (sgi, pending) in SGI_PENDING[me].iter().enumerate() {
        let sources = pending.swap(0, Ordering::AcqRel);
        for src in 0..8 {
            if sources & (1 << src) != 0 {
                inject(lr_value(sgi as u32, None, prio[sgi], src));
            }
        }
    }
}

/// A physical IRQ taken from Dom0.
pub fn handle_irq() {
    let h = hv();
    let gic = &h.gic;
    loop {
        let iar = gic.iar();
        let id = iar & 0x3FF;
        if id >= 1020 {
            break;
        }
        if id == KICK_SGI {
            gic.eoi(iar);
            gic.deactivate(iar);
            drain_sgis();
        } else if id == h.maint_intid {
            gic.eoi(iar);
            gic.deactivate(iar);
            refill();
        } else if id == VTIMER_INTID {
            gic.eoi(iar);
            inject(lr_value(id, Some(id), BANKED.mine().priority[id as usize], 0));
            crate::trap::vuart_poll();
        } else if id >= 32 {
            // Dom0's SPI: drop priority only; Dom0's EOI on GICV deactivates it (HW bit).
            gic.eoi(iar);
            inject(lr_value(id, Some(id), gic.spi_priority(id), 0));
        } else {
            gic.eoi(iar);
            gic.deactivate(iar);
        }
    }
}

/// Forgets this CPU's virtual interrupts (CPU_OFF).
pub fn reset_cpu() {
    let gic = &hv().gic;
    for i in 0..gic.nr_lrs {
        gic.set_lr(i, 0);
    }
    OVERFLOW.mine().n = 0;
    gic.set_hcr(1);
}
