//! Dom0's virtual SP805 watchdog (`rpixen_hv_core::sp805` decides): its page is a stage-2 hole, every
//! access traps here, and after each write the EL2 hypervisor timer (CNTHP, PPI 10 = INTID 26) of the
//! writing CPU is armed at the model's reset deadline. A timer is used rather than a check on every
//! exit because a hung Dom0 may not exit at all (a vCPU spinning with interrupts masked never traps),
//! while the hypervisor timer interrupts it wherever it is.
//!
//! Several CPUs may hold a stale deadline (each armed its own timer at its last write): whichever
//! fires re-reads the model and either resets the board or re-arms at the current deadline, so the
//! CPU that wrote last always holds the true one. A CPU parked after CPU_OFF still wakes from WFI on
//! its pending timer and checks (`vcpu::park`).

use rpixen_hv_core::sp805::Sp805Access;

use crate::arch::{mrs, msr};
use crate::console::hvprintln;
use crate::platform;
use crate::state::Hv;

/// The EL2 physical timer's interrupt (PPI 10), the same on QEMU virt and the Pi 4.
pub const HYP_TIMER_INTID: u32 = 26;
/// CNTHP_CTL_EL2.ENABLE (IMASK clear: the timer interrupts).
const CTL_ENABLE: u64 = 1;

/// A guest access at `offset` in the watchdog page: `Some(value read, or 0)`, or `None` for an abort.
pub fn access(hv: &Hv, offset: u64, size: u8, store: Option<u64>) -> Option<u32> {
    let (_, wd) = hv.dom0.watchdog.as_ref()?;
    let now = mrs!("cntpct_el0");
    let mut wd = wd.lock();
    let reply = match store {
        Some(v) => {
            let r = wd.write(offset, size, v as u32, now);
            arm(wd.reset_deadline());
            r
        }
        None => wd.read(offset, size, now),
    };
    match reply {
        Sp805Access::Done(v) => Some(v),
        Sp805Access::Abort => None,
    }
}

fn arm(deadline: Option<u64>) {
    match deadline {
        Some(d) => {
            msr!("cnthp_cval_el2", d);
            msr!("cnthp_ctl_el2", CTL_ENABLE);
        }
        None => msr!("cnthp_ctl_el2", 0),
    }
}

/// This CPU's hypervisor timer fired (or a parked CPU woke): resets the board if Dom0 stopped
/// feeding its watchdog, else re-arms at the current deadline (which also lowers the timer's level
/// interrupt).
pub fn check(hv: &Hv) {
    let Some((_, wd)) = hv.dom0.watchdog.as_ref() else { return arm(None) };
    let now = mrs!("cntpct_el0");
    let wd = wd.lock();
    if wd.expired(now) {
        let ms = now.saturating_sub(wd.last_fed()) * 1000 / mrs!("cntfrq_el0").max(1);
        hvprintln!("hv: watchdog: Dom0 did not feed it for {} ms: resetting the board", ms);
        platform::reset(hv.power)
    }
    arm(wd.reset_deadline());
}
