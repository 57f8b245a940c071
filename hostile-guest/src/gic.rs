//! The guest's side of the GICv2: distributor accesses (trapped and emulated by the hypervisor),
//! the virtual CPU interface (GICV, mapped by the hypervisor where the tree puts GICC), SGIs, the
//! virtual timer, and per-vCPU counts of every interrupt taken.

use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use crate::arch::{self, msr, MAX_CPUS};
use crate::platform::{self, cfg, cpu_index};

pub const CTLR: u64 = 0x000;
pub const ISENABLER: u64 = 0x100;
pub const ICENABLER: u64 = 0x180;
pub const ISPENDR: u64 = 0x200;
pub const ICPENDR: u64 = 0x280;
pub const ISACTIVER: u64 = 0x300;
pub const IPRIORITYR: u64 = 0x400;
pub const SGIR: u64 = 0xF00;
const GICC_CTLR: u64 = 0x00;
const GICC_PMR: u64 = 0x04;
const GICC_BPR: u64 = 0x08;
const GICC_IAR: u64 = 0x0C;
const GICC_EOIR: u64 = 0x10;

/// The SGI that wakes a worker vCPU for its next command; the cases use SGIs 0-14.
pub const DOORBELL_SGI: u32 = 15;
/// How many SGIs the cases raise (0..CASE_SGIS).
pub const CASE_SGIS: usize = 15;
pub const DEFAULT_PRIORITY: u32 = 0xA0;

/// Interrupts taken per vCPU and INTID (0-31; SPIs counted in slot 32).
pub static TAKEN: [[AtomicU32; 33]; MAX_CPUS] =
    [const { [const { AtomicU32::new(0) }; 33] }; MAX_CPUS];
/// SGIs taken per vCPU, SGI and source vCPU.
pub static SGI_FROM: [[[AtomicU32; 8]; 16]; MAX_CPUS] =
    [const { [const { [const { AtomicU32::new(0) }; 8] }; 16] }; MAX_CPUS];
/// vCPU 0's interrupts in the order it took them.
pub static ORDER: [AtomicU32; 256] = [const { AtomicU32::new(0) }; 256];
pub static ORDER_LEN: AtomicUsize = AtomicUsize::new(0);
/// The timer interrupt (counted since `clear_counts`) at which the handler calls CPU_OFF before its
/// EOI (0: never).
pub static TIMER_OFF_AT: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

pub fn read32(addr: u64) -> u32 {
    // SAFETY: callers pass GIC registers from the device tree, mapped Device by the identity map; a
    // refused access is an abort the vectors count and skip.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

pub fn write32(addr: u64, v: u32) {
    // SAFETY: as `read32`.
    unsafe { core::ptr::write_volatile(addr as *mut u32, v) }
}

pub fn gicd(off: u64) -> u64 {
    cfg().gicd + off
}

/// Sends SGI `id`: `filter` 0 = to `targets`, 1 = to all others, 2 = to self.
pub fn send_sgi(filter: u32, targets: u8, id: u32) {
    arch::dsb();
    write32(gicd(SGIR), (filter << 24) | (u32::from(targets) << 16) | (id & 0xF));
}

/// This vCPU's interface: distributor on (a shared, virtual bit), CPU interface on, every priority
/// unmasked, SGIs and the virtual timer enabled (banked, so per vCPU).
pub fn cpu_init() {
    let c = cfg();
    write32(c.gicd + CTLR, 1);
    write32(c.gicc + GICC_PMR, 0xFF);
    write32(c.gicc + GICC_BPR, 0);
    write32(c.gicc + GICC_CTLR, 1);
    for i in (0..32).step_by(4) {
        write32(c.gicd + IPRIORITYR + i, DEFAULT_PRIORITY * 0x0101_0101);
    }
    write32(c.gicd + ISENABLER, 0xFFFF | (1 << c.vtimer));
}

/// Arms the virtual timer `us` from now.
pub fn timer_in(us: u64) {
    msr!("cntv_cval_el0", arch::now() + arch::us_to_ticks(us));
    msr!("cntv_ctl_el0", 1);
    arch::isb();
}

pub fn timer_stop() {
    msr!("cntv_ctl_el0", 0);
    arch::isb();
}

pub fn taken(cpu: usize, id: u32) -> u32 {
    TAKEN[cpu][(id as usize).min(32)].load(Ordering::Acquire)
}

pub fn clear_counts(cpu: usize) {
    for t in &TAKEN[cpu] {
        t.store(0, Ordering::Release);
    }
    for s in &SGI_FROM[cpu] {
        for c in s {
            c.store(0, Ordering::Release);
        }
    }
    if cpu == 0 {
        ORDER_LEN.store(0, Ordering::Release);
    }
}

/// An IRQ exception: acknowledge, count, EOI every pending virtual interrupt.
pub fn handle_irq() {
    let c = cfg();
    let me = cpu_index();
    loop {
        let iar = read32(c.gicc + GICC_IAR);
        let id = iar & 0x3FF;
        if id >= 1020 {
            break;
        }
        if id < 16 {
            SGI_FROM[me][id as usize][((iar >> 10) & 7) as usize].fetch_add(1, Ordering::AcqRel);
        }
        TAKEN[me][(id as usize).min(32)].fetch_add(1, Ordering::AcqRel);
        if me == 0 {
            let n = ORDER_LEN.fetch_add(1, Ordering::AcqRel);
            if n < ORDER.len() {
                ORDER[n].store(id, Ordering::Release);
            }
        }
        if id == c.vtimer {
            // One-shot: the line drops here, before the EOI, and the next deadline is set by the
            // interrupted code, after it. A deadline re-armed inside the handler can expire while
            // the physical interrupt is still active (this vCPU's thread descheduled between
            // acknowledge and EOI), and QEMU's GICv2 does not signal a level interrupt that became
            // pending while active when the guest's EOI deactivates it through the list register's
            // HW bit: the tick would be lost until some other GIC access.
            timer_stop();
            let off_at = TIMER_OFF_AT[me].load(Ordering::Acquire);
            if off_at != 0 && taken(me, id) >= off_at {
                // The attack: switch this vCPU off while its timer interrupt is active (not yet
                // EOId): the hypervisor must deactivate it and forget its priority.
                TIMER_OFF_AT[me].store(0, Ordering::Release);
                platform::cpu_off();
            }
        }
        write32(c.gicc + GICC_EOIR, iar);
    }
}
