//! PSCI (ARM DEN 0022) and SMCCC calls Dom0 makes with `HVC #0`: function IDs, decoding, the
//! features answer, and the vCPU power-state rules. The binary carries the decisions out.

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

use crate::cpus::MAX_CPUS;
use crate::Region;

pub const VERSION: u32 = 0x8400_0000;
pub const CPU_SUSPEND: u32 = 0x8400_0001;
pub const CPU_SUSPEND_64: u32 = 0xC400_0001;
pub const CPU_OFF: u32 = 0x8400_0002;
pub const CPU_ON: u32 = 0x8400_0003;
pub const CPU_ON_64: u32 = 0xC400_0003;
pub const AFFINITY_INFO: u32 = 0x8400_0004;
pub const AFFINITY_INFO_64: u32 = 0xC400_0004;
pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
pub const SYSTEM_OFF: u32 = 0x8400_0008;
pub const SYSTEM_RESET: u32 = 0x8400_0009;
pub const FEATURES: u32 = 0x8400_000A;
pub const SMCCC_VERSION: u32 = 0x8000_0000;
pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;

/// PSCI 1.1.
pub const PSCI_VERSION_1_1: u64 = 0x0001_0001;
/// SMCCC 1.1.
pub const SMCCC_VERSION_1_1: u64 = 0x0001_0001;

pub const SUCCESS: i64 = 0;
pub const NOT_SUPPORTED: i64 = -1;
pub const INVALID_PARAMETERS: i64 = -2;
pub const ALREADY_ON: i64 = -4;
pub const ON_PENDING: i64 = -5;
pub const INTERNAL_FAILURE: i64 = -6;
pub const INVALID_ADDRESS: i64 = -9;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Version,
    CpuSuspend,
    CpuOff,
    CpuOn { target: u64, entry: u64, context: u64 },
    AffinityInfo { target: u64, level: u64 },
    MigrateInfoType,
    SystemOff,
    SystemReset,
    Features(u32),
    SmcccVersion,
    SmcccArchFeatures(u32),
    Unknown(u32),
}

/// Decodes a call from x0..x3. SMC32 IDs take 32-bit arguments (upper halves ignored, DEN 0028).
pub fn decode(x: [u64; 4]) -> Call {
    let fid = x[0] as u32;
    let is32 = fid & 0x4000_0000 == 0;
    let arg = |i: usize| if is32 { x[i] & 0xFFFF_FFFF } else { x[i] };
    match fid {
        VERSION => Call::Version,
        CPU_SUSPEND | CPU_SUSPEND_64 => Call::CpuSuspend,
        CPU_OFF => Call::CpuOff,
        CPU_ON | CPU_ON_64 => Call::CpuOn { target: arg(1), entry: arg(2), context: arg(3) },
        AFFINITY_INFO | AFFINITY_INFO_64 => Call::AffinityInfo { target: arg(1), level: arg(2) },
        MIGRATE_INFO_TYPE => Call::MigrateInfoType,
        SYSTEM_OFF => Call::SystemOff,
        SYSTEM_RESET => Call::SystemReset,
        FEATURES => Call::Features(x[1] as u32),
        SMCCC_VERSION => Call::SmcccVersion,
        SMCCC_ARCH_FEATURES => Call::SmcccArchFeatures(x[1] as u32),
        other => Call::Unknown(other),
    }
}

/// PSCI_FEATURES: 0 for what we implement, NOT_SUPPORTED otherwise.
pub fn features(fid: u32) -> i64 {
    match fid {
        VERSION | CPU_SUSPEND | CPU_SUSPEND_64 | CPU_OFF | CPU_ON | CPU_ON_64 | AFFINITY_INFO
        | AFFINITY_INFO_64 | MIGRATE_INFO_TYPE | SYSTEM_OFF | SYSTEM_RESET | FEATURES
        | SMCCC_VERSION => SUCCESS,
        _ => NOT_SUPPORTED,
    }
}

/// A vCPU's power state as PSCI AFFINITY_INFO reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PowerState {
    On = 0,
    Off = 1,
    OnPending = 2,
}

impl PowerState {
    pub fn from_u8(v: u8) -> PowerState {
        match v {
            0 => PowerState::On,
            2 => PowerState::OnPending,
            _ => PowerState::Off,
        }
    }
}

/// CPU_ON's answer for a target in `state` (`None`: no such vCPU).
pub fn cpu_on_result(state: Option<PowerState>) -> i64 {
    match state {
        None => INVALID_PARAMETERS,
        Some(PowerState::On) => ALREADY_ON,
        Some(PowerState::OnPending) => ON_PENDING,
        Some(PowerState::Off) => SUCCESS,
    }
}

/// Dom0's vCPUs' power states, shared by all CPUs (atomics: CPU_ON on one CPU starts another).
/// vCPU n runs on physical CPU n.
pub struct Vcpus {
    state: [AtomicU8; MAX_CPUS],
    entry: [AtomicU64; MAX_CPUS],
    context: [AtomicU64; MAX_CPUS],
    /// The physical CPU waits in the hypervisor for its vCPU to start.
    up: [AtomicBool; MAX_CPUS],
}

/// Internal state between claiming a vCPU and publishing its entry point (reported as ON_PENDING).
const STARTING: u8 = 3;

impl Default for Vcpus {
    fn default() -> Self {
        Self::new()
    }
}

impl Vcpus {
    pub const fn new() -> Vcpus {
        Vcpus {
            state: [const { AtomicU8::new(PowerState::Off as u8) }; MAX_CPUS],
            entry: [const { AtomicU64::new(0) }; MAX_CPUS],
            context: [const { AtomicU64::new(0) }; MAX_CPUS],
            up: [const { AtomicBool::new(false) }; MAX_CPUS],
        }
    }

    fn state(&self, cpu: usize) -> PowerState {
        match self.state[cpu].load(Ordering::Acquire) {
            STARTING => PowerState::OnPending,
            v => PowerState::from_u8(v),
        }
    }

    /// The physical CPU `cpu` waits in the hypervisor.
    pub fn mark_up(&self, cpu: usize) {
        self.up[cpu].store(true, Ordering::Release);
    }

    pub fn is_up(&self, cpu: usize) -> bool {
        self.up.get(cpu).is_some_and(|u| u.load(Ordering::Acquire))
    }

    /// The boot vCPU runs from the start.
    pub fn set_on(&self, cpu: usize) {
        self.state[cpu].store(PowerState::On as u8, Ordering::Release);
    }

    /// CPU_ON for vCPU `target` (`None`: no such vCPU). The entry point must lie in the guest's RAM:
    /// an entry in hypervisor memory would fault at once and forever (DEN 0022: INVALID_ADDRESS).
    /// On SUCCESS the caller wakes the target's physical CPU.
    pub fn cpu_on(
        &self,
        target: Option<usize>,
        entry: u64,
        context: u64,
        guest_ram: &[Region],
    ) -> i64 {
        let Some(t) = target.filter(|&t| t < MAX_CPUS) else { return INVALID_PARAMETERS };
        if !guest_ram.iter().any(|r| r.contains(entry) && r.contains(entry.saturating_add(3)))
            || !entry.is_multiple_of(4)
        {
            return INVALID_ADDRESS;
        }
        if !self.is_up(t) {
            return INTERNAL_FAILURE;
        }
        match self.state[t].compare_exchange(
            PowerState::Off as u8,
            STARTING,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                self.entry[t].store(entry, Ordering::Relaxed);
                self.context[t].store(context, Ordering::Relaxed);
                self.state[t].store(PowerState::OnPending as u8, Ordering::Release);
                SUCCESS
            }
            Err(v) if v == PowerState::On as u8 => ALREADY_ON,
            Err(_) => ON_PENDING,
        }
    }

    /// On the target's CPU: the entry point and context of a pending CPU_ON, which turns it on.
    pub fn take_start(&self, cpu: usize) -> Option<(u64, u64)> {
        self.state[cpu]
            .compare_exchange(
                PowerState::OnPending as u8,
                PowerState::On as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .ok()
            .map(|_| {
                (self.entry[cpu].load(Ordering::Relaxed), self.context[cpu].load(Ordering::Relaxed))
            })
    }

    pub fn cpu_off(&self, cpu: usize) {
        self.state[cpu].store(PowerState::Off as u8, Ordering::Release);
    }

    /// AFFINITY_INFO at level 0.
    pub fn affinity_info(&self, target: Option<usize>, level: u64) -> i64 {
        match (level, target) {
            (0, Some(t)) if t < MAX_CPUS => self.state(t) as i64,
            _ => INVALID_PARAMETERS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_linux_boot_calls() {
        assert_eq!(decode([VERSION as u64, 0, 0, 0]), Call::Version);
        assert_eq!(
            decode([CPU_ON_64 as u64, 0x8000_0003, 0x4000_1000, 7]),
            Call::CpuOn { target: 0x8000_0003, entry: 0x4000_1000, context: 7 }
        );
        // SMC32 arguments are 32 bits wide.
        assert_eq!(
            decode([CPU_ON as u64, 0xFFFF_FFFF_0000_0001, 0x1_4000_0000, 0]),
            Call::CpuOn { target: 1, entry: 0x4000_0000, context: 0 }
        );
        assert_eq!(decode([0xC200_0000, 0, 0, 0]), Call::Unknown(0xC200_0000));
    }

    #[test]
    fn features_and_cpu_on_rules() {
        assert_eq!(features(CPU_ON_64), SUCCESS);
        assert_eq!(features(0x8400_000E), NOT_SUPPORTED); // SYSTEM_SUSPEND
        assert_eq!(features(SMCCC_ARCH_FEATURES), NOT_SUPPORTED);
        assert_eq!(cpu_on_result(Some(PowerState::Off)), SUCCESS);
        assert_eq!(cpu_on_result(Some(PowerState::On)), ALREADY_ON);
        assert_eq!(cpu_on_result(None), INVALID_PARAMETERS);
    }

    /// Defect 6: CPU_ON into hypervisor memory (outside the guest's RAM) is refused.
    #[test]
    fn defect6_cpu_on_entry_must_be_guest_ram() {
        let v = Vcpus::new();
        let ram = [Region::new(0x6000_0000, 0x2000_0000)];
        v.mark_up(1);
        assert_eq!(
            v.cpu_on(Some(1), 0x4020_0000, 0, &ram),
            INVALID_ADDRESS,
            "the hypervisor's image"
        );
        assert_eq!(v.cpu_on(Some(1), 0x7FFF_FFFE, 0, &ram), INVALID_ADDRESS, "straddles the end");
        assert_eq!(v.affinity_info(Some(1), 0), PowerState::Off as i64);
        assert_eq!(v.cpu_on(Some(1), 0x6000_1000, 7, &ram), SUCCESS);
        assert_eq!(v.cpu_on(Some(1), 0x6000_1000, 7, &ram), ON_PENDING);
        assert_eq!(v.affinity_info(Some(1), 0), PowerState::OnPending as i64);
        assert_eq!(v.take_start(1), Some((0x6000_1000, 7)));
        assert_eq!(v.take_start(1), None);
        assert_eq!(v.cpu_on(Some(1), 0x6000_1000, 7, &ram), ALREADY_ON);
        v.cpu_off(1);
        assert_eq!(v.affinity_info(Some(1), 0), PowerState::Off as i64);
        assert_eq!(
            v.cpu_on(Some(2), 0x6000_1000, 0, &ram),
            INTERNAL_FAILURE,
            "CPU 2 never reached the hypervisor"
        );
        assert_eq!(v.cpu_on(None, 0x6000_1000, 0, &ram), INVALID_PARAMETERS);
        assert_eq!(v.cpu_on(Some(99), 0x6000_1000, 0, &ram), INVALID_PARAMETERS);
    }
}
