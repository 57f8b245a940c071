//! Volatile MMIO access. Every address passed here comes from the host device tree (GIC, UART, PM
//! block) or from a decoded guest access inside a trapped device page, and is mapped as Device memory
//! in the EL2 tables (or the MMU is off, which also makes it Device).

pub fn read32(addr: u64) -> u32 {
    // SAFETY: see the module comment; 32-bit aligned device register.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

pub fn write32(addr: u64, v: u32) {
    // SAFETY: see the module comment.
    unsafe { core::ptr::write_volatile(addr as *mut u32, v) }
}

/// An access of `width` bytes (1, 2 or 4) as the guest made it.
pub fn read(addr: u64, width: u8) -> u32 {
    // SAFETY: see the module comment; the GIC distributor accepts byte and word accesses.
    unsafe {
        match width {
            1 => u32::from(core::ptr::read_volatile(addr as *const u8)),
            2 => u32::from(core::ptr::read_volatile(addr as *const u16)),
            _ => core::ptr::read_volatile(addr as *const u32),
        }
    }
}

pub fn write(addr: u64, width: u8, v: u32) {
    // SAFETY: as `read`.
    unsafe {
        match width {
            1 => core::ptr::write_volatile(addr as *mut u8, v as u8),
            2 => core::ptr::write_volatile(addr as *mut u16, v as u16),
            _ => core::ptr::write_volatile(addr as *mut u32, v),
        }
    }
}
