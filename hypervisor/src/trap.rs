//! Exceptions taken to EL2: the exit is decoded by `rpixen_hv_core::exit`, device accesses are
//! answered by the core's models (virtual distributor, PL011), and what a guest may not touch is
//! refused with an abort injected into the guest, as hardware would for a bus error.

use rpixen_hv_core::addr::GuestPhysAddr;
use rpixen_hv_core::exit::{self, DataAbort, Exit, MmioAccess};
use rpixen_hv_core::guard::Guarded;
use rpixen_hv_core::guest;
use rpixen_hv_core::lifecycle::{on_fault, Action, Fault};
use rpixen_hv_core::vgicd::{Access, Effect, Reply};

use crate::arch::entry::Frame;
use crate::arch::{self, mrs, msr};
use crate::console::{guest_caused, hex, hvprintln};
use crate::state::{self, Hv};
use crate::{domu, guest_console, platform, vcpu, virq, watchdog};

/// Vector kinds (entry.rs numbers the 16 vectors in order).
const LOWER_SYNC: u64 = 8;
const LOWER_IRQ: u64 = 9;
const LOWER_SERROR: u64 = 11;

/// HCR_EL2.VSE: a virtual SError is pending for the guest.
const HCR_VSE: u64 = 1 << 8;

#[no_mangle]
extern "C" fn hv_trap(f: &mut Frame, kind: u64) {
    let cpu = arch::cpu_index();
    match kind {
        // Guests run only after the state is installed; EL2's own exceptions may come before.
        LOWER_SYNC => lower_sync(state::get(), cpu, f),
        LOWER_IRQ => {
            let hv = state::get();
            let tick = virq::handle_irq(hv, cpu).tick;
            poll_console(hv, cpu, tick);
        }
        LOWER_SERROR => {
            let hv = state::get();
            let (dom, _) = hv.on(cpu);
            if on_fault(dom.kind(), Fault::SError) == Action::StopDomain {
                hvprintln!(
                    "hv: d{} ({}): SError ESR={} ELR={}: stopping it",
                    dom.id,
                    dom.name,
                    hex(mrs!("esr_el2")),
                    hex(f.elr)
                );
                vcpu::stop_or_restart(hv, cpu, Action::StopDomain);
            }
            // The guest's own asynchronous error (a bus error on one of its devices): it gets it back
            // as a virtual SError, taken when it unmasks SErrors, as on hardware without EL2.
            guest_caused!(
                "hv: SError from dom0 ESR={} ELR={}; injecting a virtual SError",
                hex(mrs!("esr_el2")),
                hex(f.elr)
            );
            msr!("hcr_el2", mrs!("hcr_el2") | HCR_VSE);
        }
        _ => {
            let esr = mrs!("esr_el2");
            hvprintln!(
                "hv: PANIC: unexpected exception (vector {}) EC={} ESR={} FAR={} ELR={}",
                kind,
                hex(esr >> 26),
                hex(esr),
                hex(mrs!("far_el2")),
                hex(f.elr)
            );
            platform::halt_forever()
        }
    }
    // Another vCPU of this DomU stopped or restarted it: this one leaves too (it was kicked).
    vcpu::leave_if_asked(state::get(), cpu);
}

/// Console work on a guest's interrupt exit: on a timer tick, the serial input (to whichever domain
/// has the focus) and Dom0's partial line; on a DomU's CPU, its vPL011 line and partial line.
fn poll_console(hv: &Hv, cpu: usize, tick: bool) {
    let (dom, vcpu) = hv.on(cpu);
    if tick {
        domu::poll_input(hv);
    }
    let level = match dom.domu {
        None if tick => guest_console::poll(),
        None => false,
        Some(_) => {
            let now = mrs!("cntpct_el0");
            domu::console_tick(dom, now) && dom.dist.lock().target(guest::VPL011_INTID) == vcpu
        }
    };
    if let (true, Some(id)) = (level, dom.vuart_intid) {
        virq::inject(hv, cpu, rpixen_hv_core::virq::Virq { intid: id, hw: false, source: 0 });
    }
}

fn lower_sync(hv: &Hv, cpu: usize, f: &mut Frame) {
    let esr = mrs!("esr_el2");
    let (dom, _) = hv.on(cpu);
    let kind = dom.kind();
    match exit::decode(esr, mrs!("far_el2"), mrs!("hpfar_el2")) {
        Exit::Hvc { imm: 0 } => vcpu::smccc(hv, cpu, f),
        Exit::Hvc { .. } => f.x[0] = u64::MAX, // NOT_SUPPORTED: no Xen hypercalls here
        Exit::Smc { .. } => {
            // Dom0 was told to use HVC; answer SMCs the same way. ELR points at the SMC itself.
            vcpu::smccc(hv, cpu, f);
            f.elr += 4;
        }
        Exit::DataAbort(d) => data_abort(hv, cpu, f, d),
        Exit::InstructionAbort { ipa } => {
            if on_fault(kind, Fault::FetchOutsideRam) == Action::StopDomain {
                hvprintln!(
                    "hv: d{} ({}): instruction fetch at IPA {} (ELR {}) outside its RAM: stopping it",
                    dom.id,
                    dom.name,
                    hex(ipa.0),
                    hex(f.elr)
                );
                vcpu::stop_or_restart(hv, cpu, Action::StopDomain);
            }
            guest_caused!(
                "hv: refused dom0 instruction fetch at IPA {} (ELR {}): not dom0 memory",
                hex(ipa.0),
                hex(f.elr)
            );
            inject_abort(f, false, false);
        }
        Exit::Other { ec, esr } => {
            if on_fault(kind, Fault::UnexpectedTrap) == Action::StopDomain {
                hvprintln!(
                    "hv: d{} ({}): unexpected trap EC={} ESR={} ELR={}: stopping it",
                    dom.id,
                    dom.name,
                    hex(ec),
                    hex(esr),
                    hex(f.elr)
                );
                vcpu::stop_or_restart(hv, cpu, Action::StopDomain);
            }
            guest_caused!("hv: unexpected trap from dom0 EC={} ESR={} ELR={}; injecting undefined instruction", hex(ec), hex(esr), hex(f.elr));
            inject_undef(f);
        }
    }
}

fn reg(f: &Frame, r: u8) -> u64 {
    if r == 31 {
        0
    } else {
        f.x[usize::from(r)]
    }
}

fn set_reg(f: &mut Frame, a: &MmioAccess, raw: u64) {
    if a.reg != 31 {
        f.x[usize::from(a.reg)] = a.load_value(raw);
    }
}

fn data_abort(hv: &Hv, cpu: usize, f: &mut Frame, d: DataAbort) {
    let (dom, vcpu) = hv.on(cpu);
    if let (Some(a), false) = (d.access, d.s1ptw) {
        let store = a.write.then(|| a.store_value(reg(f, a.reg)));
        let handled = if let Some(off) = d.ipa.offset_in(dom.gicd.0, dom.gicd.1) {
            let access =
                Access { offset: off as u32, size: a.size, write: store.map(|v| v as u32) };
            let reply = dom.dist.lock().access(vcpu, access);
            match reply {
                Reply::Read(v) => {
                    set_reg(f, &a, u64::from(v));
                    true
                }
                Reply::Write(fx) => {
                    for e in fx.iter() {
                        apply(hv, cpu, e);
                    }
                    true
                }
                Reply::Abort => false,
            }
        } else if let Some(off) = dom
            .vuart_intid
            .and_then(|_| d.ipa.offset_in(dom.vuart, 0x1000))
            .filter(|_| dom.domu.is_some())
        {
            match domu::vpl011_access(dom, off, a.size, store) {
                Some(v) => {
                    if store.is_none() {
                        set_reg(f, &a, u64::from(v));
                    }
                    true
                }
                None => false,
            }
        } else if let Some(off) = d.ipa.offset_in(dom.vuart, 0x1000).filter(|_| dom.domu.is_none())
        {
            // Linux's amba-pl011 uses 16- and 32-bit accessors, its earlycon byte stores.
            let legal = matches!(a.size, 1 | 2 | 4) && off.is_multiple_of(u64::from(a.size));
            if legal {
                match store {
                    Some(v) => guest_console::write(off as u32, v as u32),
                    None => set_reg(f, &a, u64::from(guest_console::read(off as u32))),
                }
            }
            legal
        } else if let Some(off) =
            dom.watchdog.as_ref().and_then(|(base, _)| d.ipa.offset_in(*base, 0x1000))
        {
            match watchdog::access(hv, off, a.size, store) {
                Some(v) => {
                    if store.is_none() {
                        set_reg(f, &a, u64::from(v));
                    }
                    true
                }
                None => false,
            }
        } else if let Some((page, mmio)) = dom
            .guarded
            .iter()
            .find(|(p, _)| d.ipa.offset_in(GuestPhysAddr(p.base), 0x1000).is_some())
        {
            let off = (d.ipa.0 - page.base) as u32;
            match page.access(off, a.size, store.map(|v| v as u32)) {
                Guarded::Read => {
                    set_reg(f, &a, u64::from(mmio.read32(off)));
                    true
                }
                Guarded::Write { value, keep } => {
                    let v =
                        if keep == 0 { value } else { (mmio.read32(off) & keep) | (value & !keep) };
                    mmio.write32(off, v);
                    true
                }
                Guarded::Refuse => {
                    guest_caused!(
                        "hv: refused dom0 write of {} to {} register {}: the hypervisor's",
                        hex(store.unwrap_or(0)),
                        page.what,
                        hex(d.ipa.0)
                    );
                    true
                }
                Guarded::Abort => false,
            }
        } else {
            false
        };
        if handled {
            f.elr += d.instruction_len();
            return;
        }
    }
    let size = d.access.map_or(0, |a| a.size);
    let rw = if d.write { "write" } else { "read" };
    // A DomU's stage 2 is default-deny: whatever it touches outside its RAM, GIC and vPL011 lands
    // here, and it gets the abort hardware would give (`lifecycle::Fault::DeniedAccess`).
    match dom.domu {
        None => guest_caused!(
            "hv: refused dom0 {} at IPA {} ({} bytes, ELR {}): not dom0's; injecting an external abort",
            rw,
            hex(d.ipa.0),
            size,
            hex(f.elr)
        ),
        Some(_) => guest_caused!(
            "hv: refused d{} ({}) {} at IPA {} ({} bytes, ELR {}): not its own; injecting an external abort",
            dom.id,
            dom.name,
            rw,
            hex(d.ipa.0),
            size,
            hex(f.elr)
        ),
    }
    inject_abort(f, true, d.write);
}

/// Carries out a physical effect of a distributor write.
fn apply(hv: &Hv, cpu: usize, e: Effect) {
    let gic = &hv.gic;
    match e {
        Effect::Enable { word, mask } => {
            gic.enable(word, mask);
            // Something pending while disabled may now go to a list register.
            virq::flush(hv, cpu);
        }
        Effect::Disable { word, mask } => gic.disable(word, mask),
        Effect::Route { intid, vcpu } => {
            gic.route(intid, hv.if_mask(hv.on(cpu).0.pcpu(usize::from(vcpu))))
        }
        Effect::Configure { word, mask, value } => gic.configure(word, mask, value),
        Effect::Sgi { intid, targets } => virq::send_sgi(hv, cpu, intid, targets),
    }
}

/// Makes the guest take a synchronous external abort at its own vector, as hardware would for a bus
/// error.
fn inject_abort(f: &mut Frame, data: bool, write: bool) {
    let from_el0 = f.spsr & 0xF == 0;
    let ec: u64 = match (data, from_el0) {
        (true, true) => 0x24,
        (true, false) => 0x25,
        (false, true) => 0x20,
        (false, false) => 0x21,
    };
    // IL = 1, FSC = 0x10 (synchronous external abort, not on a table walk), WnR for data.
    let esr = (ec << 26) | (1 << 25) | 0x10 | if data && write { 1 << 6 } else { 0 };
    enter_el1_vector(f, esr, mrs!("far_el2"));
}

fn inject_undef(f: &mut Frame) {
    enter_el1_vector(f, 1 << 25, 0);
}

fn enter_el1_vector(f: &mut Frame, esr: u64, far: u64) {
    let offset = if f.spsr & 0xF == 0 {
        0x400 // lower EL, AArch64
    } else if f.spsr & 1 != 0 {
        0x200 // current EL with SP_EL1
    } else {
        0x000
    };
    msr!("esr_el1", esr);
    msr!("far_el1", far);
    msr!("elr_el1", f.elr);
    msr!("spsr_el1", f.spsr);
    f.elr = mrs!("vbar_el1") + offset;
    f.spsr = 0x3C5;
}
