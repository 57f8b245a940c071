//! Boot configuration from the device tree, the stage-1 identity map, per-vCPU state, the exception
//! handler, PSCI calls, and probes: accesses that may be refused with an injected abort.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use hostile_guest::{Bootargs, Probe};

use crate::arch::{self, mrs, msr, Frame, MAX_CPUS};
use crate::console::println;
use crate::gic;

pub const PSCI_VERSION: u32 = 0x8400_0000;
pub const PSCI_CPU_OFF: u32 = 0x8400_0002;
pub const PSCI_CPU_ON: u32 = 0xC400_0003;
pub const PSCI_AFFINITY_INFO: u32 = 0xC400_0004;
pub const PSCI_SYSTEM_OFF: u32 = 0x8400_0008;
pub const PSCI_FEATURES: u32 = 0x8400_000A;

/// What the device tree and the command line told us; set once by vCPU 0 before the others start.
pub struct Config {
    pub gicd: u64,
    pub gicc: u64,
    pub uart: u64,
    pub vtimer: u32,
    pub ram: [(u64, u64); 4],
    pub nr_ram: usize,
    pub mpidr: [u64; MAX_CPUS],
    /// CPU nodes in `/cpus` (may exceed MAX_CPUS; only MAX_CPUS are used).
    pub dt_cpus: usize,
    pub args: Bootargs<'static>,
}

static mut CONFIG: Option<Config> = None;
static CONFIG_READY: AtomicBool = AtomicBool::new(false);

pub fn cfg() -> &'static Config {
    debug_assert!(CONFIG_READY.load(Ordering::Acquire));
    // SAFETY: written once by vCPU 0 before CONFIG_READY and before any other vCPU starts; read-only after.
    unsafe { (*core::ptr::addr_of!(CONFIG)).as_ref().unwrap_unchecked() }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

const GIC_COMPATIBLE: &[&str] = &["arm,gic-400", "arm,cortex-a15-gic", "arm,cortex-a9-gic"];
const UART_COMPATIBLE: &[&str] = &["arm,sbsa-uart", "arm,pl011"];

type Node<'b, 'a> = fdt::node::FdtNode<'b, 'a>;

/// The first node one or two levels below the root that `pred` (given its parent, None for the
/// root) accepts, with that parent.
fn find<'b, 'a>(
    fdt: &'b fdt::Fdt<'a>,
    pred: impl Fn(Option<&Node<'b, 'a>>, &Node<'b, 'a>) -> bool,
) -> Option<(Node<'b, 'a>, Option<Node<'b, 'a>>)> {
    let root = fdt.find_node("/")?;
    for n in root.children() {
        if pred(None, &n) {
            return Some((n, None));
        }
        for c in n.children() {
            if pred(Some(&n), &c) {
                return Some((c, Some(n)));
            }
        }
    }
    None
}

/// The first two `reg` addresses of a node, as CPU physical addresses: a node under a bus (the Pi's
/// `/soc`) is translated through the bus's `ranges`.
fn reg_addrs(
    fdt: &fdt::Fdt<'_>,
    (node, parent): (Node<'_, '_>, Option<Node<'_, '_>>),
) -> Option<[Option<u64>; 2]> {
    let root = fdt.find_node("/")?;
    let root_cells = root.cell_sizes();
    let cells = parent.map_or(root_cells, |p| p.cell_sizes());
    let reg = node.property("reg")?.value;
    let entry = (cells.address_cells + cells.size_cells) * 4;
    let mut out = [None; 2];
    for (i, e) in reg.chunks_exact(entry).take(2).enumerate() {
        let addr = hostile_guest::read_cells(e, cells.address_cells)?;
        out[i] = match parent.and_then(|p| p.property("ranges")) {
            Some(r) => hostile_guest::translate(
                addr,
                r.value,
                cells.address_cells,
                root_cells.address_cells,
                cells.size_cells,
            ),
            None => Some(addr),
        };
    }
    Some(out)
}

/// Reads the device tree at `dtb` (MMU still off). Returns None when something essential is missing.
pub fn parse_dt(dtb: u64) -> Option<Config> {
    // SAFETY: the hypervisor passes a device tree in x0 (arm64 boot protocol); its header is 40 bytes.
    let hdr = unsafe { core::slice::from_raw_parts(dtb as *const u8, 40) };
    if be32(hdr) != 0xD00D_FEED {
        return None;
    }
    // SAFETY: the whole blob, as its header states; nothing writes it.
    let blob: &'static [u8] =
        unsafe { core::slice::from_raw_parts(dtb as *const u8, be32(&hdr[4..]) as usize) };
    let fdt = fdt::Fdt::new(blob).ok()?;
    let gic = find(&fdt, |_, n| {
        n.compatible().is_some_and(|c| c.all().any(|c| GIC_COMPATIBLE.contains(&c)))
    })?;
    let gic_regs = reg_addrs(&fdt, gic)?;
    let (gicd, gicc) = (gic_regs[0]?, gic_regs[1]?);
    // stdout-path "/soc/serial@7e201000[:options]": a node one or two levels down. A DomU's tree
    // has none (Xen's prepare_dtb_domU writes no stdout-path): its console is the vPL011 node.
    let chosen = fdt.find_node("/chosen")?;
    let uart_node = match chosen.property("stdout-path").and_then(|p| p.as_str()) {
        Some(stdout) => {
            let stdout = stdout.split(':').next()?.trim_start_matches('/');
            let (parent_name, name) = stdout.rsplit_once('/').unwrap_or(("", stdout));
            find(&fdt, |p, n| n.name == name && p.map_or("", |p| p.name) == parent_name)?
        }
        None => find(&fdt, |_, n| {
            n.compatible().is_some_and(|c| c.all().any(|c| UART_COMPATIBLE.contains(&c)))
        })?,
    };
    let uart = reg_addrs(&fdt, uart_node)?[0]?;
    // The timer's third interrupt is the virtual timer (PPI n -> INTID n + 16).
    let vtimer = fdt
        .find_compatible(&["arm,armv8-timer", "arm,armv7-timer"])
        .and_then(|t| t.property("interrupts"))
        .filter(|p| p.value.len() >= 36)
        .map(|p| be32(&p.value[28..]) + 16)
        .unwrap_or(27);
    let mut ram = [(0, 0); 4];
    let mut nr_ram = 0;
    for r in fdt.memory().regions() {
        if nr_ram < ram.len() {
            ram[nr_ram] = (r.starting_address as u64, r.size.unwrap_or(0) as u64);
            nr_ram += 1;
        }
    }
    let mut mpidr = [u64::MAX; MAX_CPUS];
    let mut dt_cpus = 0;
    for c in fdt.cpus() {
        if dt_cpus < MAX_CPUS {
            mpidr[dt_cpus] = c.ids().first() as u64;
        }
        dt_cpus += 1;
    }
    let args = Bootargs::parse(fdt.chosen().bootargs().unwrap_or(""));
    Some(Config { gicd, gicc, uart, vtimer, ram, nr_ram, mpidr, dt_cpus, args })
}

pub fn set_config(c: Config) {
    // SAFETY: vCPU 0 only, before any other vCPU runs and before `cfg()` is called.
    unsafe { *core::ptr::addr_of_mut!(CONFIG) = Some(c) };
    CONFIG_READY.store(true, Ordering::Release);
}

pub fn set_cpu_index(i: usize) {
    msr!("tpidr_el1", i as u64);
}

pub fn cpu_index() -> usize {
    mrs!("tpidr_el1") as usize
}

/// One stage-1 level-1 table of 1 GiB blocks (4 KiB granule, 39-bit VA): entries 0-255 identity-map
/// the first 256 GiB (RAM Normal write-back, everything else Device-nGnRnE), entries 256-511 map the
/// same physical GiBs again as Normal non-cacheable at +256 GiB. Through that alias a misaligned or
/// odd-width access reaches stage 2 and the hypervisor; through a Device mapping the CPU itself
/// would raise an alignment fault at EL1 first.
#[repr(C, align(4096))]
struct Table([u64; 512]);
static mut L1: Table = Table([0; 512]);
pub const ALIAS: u64 = 256 << 30;

const MAIR: u64 = 0x44_FF_00; // attr0 Device-nGnRnE, attr1 Normal WB, attr2 Normal NC
const TCR: u64 = 25 | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 23) | (2 << 32);
const SCTLR_MMU: u64 = 0x30D0_0800 | 1 | (1 << 2) | (1 << 12);

/// vCPU 0, MMU off: fills the table from the RAM banks in `cfg()`.
pub fn build_map() {
    let c = cfg();
    let is_ram = |gib: u64| {
        let (lo, hi) = (gib << 30, (gib + 1) << 30);
        c.ram[..c.nr_ram].iter().any(|&(b, s)| b < hi && b + s > lo)
    };
    const BLOCK: u64 = 0b01 | (1 << 10); // block, AF
    const XN: u64 = (1 << 53) | (1 << 54);
    // SAFETY: vCPU 0 before any other vCPU runs and before the MMU uses the table.
    let t = unsafe { &mut (*core::ptr::addr_of_mut!(L1)).0 };
    for gib in 0..256u64 {
        t[gib as usize] = (gib << 30) | BLOCK | if is_ram(gib) { (1 << 2) | (3 << 8) } else { XN };
        t[256 + gib as usize] = (gib << 30) | BLOCK | (2 << 2) | (3 << 8) | XN;
    }
}

/// Every vCPU: MMU and caches on with the shared table.
pub fn mmu_on() {
    msr!("mair_el1", MAIR);
    msr!("tcr_el1", TCR);
    msr!("ttbr0_el1", core::ptr::addr_of!(L1) as u64);
    arch::dsb();
    arch::isb();
    // SAFETY: invalidates this vCPU's stale EL1 translations before the MMU goes on.
    unsafe { core::arch::asm!("tlbi vmalle1", "dsb nsh", "isb", options(nostack)) };
    msr!("sctlr_el1", SCTLR_MMU);
    arch::isb();
}

// Exceptions seen per vCPU. A probe compares FAULTS before and after; outside a probe an exception
// is unexpected and counted as such (the run then fails).
static FAULTS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static LAST_ESR: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static PROBING: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
pub static UNEXPECTED: AtomicU32 = AtomicU32::new(0);
pub static SERRORS: AtomicU32 = AtomicU32::new(0);

#[no_mangle]
extern "C" fn guest_trap(f: &mut Frame, kind: u64) {
    let me = cpu_index();
    match kind {
        // Synchronous, current EL: an abort or undef the hypervisor injected. Skip the instruction.
        4 | 0 => {
            let esr = mrs!("esr_el1");
            LAST_ESR[me].store(esr, Ordering::Release);
            FAULTS[me].fetch_add(1, Ordering::AcqRel);
            if !PROBING[me].load(Ordering::Acquire) {
                UNEXPECTED.fetch_add(1, Ordering::AcqRel);
                println!(
                    "UNEXPECTED exception on vCPU {} ESR={:#x} FAR={:#x} ELR={:#x}",
                    me,
                    esr,
                    mrs!("far_el1"),
                    f.elr
                );
                if esr >> 26 == 0x21 {
                    // An instruction abort: there is no next instruction to skip to (a vCPU started
                    // where it must not run). Stay here, quietly.
                    arch::irq_off();
                    loop {
                        arch::wfi();
                    }
                }
            }
            f.elr += 4;
        }
        5 | 1 => gic::handle_irq(),
        7 | 3 => {
            SERRORS.fetch_add(1, Ordering::AcqRel);
            println!("SERROR on vCPU {} ESR={:#x}", me, mrs!("esr_el1"));
        }
        _ => {
            UNEXPECTED.fetch_add(1, Ordering::AcqRel);
            println!(
                "UNEXPECTED vector {} on vCPU {} ESR={:#x} ELR={:#x}",
                kind,
                me,
                mrs!("esr_el1"),
                f.elr
            );
        }
    }
}

/// Runs `f` with exceptions expected; returns its value and the ESR of the last exception it took.
pub fn probe<T>(f: impl FnOnce() -> T) -> (T, Option<u64>) {
    let me = cpu_index();
    PROBING[me].store(true, Ordering::Release);
    let before = FAULTS[me].load(Ordering::Acquire);
    let v = f();
    let after = FAULTS[me].load(Ordering::Acquire);
    PROBING[me].store(false, Ordering::Release);
    (v, (after != before).then(|| LAST_ESR[me].load(Ordering::Acquire)))
}

/// One load of `width` bytes (1, 2, 4, 8) at `addr`.
pub fn read(addr: u64, width: u8) -> Probe {
    let (v, fault) = probe(|| {
        let mut v: u64 = 0;
        // SAFETY: a single load from an address the case chose; a refusal is an abort the vectors
        // skip (the register then keeps 0).
        unsafe {
            match width {
                1 => {
                    core::arch::asm!("ldrb {v:w}, [{a}]", a = in(reg) addr, v = inout(reg) v, options(nostack))
                }
                2 => {
                    core::arch::asm!("ldrh {v:w}, [{a}]", a = in(reg) addr, v = inout(reg) v, options(nostack))
                }
                4 => {
                    core::arch::asm!("ldr {v:w}, [{a}]", a = in(reg) addr, v = inout(reg) v, options(nostack))
                }
                _ => {
                    core::arch::asm!("ldr {v}, [{a}]", a = in(reg) addr, v = inout(reg) v, options(nostack))
                }
            }
        }
        v
    });
    match fault {
        Some(esr) => Probe::Abort(esr),
        None => Probe::Value(v),
    }
}

/// One store of the low `width` bytes of `v` at `addr`; `Some(esr)` if it was refused.
pub fn write(addr: u64, width: u8, v: u64) -> Option<u64> {
    probe(|| {
        // SAFETY: a single store to an address the case chose; a refusal is an abort the vectors skip.
        unsafe {
            match width {
                1 => core::arch::asm!("strb {v:w}, [{a}]", a = in(reg) addr, v = in(reg) v, options(nostack)),
                2 => core::arch::asm!("strh {v:w}, [{a}]", a = in(reg) addr, v = in(reg) v, options(nostack)),
                4 => core::arch::asm!("str {v:w}, [{a}]", a = in(reg) addr, v = in(reg) v, options(nostack)),
                _ => core::arch::asm!("str {v}, [{a}]", a = in(reg) addr, v = in(reg) v, options(nostack)),
            }
        }
    })
    .1
}

pub fn cpu_on(cpu: usize, entry: u64) -> i64 {
    arch::hvc(PSCI_CPU_ON, cfg().mpidr[cpu], entry, cpu as u64) as i64
}

pub fn affinity_info(cpu: usize) -> i64 {
    arch::hvc(PSCI_AFFINITY_INFO, cfg().mpidr[cpu], 0, 0) as i64
}

pub fn cpu_off() -> ! {
    arch::hvc(PSCI_CPU_OFF, 0, 0, 0);
    println!("UNEXPECTED: CPU_OFF returned on vCPU {}", cpu_index());
    UNEXPECTED.fetch_add(1, Ordering::AcqRel);
    loop {
        arch::wfi();
    }
}

pub fn system_off() -> ! {
    arch::hvc(PSCI_SYSTEM_OFF, 0, 0, 0);
    loop {
        arch::wfi();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("HOSTILE-PANIC on vCPU {}: {}", cpu_index(), info);
    system_off()
}
