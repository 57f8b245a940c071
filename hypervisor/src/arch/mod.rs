//! AArch64 EL2 specifics: entry code, exception vectors, system-register access, cache and TLB
//! maintenance.

pub mod entry;
mod mem;

/// Reads a system register.
macro_rules! mrs {
    ($r:literal) => {{
        let v: u64;
        // SAFETY: reading a system register has no memory effects; the register exists at EL2.
        unsafe { core::arch::asm!(concat!("mrs {}, ", $r), out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }};
}

/// Writes a system register.
macro_rules! msr {
    ($r:literal, $v:expr) => {{
        let v: u64 = $v;
        // SAFETY: the callers write EL2/EL1 control registers with values documented at the call site.
        unsafe { core::arch::asm!(concat!("msr ", $r, ", {}"), in(reg) v, options(nostack, preserves_flags)) };
    }};
}

pub(crate) use {mrs, msr};

pub fn isb() {
    // SAFETY: a barrier.
    unsafe { core::arch::asm!("isb", options(nostack, preserves_flags)) };
}

pub fn dsb_sy() {
    // SAFETY: a barrier.
    unsafe { core::arch::asm!("dsb sy", options(nostack, preserves_flags)) };
}

pub fn sev() {
    // SAFETY: signals an event to all PEs.
    unsafe { core::arch::asm!("dsb sy", "sev", options(nostack, preserves_flags)) };
}

pub fn wfi() {
    // SAFETY: waits for an interrupt.
    unsafe { core::arch::asm!("wfi", options(nostack, preserves_flags)) };
}

/// Cleans `[start, start+len)` to the point of coherency (64-byte lines, A72).
pub fn clean_dcache_range(start: u64, len: u64) {
    let mut a = start & !63;
    while a < start + len {
        // SAFETY: cache maintenance by VA on mapped memory; no architectural data change.
        unsafe { core::arch::asm!("dc cvac, {}", in(reg) a, options(nostack, preserves_flags)) };
        a += 64;
    }
    dsb_sy();
}

/// Cleans and invalidates `[start, start+len)` to the point of coherency.
pub fn flush_dcache_range(start: u64, len: u64) {
    let mut a = start & !63;
    while a < start + len {
        // SAFETY: as above.
        unsafe { core::arch::asm!("dc civac, {}", in(reg) a, options(nostack, preserves_flags)) };
        a += 64;
    }
    dsb_sy();
}

/// Zeroes `[start, start+len)` with DC ZVA (whole cache blocks without reading memory: scrubbing a
/// DomU's RAM costs a store per 64 bytes) and plain stores for the unaligned ends, or where DC ZVA is
/// prohibited.
///
/// # Safety
/// The range is RAM mapped Normal at EL2 that nothing else uses while it is zeroed.
pub unsafe fn zero_range(start: u64, len: u64) {
    let dczid = mrs!("dczid_el0");
    let block = 4u64 << (dczid & 0xF);
    let end = start + len;
    // [a, b): the whole blocks inside; empty when DC ZVA is prohibited.
    let a = ((start + block - 1) & !(block - 1)).min(end);
    let b = if dczid & (1 << 4) != 0 { a } else { (end & !(block - 1)).max(a) };
    // SAFETY: both ends lie inside the caller's range.
    unsafe {
        core::ptr::write_bytes(start as *mut u8, 0, (a - start) as usize);
        core::ptr::write_bytes(b as *mut u8, 0, (end - b) as usize);
    }
    let mut at = a;
    while at < b {
        // SAFETY: zeroes one block inside the caller's range.
        unsafe { core::arch::asm!("dc zva, {}", in(reg) at, options(nostack, preserves_flags)) };
        at += block;
    }
    dsb_sy();
}

pub fn invalidate_icache() {
    // SAFETY: instruction-cache maintenance.
    unsafe { core::arch::asm!("ic iallu", "dsb nsh", "isb", options(nostack, preserves_flags)) };
}

pub fn tlbi_alle2() {
    // SAFETY: TLB maintenance for the EL2 regime.
    unsafe {
        core::arch::asm!(
            "dsb ishst",
            "tlbi alle2",
            "dsb ish",
            "isb",
            options(nostack, preserves_flags)
        )
    };
}

pub fn tlbi_alle1() {
    // SAFETY: TLB maintenance for the EL1&0 regime (all VMIDs), before the first guest entry.
    unsafe {
        core::arch::asm!(
            "dsb ishst",
            "tlbi alle1",
            "dsb ish",
            "isb",
            options(nostack, preserves_flags)
        )
    };
}

pub fn tlbi_vmalle1() {
    // SAFETY: TLB maintenance for the current VMID's EL1&0 regime on this CPU.
    unsafe {
        core::arch::asm!(
            "dsb nshst",
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            options(nostack, preserves_flags)
        )
    };
}

/// An SMC to the firmware (PSCI on QEMU virt, where no EL3 exists and QEMU answers).
pub fn smc(x0: u64, x1: u64, x2: u64, x3: u64) -> u64 {
    let r: u64;
    // SAFETY: an SMCCC call; the firmware preserves x4-x17 under SMCCC 1.1, we clobber them anyway.
    unsafe {
        core::arch::asm!("smc #0", inout("x0") x0 => r, inout("x1") x1 => _, inout("x2") x2 => _, inout("x3") x3 => _,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _, out("x10") _, out("x11") _,
            out("x12") _, out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _, options(nostack));
    }
    r
}

/// This PE's index in the device tree's CPU list (`rpixen_hv_core::cpus::CpuMap`), kept in
/// TPIDR_EL2: set by the entry code on secondaries and by `set_cpu_index` on the boot CPU.
pub fn cpu_index() -> usize {
    mrs!("tpidr_el2") as usize
}

pub fn set_cpu_index(i: usize) {
    msr!("tpidr_el2", i as u64);
}

/// Orders earlier stores before a later one that another CPU reacts to (the SGI after its mailbox).
pub fn dmb_ishst() {
    // SAFETY: a barrier.
    unsafe { core::arch::asm!("dmb ishst", options(nostack, preserves_flags)) };
}

/// SCTLR_EL1 at a vCPU's (re)entry: RES1 bits, MMU and caches off.
pub const SCTLR_EL1: u64 = 0x30D0_0800;

/// EL1 as a vCPU must find it on (re)entry (PSCI CPU_ON): MMU and caches off, no stale translations.
pub fn reset_el1() {
    msr!("sctlr_el1", SCTLR_EL1);
    isb();
    tlbi_vmalle1();
}
