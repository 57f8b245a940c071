//! Synchronous exits from Dom0: PSCI/SMCCC calls, trapped device accesses (vGICD, vUART), and
//! accesses outside what Dom0 may touch, which are refused with an external abort injected into Dom0.

use core::sync::atomic::Ordering;

use rpixen_hypervisor::vgicd::{self, Outcome};

use crate::arch::entry::Frame;
use crate::arch::{mrs, msr};
use crate::console::hvprintln;
use crate::{arch, hv, mmio, vcpu, virq};

const EC_HVC64: u64 = 0x16;
const EC_SMC64: u64 = 0x17;
const EC_IABT_LOW: u64 = 0x20;
const EC_DABT_LOW: u64 = 0x24;

pub fn lower_sync(f: &mut Frame) {
    let esr = mrs!("esr_el2");
    let ec = esr >> 26;
    match ec {
        EC_HVC64 => {
            if esr & 0xFFFF == 0 {
                vcpu::smccc(f);
            } else {
                f.x[0] = u64::MAX; // NOT_SUPPORTED: no Xen hypercalls here
            }
        }
        EC_SMC64 => {
            // Dom0 was told to use HVC; answer SMCs the same way. ELR points at the SMC itself.
            vcpu::smccc(f);
            f.elr += 4;
        }
        EC_DABT_LOW => data_abort(f, esr),
        EC_IABT_LOW => {
            let ipa = fault_ipa();
            hvprintln!("hv: refused dom0 instruction fetch at IPA {:#x} (ELR {:#x}): not dom0 memory", ipa, f.elr);
            inject_abort(f, false, false);
        }
        _ => {
            hvprintln!("hv: unexpected trap from dom0 EC={:#x} ESR={:#x} ELR={:#x}; injecting undefined instruction", ec, esr, f.elr);
            inject_undef(f);
        }
    }
}

fn fault_ipa() -> u64 {
    ((mrs!("hpfar_el2") >> 4) << 12) | (mrs!("far_el2") & 0xFFF)
}

fn data_abort(f: &mut Frame, esr: u64) {
    let ipa = fault_ipa();
    let isv = esr & (1 << 24) != 0;
    let write = esr & (1 << 6) != 0;
    let width = 1u8 << ((esr >> 22) & 3);
    let srt = ((esr >> 16) & 0x1F) as usize;
    let h = hv();
    let reg = |f: &Frame| if srt == 31 { 0 } else { f.x[srt] };
    let in_page = |base: u64| ipa >= base && ipa < base + 0x1000;
    let handled = isv
        && width <= 4
        && if in_page(h.gicd) {
            vgicd_access(f, (ipa - h.gicd) as u32, width, write.then(|| reg(f) as u32), srt);
            true
        } else if in_page(h.vuart) {
            let off = (ipa - h.vuart) as u32;
            if write {
                vuart_write(off, reg(f) as u32);
            } else if srt != 31 {
                f.x[srt] = u64::from(crate::VUART.lock().uart.read(off));
            }
            true
        } else {
            false
        };
    if handled {
        f.elr += 4;
        return;
    }
    hvprintln!(
        "hv: refused dom0 {} at IPA {:#x} (ELR {:#x}): not dom0 memory; injecting an external abort, hypervisor continues",
        if write { "write" } else { "read" },
        ipa,
        f.elr
    );
    inject_abort(f, true, write);
}

fn vuart_write(off: u32, v: u32) {
    let mut g = crate::VUART.lock();
    let st = &mut *g;
    if let Some(b) = st.uart.write(off, v) {
        st.last_tx = mrs!("cntpct_el0");
        if let Some(l) = st.line.push(b) {
            crate::console::write_guest_line(l);
        }
    }
}

/// Writes out a partial Dom0 line (before power-off, so the last prompt is not lost).
pub fn flush_vuart() {
    let mut g = crate::VUART.lock();
    if let Some(l) = g.line.take_partial() {
        crate::console::write_guest_line(l);
        crate::console::write_guest_line(b"\n");
    }
}

/// On Dom0's timer ticks: moves received bytes from the hypervisor's UART into the emulated PL011,
/// shows a partial line that has waited 50 ms (a prompt, an echoed keystroke), and raises the
/// PL011's interrupt while its level is high.
pub fn vuart_poll() {
    let Some(mut g) = crate::VUART.try_lock() else { return };
    if let Some(u) = crate::console::uart() {
        while let Some(b) = u.getc() {
            if !g.uart.push_rx(b) {
                break;
            }
        }
    }
    let now = mrs!("cntpct_el0");
    if now.wrapping_sub(g.last_tx) > mrs!("cntfrq_el0") / 20 {
        if let Some(l) = g.line.take_partial() {
            crate::console::write_guest_line(l);
        }
    }
    let level = g.uart.irq_level();
    drop(g);
    if let (true, Some(id)) = (level, hv().vuart_intid) {
        let gic = &hv().gic;
        let enabled = mmio::read(gic.dist + 0x100 + u64::from(id / 32) * 4, 4) & (1 << (id % 32)) != 0;
        if enabled {
            virq::inject(vgicd::lr_value(id, None, gic.spi_priority(id), 0));
        }
    }
}

fn vgicd_access(f: &mut Frame, off: u32, width: u8, write: Option<u32>, srt: usize) {
    let h = hv();
    let vcpu = arch::cpu_index();
    let mut ctlr = virq::VGICD_CTLR.load(Ordering::Acquire);
    let out = vgicd::access(off, width, write, vcpu, h.nr_cpus, &mut ctlr, virq::BANKED.mine());
    virq::VGICD_CTLR.store(ctlr, Ordering::Release);
    let addr = h.gic.dist + u64::from(off);
    let mut set = |v: u32| {
        if srt != 31 {
            f.x[srt] = u64::from(v);
        }
    };
    match out {
        Outcome::Read(v) => set(v),
        Outcome::Done => {}
        Outcome::Passthrough => match write {
            Some(v) => mmio::write(addr, width, v),
            None => set(mmio::read(addr, width)),
        },
        Outcome::PassthroughValue(v) => mmio::write(addr, width, v),
        Outcome::Sgi { intid, targets } => virq::send_sgi(vcpu, intid, targets),
    }
}

/// Makes Dom0 take a synchronous external abort at its own vector, as hardware would for a bus error.
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
