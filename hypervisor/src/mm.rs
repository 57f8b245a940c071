//! The hypervisor's EL2 stage-1 tables (identity map: RAM Normal, everything else Device) and Dom0's
//! and the DomUs' stage-2 tables (.bss pools for EL2, heap pools for stage 2).

use alloc::vec::Vec;
use core::cell::UnsafeCell;

use rpixen_hv_core::pagetable::{
    el2_plan, ImageSections, MapError, Mem, Regime, Table, Tables, MAIR_EL2, TCR_EL2,
};
use rpixen_hv_core::partition::{DomuStage2, Mapping};
use rpixen_hv_core::stage2::Plan;
use rpixen_hv_core::Region;

use crate::arch::{self, msr};

/// SCTLR_EL2: RES1 bits | M | C | SA | I.
const SCTLR_EL2: u64 = 0x30C5_0830 | 1 | (1 << 2) | (1 << 3) | (1 << 12);

#[repr(C, align(8192))]
pub struct Pool<const N: usize>(UnsafeCell<[Table; N]>);
// SAFETY: the pools are written only by the boot CPU before secondaries start; afterwards the MMU
// reads them and nothing writes.
unsafe impl<const N: usize> Sync for Pool<N> {}

static EARLY: Pool<1> = Pool(UnsafeCell::new([Table::ZERO; 1]));
static STAGE1: Pool<32> = Pool(UnsafeCell::new([Table::ZERO; 32]));
/// Stage-2 tables per domain: 4 KiB pages for up to ~1 GiB of guest RAM (see `stage2_map`).
const STAGE2_TABLES: usize = 320;

fn tables<const N: usize>(p: &'static Pool<N>, regime: Regime) -> Tables<'static> {
    // SAFETY: see Pool; each pool is built once, by the boot CPU, with no other reference alive.
    let slice: &'static mut [Table] = unsafe { &mut *p.0.get() };
    let pa = slice.as_ptr() as u64;
    Tables::new(regime, slice, pa)
}

/// Before the memory map is known: the GiB blocks holding the image and the DTB are Normal (the Rust
/// code needs unaligned accesses, which Device memory faults), everything else is Device.
pub fn early_map(normal: &[u64]) -> u64 {
    let mut t = tables(&EARLY, Regime::El2Stage1);
    for gib in 0..512u64 {
        let base = gib << 30;
        let mem = if normal.iter().any(|a| a >> 30 == gib) { Mem::Boot } else { Mem::Device };
        // Not `expect`: its message is formatted with MapError's Debug, which links `core::fmt`.
        if t.map(base, base, 1 << 30, mem).is_err() {
            panic!("1 GiB blocks fit the root table");
        }
    }
    t.root_pa()
}

/// The final EL2 map (`rpixen_hv_core::pagetable::el2_plan`): W^X, RAM Normal, the rest Device.
pub fn el2_map(ram: &[Region], image: ImageSections) -> Result<u64, MapError> {
    let mut t = tables(&STAGE1, Regime::El2Stage1);
    for (r, mem) in el2_plan(ram, image) {
        t.map(r.base, r.base, r.size, mem)?;
    }
    Ok(t.root_pa())
}

/// A domain's stage 2 from its plan (`rpixen_hv_core::stage2`).
///
/// Guest RAM is mapped with 4 KiB pages when the pool allows (up to about 1 GiB): QEMU's TCG flushes its
/// whole TLB for any TLBI by address that falls inside a block mapping, and Linux's boot-time code
/// patching (ftrace, alternatives) issues tens of thousands of those; with 1 GiB and 2 MiB stage-2
/// blocks Dom0's boot took 4x longer in that phase. Larger guests fall back to blocks.
pub fn stage2_map(plan: &Plan) -> Result<(u64, usize), MapError> {
    // Loops, not `map(..).collect()`: smaller in the EL2 binary (issue 11's budget).
    let identity = |rs: &[Region]| {
        let mut v = Vec::with_capacity(rs.len() + 1);
        for r in rs {
            v.push(Mapping { ipa: r.base, pa: r.base, size: r.size });
        }
        v
    };
    let ram = identity(&plan.ram);
    let (ipa, pa, size) = plan.gicv;
    let mut dev = identity(&plan.mmio);
    dev.push(Mapping { ipa, pa, size });
    stage2_build(&ram, &dev)
}

/// A DomU's stage 2: its RAM (IPA -> host) and the GIC virtual CPU interface, nothing else.
pub fn domu_stage2_map(s2: &DomuStage2) -> Result<(u64, usize), MapError> {
    stage2_build(&s2.ram, &[s2.gicv])
}

fn stage2_build(ram: &[Mapping], dev: &[Mapping]) -> Result<(u64, usize), MapError> {
    match stage2_try(ram, dev, 3) {
        // The first pool stays allocated (a bump heap frees nothing): one more pool is the price.
        Err(MapError::OutOfTables) => stage2_try(ram, dev, 1),
        r => r,
    }
}

fn stage2_try(ram: &[Mapping], dev: &[Mapping], ram_level: u32) -> Result<(u64, usize), MapError> {
    // From the heap (one pool per domain, never freed): the root of two concatenated tables must be
    // 8 KiB aligned, hence one spare table.
    let pool: &'static mut [Table] = alloc::vec![Table::ZERO; STAGE2_TABLES + 1].leak();
    let skip = usize::from(!(pool.as_ptr() as u64).is_multiple_of(8192));
    let pool = &mut pool[skip..];
    let pa = pool.as_ptr() as u64;
    let mut t = Tables::new(Regime::Stage2, pool, pa);
    t.largest_block_level(ram_level);
    for m in ram {
        t.map(m.ipa, m.pa, m.size, Mem::Normal)?;
    }
    t.largest_block_level(1);
    for m in dev {
        t.map(m.ipa, m.pa, m.size, Mem::Device)?;
    }
    let root = t.root_pa();
    let used = t.tables_used();
    // The walker may run with caches off on secondaries' first access; the tables must be at PoC.
    arch::clean_dcache_range(root, (used * 4096) as u64);
    Ok((root, used))
}

pub fn enable_mmu(root: u64) {
    msr!("mair_el2", MAIR_EL2);
    msr!("tcr_el2", TCR_EL2);
    msr!("ttbr0_el2", root);
    arch::isb();
    arch::tlbi_alle2();
    msr!("sctlr_el2", SCTLR_EL2);
    arch::isb();
    arch::invalidate_icache();
}

/// Moves the running CPU to other tables with the same attributes for everything in use.
pub fn switch_tables(root: u64) {
    arch::dsb_sy();
    msr!("ttbr0_el2", root);
    arch::isb();
    arch::tlbi_alle2();
}
