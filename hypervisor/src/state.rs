//! The hypervisor's state after boot: the physical GIC, the CPUs, and the domains. Built once by the
//! boot CPU before any other CPU or guest runs, then reached only through the exception and
//! secondary entry points, which pass it on explicitly.

use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicPtr, AtomicU8, Ordering};

use rpixen_hv_core::addr::GuestPhysAddr;
use rpixen_hv_core::conmux::{InputFocus, PrefixedLines};
use rpixen_hv_core::cpus::{CpuMap, MAX_CPUS, MPIDR_AFFINITY};
use rpixen_hv_core::guard::GuardedPage;
use rpixen_hv_core::lifecycle::{Kind, Lifecycle};
use rpixen_hv_core::partition::DomuStage2;
use rpixen_hv_core::placement::Dom0Layout;
use rpixen_hv_core::psci::Vcpus;
use rpixen_hv_core::sp805::Sp805;
use rpixen_hv_core::vgicd::Distributor;
use rpixen_hv_core::virq::{PendingSet, SgiMailbox};
use rpixen_hv_core::vuart::Pl011;
use rpixen_hv_core::Region;

use crate::gic::Gic;
use crate::mmio::Mmio;
use crate::platform::Power;

/// A guest: its stage 2, its vCPUs and its virtual distributor. Dom0 and the static DomUs alike; a
/// DomU adds its boot files, console and lifecycle (`domu`).
pub struct Domain {
    /// Xen's domain ID: 0 for Dom0, 1, 2, ... for the DomUs in `/chosen` order.
    pub id: u32,
    /// Its `/chosen` node name (`dom0` for Dom0), for messages.
    pub name: &'static str,
    pub vmid: u16,
    /// Root of its stage-2 tables.
    pub s2_root: u64,
    /// Its RAM (IPA ranges), where CPU_ON entry points must lie.
    pub ram: Vec<Region>,
    pub nr_vcpus: usize,
    /// The physical CPU each vCPU is pinned to.
    pub pcpus: Vec<usize>,
    /// The MPIDR each vCPU sees (VMPIDR_EL2) and its device tree lists; PSCI targets name these.
    pub vcpu_mpidrs: Vec<u64>,
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
    /// What only a DomU has (`None` for Dom0).
    pub domu: Option<DomU>,
}

impl Domain {
    /// The vCPU whose MPIDR is `mpidr` (a PSCI target).
    pub fn vcpu_of(&self, mpidr: u64) -> Option<usize> {
        self.vcpu_mpidrs.iter().position(|&m| m & MPIDR_AFFINITY == mpidr & MPIDR_AFFINITY)
    }
    /// The physical CPU of vCPU `v`.
    pub fn pcpu(&self, v: usize) -> usize {
        self.pcpus.get(v).copied().unwrap_or(usize::MAX)
    }
    pub fn kind(&self) -> Kind {
        if self.domu.is_some() {
            Kind::DomU
        } else {
            Kind::Dom0
        }
    }
}

/// A static DomU's own parts.
pub struct DomU {
    /// Its default-deny stage 2 (what its RAM is on the host).
    pub s2: DomuStage2,
    /// Pristine boot files: SYSTEM_RESET reloads from these.
    pub boot: DomuBoot,
    pub console: spin::Mutex<DomuConsole>,
    pub life: spin::Mutex<Lifecycle>,
    /// GICD_IIDR its distributor reports, to start afresh on a restart.
    pub iidr: u32,
}

/// A DomU's boot files: its device tree, where each file goes in its guest RAM (IPA), and the load
/// as `DomuStage2::load_plan` decided it: host copies from the modules (kept untouched: no guest
/// maps them) and the DTB, and the host ranges to zero around them.
pub struct DomuBoot {
    /// Owned here so it lives as long as the domain: `copies` reads it by address.
    #[allow(dead_code)]
    pub dtb: Vec<u8>,
    pub layout: Dom0Layout,
    pub copies: Vec<(u64, Region)>,
    pub scrub: Vec<Region>,
}

/// A DomU's vPL011 and its output line.
pub struct DomuConsole {
    pub uart: Pl011,
    pub line: PrefixedLines<256>,
    /// When it last wrote (counter ticks).
    pub last_tx: u64,
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
    /// The static DomUs, domain IDs 1, 2, ...
    pub domus: Vec<Domain>,
    /// Which domain and vCPU each physical CPU runs (`partition::cpu_roles`).
    pub roles: [Option<(u8, u8)>; MAX_CPUS],
    /// Which domain the console's input goes to (CTRL-a three times moves it on).
    pub focus: spin::Mutex<InputFocus>,
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
    /// Domain `id` (0: Dom0).
    pub fn domain(&self, id: usize) -> Option<&Domain> {
        match id {
            0 => Some(&self.dom0),
            n => self.domus.get(n - 1),
        }
    }
    /// The domain and vCPU physical CPU `cpu` runs (Dom0's vCPU `cpu` for a CPU no one uses, which
    /// is never started).
    pub fn on(&self, cpu: usize) -> (&Domain, usize) {
        match self.roles.get(cpu).copied().flatten() {
            Some((d, v)) => (self.domain(usize::from(d)).unwrap_or(&self.dom0), usize::from(v)),
            None => (&self.dom0, cpu),
        }
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
