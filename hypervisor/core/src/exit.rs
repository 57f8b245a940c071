//! A guest's synchronous exit to EL2, decoded from ESR_EL2, FAR_EL2 and HPFAR_EL2 (ARM DDI 0487
//! D13.2.37 and D13.2.61), and the arithmetic of completing an emulated MMIO access.

use crate::addr::GuestPhysAddr;

pub const EC_UNKNOWN: u32 = 0x00;
pub const EC_HVC64: u32 = 0x16;
pub const EC_SMC64: u32 = 0x17;
pub const EC_IABT_LOW: u32 = 0x20;
pub const EC_DABT_LOW: u32 = 0x24;

/// The syndrome of a data abort with ISV = 1: the load or store instruction, enough to emulate it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioAccess {
    /// Access size in bytes (SAS: 1, 2, 4 or 8).
    pub size: u8,
    /// SSE: a load sign-extends the value to the register width.
    pub sign_extend: bool,
    /// SF: the register is 64 bits wide (X); otherwise 32 (W), whose upper half a load clears.
    pub sixty_four: bool,
    /// SRT: the register; 31 is XZR/WZR for these instructions.
    pub reg: u8,
    pub write: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataAbort {
    pub ipa: GuestPhysAddr,
    /// Decoded instruction, when the hardware gave one (ISV); otherwise the access cannot be emulated.
    pub access: Option<MmioAccess>,
    /// WnR (also meaningful without ISV).
    pub write: bool,
    /// The fault happened on the guest's own stage-1 table walk (S1PTW).
    pub s1ptw: bool,
    /// IL: a 32-bit instruction (always, in AArch64).
    pub il32: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Hvc {
        imm: u16,
    },
    /// ELR points at the SMC itself (not past it, unlike HVC).
    Smc {
        imm: u16,
    },
    DataAbort(DataAbort),
    InstructionAbort {
        ipa: GuestPhysAddr,
    },
    Other {
        ec: u32,
        esr: u64,
    },
}

/// The faulting IPA: HPFAR holds bits [47:12] in its bits [43:4]; the page offset comes from FAR.
pub fn fault_ipa(far: u64, hpfar: u64) -> GuestPhysAddr {
    GuestPhysAddr((((hpfar >> 4) & 0xFF_FFFF_FFFF) << 12) | (far & 0xFFF))
}

pub fn decode(esr: u64, far: u64, hpfar: u64) -> Exit {
    let ec = ((esr >> 26) & 0x3F) as u32;
    let iss = esr & 0x1FF_FFFF;
    match ec {
        EC_HVC64 => Exit::Hvc { imm: iss as u16 },
        EC_SMC64 => Exit::Smc { imm: iss as u16 },
        EC_IABT_LOW => Exit::InstructionAbort { ipa: fault_ipa(far, hpfar) },
        EC_DABT_LOW => {
            let write = iss & (1 << 6) != 0;
            let access = (iss & (1 << 24) != 0).then(|| MmioAccess {
                size: 1 << ((iss >> 22) & 3),
                sign_extend: iss & (1 << 21) != 0,
                sixty_four: iss & (1 << 15) != 0,
                reg: ((iss >> 16) & 0x1F) as u8,
                write,
            });
            Exit::DataAbort(DataAbort {
                ipa: fault_ipa(far, hpfar),
                access,
                write,
                s1ptw: iss & (1 << 7) != 0,
                il32: esr & (1 << 25) != 0,
            })
        }
        _ => Exit::Other { ec, esr },
    }
}

impl MmioAccess {
    /// The value a store writes: the register truncated to the access size.
    pub fn store_value(&self, reg: u64) -> u64 {
        if self.size == 8 {
            reg
        } else {
            reg & ((1u64 << (8 * u32::from(self.size))) - 1)
        }
    }

    /// The register value after a load returned `raw` (only its low `size` bytes count): sign-extended
    /// when SSE says so, and a W register's upper half cleared.
    pub fn load_value(&self, raw: u64) -> u64 {
        let bits = 8 * u32::from(self.size);
        let v = if bits == 64 { raw } else { raw & ((1u64 << bits) - 1) };
        let v = if self.sign_extend && bits < 64 {
            let shift = 64 - bits;
            (((v << shift) as i64) >> shift) as u64
        } else {
            v
        };
        if self.sixty_four {
            v
        } else {
            v & 0xFFFF_FFFF
        }
    }
}

impl DataAbort {
    /// How far to advance the guest's PC past the emulated instruction.
    pub fn instruction_len(&self) -> u64 {
        if self.il32 {
            4
        } else {
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dabt_esr(isv: bool, sas: u64, sse: bool, srt: u64, sf: bool, wnr: bool) -> u64 {
        (u64::from(EC_DABT_LOW) << 26)
            | (1 << 25)
            | (u64::from(isv) << 24)
            | (sas << 22)
            | (u64::from(sse) << 21)
            | (srt << 16)
            | (u64::from(sf) << 15)
            | (u64::from(wnr) << 6)
            | 0x07 // translation fault, level 3
    }

    #[test]
    fn decodes_every_syndrome_field() {
        let e =
            decode(dabt_esr(true, 0, true, 5, false, false), 0xFFFF_0000_0800_0103, 0x0008_0000);
        let Exit::DataAbort(d) = e else { panic!("{e:?}") };
        assert_eq!(d.ipa, GuestPhysAddr(0x0800_0103));
        assert_eq!(
            d.access,
            Some(MmioAccess {
                size: 1,
                sign_extend: true,
                sixty_four: false,
                reg: 5,
                write: false
            })
        );
        assert_eq!(d.instruction_len(), 4);
        let Exit::DataAbort(d) = decode(dabt_esr(true, 3, false, 31, true, true), 0, 0) else {
            panic!()
        };
        assert_eq!(
            d.access.map(|a| (a.size, a.sixty_four, a.reg, a.write)),
            Some((8, true, 31, true))
        );
        let Exit::DataAbort(d) =
            decode(dabt_esr(false, 2, false, 0, false, true) & !(1 << 25), 0, 0)
        else {
            panic!()
        };
        assert_eq!((d.access, d.write, d.instruction_len()), (None, true, 2));
        assert_eq!(decode((0x16 << 26) | (1 << 25) | 0x1234, 0, 0), Exit::Hvc { imm: 0x1234 });
        assert_eq!(decode(0x17 << 26, 0, 0), Exit::Smc { imm: 0 });
        assert_eq!(
            decode((0x20 << 26) | 0x0F, 0x123, 0x1000),
            Exit::InstructionAbort { ipa: GuestPhysAddr(0x10_0123) }
        );
        assert_eq!(decode(0x07 << 26, 0, 0), Exit::Other { ec: 7, esr: 0x07 << 26 });
    }

    /// Defect 9: a sign-extending byte load (LDRSB) of 0x80 into a W register gives 0xFFFF_FF80, into an
    /// X register 0xFFFF_FFFF_FFFF_FF80; a plain LDR W clears the upper half; a store is truncated.
    #[test]
    fn defect9_loads_honour_sse_and_sf() {
        let a = |size, sse, sf| MmioAccess {
            size,
            sign_extend: sse,
            sixty_four: sf,
            reg: 0,
            write: false,
        };
        assert_eq!(a(1, true, false).load_value(0x80), 0xFFFF_FF80);
        assert_eq!(a(1, true, true).load_value(0x80), 0xFFFF_FFFF_FFFF_FF80);
        assert_eq!(a(2, true, true).load_value(0x1_7FFF), 0x7FFF);
        assert_eq!(a(4, false, false).load_value(0xDEAD_BEEF_8000_0001), 0x8000_0001);
        assert_eq!(a(4, true, true).load_value(0x8000_0001), 0xFFFF_FFFF_8000_0001);
        assert_eq!(a(1, false, true).store_value(0x1234), 0x34);
        assert_eq!(a(8, false, true).store_value(u64::MAX), u64::MAX);
    }
}
