//! A domain's vCPUs (vCPU n runs on pCPU n): the SMCCC/PSCI calls and the wait for CPU_ON. The power
//! states and CPU_ON's checks are `rpixen_hv_core::psci::Vcpus`'.

use rpixen_hv_core::psci::{self, Call};

use crate::arch::entry::{enter_guest, Frame};
use crate::console::{self, guest_caused, hex, hvprintln};
use crate::state::Hv;
use crate::{arch, guest_console, platform, virq};

pub fn smccc(hv: &Hv, cpu: usize, f: &mut Frame) {
    let d = &hv.dom0;
    let vcpu_of = |mpidr: u64| hv.cpus.index_of(mpidr).filter(|&i| i < d.nr_vcpus);
    let ret: i64 = match psci::decode([f.x[0], f.x[1], f.x[2], f.x[3]]) {
        Call::Version => psci::PSCI_VERSION_1_1 as i64,
        Call::CpuSuspend => psci::SUCCESS, // standby: return at once, Linux retries idle
        Call::CpuOff => {
            virq::cpu_off(hv, cpu);
            d.vcpus.cpu_off(cpu);
            park(hv, cpu)
        }
        Call::CpuOn { target, entry, context } => {
            let t = vcpu_of(target);
            let r = d.vcpus.cpu_on(t, entry, context, &d.ram);
            match (r, t) {
                (psci::SUCCESS, Some(t)) => {
                    // The target waits in WFI (see `park`): a physical SGI wakes it. The SGI stays
                    // pending and is taken, and ignored, once the vCPU runs.
                    arch::dsb_sy();
                    hv.gic.send_sgi(hv.if_mask(t), virq::KICK_SGI);
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
        Call::AffinityInfo { target, level } => d.vcpus.affinity_info(vcpu_of(target), level),
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
    hv.dom0.vcpus.mark_up(cpu);
    loop {
        if let Some((entry, ctx)) = hv.dom0.vcpus.take_start(cpu) {
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
