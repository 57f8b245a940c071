//! Typed addresses: a host physical address, a guest's intermediate physical address and an EL2
//! virtual address are different things even where a mapping makes them equal (Dom0 is direct-mapped,
//! EL2 identity-maps RAM); converting between them is always explicit.

/// A host physical address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PhysAddr(pub u64);

/// A guest's intermediate physical address (what its stage 1 outputs, what stage 2 translates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GuestPhysAddr(pub u64);

/// An address in the hypervisor's own EL2 translation regime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VirtAddr(pub u64);

impl GuestPhysAddr {
    /// The offset of this address inside `[base, base + size)`, if it is inside.
    pub fn offset_in(self, base: GuestPhysAddr, size: u64) -> Option<u64> {
        self.0.checked_sub(base.0).filter(|&o| o < size)
    }
}

impl PhysAddr {
    pub const fn add(self, off: u64) -> PhysAddr {
        PhysAddr(self.0 + off)
    }
    /// The guest address of this physical address in a direct-mapped guest (Dom0: IPA = PA).
    pub const fn direct_ipa(self) -> GuestPhysAddr {
        GuestPhysAddr(self.0)
    }
    /// The EL2 address of this physical address (EL2 maps RAM and devices 1:1).
    pub const fn identity(self) -> VirtAddr {
        VirtAddr(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_is_bounded() {
        let base = GuestPhysAddr(0x0800_0000);
        assert_eq!(GuestPhysAddr(0x0800_0FFF).offset_in(base, 0x1000), Some(0xFFF));
        assert_eq!(GuestPhysAddr(0x0800_1000).offset_in(base, 0x1000), None);
        assert_eq!(GuestPhysAddr(0x07FF_FFFF).offset_in(base, 0x1000), None);
        assert_eq!(PhysAddr(0x10).add(2).direct_ipa(), GuestPhysAddr(0x12));
    }
}
