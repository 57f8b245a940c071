//! Dom0's vCPUs (vCPU n runs on pCPU n) and their PSCI power states, and the SMCCC/PSCI calls.

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

use rpixen_hypervisor::psci::{self, Call, PowerState};

use crate::arch::entry::{enter_guest, Frame};
use crate::console::hvprintln;
use crate::{arch, hv, platform, virq, MAX_CPUS};

pub static STATE: [AtomicU8; MAX_CPUS] = [const { AtomicU8::new(PowerState::Off as u8) }; MAX_CPUS];
static ENTRY: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static CONTEXT: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// The physical CPU has entered the hypervisor and waits in `park`.
pub static UP: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

fn vcpu_of(mpidr: u64) -> Option<usize> {
    hv().cpus.iter().position(|&m| m == mpidr & 0xFF_00FF_FFFF)
}

pub fn smccc(f: &mut Frame) {
    let ret: i64 = match psci::decode([f.x[0], f.x[1], f.x[2], f.x[3]]) {
        Call::Version => psci::PSCI_VERSION_1_1 as i64,
        Call::CpuSuspend => psci::SUCCESS, // standby: return at once, Linux retries idle
        Call::CpuOff => {
            let me = arch::cpu_index();
            virq::reset_cpu();
            STATE[me].store(PowerState::Off as u8, Ordering::Release);
            park(me)
        }
        Call::CpuOn { target, entry, context } => match vcpu_of(target) {
            Some(t) if !UP[t].load(Ordering::Acquire) => psci::INTERNAL_FAILURE,
            t => {
                let r = psci::cpu_on_result(t.map(|t| PowerState::from_u8(STATE[t].load(Ordering::Acquire))));
                if let (psci::SUCCESS, Some(t)) = (r, t) {
                    ENTRY[t].store(entry, Ordering::Relaxed);
                    CONTEXT[t].store(context, Ordering::Relaxed);
                    STATE[t].store(PowerState::OnPending as u8, Ordering::Release);
                    // The target waits in WFI (see `park`): a physical SGI wakes it. The SGI stays
                    // pending and is taken, and ignored, once the vCPU runs.
                    arch::dsb_sy();
                    hv().gic.send_sgi(1 << t, virq::KICK_SGI);
                }
                r
            }
        },
        Call::AffinityInfo { target, level } => match (level, vcpu_of(target)) {
            (0, Some(t)) => i64::from(STATE[t].load(Ordering::Acquire)),
            _ => psci::INVALID_PARAMETERS,
        },
        Call::MigrateInfoType => 2, // no trusted OS
        Call::SystemOff => {
            crate::trap::flush_vuart();
            hvprintln!("hv: dom0 system_off");
            platform::power_off()
        }
        Call::SystemReset => {
            crate::trap::flush_vuart();
            hvprintln!("hv: dom0 system_reset");
            platform::reset()
        }
        Call::Features(fid) => psci::features(fid),
        Call::SmcccVersion => psci::SMCCC_VERSION_1_1 as i64,
        Call::SmcccArchFeatures(_) | Call::Unknown(_) => psci::NOT_SUPPORTED,
    };
    f.x[0] = ret as u64;
}

/// A CPU without a running vCPU waits here until Dom0's CPU_ON names it. WFI, not WFE: QEMU's TCG
/// halts a vCPU in WFI but lets WFE spin, which stole host time from the booting Dom0 (10 s of 14).
pub fn park(cpu: usize) -> ! {
    UP[cpu].store(true, Ordering::Release);
    loop {
        if STATE[cpu].load(Ordering::Acquire) == PowerState::OnPending as u8 {
            STATE[cpu].store(PowerState::On as u8, Ordering::Release);
            let entry = ENTRY[cpu].load(Ordering::Relaxed);
            let ctx = CONTEXT[cpu].load(Ordering::Relaxed);
            // PSCI CPU_ON starts the vCPU with its MMU and caches off, also when it ran before
            // (CPU_OFF then CPU_ON, as Linux's CPU hotplug does).
            crate::hv::reset_el1();
            enter_guest(entry, ctx, cpu);
        }
        arch::wfi();
    }
}
