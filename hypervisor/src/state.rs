//! The hypervisor's state after boot: the physical GIC, the CPUs, and the domains. Built once by the
//! boot CPU before any other CPU or guest runs, then reached only through the exception and
//! secondary entry points, which pass it on explicitly.

use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicPtr, AtomicU8, Ordering};

use rpixen_hv_core::addr::GuestPhysAddr;
use rpixen_hv_core::cpus::{CpuMap, MAX_CPUS};
use rpixen_hv_core::guard::GuardedPage;
use rpixen_hv_core::psci::Vcpus;
use rpixen_hv_core::sp805::Sp805;
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
    /// Its virtual SP805 watchdog's page and state (none on boards without a free page for it).
    pub watchdog: Option<(GuestPhysAddr, spin::Mutex<Sp805>)>,
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

/// The installed state, on the heap: a pointer keeps it out of the Image's .data (an `Option<Hv>`
/// static would put 5 KiB of initial bytes into the file).
static HV: AtomicPtr<Hv> = AtomicPtr::new(core::ptr::null_mut());

/// Stores the state; boot CPU only, before any other CPU runs.
pub fn install(hv: Hv) -> &'static Hv {
    let hv: &'static Hv = alloc::boxed::Box::leak(alloc::boxed::Box::new(hv));
    HV.store(core::ptr::from_ref(hv).cast_mut(), Ordering::Release);
    hv
}

/// The state, for the entry points (exception vector, secondary entry) only.
pub fn get() -> &'static Hv {
    let p = HV.load(Ordering::Acquire);
    assert!(!p.is_null(), "hypervisor state used before it was installed");
    // SAFETY: set once by `install` from a leaked Box (valid for the program's life), never written
    // again and only read through shared references.
    unsafe { &*p }
}
