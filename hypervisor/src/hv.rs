//! Boot of the hypervisor and Dom0 on the boot CPU, bring-up of the others, and the global state
//! they share.

use alloc::string::String;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::sync::atomic::Ordering;

use rpixen_hypervisor::dom0dt::{self, Dom0DtConfig};
use rpixen_hypervisor::hostdt::{self, HostInfo, UartKind};
use rpixen_hypervisor::placement::{self, SZ_2M};
use rpixen_hypervisor::psci::PowerState;
use rpixen_hypervisor::vuart::{LineBuffer, Pl011};
use rpixen_hypervisor::{cmdline, dt, pagetable, Region};

use crate::arch::entry::{self, Frame};
use crate::arch::{self, mrs, msr};
use crate::console::{self, hvprintln, Uart};
use crate::gic::Gic;
use crate::platform::{self, Power};
use crate::{mm, trap, vcpu, virq};

pub const MAX_CPUS: usize = 8;
pub const STACK_SIZE: usize = 0x4000;

/// HCR_EL2 for Dom0: RW | TSC | BSU inner | FB | AMO | IMO | FMO | SWIO | VM (no WFI/WFE traps: each
/// vCPU owns its pCPU).
const HCR_EL2: u64 = (1 << 31) | (1 << 19) | (1 << 10) | (1 << 9) | (1 << 5) | (1 << 4) | (1 << 3) | (1 << 1) | 1;
/// SCTLR_EL1 at Dom0 entry: RES1 bits, MMU and caches off.
const SCTLR_EL1: u64 = 0x30D0_0800;
const VMID: u64 = 1;

/// What every CPU needs after boot; written once by the boot CPU before the others start.
pub struct Hv {
    pub gic: Gic,
    pub gicd: u64,
    pub vuart: u64,
    /// The emulated PL011's interrupt (its SPI in the DT).
    pub vuart_intid: Option<u32>,
    pub maint_intid: u32,
    pub cpus: Vec<u64>,
    pub nr_cpus: usize,
    pub power: Power,
    pub s1_root: u64,
    pub s2_root: u64,
}

struct HvCell(UnsafeCell<Option<Hv>>);
// SAFETY: set once by the boot CPU before secondaries start and before Dom0 runs; read-only after.
unsafe impl Sync for HvCell {}
static HV: HvCell = HvCell(UnsafeCell::new(None));

pub fn hv() -> &'static Hv {
    // SAFETY: see HvCell; every caller runs after `hv_primary_main` stored it.
    unsafe { (*HV.0.get()).as_ref().expect("hypervisor state initialised") }
}

/// Dom0's console device, its output line buffer, and when Dom0 last wrote (counter ticks).
pub struct VuartState {
    pub uart: Pl011,
    pub line: LineBuffer<512>,
    pub last_tx: u64,
}

pub static VUART: spin::Mutex<VuartState> = spin::Mutex::new(VuartState { uart: Pl011::new(), line: LineBuffer::new(), last_tx: 0 });

fn fail(what: core::fmt::Arguments<'_>) -> ! {
    hvprintln!("hv: FATAL: {}", what);
    platform::halt_forever()
}

macro_rules! fatal {
    ($($t:tt)*) => { fail(format_args!($($t)*)) };
}

fn uart_of(u: &hostdt::Uart) -> Uart {
    match u.kind {
        UartKind::Pl011 => Uart::Pl011(u.base),
        UartKind::MiniUart => Uart::Mini(u.base),
    }
}

#[no_mangle]
extern "C" fn hv_primary_main(dtb_pa: u64, load: u64) -> ! {
    let (img_start, img_end) = entry::image_range();
    // SAFETY: booti/QEMU pass the FDT address in x0; the header is 40 bytes.
    let hdr = unsafe { core::slice::from_raw_parts(dtb_pa as *const u8, 40) };
    if hdr[..4] != [0xd0, 0x0d, 0xfe, 0xed] {
        platform::halt_forever(); // no device tree: no console either
    }
    let total = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) as usize;
    mm::enable_mmu(mm::early_map(&[img_start, dtb_pa]));
    console::enable_locking();
    // SAFETY: the whole blob, as its header states; it stays untouched (reserved below).
    let raw: &'static [u8] = unsafe { core::slice::from_raw_parts(dtb_pa as *const u8, total) };
    let Ok(clean) = dt::strip_nops(raw) else { platform::halt_forever() };
    let blob: &'static [u8] = clean.leak();
    let Ok(fdt) = fdt::Fdt::new(blob) else { platform::halt_forever() };
    let info = hostdt::parse(&fdt);
    let hv_args = info.as_ref().map(|i| i.hv_bootargs).unwrap_or("");
    let args = cmdline::parse(hv_args).unwrap_or_default();
    let uart_name = args.dtuart.or(info.as_ref().ok().and_then(|i| i.stdout_path)).unwrap_or("serial0");
    let hv_uart = hostdt::find_uart(&fdt, uart_name);
    if let (Some(u), false) = (&hv_uart, args.console_none) {
        console::set_uart(uart_of(u));
    }
    hvprintln!(
        "hv: rpixen hypervisor, EL2 entry x0={:#x} CurrentEL={} load={:#x} size={:#x}",
        dtb_pa,
        (mrs!("currentel") >> 2) & 3,
        load,
        img_end - img_start
    );
    let info = match info {
        Ok(i) => i,
        Err(e) => fatal!("host device tree: {:?}", e),
    };
    if let Err(e) = cmdline::parse(hv_args) {
        fatal!("command line {:?}: {:?}", hv_args, e);
    }
    hvprintln!("hv: cmdline \"{}\"", hv_args);
    match &hv_uart {
        Some(u) => hvprintln!("hv: console {} ({:?} at {:#x}){}", u.path, u.kind, u.base, if args.sync_console { ", sync" } else { "" }),
        None => fatal!("no console UART for dtuart={}", uart_name),
    }
    for r in &info.ram {
        hvprintln!("hv: RAM {:#x}-{:#x}", r.base, r.end() - 1);
    }
    let g = info.gic;
    hvprintln!(
        "hv: GICv2 GICD {:#x} GICC {:#x} GICH {:#x} GICV {:#x} maintenance INTID {}",
        g.dist.base,
        g.cpu.base,
        g.hyp.base,
        g.vcpu.base,
        g.maint_intid
    );

    if args.selftest_el2_fault {
        hvprintln!("hv: selftest: reading VA 1 TiB, outside the EL2 map");
        // SAFETY: deliberately faults (translation fault at EL2); the vector reports and halts.
        let v = unsafe { core::ptr::read_volatile((1u64 << 40) as *const u64) };
        hvprintln!("hv: selftest: read {:#x}, no fault?", v);
    }
    let s1 = match mm::el2_map(&info.ram) {
        Ok(r) => r,
        Err(e) => fatal!("EL2 page tables: {:?}", e),
    };
    mm::switch_tables(s1);
    hvprintln!("hv: mmu on");

    let gic = Gic::probe(g.dist.base, g.cpu.base, g.hyp.base);
    gic.dist_init();
    hvprintln!("hv: gicv2 lines={} lrs={}", gic.lines, gic.nr_lrs);

    let nr_cpus = info.cpus.len().min(MAX_CPUS).min(args.dom0_max_vcpus.unwrap_or(MAX_CPUS)).max(1);
    let power = if info.psci_method.is_some() {
        Power::PsciSmc
    } else {
        fdt.find_compatible(&["brcm,bcm2711-pm", "brcm,bcm2835-pm-wdt", "brcm,bcm2835-pm"])
            .and_then(|n| {
                let mut path = None;
                dt::walk(&fdt, |p, node| {
                    if path.is_none() && node.name == n.name {
                        path = Some(String::from(p));
                    }
                });
                dt::reg_phys(&fdt, &path?)?.first().map(|r| Power::PmWatchdog(r.base))
            })
            .unwrap_or(Power::None)
    };

    // Dom0's console: an emulated PL011 at the board's first PL011 (virt: the HV's own UART).
    let vuart = hostdt::first_pl011(&fdt).unwrap_or_else(|| fatal!("no PL011 for Dom0's console"));
    let hides_pm = matches!(power, Power::PmWatchdog(_));
    let dom0 = build_dom0(&fdt, blob, Region::new(dtb_pa, total as u64), &info, &args, (img_start, img_end), hv_uart.as_ref().unwrap(), &vuart, hides_pm);

    // Stage 2: Dom0 RAM, all non-RAM except the GIC's and the hypervisor's UART page; GICV at GICC.
    let mut holes: Vec<Region> = info.ram.clone();
    holes.extend([g.dist, g.cpu, g.hyp, g.vcpu].iter().map(|r| Region::new(r.base & !0xFFF, (r.size + 0xFFF) & !0xFFF)));
    holes.push(Region::new(vuart.base & !0xFFF, 0x1000));
    holes.push(Region::new(hv_uart.as_ref().unwrap().base & !0xFFF, 0x1000));
    let gicv_size = g.cpu.size.min(g.vcpu.size) & !0xFFF;
    let (s2, used) = match mm::stage2_map(&[dom0.mem], &holes, (g.cpu.base, g.vcpu.base, gicv_size)) {
        Ok(r) => r,
        Err(e) => fatal!("stage-2 tables: {:?}", e),
    };
    hvprintln!("hv: stage-2 ready: 40-bit IPA, {} tables, GICV {:#x} at IPA {:#x}", used, g.vcpu.base, g.cpu.base);

    let cpus: Vec<u64> = info.cpus.iter().map(|c| c.mpidr).collect();
    // SAFETY: see HvCell: no other CPU runs yet.
    unsafe {
        *HV.0.get() = Some(Hv {
            gic,
            gicd: g.dist.base,
            vuart: vuart.base & !0xFFF,
            vuart_intid: vuart.intid,
            maint_intid: g.maint_intid,
            cpus,
            nr_cpus,
            power,
            s1_root: s1,
            s2_root: s2,
        })
    };
    cpu_init();
    let me = arch::cpu_index();

    // Secondaries run with caches off until their MMU is on: everything they read must be at PoC.
    arch::flush_dcache_range(img_start, img_end - img_start);
    for (i, c) in info.cpus.iter().enumerate().take(nr_cpus) {
        if (c.mpidr & 0xFF) as usize == me {
            continue;
        }
        if !platform::start_cpu(c.mpidr, c.method) {
            hvprintln!("hv: cpu{} ({:#x}) did not start ({:?})", i, c.mpidr, c.method);
        }
    }
    let start = mrs!("cntpct_el0");
    let freq = mrs!("cntfrq_el0");
    while (0..nr_cpus).any(|i| i != me && !vcpu::UP[i].load(Ordering::Acquire)) && mrs!("cntpct_el0") - start < 2 * freq {}
    let up = (0..nr_cpus).filter(|&i| i == me || vcpu::UP[i].load(Ordering::Acquire)).count();
    hvprintln!("hv: {} of {} cpus in the hypervisor; entering dom0 at EL1 (entry {:#x}, dtb {:#x})", up, nr_cpus, dom0.entry, dom0.dtb);
    vcpu::STATE[me].store(PowerState::On as u8, Ordering::Release);
    entry::enter_guest(dom0.entry, dom0.dtb, me)
}

struct Dom0 {
    mem: Region,
    entry: u64,
    dtb: u64,
}

#[allow(clippy::too_many_arguments)] // the boot facts it combines; called once
fn build_dom0(
    fdt: &fdt::Fdt<'_>,
    blob: &[u8],
    host_dtb: Region,
    info: &HostInfo<'_>,
    args: &cmdline::HvArgs<'_>,
    image: (u64, u64),
    hv_uart: &hostdt::Uart,
    vuart: &hostdt::Uart,
    hides_pm: bool,
) -> Dom0 {
    let Some(kernel) = &info.kernel else { fatal!("no Dom0 kernel: /chosen has no multiboot,kernel module") };
    // SAFETY: the module range comes from /chosen and lies in RAM (mapped Normal); 64 bytes of header.
    let khdr = unsafe { core::slice::from_raw_parts(kernel.region.base as *const u8, 64) };
    let rd64 = |o: usize| u64::from_le_bytes(khdr[o..o + 8].try_into().unwrap_or([0; 8]));
    if khdr[56..60] != *b"ARM\x64" {
        fatal!("Dom0 kernel at {:#x} is not an arm64 Image (no ARM\\x64 magic)", kernel.region.base);
    }
    let (text_offset, image_size) = match rd64(16) {
        0 => (0x80000, 16 << 20),
        s => (rd64(8), s),
    };
    let size = args.dom0_mem.unwrap_or(512 << 20);
    // Never Dom0's: page 0 (the Pi's spin table), the hypervisor, reserved memory.
    let mut busy = Vec::from([Region::new(0, 0x1000), Region::new(image.0, image.1 - image.0)]);
    busy.extend(&info.memreserve);
    busy.extend(&info.nomap);
    // Boards whose DMA masters see only the first GiB (Pi 4: legacy peripherals, dma-ranges 0-1 GiB).
    let limit = if fdt.root().compatible().all().any(|c| c == "brcm,bcm2711") { 1 << 30 } else { u64::MAX };
    let initrd_module = info.ramdisk.as_ref().map(|r| r.region);
    let in_place = placement::layout_in_place(&info.ram, &busy, kernel.region, text_offset, image_size, initrd_module, size, limit);
    let (mem, layout) = match in_place {
        Some(p) => p,
        None => {
            // Copy everything: Dom0 memory must then avoid the modules and the host DTB as well.
            busy.extend([host_dtb, kernel.region]);
            busy.extend(initrd_module);
            let Some(mem) = placement::place_dom0(&info.ram, &busy, size, limit, SZ_2M) else {
                for b in &busy {
                    hvprintln!("hv: in use: {:#x}-{:#x}", b.base, b.end());
                }
                fatal!("no {:#x} bytes of free RAM for Dom0 below {:#x}", size, limit)
            };
            match placement::layout(mem, text_offset, image_size, SZ_2M, initrd_module.map(|r| r.size)) {
                Ok(l) => (mem, l),
                Err(e) => fatal!("dom0_mem={:#x} too small for the kernel, DTB and initrd: {:?}", size, e),
            }
        }
    };
    let copied = in_place.is_none();

    // Nodes sharing the hypervisor UART's page (the Pi's aux block and aux SPIs) and the PM block the
    // hypervisor resets with, unless that page is the emulated console itself.
    let mut disable: Vec<String> = Vec::new();
    let hv_page = hv_uart.base & !0xFFF;
    dt::walk(fdt, |path, node| {
        let regs = dt::reg_phys(fdt, path).unwrap_or_default();
        let shares_uart = hv_page != vuart.base & !0xFFF && regs.iter().any(|r| r.overlaps(&Region::new(hv_page, 0x1000)));
        let is_pm = dt::is_compatible(node, &["brcm,bcm2711-pm", "brcm,bcm2835-pm-wdt", "brcm,bcm2835-pm"]);
        if shares_uart || (is_pm && hides_pm) {
            disable.push(String::from(path));
        }
    });
    let disable_refs: Vec<&str> = disable.iter().map(String::as_str).collect();
    let bootargs = info.dom0_bootargs;
    let cfg = Dom0DtConfig {
        memory: &[mem],
        bootargs,
        initrd: layout.initrd,
        disable: &disable_refs,
        stdout_path: Some(&vuart.path),
    };
    let dtb = match dom0dt::build(blob, &cfg) {
        Ok(d) => d,
        Err(e) => fatal!("Dom0 device tree: {:?}", e),
    };
    if dtb.len() as u64 > SZ_2M {
        fatal!("Dom0 device tree is {} bytes, more than 2 MiB", dtb.len());
    }
    // SAFETY: all destinations lie in Dom0's RAM, which is mapped Normal at EL2 and overlaps none of the
    // sources (they are in `busy`).
    unsafe {
        if copied {
            core::ptr::copy(kernel.region.base as *const u8, layout.kernel.base as *mut u8, kernel.region.size as usize);
            if let (Some(rd), Some(dst)) = (&info.ramdisk, layout.initrd) {
                core::ptr::copy(rd.region.base as *const u8, dst.base as *mut u8, rd.region.size as usize);
            }
        }
        core::ptr::copy(dtb.as_ptr(), layout.dtb.base as *mut u8, dtb.len());
    }
    arch::clean_dcache_range(layout.kernel.base, kernel.region.size);
    arch::clean_dcache_range(layout.dtb.base, dtb.len() as u64);
    if let Some(r) = layout.initrd {
        arch::clean_dcache_range(r.base, r.size);
    }
    arch::invalidate_icache();
    hvprintln!("hv: dom0 memory {:#x}-{:#x} ({} MiB){}", mem.base, mem.end() - 1, mem.size >> 20, if limit != u64::MAX { ", below 1 GiB for DMA" } else { "" });
    hvprintln!(
        "hv: dom0 kernel {:#x} ({} bytes, {}), dtb {:#x} ({} bytes)",
        layout.kernel.base,
        kernel.region.size,
        if copied { "copied" } else { "in place" },
        layout.dtb.base,
        dtb.len()
    );
    if let Some(r) = layout.initrd {
        hvprintln!("hv: dom0 initrd {:#x}-{:#x}", r.base, r.end());
    }
    hvprintln!("hv: dom0 bootargs \"{}\"; console: emulated PL011 at {:#x} ({}), relayed line by line", bootargs, vuart.base, vuart.path);
    for d in &disable {
        hvprintln!("hv: dom0 device tree: {} disabled (hypervisor's)", d);
    }
    Dom0 { mem, entry: layout.kernel.base, dtb: layout.dtb.base }
}

/// EL1 as a vCPU must find it on (re)entry: MMU and caches off, no stale EL1 translations.
pub fn reset_el1() {
    msr!("sctlr_el1", SCTLR_EL1);
    arch::isb();
    arch::tlbi_vmalle1();
}

/// Per-CPU EL2 state for running Dom0's vCPU on this CPU.
fn cpu_init() {
    let h = hv();
    h.gic.cpu_init((1 << h.maint_intid) | (1 << virq::VTIMER_INTID));
    msr!("hcr_el2", HCR_EL2);
    msr!("cnthctl_el2", 3); // EL1 physical counter and timer accessible
    msr!("cntvoff_el2", 0);
    msr!("vpidr_el2", mrs!("midr_el1"));
    msr!("vmpidr_el2", mrs!("mpidr_el1"));
    msr!("cptr_el2", 0x33FF);
    msr!("hstr_el2", 0);
    msr!("mdcr_el2", (mrs!("pmcr_el0") >> 11) & 0x1F);
    msr!("sctlr_el1", SCTLR_EL1);
    msr!("vtcr_el2", pagetable::VTCR_EL2);
    msr!("vttbr_el2", h.s2_root | (VMID << 48));
    arch::isb();
    arch::tlbi_alle1();
}

#[no_mangle]
extern "C" fn hv_secondary_main(cpu: usize) -> ! {
    mm::enable_mmu(hv().s1_root);
    cpu_init();
    hvprintln!("hv: cpu{} up mpidr={:#x}", cpu, mrs!("mpidr_el1"));
    vcpu::park(cpu)
}

#[no_mangle]
extern "C" fn hv_trap(f: &mut Frame, kind: u64) {
    match kind {
        8 => trap::lower_sync(f),
        9 => virq::handle_irq(),
        11 => hvprintln!("hv: SError from dom0 ESR={:#x} ELR={:#x}", mrs!("esr_el2"), f.elr),
        _ => {
            let esr = mrs!("esr_el2");
            hvprintln!(
                "hv: PANIC: unexpected exception (vector {}) EC={:#x} ESR={:#x} FAR={:#x} ELR={:#x}",
                kind,
                esr >> 26,
                esr,
                mrs!("far_el2"),
                f.elr
            );
            platform::halt_forever()
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    hvprintln!("hv: PANIC: {}", info);
    platform::halt_forever()
}
