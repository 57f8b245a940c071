//! PSCI (ARM DEN 0022) and SMCCC calls Dom0 makes with `HVC #0`: function IDs, decoding, the
//! features answer, and the vCPU power-state rules. The binary carries the decisions out.

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
        VERSION | CPU_SUSPEND | CPU_SUSPEND_64 | CPU_OFF | CPU_ON | CPU_ON_64 | AFFINITY_INFO | AFFINITY_INFO_64
        | MIGRATE_INFO_TYPE | SYSTEM_OFF | SYSTEM_RESET | FEATURES | SMCCC_VERSION => SUCCESS,
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
}
