//! The hypervisor's state after boot: the physical GIC, the CPUs, and the domains. Built once by the
//! boot CPU before any other CPU or guest runs, then reached only through the exception and
//! secondary entry points, which pass it on explicitly.

use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU8, Ordering};

use rpixen_hv_core::addr::GuestPhysAddr;
use rpixen_hv_core::cpus::{CpuMap, MAX_CPUS};
use rpixen_hv_core::guard::GuardedPage;
use rpixen_hv_core::psci::Vcpus;
use rpixen_hv_core::vgicd::Distributor;
use rpixen_hv_core::virq::{PendingSet, SgiMailbox};
use rpixen_hv_core::Region;

use crate::gic::Gic;
use crate::mmio::Mmio;
use crate::platform::Power;

/// A guest: its stage 2, its vCPUs and its virtual distributor. Only Dom0 exists today; static DomUs
/// get their own (VMID, stage 2, vCPUs, distributor) from the same type.
pub struct Domain {
    pub vmid: u16,
    /// Root of its stage-2 tables.
    pub s2_root: u64,
    /// Its RAM (IPA ranges), where CPU_ON entry points must lie.
    pub ram: Vec<Region>,
    pub nr_vcpus: usize,
    pub dist: spin::Mutex<Distributor>,
    pub gicd: (GuestPhysAddr, u64),
    pub vcpus: Vcpus,
    /// Its emulated PL011 console page and that UART's interrupt.
    pub vuart: GuestPhysAddr,
    pub vuart_intid: Option<u32>,
    /// Device pages it shares with the hypervisor, passed through register by register.
    pub guarded: Vec<(GuardedPage, Mmio)>,
}

/// What only one CPU touches: the pending interrupts of the vCPU it runs.
pub struct CpuState {
    pub pending: PendingSet,
}

pub struct PerCpu([UnsafeCell<CpuState>; MAX_CPUS]);
// SAFETY: slot n is only used on CPU n (see `PerCpu::get`), with IRQs masked at EL2: never concurrently.
unsafe impl Sync for PerCpu {}

impl PerCpu {
    #[allow(clippy::mut_from_ref)] // each CPU has its own slot, see the Sync impl
    pub fn get(&self, cpu: usize) -> &mut CpuState {
        debug_assert_eq!(cpu, crate::arch::cpu_index());
        // SAFETY: see the Sync impl: callers pass their own CPU index.
        unsafe { &mut *self.0[cpu].get() }
    }
}

pub struct Hv {
    pub gic: Gic,
    pub maint_intid: u32,
    pub cpus: CpuMap,
    /// Each CPU's GIC CPU-interface mask (for SGIs and SPI routing), filled in as CPUs come up.
    pub if_mask: [AtomicU8; MAX_CPUS],
    pub power: Power,
    pub s1_root: u64,
    pub dom0: Domain,
    pub sgis: SgiMailbox,
    pub percpu: PerCpu,
}

impl Hv {
    pub fn new_percpu() -> PerCpu {
        PerCpu([const { UnsafeCell::new(CpuState { pending: PendingSet::new() }) }; MAX_CPUS])
    }
    pub fn if_mask(&self, cpu: usize) -> u8 {
        self.if_mask.get(cpu).map_or(0, |m| m.load(Ordering::Acquire))
    }
}

struct HvCell(UnsafeCell<Option<Hv>>);
// SAFETY: written once by the boot CPU (`install`) before secondaries start and before any guest runs;
// read-only afterwards.
unsafe impl Sync for HvCell {}
static HV: HvCell = HvCell(UnsafeCell::new(None));

/// Stores the state; boot CPU only, before any other CPU runs.
pub fn install(hv: Hv) -> &'static Hv {
    // SAFETY: see HvCell.
    unsafe {
        *HV.0.get() = Some(hv);
        (*HV.0.get()).as_ref().expect("just stored")
    }
}

/// The state, for the entry points (exception vector, secondary entry) only.
pub fn get() -> &'static Hv {
    // SAFETY: see HvCell; entry points run only after `install`.
    unsafe { (*HV.0.get()).as_ref().expect("hypervisor state installed") }
}
