//! Typed MMIO blocks. A block's constructor is the one `unsafe` step: whoever makes one vouches that
//! the range is a device register block, mapped Device at EL2 (identity) or used with the MMU off.
//! After that every access is bounds- and alignment-checked against the block, so a decoded guest
//! offset can never turn into an access elsewhere.

use rpixen_hv_core::addr::PhysAddr;

#[derive(Clone, Copy, Debug)]
pub struct Mmio {
    base: u64,
    size: u64,
}

impl Mmio {
    /// # Safety
    /// `[base, base + size)` must be device registers that the hypervisor may access with 8-, 16- and
    /// 32-bit volatile loads and stores, mapped Device-nGnRnE in the EL2 tables (VA = PA).
    pub const unsafe fn new(base: PhysAddr, size: u64) -> Mmio {
        Mmio { base: base.0, size }
    }

    fn addr(&self, off: u32, width: u64) -> u64 {
        let off = u64::from(off);
        // A static message: the panic handler prints no formatted arguments (no `core::fmt`).
        assert!(
            off.is_multiple_of(width) && off + width <= self.size,
            "MMIO access outside its block"
        );
        self.base + off
    }

    pub fn read32(&self, off: u32) -> u32 {
        let a = self.addr(off, 4);
        // SAFETY: inside the block, aligned (checked above); the block's creator vouched for it.
        unsafe { core::ptr::read_volatile(a as *const u32) }
    }

    pub fn write32(&self, off: u32, v: u32) {
        let a = self.addr(off, 4);
        // SAFETY: as read32.
        unsafe { core::ptr::write_volatile(a as *mut u32, v) }
    }

    pub fn read8(&self, off: u32) -> u8 {
        let a = self.addr(off, 1);
        // SAFETY: as read32.
        unsafe { core::ptr::read_volatile(a as *const u8) }
    }

    pub fn write8(&self, off: u32, v: u8) {
        let a = self.addr(off, 1);
        // SAFETY: as read32.
        unsafe { core::ptr::write_volatile(a as *mut u8, v) }
    }
}
