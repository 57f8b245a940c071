//! Board differences: how physical CPUs start (PSCI firmware on QEMU virt, spin table on the Pi), how
//! the machine powers off or resets (PSCI SMC on virt; the BCM2835 PM watchdog on the Pi, which has no
//! PSCI firmware and where SMC goes nowhere).

use rpixen_hv_core::hostdt::EnableMethod;
use rpixen_hv_core::psci;

use crate::arch;
use crate::console::hvprintln;
use crate::mmio::Mmio;

const PM_PASSWORD: u32 = 0x5A00_0000;
const PM_RSTC: u32 = 0x1C;
const PM_RSTS: u32 = 0x20;
const PM_WDOG: u32 = 0x24;

#[derive(Clone, Copy)]
pub enum Power {
    /// PSCI through SMC (QEMU virt: no EL3, QEMU answers).
    PsciSmc,
    /// The PM block (brcm,bcm2711-pm / brcm,bcm2835-pm-wdt).
    PmWatchdog(Mmio),
    None,
}

/// Starts physical CPU `mpidr` at the hypervisor's secondary entry.
pub fn start_cpu(mpidr: u64, method: EnableMethod) -> bool {
    let entry = crate::arch::entry::secondary_entry_pa();
    match method {
        EnableMethod::Psci => arch::smc(u64::from(psci::CPU_ON_64), mpidr, entry, 0) == 0,
        EnableMethod::SpinTable { release_addr } => {
            // SAFETY: cpu-release-addr is a 64-bit word in a /memreserve/d page of RAM, mapped Normal at EL2.
            unsafe { core::ptr::write_volatile(release_addr as *mut u64, entry) };
            // The parked CPU polls with its caches off.
            arch::flush_dcache_range(release_addr, 8);
            arch::sev();
            true
        }
        EnableMethod::Unknown => false,
    }
}

fn pm_reset(pm: Mmio, halt: bool) -> ! {
    if halt {
        // Linux's bcm2835_power_off: partition 63 tells the firmware to halt instead of booting.
        let rsts = pm.read32(PM_RSTS);
        pm.write32(PM_RSTS, PM_PASSWORD | (rsts & !0xFFFF_FAAA) | 0x555);
    }
    pm.write32(PM_WDOG, PM_PASSWORD | 10);
    let rstc = pm.read32(PM_RSTC);
    pm.write32(PM_RSTC, PM_PASSWORD | (rstc & 0xFFFF_FFCF) | 0x20);
    halt_forever()
}

pub fn halt_forever() -> ! {
    loop {
        arch::wfi();
    }
}

pub fn power_off(power: Power) -> ! {
    match power {
        Power::PsciSmc => {
            arch::smc(u64::from(psci::SYSTEM_OFF), 0, 0, 0);
        }
        Power::PmWatchdog(base) => {
            hvprintln!("hv: no power-off on this board: halting through a PM watchdog reset");
            pm_reset(base, true)
        }
        Power::None => {}
    }
    hvprintln!("hv: power-off failed; halting");
    halt_forever()
}

pub fn reset(power: Power) -> ! {
    match power {
        Power::PsciSmc => {
            arch::smc(u64::from(psci::SYSTEM_RESET), 0, 0, 0);
        }
        Power::PmWatchdog(base) => pm_reset(base, false),
        Power::None => {}
    }
    hvprintln!("hv: reset failed; halting");
    halt_forever()
}
