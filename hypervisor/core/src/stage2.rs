//! What a domain's stage 2 maps (its RAM, the devices it may drive, the GIC virtual CPU interface in
//! place of the physical one) and what it leaves as holes (everything the hypervisor owns or
//! emulates: accesses there trap and are emulated or refused).

use alloc::vec::Vec;

use crate::pagetable::Regime;
use crate::region::{align_down, align_up, gaps};
use crate::Region;

/// A domain's stage-2 plan, page-aligned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Guest RAM (Normal memory), IPA = PA for Dom0.
    pub ram: Vec<Region>,
    /// Device ranges mapped straight through (IPA = PA).
    pub mmio: Vec<Region>,
    /// The GIC virtual CPU interface: (IPA of the guest's GICC, PA of GICV, size).
    pub gicv: (u64, u64, u64),
}

/// Dom0's plan: its RAM, and every non-RAM address except `traps` (page-rounded outward): the GIC
/// frames, emulated devices, and what the hypervisor drives itself.
pub fn dom0(
    guest_ram: &[Region],
    host_ram: &[Region],
    traps: &[Region],
    gicv: (u64, u64, u64),
) -> Plan {
    let mut holes: Vec<Region> = host_ram.to_vec();
    holes.extend(traps.iter().map(|r| {
        let base = align_down(r.base, 0x1000);
        Region::new(base, align_up(r.end(), 0x1000) - base)
    }));
    let mmio = gaps(&holes, 0, Regime::Stage2.limit())
        .into_iter()
        .filter_map(|g| {
            let base = align_up(g.base, 0x1000);
            let end = align_down(g.end(), 0x1000);
            (end > base).then(|| Region::new(base, end - base))
        })
        .collect();
    Plan { ram: guest_ram.to_vec(), mmio, gicv }
}

impl Plan {
    /// Whether `ipa` is mapped (RAM, device or the GICV window).
    pub fn maps(&self, ipa: u64) -> bool {
        self.ram.iter().chain(self.mmio.iter()).any(|r| r.contains(ipa))
            || (ipa >= self.gicv.0 && ipa - self.gicv.0 < self.gicv.2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypervisor_pages_and_foreign_ram_are_holes() {
        let host_ram = [Region::new(0x4000_0000, 0x8000_0000)];
        let dom0_ram = [Region::new(0x6000_0000, 0x2000_0000)];
        let traps = [
            Region::new(0x0800_0000, 0x1_0000),
            Region::new(0x0801_0000, 0x1_0000),
            Region::new(0x0903_0010, 0x8),
        ];
        let p = dom0(&dom0_ram, &host_ram, &traps, (0x0801_0000, 0x0804_0000, 0x2000));
        assert!(
            p.maps(0x6000_0000)
                && p.maps(0x7FFF_FFFF)
                && p.maps(0x0900_0000)
                && p.maps(0x80_0000_0000)
        );
        assert!(!p.maps(0x4020_0000), "the hypervisor's RAM");
        assert!(!p.maps(0x0800_0104), "GICD");
        assert!(!p.maps(0x0903_0000) && !p.maps(0x0903_0FFF), "a trapped register's whole page");
        assert!(p.maps(0x0801_0000), "GICV at GICC's address");
        assert!(!p.maps(0x0801_2000), "beyond GICV");
        assert!(p.mmio.iter().all(|r| r.base % 0x1000 == 0 && r.size % 0x1000 == 0));
    }
}
