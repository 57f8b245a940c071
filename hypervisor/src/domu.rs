//! Static DomUs (Xen's dom0less `/chosen/<name>` nodes): building each domain at boot from the
//! core's plans (`partition`, `domudt`), loading it into its RAM from the pristine module copies
//! (at boot and on its own SYSTEM_RESET), and its console (vPL011 output as `(dN) ` lines, the
//! serial input routed by CTRL-a focus). The decisions are the core's; this module copies bytes
//! and reads the console.

use alloc::vec::Vec;

use rpixen_hv_core::addr::GuestPhysAddr;
use rpixen_hv_core::conmux::{Event, PrefixedLines};
use rpixen_hv_core::dom0less::DomainSpec;
use rpixen_hv_core::domudt::{self, DomuDtConfig};
use rpixen_hv_core::gicv2::VTIMER_INTID;
use rpixen_hv_core::guest;
use rpixen_hv_core::lifecycle::Lifecycle;
use rpixen_hv_core::partition::{DomuStage2, Mapping};
use rpixen_hv_core::placement::{self, SZ_2M};
use rpixen_hv_core::psci::Vcpus;
use rpixen_hv_core::vgicd::Distributor;
use rpixen_hv_core::vuart::Pl011;
use rpixen_hv_core::Region;

use crate::arch::{self, mrs};
use crate::console::{self, hex, hvprintln, Line};
use crate::state::{DomU, Domain, DomuBoot, DomuConsole, Hv};
use crate::{guest_console, mm};

/// The interrupt lines a DomU's distributor has: SGIs, PPIs and the first 32 SPIs (its vPL011 is
/// SPI 0); it owns no physical SPI.
const DOMU_LINES: u32 = 64;

/// What the boot CPU knows of the host that every DomU's tree copies.
pub struct HostFacts<'a> {
    pub gicv: u64,
    pub iidr: u32,
    pub cpu_compatible: &'a [u8],
    pub timer_clock_frequency: Option<u32>,
}

/// Why a DomU cannot be built: the boot stops with the domain's name and this.
pub enum BuildError {
    NotAnImage,
    DoesNotFit,
    DeviceTree,
    Stage2,
}

impl BuildError {
    pub fn message(&self) -> &'static str {
        match self {
            BuildError::NotAnImage => {
                "its kernel module is not an arm64 Image (no ARM\\x64 magic; a gzip'd vmlinuz must be unpacked)"
            }
            BuildError::DoesNotFit => "memory: too small for its kernel, device tree and initrd",
            BuildError::DeviceTree => "writing its device tree failed",
            BuildError::Stage2 => "no stage-2 tables left for it",
        }
    }
}

/// Domain `id` (1, 2, ...) from its `/chosen` node, on the physical CPUs and host RAM the partition
/// gave it. Not inlined, so its several-KiB temporaries leave the boot stack when it returns.
#[inline(never)]
pub fn build(
    id: u32,
    spec: &DomainSpec<'static>,
    pcpus: Vec<usize>,
    ram: &[Mapping],
    host: &HostFacts<'_>,
) -> Result<Domain, BuildError> {
    // SAFETY: the module lies in host RAM (mapped Normal at EL2); 64 bytes of the header.
    let hdr = unsafe { core::slice::from_raw_parts(spec.kernel.base as *const u8, 64) };
    let (text_offset, image_size) = placement::arm64_header(hdr).ok_or(BuildError::NotAnImage)?;
    let total: u64 = ram.iter().map(|m| m.size).sum();
    let banks: Vec<Region> =
        guest::ram_banks(total).ok_or(BuildError::DoesNotFit)?.into_iter().flatten().collect();
    let first = *banks.first().ok_or(BuildError::DoesNotFit)?;
    let layout = placement::layout(
        first,
        text_offset,
        image_size.max(spec.kernel.size),
        SZ_2M,
        spec.ramdisk.map(|r| r.size),
    )
    .map_err(|_| BuildError::DoesNotFit)?;
    let cfg = DomuDtConfig {
        memory: &banks,
        vcpus: spec.cpus,
        bootargs: spec.bootargs,
        initrd: layout.initrd,
        vpl011: spec.vpl011,
        cpu_compatible: host.cpu_compatible,
        timer_clock_frequency: host.timer_clock_frequency,
    };
    let dtb = domudt::build(&cfg).map_err(|_| BuildError::DeviceTree)?;
    if dtb.len() as u64 > SZ_2M {
        return Err(BuildError::DeviceTree);
    }
    let s2 = DomuStage2::new(ram, host.gicv, spec.vpl011);
    let (s2_root, _) = mm::domu_stage2_map(&s2).map_err(|_| BuildError::Stage2)?;
    let mut files = Vec::from([
        (spec.kernel, layout.kernel.base),
        (Region::new(dtb.as_ptr() as u64, dtb.len() as u64), layout.dtb.base),
    ]);
    if let (Some(rd), Some(at)) = (spec.ramdisk, layout.initrd) {
        files.push((rd, at.base));
    }
    let (copies, scrub) = s2.load_plan(&files);
    let nr_vcpus = pcpus.len();
    Ok(Domain {
        id,
        name: spec.name,
        vmid: id as u16 + 1,
        s2_root,
        ram: banks,
        nr_vcpus,
        pcpus,
        vcpu_mpidrs: (0..nr_vcpus as u32).map(guest::vcpu_mpidr).collect(),
        dist: spin::Mutex::new(domu_distributor(nr_vcpus, host.iidr)),
        gicd: (GuestPhysAddr(guest::GICD.base), guest::GICD.size),
        vcpus: Vcpus::new(),
        vuart: GuestPhysAddr(guest::PL011.base),
        vuart_intid: spec.vpl011.then_some(guest::VPL011_INTID),
        guarded: Vec::new(),
        watchdog: None,
        domu: Some(DomU {
            s2,
            boot: DomuBoot { dtb, layout, copies, scrub },
            console: spin::Mutex::new(DomuConsole {
                uart: Pl011::new(),
                line: PrefixedLines::new(id),
                last_tx: 0,
            }),
            life: spin::Mutex::new(Lifecycle::new()),
            iidr: host.iidr,
        }),
    })
}

/// A DomU's distributor: fully virtual, only its virtual timer's PPI has a physical effect.
fn domu_distributor(nr_vcpus: usize, iidr: u32) -> Distributor {
    let mut d = Distributor::new(nr_vcpus, DOMU_LINES, iidr);
    d.own(VTIMER_INTID);
    d
}

/// One boot line per DomU: where it runs and what backs its RAM.
pub fn describe(d: &Domain) {
    let Some(u) = &d.domu else { return };
    let mut l = Line::new();
    l.format("hv: d{} ({}): {} vCPU on cpu", &[d.id.into(), d.name.into(), d.nr_vcpus.into()]);
    for (i, p) in d.pcpus.iter().enumerate() {
        l.format(if i == 0 { "{}" } else { ",{}" }, &[(*p).into()]);
    }
    l.format(", VMID {}, RAM", &[d.vmid.into()]);
    for m in &u.s2.ram {
        l.format(" {} at host {}-{}", &[hex(m.ipa), hex(m.pa), hex(m.pa + m.size - 1)]);
    }
    l.format(
        ", kernel {} (module at host {}), dtb {}{}",
        &[
            hex(u.boot.layout.kernel.base),
            // The kernel is the first file of the load plan (DomUs running one file share it).
            hex(u.boot.copies.first().map_or(0, |c| c.0)),
            hex(u.boot.layout.dtb.base),
            if u.s2.vpl011 { ", vpl011" } else { "" }.into(),
        ],
    );
    l.emit();
}

/// Scrubs the domain's RAM (all but what the files overwrite) and loads its kernel, initrd and device
/// tree from the pristine copies, as the DomU's first vCPU must find them (booting.rst: with caches off, so everything at PoC).
/// Returns its entry point and the device tree's address (IPA). Its vCPUs are all out of the guest.
pub fn load(d: &Domain) -> (u64, u64) {
    let Some(u) = &d.domu else { return (0, 0) };
    let b = &u.boot;
    for r in &b.scrub {
        // SAFETY: the domain's own host RAM (mapped Normal at EL2), no vCPU of it runs, and no
        // other domain or the hypervisor uses it (the partition placed it clear of all of them).
        unsafe { arch::zero_range(r.base, r.size) };
    }
    for &(from, to) in &b.copies {
        // SAFETY: `from` lies in a pristine module (host RAM no guest maps) or the DomU's device
        // tree on the heap, `to` in the domain's RAM, which no vCPU of it runs on while it is
        // loaded; both mapped Normal at EL2.
        unsafe {
            core::ptr::copy_nonoverlapping(from as *const u8, to.base as *mut u8, to.size as usize)
        };
    }
    for m in &u.s2.ram {
        arch::flush_dcache_range(m.pa, m.size);
    }
    arch::invalidate_icache();
    // A restarted domain starts with the devices it had at power-on.
    *d.dist.lock() = domu_distributor(d.nr_vcpus, u.iidr);
    let mut c = u.console.lock();
    c.uart = Pl011::new();
    (b.layout.kernel.base, b.layout.dtb.base)
}

/// A guest access to its vPL011 page: `Some(value read)` (0 for writes), `None` for an abort.
pub fn vpl011_access(d: &Domain, off: u64, size: u8, store: Option<u64>) -> Option<u32> {
    let u = d.domu.as_ref()?;
    if !matches!(size, 1 | 2 | 4) || !off.is_multiple_of(u64::from(size)) {
        return None;
    }
    let mut c = u.console.lock();
    let c = &mut *c;
    match store {
        Some(v) => {
            if let Some(b) = c.uart.write(off as u32, v as u32) {
                c.last_tx = mrs!("cntpct_el0");
                if let Some(line) = c.line.push(b) {
                    console::write_domu_line(line);
                }
            }
            Some(0)
        }
        None => Some(c.uart.read(off as u32)),
    }
}

/// Writes out what a DomU left mid-line (a prompt) as a whole prefixed line once it has been quiet
/// for 50 ms, or at once with `now == u64::MAX` (it stops). Returns its vPL011's interrupt level.
pub fn console_tick(d: &Domain, now: u64) -> bool {
    let Some(u) = &d.domu else { return false };
    let Some(mut c) = u.console.try_lock() else { return false };
    if now.wrapping_sub(c.last_tx) > mrs!("cntfrq_el0") / 20 {
        if let Some(line) = c.line.flush_partial() {
            console::write_domu_line(line);
        }
    }
    c.uart.irq_level()
}

/// Reads the hypervisor's UART and hands each byte to the domain with the input focus; three CTRL-a
/// move the focus on (Xen's `console_switch_input`, with its message).
pub fn poll_input(hv: &Hv) {
    let (Some(uart), Some(mut focus)) = (console::uart(), hv.focus.try_lock()) else { return };
    while let Some(b) = uart.getc() {
        focus.feed(b, |e| match e {
            Event::Deliver { domid: 0, byte } => guest_console::push_rx(byte),
            Event::Deliver { domid, byte } => {
                let Some(d) = hv.domain(domid as usize) else { return };
                if let Some(u) = &d.domu {
                    u.console.lock().uart.push_rx(byte);
                    // Its CPU may sit in WFI with no tick due (NO_HZ): wake it to take the byte.
                    let target = d.dist.lock().target(guest::VPL011_INTID);
                    hv.gic.send_sgi(hv.if_mask(d.pcpu(target)), crate::virq::KICK_SGI);
                }
            }
            Event::Switched { domid } => hvprintln!(
                "hv: *** Serial input to DOM{} (type 'CTRL-a' three times to switch input)",
                domid
            ),
        });
    }
}
