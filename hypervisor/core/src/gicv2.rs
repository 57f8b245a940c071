//! The one table of GICv2 register offsets and list-register bits (ARM IHI 0048B), used by the virtual
//! distributor here and by the EL2 binary's physical GIC driver.

/// Distributor (GICD) register offsets.
pub mod gicd {
    pub const CTLR: u32 = 0x000;
    pub const TYPER: u32 = 0x004;
    pub const IIDR: u32 = 0x008;
    pub const IGROUPR: u32 = 0x080;
    pub const ISENABLER: u32 = 0x100;
    pub const ICENABLER: u32 = 0x180;
    pub const ISPENDR: u32 = 0x200;
    pub const ICPENDR: u32 = 0x280;
    pub const ISACTIVER: u32 = 0x300;
    pub const ICACTIVER: u32 = 0x380;
    pub const IPRIORITYR: u32 = 0x400;
    pub const ITARGETSR: u32 = 0x800;
    pub const ICFGR: u32 = 0xC00;
    pub const NSACR: u32 = 0xE00;
    pub const SGIR: u32 = 0xF00;
    pub const CPENDSGIR: u32 = 0xF10;
    pub const SPENDSGIR: u32 = 0xF20;
    pub const PIDR2: u32 = 0xFE8;
    /// The architected register page; the rest of the distributor frame is reserved.
    pub const PAGE: u32 = 0x1000;
}

/// CPU interface (GICC) register offsets.
pub mod gicc {
    pub const CTLR: u32 = 0x000;
    pub const PMR: u32 = 0x004;
    pub const BPR: u32 = 0x008;
    pub const IAR: u32 = 0x00C;
    pub const EOIR: u32 = 0x010;
    /// Deactivation (EOImode = 1), in the second 4 KiB page of the CPU interface.
    pub const DIR: u32 = 0x1000;
    /// GICC_CTLR: Enable (group 0 / non-secure group 1) | EOImodeNS.
    pub const CTLR_ENABLE_EOIMODE: u32 = 0x201;
}

/// Virtual interface control (GICH) register offsets.
pub mod gich {
    pub const HCR: u32 = 0x000;
    pub const VTR: u32 = 0x004;
    pub const ELSR0: u32 = 0x030;
    pub const APR: u32 = 0x0F0;
    pub const LR0: u32 = 0x100;
    /// HCR.En: the virtual CPU interface is on.
    pub const HCR_EN: u32 = 1;
    /// HCR.UIE: maintenance interrupt when at most one list register holds an interrupt.
    pub const HCR_UIE: u32 = 1 << 1;
}

/// The first SPI.
pub const SPI_BASE: u32 = 32;
/// Interrupt IDs 1020-1023 are special; the architecture has at most 1020 real ones.
pub const MAX_INTID: u32 = 1020;
/// Virtual timer PPI (CNTV): INTID 27 on both boards.
pub const VTIMER_INTID: u32 = 27;

/// A list-register value (GICH_LRn, IHI 0048B 5.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lr(pub u32);

/// A list register's state field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LrState {
    Invalid,
    Pending,
    Active,
    PendingActive,
}

impl Lr {
    const HW: u32 = 1 << 31;
    const STATE_SHIFT: u32 = 28;
    const PRIO_SHIFT: u32 = 23;
    const PID_SHIFT: u32 = 10;

    /// A pending entry. With `hw` the physical INTID equals the virtual one (Dom0 is direct-mapped)
    /// and Dom0's EOI deactivates it; otherwise `source` is an SGI's sender (CPUID field). Priority is
    /// the guest's 8-bit value, of which an LR keeps the top 5 bits.
    pub fn pending(vintid: u32, hw: bool, priority: u8, source: u8) -> Lr {
        let mut v = (vintid & 0x3FF)
            | (u32::from(priority >> 3) << Self::PRIO_SHIFT)
            | (1 << Self::STATE_SHIFT);
        if hw {
            v |= Self::HW | ((vintid & 0x3FF) << Self::PID_SHIFT);
        } else {
            v |= u32::from(source & 7) << Self::PID_SHIFT;
        }
        Lr(v)
    }
    pub fn vintid(self) -> u32 {
        self.0 & 0x3FF
    }
    pub fn hw(self) -> bool {
        self.0 & Self::HW != 0
    }
    /// The physical INTID of a HW entry.
    pub fn pintid(self) -> u32 {
        (self.0 >> Self::PID_SHIFT) & 0x3FF
    }
    /// An SGI's source vCPU (non-HW entries).
    pub fn source(self) -> u8 {
        ((self.0 >> Self::PID_SHIFT) & 7) as u8
    }
    /// The 5-bit priority field, widened back to 8 bits.
    pub fn priority(self) -> u8 {
        (((self.0 >> Self::PRIO_SHIFT) & 0x1F) << 3) as u8
    }
    pub fn state(self) -> LrState {
        match (self.0 >> Self::STATE_SHIFT) & 3 {
            0 => LrState::Invalid,
            1 => LrState::Pending,
            2 => LrState::Active,
            _ => LrState::PendingActive,
        }
    }
    pub fn with_pending(self) -> Lr {
        Lr(self.0 | (1 << Self::STATE_SHIFT))
    }
    /// Whether this entry stands for the same virtual interrupt as `(vintid, source)` (an SGI is one
    /// interrupt per source, as on a real GIC).
    pub fn same(self, vintid: u32, source: u8) -> bool {
        self.vintid() == vintid && (vintid >= 16 || self.hw() || self.source() == source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_register_encoding() {
        // SPI 33 forwarded with the HW bit, Linux's default priority 0xA0.
        let lr = Lr::pending(33, true, 0xA0, 0);
        assert_eq!(lr.0, (1 << 31) | (1 << 28) | (0x14 << 23) | (33 << 10) | 33);
        assert_eq!(
            (lr.hw(), lr.pintid(), lr.priority(), lr.state()),
            (true, 33, 0xA0, LrState::Pending)
        );
        // SGI 1 from vCPU 3: no HW bit, CPUID = 3, group 0.
        let v = Lr::pending(1, false, 0xA0, 3);
        assert_eq!(
            (v.0 >> 31, (v.0 >> 10) & 7, v.0 & 0x3FF, (v.0 >> 28) & 3, (v.0 >> 30) & 1),
            (0, 3, 1, 1, 0)
        );
        assert!(v.same(1, 3) && !v.same(1, 2) && !v.same(2, 3));
        assert_eq!(Lr(2 << 28).with_pending().state(), LrState::PendingActive);
    }
}
