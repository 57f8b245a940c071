//! The guest physical memory map of a DomU, Xen's (`xen/include/public/arch-arm.h`, checked against
//! xen-project/xen 02f6d4e6 and c447b730): a kernel and device tree that boot as a Xen dom0less
//! DomU find the same addresses here. Dom0 is direct-mapped and does not use this map.

use crate::Region;

/// vGICv2 distributor and CPU interface (`GUEST_GICD_BASE`/`SIZE`, `GUEST_GICC_BASE`/`SIZE`).
pub const GICD: Region = Region::new(0x0300_1000, 0x1000);
pub const GICC: Region = Region::new(0x0300_2000, 0x2000);
/// The emulated SBSA UART (`GUEST_PL011_BASE`/`SIZE`).
pub const PL011: Region = Region::new(0x2200_0000, 0x1000);
/// Low guest RAM, 3 GiB at 1 GiB (`GUEST_RAM0_BASE`/`SIZE`), then high RAM at 8 GiB
/// (`GUEST_RAM1_BASE`/`SIZE`).
pub const RAM0: Region = Region::new(0x4000_0000, 0xC000_0000);
pub const RAM1: Region = Region::new(0x02_0000_0000, 0xFE_0000_0000);
/// The vPL011's interrupt (`GUEST_VPL011_SPI`, an INTID: SPI 0).
pub const VPL011_INTID: u32 = 32;
/// Timer PPIs (`GUEST_TIMER_PHYS_S_PPI`, `..._PHYS_NS_PPI`, `..._VIRT_PPI`), as INTIDs.
pub const TIMER_PHYS_S_INTID: u32 = 29;
pub const TIMER_PHYS_NS_INTID: u32 = 30;
pub const TIMER_VIRT_INTID: u32 = 27;
/// The GIC's phandle in a generated guest tree (`GUEST_PHANDLE_GIC`, device_tree_defs.h).
pub const PHANDLE_GIC: u32 = 65000;

/// The guest RAM banks for `size` bytes: RAM0 first, the rest in RAM1 (Xen's `allocate_memory`
/// order). `None` when `size` is zero or exceeds both banks.
pub fn ram_banks(size: u64) -> Option<[Option<Region>; 2]> {
    if size == 0 || size > RAM0.size + RAM1.size {
        return None;
    }
    let low = size.min(RAM0.size);
    let high = size - low;
    Some([Some(Region::new(RAM0.base, low)), (high != 0).then(|| Region::new(RAM1.base, high))])
}

/// The MPIDR affinity Xen gives vCPU `n` (`vcpuid_to_vaffinity`: Aff0 = n mod 16, Aff1 = n / 16).
pub fn vcpu_mpidr(n: u32) -> u64 {
    u64::from(n & 0xF) | (u64::from((n >> 4) & 0xFF) << 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_xens() {
        assert_eq!((GICD.base, GICD.size), (0x0300_1000, 0x1000));
        assert_eq!((GICC.base, GICC.size), (0x0300_2000, 0x2000));
        assert_eq!((PL011.base, PL011.size), (0x2200_0000, 0x1000));
        assert_eq!((RAM0.base, RAM0.end()), (0x4000_0000, 0x1_0000_0000));
        assert_eq!(RAM1.base, 8 << 30);
        assert_eq!(VPL011_INTID, 32);
        // Nothing of the device window overlaps RAM.
        for d in [GICD, GICC, PL011] {
            assert!(!d.overlaps(&RAM0) && !d.overlaps(&RAM1));
        }
    }

    #[test]
    fn ram_fills_low_bank_first() {
        let b = ram_banks(256 << 20).unwrap();
        assert_eq!(b, [Some(Region::new(0x4000_0000, 256 << 20)), None]);
        let b = ram_banks(4 << 30).unwrap();
        assert_eq!(b[0], Some(RAM0));
        assert_eq!(b[1], Some(Region::new(8 << 30, 1 << 30)));
        assert_eq!(ram_banks(0), None);
        assert_eq!(ram_banks(RAM0.size + RAM1.size + 1), None);
    }

    #[test]
    fn vcpu_affinity_is_xens() {
        assert_eq!(vcpu_mpidr(0), 0);
        assert_eq!(vcpu_mpidr(3), 3);
        assert_eq!(vcpu_mpidr(17), 0x101);
    }
}
