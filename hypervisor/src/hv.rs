//! Boot of the hypervisor and Dom0 on the boot CPU, and bring-up of the others.

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU8, Ordering};

use rpixen_hv_core::addr::{GuestPhysAddr, PhysAddr};
use rpixen_hv_core::conmux::InputFocus;
use rpixen_hv_core::cpus::{CpuMap, MAX_CPUS};
use rpixen_hv_core::dom0dt::{self, Dom0DtConfig};
use rpixen_hv_core::fdtr as fdt;
use rpixen_hv_core::gicv2::{SPI_BASE, VTIMER_INTID};
use rpixen_hv_core::hostdt::{self, HostInfo, UartKind};
use rpixen_hv_core::placement::{self, SZ_2M};
use rpixen_hv_core::psci::Vcpus;
use rpixen_hv_core::sp805::{self, Sp805};
use rpixen_hv_core::vgicd::Distributor;
use rpixen_hv_core::virq::SgiMailbox;
use rpixen_hv_core::{cmdline, dom0less, dt, guard, pagetable, partition, stage2, Region};

use crate::arch::entry::{self, HV_CPU_MPIDR};
use crate::arch::{self, mrs, msr};
use crate::console::{self, hex, hvprintln, Arg, Line, Uart};
use crate::gic::Gic;
use crate::mmio::Mmio;
use crate::platform::{self, Power};
use crate::state::{self, Domain, Hv};
use crate::{domu, mm, vcpu, watchdog};

/// HCR_EL2 for a guest: RW | TSC | BSU inner | FB | AMO | IMO | FMO | SWIO | VM (no WFI/WFE traps:
/// each vCPU owns its pCPU).
const HCR_EL2: u64 =
    (1 << 31) | (1 << 19) | (1 << 10) | (1 << 9) | (1 << 5) | (1 << 4) | (1 << 3) | (1 << 1) | 1;
const DOM0_VMID: u16 = 1;
/// RAM the hypervisor takes at boot for its heap (Dom0's device tree) and stage-2 tables.
const HV_ARENA: u64 = 8 << 20;

fn fail(fmt: &str, args: &[Arg<'_>]) -> ! {
    Line::new().put(b"hv: FATAL: ").format(fmt, args).emit();
    platform::halt_forever()
}

macro_rules! fatal {
    ($fmt:literal $(, $a:expr)* $(,)?) => { fail($fmt, &[$(Arg::from($a)),*]) };
}

fn uart_of(u: &hostdt::Uart) -> Uart {
    // SAFETY: the console UART's registers (one page from its DT `reg`), mapped Device (the early map
    // and the final EL2 map make every non-RAM address Device); only the console driver uses it.
    let m = unsafe { Mmio::new(PhysAddr(u.base), 0x100) };
    match u.kind {
        UartKind::Pl011 => Uart::Pl011(m),
        UartKind::MiniUart => Uart::Mini(m),
    }
}

/// An MMIO block from the host DT.
fn device(r: Region) -> Mmio {
    // SAFETY: a device range from the host DT's `reg` (GIC frames, the PM block), not RAM; the EL2 map
    // makes every non-RAM address Device, and only the hypervisor (never a guest) has it mapped.
    unsafe { Mmio::new(PhysAddr(r.base), r.size) }
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
    let blob: &'static [u8] = unsafe { core::slice::from_raw_parts(dtb_pa as *const u8, total) };
    let Ok(fdt) = fdt::Fdt::new(blob) else { platform::halt_forever() };
    let info = hostdt::parse(&fdt);
    let hv_args = info.as_ref().map(|i| i.hv_bootargs).unwrap_or("");
    let args = cmdline::parse(hv_args).unwrap_or_default();
    let uart_name =
        args.dtuart.or(info.as_ref().ok().and_then(|i| i.stdout_path)).unwrap_or("serial0");
    let hv_uart = hostdt::find_uart(&fdt, uart_name);
    if let (Some(u), false) = (&hv_uart, args.console_none) {
        console::set_uart(uart_of(u));
    }
    hvprintln!(
        "hv: rpixen hypervisor, EL2 entry x0={} CurrentEL={} load={} size={}",
        hex(dtb_pa),
        (mrs!("currentel") >> 2) & 3,
        hex(load),
        hex(img_end - img_start)
    );
    let info = match info {
        Ok(i) => i,
        Err(e) => fatal!("host device tree: {}", e.message()),
    };
    if let Err(e) = cmdline::parse(hv_args) {
        fatal!("command line \"{}\": {}", hv_args, e.message());
    }
    hvprintln!("hv: cmdline \"{}\"", hv_args);
    match &hv_uart {
        Some(u) => hvprintln!(
            "hv: console {} ({} at {}){}",
            &u.path,
            u.kind.name(),
            hex(u.base),
            if args.sync_console { ", sync" } else { "" }
        ),
        None => fatal!("no console UART for dtuart={}", uart_name),
    }
    for r in &info.ram {
        hvprintln!("hv: RAM {}-{}", hex(r.base), hex(r.end() - 1));
    }
    let g = info.gic;
    hvprintln!(
        "hv: GICv2 GICD {} GICC {} GICH {} GICV {} maintenance INTID {}",
        hex(g.dist.base),
        hex(g.cpu.base),
        hex(g.hyp.base),
        hex(g.vcpu.base),
        g.maint_intid
    );

    if args.selftest_el2_fault {
        hvprintln!("hv: selftest: reading VA 1 TiB, outside the EL2 map");
        // SAFETY: deliberately faults (translation fault at EL2); the vector reports and halts.
        let v = unsafe { core::ptr::read_volatile((1u64 << 40) as *const u64) };
        hvprintln!("hv: selftest: read {}, no fault?", hex(v));
    }
    let s1 = match mm::el2_map(&info.ram, entry::image_sections()) {
        Ok(r) => r,
        Err(e) => fatal!("EL2 page tables: {}", e.message()),
    };
    mm::switch_tables(s1);
    hvprintln!("hv: mmu on");

    console::set_rate_limit(mrs!("cntfrq_el0"));

    // CPU indexes: positions of the DT's CPUs (by MPIDR affinity), at most MAX_CPUS.
    let mpidrs: Vec<u64> = info.cpus.iter().map(|c| c.mpidr).collect();
    let (cpus, ignored) = CpuMap::from_dt(&mpidrs);
    if ignored.count > 0 {
        hvprintln!(
            "hv: {} cpus of the device tree ignored (from MPIDR {}): at most {} supported",
            ignored.count,
            hex(ignored.first_mpidr.unwrap_or(0)),
            MAX_CPUS
        );
    }
    let Some(me) = cpus.index_of(mrs!("mpidr_el1")) else {
        fatal!("boot CPU MPIDR {} is not in the device tree's /cpus", hex(mrs!("mpidr_el1")))
    };
    arch::set_cpu_index(me);
    for (i, slot) in HV_CPU_MPIDR.iter().enumerate() {
        slot.store(cpus.mpidr(i).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
    // Static DomUs (Xen's dom0less /chosen nodes): each vCPU pinned to a CPU of its own, the highest
    // first; Dom0 keeps the boot CPU and the rest (up to dom0_max_vcpus).
    let specs = match dom0less::parse(&fdt) {
        Ok(s) => s,
        Err(e) => fatal!("domain {}: {}: {}", &e.node, e.property, e.problem),
    };
    let (dom0_pcpus, domu_pcpus) =
        match partition::plan_cpus(&specs, cpus.len(), me, args.dom0_max_vcpus) {
            Ok(p) => p,
            Err(e) => fatal!("domain {}: {}", e.domain(), e.message()),
        };
    let nr_vcpus = dom0_pcpus.len();
    let mut dom0_mpidrs: Vec<u64> = Vec::new();
    for &p in &dom0_pcpus {
        dom0_mpidrs.extend(cpus.mpidr(p));
    }
    let roles = partition::cpu_roles(&dom0_pcpus, &domu_pcpus);
    // DomU modules stay where U-Boot loaded them, as pristine copies for restarts: never Dom0's. Nor
    // is the host DTB then: the DomUs' names, printed for as long as they run, are its strings.
    let mut domu_files: Vec<Region> = Vec::new();
    for s in &specs {
        domu_files.push(s.kernel);
        domu_files.extend(s.ramdisk);
        domu_files.extend(&s.static_mem);
    }
    if !specs.is_empty() {
        domu_files.push(Region::new(dtb_pa, total as u64));
    }

    let gic = Gic::probe(device(g.dist), device(g.cpu), device(g.hyp));
    gic.dist_init(gic.own_target_mask());
    hvprintln!("hv: gicv2 lines={} lrs={}", gic.lines, gic.nr_lrs);

    // Power-off and reset: PSCI firmware, else the BCM2835 PM watchdog (the Pi).
    let pm: Option<Region> = if info.psci_method.is_some() {
        None
    } else {
        let mut path = None;
        dt::walk(&fdt, |p, node| {
            if path.is_none()
                && dt::is_compatible(
                    node,
                    &["brcm,bcm2711-pm", "brcm,bcm2835-pm-wdt", "brcm,bcm2835-pm"],
                )
            {
                path = Some(String::from(p));
            }
        });
        path.and_then(|p| dt::reg_phys(&fdt, &p)?.first().copied())
    };
    let power = match (info.psci_method.is_some(), pm) {
        (true, _) => Power::PsciSmc,
        (false, Some(r)) => Power::PmWatchdog(device(r)),
        (false, None) => Power::None,
    };

    // Dom0's console: an emulated PL011 at the board's first PL011 (virt: the HV's own UART).
    let vuart = hostdt::first_pl011(&fdt).unwrap_or_else(|| fatal!("no PL011 for Dom0's console"));
    let hv_uart = hv_uart.as_ref().unwrap_or_else(|| fatal!("no console UART"));
    // Dom0's watchdog: the board's free page, unless the host tree uses it after all.
    let wdog = sp805::dom0_page_in(&fdt, &info.ram);
    match wdog {
        Some(b) => hvprintln!(
            "hv: dom0 watchdog: virtual SP805 at {}{}",
            hex(b),
            if args.dom0_watchdog_secs.is_some() {
                ", running from boot (dom0_watchdog=)"
            } else {
                ""
            }
        ),
        None => hvprintln!("hv: dom0 watchdog: none (no free page known on this board)"),
    }
    let dom0 = build_dom0(
        &fdt,
        blob,
        Region::new(dtb_pa, total as u64),
        &info,
        &args,
        (img_start, img_end),
        hv_uart,
        &vuart,
        &dom0_mpidrs,
        wdog,
        &domu_files,
    );

    // Pages Dom0 shares with the hypervisor (the Pi's GPIO and PM blocks): trapped, guarded.
    let guarded = guard::guarded_pages(&fdt, &hv_uart.path, pm);
    for p in &guarded {
        hvprintln!("hv: dom0 page {} trapped: {} kept by the hypervisor", hex(p.base), p.what);
    }
    // Stage 2: Dom0 RAM, all non-RAM except the GIC frames, the UART pages and the guarded pages;
    // GICV at GICC.
    let mut traps = Vec::from([
        g.dist,
        g.cpu,
        g.hyp,
        g.vcpu,
        Region::new(vuart.base, 0x1000),
        Region::new(hv_uart.base, 0x1000),
    ]);
    traps.extend(wdog.map(|b| Region::new(b, sp805::SIZE)));
    let mut guarded_mmio: Vec<(guard::GuardedPage, Mmio)> = Vec::new();
    for p in guarded {
        let page = Region::new(p.base, 0x1000);
        traps.push(page);
        guarded_mmio.push((p, device(page)));
    }
    let guarded = guarded_mmio;
    let gicv_size = g.cpu.size.min(g.vcpu.size) & !0xFFF;
    let plan = stage2::dom0(&[dom0.mem], &info.ram, &traps, (g.cpu.base, g.vcpu.base, gicv_size));
    let (s2, used) = match mm::stage2_map(&plan) {
        Ok(r) => r,
        Err(e) => fatal!("stage-2 tables: {}", e.message()),
    };
    hvprintln!(
        "hv: stage-2 ready: 40-bit IPA, {} tables, GICV {} at IPA {}",
        used,
        hex(g.vcpu.base),
        hex(g.cpu.base)
    );

    // Dom0's distributor: every SPI is Dom0's except the hypervisor's UART (polled) and the line of
    // the emulated console (virtual only); of the PPIs, its virtual timer.
    let mut dist = Distributor::new(nr_vcpus, gic.lines, gic.iidr());
    for id in SPI_BASE..gic.lines {
        if Some(id) != hv_uart.intid && Some(id) != vuart.intid {
            dist.own(id);
        }
    }
    dist.own(VTIMER_INTID);

    // The DomUs' RAM: exactly `xen,static-mem`, or else free RAM clear of everything above.
    let mut busy = Vec::from([
        Region::new(0, 0x1000),
        Region::new(img_start, img_end - img_start),
        Region::new(dtb_pa, total as u64),
        dom0.mem,
        dom0.arena,
    ]);
    busy.extend(info.kernel.as_ref().map(|m| m.region));
    busy.extend(info.ramdisk.as_ref().map(|m| m.region));
    busy.extend(&info.memreserve);
    busy.extend(&info.nomap);
    let domus = build_domus(&fdt, &info, &specs, domu_pcpus, busy, g.vcpu.base, gic.iidr());
    let nr_domains = domus.len() as u32 + 1;

    let hv = state::install(Hv {
        gic,
        maint_intid: g.maint_intid,
        cpus,
        if_mask: [const { AtomicU8::new(0) }; MAX_CPUS],
        power,
        s1_root: s1,
        dom0: Domain {
            id: 0,
            name: "dom0",
            vmid: DOM0_VMID,
            s2_root: s2,
            ram: Vec::from([dom0.mem]),
            nr_vcpus,
            pcpus: dom0_pcpus,
            vcpu_mpidrs: dom0_mpidrs,
            dist: spin::Mutex::new(dist),
            gicd: (GuestPhysAddr(g.dist.base), g.dist.size),
            vcpus: Vcpus::new(),
            vuart: GuestPhysAddr(vuart.base & !0xFFF),
            vuart_intid: vuart.intid,
            guarded,
            watchdog: wdog.map(|b| {
                let wd = match args.dom0_watchdog_secs {
                    Some(s) => Sp805::started(s, mrs!("cntfrq_el0"), mrs!("cntpct_el0")),
                    None => Sp805::new(),
                };
                (GuestPhysAddr(b), spin::Mutex::new(wd))
            }),
            domu: None,
        },
        domus,
        roles,
        focus: spin::Mutex::new(InputFocus::new(nr_domains)),
        sgis: SgiMailbox::new(),
        percpu: Hv::new_percpu(),
    });
    cpu_init(hv, me);
    watchdog::check(hv); // arms the boot CPU's timer when dom0_watchdog= started it

    // Secondaries run with caches off until their MMU is on: everything they read must be at PoC.
    arch::flush_dcache_range(img_start, img_end - img_start);
    for (i, c) in info.cpus.iter().enumerate() {
        match hv.cpus.index_of(c.mpidr) {
            Some(idx) if idx != me && hv.roles[idx].is_some() => {}
            _ => continue,
        }
        if !platform::start_cpu(c.mpidr, c.method) {
            hvprintln!("hv: cpu{} ({}) did not start ({})", i, hex(c.mpidr), c.method.name());
        }
    }
    let start = mrs!("cntpct_el0");
    let freq = mrs!("cntfrq_el0");
    let (_, me_v) = hv.on(me);
    let vcpus = &hv.dom0.vcpus;
    while (0..nr_vcpus).any(|i| i != me_v && !vcpus.is_up(i))
        && mrs!("cntpct_el0") - start < 2 * freq
    {}
    let up = (0..nr_vcpus).filter(|&i| i == me_v || vcpus.is_up(i)).count();
    hvprintln!(
        "hv: {} of {} cpus in the hypervisor; entering dom0 at EL1 (entry {}, dtb {})",
        up,
        nr_vcpus,
        hex(dom0.entry),
        hex(dom0.dtb)
    );
    vcpus.set_on(me_v);
    entry::enter_guest(dom0.entry, dom0.dtb, me)
}

struct Dom0 {
    mem: Region,
    /// The hypervisor's heap and tables.
    arena: Region,
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
    vcpu_mpidrs: &[u64],
    watchdog: Option<u64>,
    domu_files: &[Region],
) -> Dom0 {
    let Some(kernel) = &info.kernel else {
        fatal!("no Dom0 kernel: /chosen has no multiboot,kernel module")
    };
    // SAFETY: the module range comes from /chosen and lies in RAM (mapped Normal); 64 bytes of header.
    let khdr = unsafe { core::slice::from_raw_parts(kernel.region.base as *const u8, 64) };
    let rd64 = |o: usize| u64::from_le_bytes(khdr[o..o + 8].try_into().unwrap_or([0; 8]));
    if khdr[56..60] != *b"ARM\x64" {
        fatal!(
            "Dom0 kernel at {} is not an arm64 Image (no ARM\\x64 magic)",
            hex(kernel.region.base)
        );
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
    busy.extend(domu_files);
    // Boards whose DMA masters see only the first GiB (Pi 4: legacy peripherals, dma-ranges 0-1 GiB).
    let limit =
        if fdt.root().compatible().all().any(|c| c == "brcm,bcm2711") { 1 << 30 } else { u64::MAX };
    let initrd_module = info.ramdisk.as_ref().map(|r| r.region);
    let in_place = placement::layout_in_place(
        &info.ram,
        &busy,
        kernel.region,
        text_offset,
        image_size,
        initrd_module,
        size,
        limit,
    );
    let (mem, layout) = match in_place {
        Some(p) => p,
        None => {
            // Copy everything: Dom0 memory must then avoid the modules and the host DTB as well.
            busy.extend([host_dtb, kernel.region]);
            busy.extend(initrd_module);
            let Some(mem) = placement::place_dom0(&info.ram, &busy, size, limit, SZ_2M) else {
                for b in &busy {
                    hvprintln!("hv: in use: {}-{}", hex(b.base), hex(b.end()));
                }
                fatal!("no {} bytes of free RAM for Dom0 below {}", hex(size), hex(limit))
            };
            match placement::layout(
                mem,
                text_offset,
                image_size,
                SZ_2M,
                initrd_module.map(|r| r.size),
            ) {
                Ok(l) => (mem, l),
                // LayoutError has one variant, TooSmall.
                Err(_) => {
                    fatal!("dom0_mem={} too small for the kernel, DTB and initrd", hex(size))
                }
            }
        }
    };
    let copied = in_place.is_none();

    // The hypervisor's own memory beyond its Image: free RAM clear of Dom0, the boot files and reserved
    // ranges (the highest such range; any RAM will do, DMA limits do not apply).
    busy.extend([mem, host_dtb, kernel.region]);
    busy.extend(initrd_module);
    let Some(arena) = placement::place_dom0(&info.ram, &busy, HV_ARENA, u64::MAX, SZ_2M) else {
        fatal!("no {} bytes of free RAM for the hypervisor's heap and tables", hex(HV_ARENA))
    };
    let boot_heap = crate::heap::used();
    // SAFETY: `arena` is RAM (mapped Normal by the EL2 map), overlaps nothing in use (image, DTB,
    // modules, reserved memory, Dom0), is never mapped for a guest, and no other CPU runs yet.
    unsafe { crate::heap::add_arena(arena.base, arena.size) };
    hvprintln!(
        "hv: hypervisor memory {}-{} (heap, stage-2 tables; {} KiB of the boot heap used)",
        hex(arena.base),
        hex(arena.end() - 1),
        boot_heap >> 10
    );

    let disable = guard::hypervisor_nodes(fdt, hv_uart.base, vuart.base);
    let disable_refs: Vec<&str> = disable.iter().map(String::as_str).collect();
    let bootargs = info.dom0_bootargs;
    let cfg = Dom0DtConfig {
        memory: &[mem],
        bootargs,
        initrd: layout.initrd,
        disable: &disable_refs,
        stdout_path: Some(&vuart.path),
        cpus: Some(vcpu_mpidrs),
        watchdog: watchdog
            .map(|base| dom0dt::WatchdogNode { base, clock_hz: mrs!("cntfrq_el0") as u32 }),
    };
    let dtb = match dom0dt::build(blob, &cfg) {
        Ok(d) => d,
        Err(dom0dt::Dom0DtError::BadHostBlob) => {
            fatal!("Dom0 device tree: the host device tree is not valid")
        }
        Err(dom0dt::Dom0DtError::Writer(step)) => {
            fatal!("Dom0 device tree: writing failed at {}", step)
        }
    };
    if dtb.len() as u64 > SZ_2M {
        fatal!("Dom0 device tree is {} bytes, more than 2 MiB", dtb.len());
    }
    // SAFETY: all destinations lie in Dom0's RAM, which is mapped Normal at EL2 and overlaps none of the
    // sources (they are in `busy`; the DTB is on the heap). Non-overlapping copies: `ptr::copy` would
    // link compiler_builtins' memmove (1 KiB).
    unsafe {
        if copied {
            core::ptr::copy_nonoverlapping(
                kernel.region.base as *const u8,
                layout.kernel.base as *mut u8,
                kernel.region.size as usize,
            );
            if let (Some(rd), Some(dst)) = (&info.ramdisk, layout.initrd) {
                core::ptr::copy_nonoverlapping(
                    rd.region.base as *const u8,
                    dst.base as *mut u8,
                    rd.region.size as usize,
                );
            }
        }
        core::ptr::copy_nonoverlapping(dtb.as_ptr(), layout.dtb.base as *mut u8, dtb.len());
    }
    arch::clean_dcache_range(layout.kernel.base, kernel.region.size);
    arch::clean_dcache_range(layout.dtb.base, dtb.len() as u64);
    if let Some(r) = layout.initrd {
        arch::clean_dcache_range(r.base, r.size);
    }
    arch::invalidate_icache();
    hvprintln!(
        "hv: dom0 memory {}-{} ({} MiB){}",
        hex(mem.base),
        hex(mem.end() - 1),
        mem.size >> 20,
        if limit != u64::MAX { ", below 1 GiB for DMA" } else { "" }
    );
    hvprintln!(
        "hv: dom0 kernel {} ({} bytes, {}), dtb {} ({} bytes)",
        hex(layout.kernel.base),
        kernel.region.size,
        if copied { "copied" } else { "in place" },
        hex(layout.dtb.base),
        dtb.len()
    );
    if let Some(r) = layout.initrd {
        hvprintln!("hv: dom0 initrd {}-{}", hex(r.base), hex(r.end()));
    }
    hvprintln!(
        "hv: dom0 bootargs \"{}\"; console: emulated PL011 at {} ({}), relayed line by line",
        bootargs,
        hex(vuart.base),
        &vuart.path
    );
    for d in &disable {
        hvprintln!("hv: dom0 device tree: {} disabled (hypervisor's)", d);
    }
    Dom0 { mem, arena, entry: layout.kernel.base, dtb: layout.dtb.base }
}

/// Every DomU, from its `/chosen` node and the partition's CPUs; RAM clear of `busy`. Not inlined:
/// its temporaries (a `Domain` is several KiB) would otherwise sit in `hv_primary_main`'s frame on
/// the 16 KiB boot stack.
#[inline(never)]
fn build_domus(
    fdt: &fdt::Fdt<'static>,
    info: &HostInfo<'_>,
    specs: &[dom0less::DomainSpec<'static>],
    pcpus: Vec<Vec<usize>>,
    mut busy: Vec<Region>,
    gicv: u64,
    iidr: u32,
) -> Vec<Domain> {
    for s in specs {
        busy.push(s.kernel);
        busy.extend(s.ramdisk);
    }
    let domu_ram = match partition::plan_memory(specs, &info.ram, &busy) {
        Ok(r) => r,
        Err(e) => fatal!("domain {}: {}", e.domain(), e.message()),
    };
    // What DomU trees copy from the host's: the first CPU's `compatible`, the timer's frequency.
    let (mut cpu_compatible, mut timer_clock_frequency): (&[u8], _) = (b"", None);
    dt::walk(fdt, |path, n| {
        if dt::parent_path(path) == "/cpus" && cpu_compatible.is_empty() {
            cpu_compatible = n.property("compatible").map_or(&b""[..], |p| p.value);
        } else if dt::is_compatible(n, &["arm,armv8-timer"]) {
            timer_clock_frequency =
                n.property("clock-frequency").and_then(|p| dt::u32s(p.value).next());
        }
    });
    let host = domu::HostFacts { gicv, iidr, cpu_compatible, timer_clock_frequency };
    let mut domus = Vec::new();
    for (i, (spec, (pcpus, ram))) in specs.iter().zip(pcpus.into_iter().zip(&domu_ram)).enumerate()
    {
        match domu::build(i as u32 + 1, spec, pcpus, ram, &host) {
            Ok(d) => {
                domu::describe(&d);
                domus.push(d);
            }
            Err(e) => fatal!("domain {}: {}", spec.name, e.message()),
        }
    }
    domus
}

/// Per-CPU EL2 state for running its domain's vCPU on this CPU.
fn cpu_init(hv: &Hv, cpu: usize) {
    let (dom, v) = hv.on(cpu);
    hv.if_mask[cpu].store(hv.gic.own_target_mask(), Ordering::Release);
    // The maintenance and hypervisor-timer PPIs: the guest's timer PPI is enabled when the guest
    // enables it.
    hv.gic.cpu_init(1 << hv.maint_intid | 1 << watchdog::HYP_TIMER_INTID);
    msr!("cnthp_ctl_el2", 0); // UNKNOWN after reset; armed by Dom0's watchdog writes only
    msr!("hcr_el2", HCR_EL2);
    msr!("cnthctl_el2", 3); // EL1 physical counter and timer accessible
    msr!("cntvoff_el2", 0);
    msr!("vpidr_el2", mrs!("midr_el1"));
    // Dom0 sees the host's MPIDRs, a DomU Xen's vCPU affinities (bit 31 is RES1).
    let vmpidr = match dom.domu {
        None => mrs!("mpidr_el1"),
        Some(_) => (1 << 31) | dom.vcpu_mpidrs.get(v).copied().unwrap_or(0),
    };
    msr!("vmpidr_el2", vmpidr);
    msr!("cptr_el2", 0x33FF);
    msr!("hstr_el2", 0);
    msr!("mdcr_el2", (mrs!("pmcr_el0") >> 11) & 0x1F);
    msr!("sctlr_el1", arch::SCTLR_EL1);
    msr!("vtcr_el2", pagetable::VTCR_EL2);
    msr!("vttbr_el2", dom.s2_root | (u64::from(dom.vmid) << 48));
    arch::isb();
    arch::tlbi_alle1();
}

#[no_mangle]
extern "C" fn hv_secondary_main(cpu: usize) -> ! {
    let hv = state::get();
    mm::enable_mmu(hv.s1_root);
    cpu_init(hv, cpu);
    hvprintln!("hv: cpu{} up mpidr={}", cpu, hex(mrs!("mpidr_el1")));
    match hv.on(cpu) {
        (d, 0) if d.domu.is_some() => vcpu::start_domu(hv, cpu),
        _ => vcpu::park(hv, cpu),
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    // Only static messages and the location: formatting a panic's arguments would link `core::fmt`.
    let mut line = Line::new();
    line.put(b"hv: PANIC: ")
        .put(info.message().as_str().unwrap_or("(formatted message)").as_bytes());
    if let Some(l) = info.location() {
        line.format(" at {}:{}", &[l.file().into(), l.line().into()]);
    }
    line.emit();
    platform::halt_forever()
}
