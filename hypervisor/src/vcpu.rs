//! A domain's vCPUs (each pinned to its physical CPU, `Hv::on`): the SMCCC/PSCI calls, the wait for
//! CPU_ON, and a DomU's stop and restart. The power states and CPU_ON's checks are
//! `rpixen_hv_core::psci::Vcpus`'; what a SYSTEM_OFF/RESET or a fault means for which domain is
//! `rpixen_hv_core::lifecycle`'s.

use rpixen_hv_core::lifecycle::{self, Action, Leave};
use rpixen_hv_core::psci::{self, Call};

use crate::arch::entry::{enter_guest, Frame};
use crate::console::{self, guest_caused, hex, hvprintln};
use crate::state::Hv;
use crate::{arch, domu, guest_console, platform, virq};

pub fn smccc(hv: &Hv, cpu: usize, f: &mut Frame) {
    let (d, v) = hv.on(cpu);
    let call = psci::decode([f.x[0], f.x[1], f.x[2], f.x[3]]);
    if let (Some(_), Some(action)) = (&d.domu, lifecycle::system_call(d.kind(), call)) {
        hvprintln!(
            "hv: d{} ({}) {}: {} it alone",
            d.id,
            d.name,
            if action == Action::RestartDomain { "system_reset" } else { "system_off" },
            if action == Action::RestartDomain { "restarting" } else { "stopping" }
        );
        stop_or_restart(hv, cpu, action);
    }
    let ret: i64 = match call {
        Call::Version => psci::PSCI_VERSION_1_1 as i64,
        Call::CpuSuspend => psci::SUCCESS, // standby: return at once, Linux retries idle
        Call::CpuOff => {
            virq::cpu_off(hv, cpu);
            d.vcpus.cpu_off(v);
            if let Some(u) = &d.domu {
                u.life.lock().cpu_off(v);
            }
            park(hv, cpu)
        }
        Call::CpuOn { target, entry, context } => {
            let t = d.vcpu_of(target);
            let r = d.vcpus.cpu_on(t, entry, context, &d.ram);
            match (r, t) {
                (psci::SUCCESS, Some(t)) => {
                    // The target waits in WFI (see `park`): a physical SGI wakes it. The SGI stays
                    // pending and is taken, and ignored, once the vCPU runs.
                    arch::dsb_sy();
                    hv.gic.send_sgi(hv.if_mask(d.pcpu(t)), virq::KICK_SGI);
                }
                (psci::INVALID_ADDRESS, _) => {
                    guest_caused!(
                        "hv: refused dom0 CPU_ON of {} at {}: not dom0 memory",
                        hex(target),
                        hex(entry)
                    )
                }
                _ => {}
            }
            r
        }
        Call::AffinityInfo { target, level } => d.vcpus.affinity_info(d.vcpu_of(target), level),
        Call::MigrateInfoType => 2, // no trusted OS
        Call::SystemOff => {
            guest_console::flush();
            console::flush_suppressed();
            hvprintln!("hv: dom0 system_off");
            platform::power_off(hv.power)
        }
        Call::SystemReset => {
            guest_console::flush();
            console::flush_suppressed();
            hvprintln!("hv: dom0 system_reset");
            platform::reset(hv.power)
        }
        Call::Features(fid) => psci::features(fid),
        Call::SmcccVersion => psci::SMCCC_VERSION_1_1 as i64,
        Call::SmcccArchFeatures(_) | Call::Unknown(_) => psci::NOT_SUPPORTED,
    };
    f.x[0] = ret as u64;
}

/// A CPU without a running vCPU waits here until the guest's CPU_ON names it. WFI, not WFE: QEMU's TCG
/// halts a vCPU in WFI but lets WFE spin, which stole host time from the booting Dom0 (10 s of 14).
pub fn park(hv: &Hv, cpu: usize) -> ! {
    let (d, v) = hv.on(cpu);
    d.vcpus.mark_up(v);
    loop {
        if let Some((entry, ctx)) = d.vcpus.take_start(v) {
            if let Some(u) = &d.domu {
                u.life.lock().entered(v);
            }
            // PSCI CPU_ON starts the vCPU with its MMU and caches off, also when it ran before
            // (CPU_OFF then CPU_ON, as Linux's CPU hotplug does).
            arch::reset_el1();
            enter_guest(entry, ctx, cpu);
        }
        arch::wfi();
        // A pending hypervisor timer wakes WFI even with IRQs masked at EL2 (here they are): the
        // watchdog deadline this CPU armed before its CPU_OFF must still be honoured. Checking on
        // every wake-up is harmless (it re-arms at the current deadline).
        crate::watchdog::check(hv);
    }
}

/// A DomU's first vCPU at boot: loads the domain, then runs it.
pub fn start_domu(hv: &Hv, cpu: usize) -> ! {
    let (d, v) = hv.on(cpu);
    let (entry, dtb) = domu::load(d);
    hvprintln!(
        "hv: d{} ({}) loaded: entering it at {} (dtb {})",
        d.id,
        d.name,
        hex(entry),
        hex(dtb)
    );
    d.vcpus.mark_up(v);
    d.vcpus.set_on(v);
    if let Some(u) = &d.domu {
        u.life.lock().entered(v);
    }
    arch::reset_el1();
    enter_guest(entry, dtb, cpu)
}

/// Stops or restarts the DomU running on this CPU (`lifecycle::Action::StopDomain` or
/// `RestartDomain`): its other vCPUs are called out with a physical SGI, this one leaves at once.
pub fn stop_or_restart(hv: &Hv, cpu: usize, action: Action) -> ! {
    let (d, v) = hv.on(cpu);
    if let Some(u) = &d.domu {
        u.life.lock().request(action);
        for w in (0..d.nr_vcpus).filter(|&w| w != v) {
            hv.gic.send_sgi(hv.if_mask(d.pcpu(w)), virq::KICK_SGI);
        }
    }
    leave(hv, cpu)
}

/// After any exit of a DomU's vCPU: leaves if its domain is being stopped or restarted.
pub fn leave_if_asked(hv: &Hv, cpu: usize) {
    let (d, v) = hv.on(cpu);
    if d.domu.as_ref().is_some_and(|u| u.life.lock().must_leave(v)) {
        leave(hv, cpu)
    }
}

/// Takes this vCPU out of its DomU; the last one out finishes the stop (a console line) or the
/// restart (reload from the pristine copies, then its first vCPU starts as at boot).
fn leave(hv: &Hv, cpu: usize) -> ! {
    let (d, v) = hv.on(cpu);
    virq::cpu_off(hv, cpu);
    // Its timer must not fire into the restarted guest before that sets it up.
    arch::msr!("cntv_ctl_el0", 0);
    d.vcpus.cpu_off(v);
    let Some(u) = &d.domu else { park(hv, cpu) };
    let outcome = u.life.lock().left(v);
    match outcome {
        Leave::Park => {}
        Leave::Stopped => {
            domu::console_tick(d, u64::MAX);
            hvprintln!("hv: d{} ({}) stopped; the other domains run on", d.id, d.name);
        }
        Leave::Reload => {
            domu::console_tick(d, u64::MAX);
            let (entry, dtb) = domu::load(d);
            hvprintln!("hv: d{} ({}) restarting from its pristine kernel and initrd", d.id, d.name);
            // vCPU 0 starts as a CPU_ON would start it (its CPU waits in `park`, or is this one).
            d.vcpus.cpu_on(Some(0), entry, dtb, &d.ram);
            if d.pcpu(0) != cpu {
                hv.gic.send_sgi(hv.if_mask(d.pcpu(0)), virq::KICK_SGI);
            }
        }
    }
    park(hv, cpu)
}
