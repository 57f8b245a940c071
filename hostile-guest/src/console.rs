//! Output on the PL011 the device tree's `stdout-path` names (the hypervisor's emulated console when
//! we run as Dom0). Whole lines under a lock, so that two vCPUs never interleave mid-line.

use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static UART: AtomicU64 = AtomicU64::new(0);
static LOCK: AtomicBool = AtomicBool::new(false);

pub fn set_uart(base: u64) {
    UART.store(base, Ordering::Release);
}

/// A line being built on the stack; what does not fit is cut (the line says so with `...`).
pub struct Line {
    buf: [u8; 400],
    len: usize,
}

impl Line {
    pub const fn new() -> Line {
        Line { buf: [0; 400], len: 0 }
    }
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("<non-utf8>")
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for &b in s.as_bytes() {
            if self.len >= self.buf.len() - 3 {
                self.buf[self.len..self.len + 3].copy_from_slice(b"...");
                self.len += 3;
                return Err(core::fmt::Error);
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

fn putc(base: u64, b: u8) {
    // PL011: wait while the transmit FIFO is full (FR.TXFF, bit 5), then write DR.
    // SAFETY: `base` is the PL011 from the device tree, mapped Device-nGnRnE by the identity map.
    unsafe {
        while core::ptr::read_volatile((base + 0x18) as *const u32) & (1 << 5) != 0 {}
        core::ptr::write_volatile(base as *mut u32, u32::from(b));
    }
}

pub fn write_line(line: &str) {
    let base = UART.load(Ordering::Acquire);
    if base == 0 {
        return;
    }
    while LOCK.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        core::hint::spin_loop();
    }
    for &b in line.as_bytes() {
        putc(base, b);
    }
    putc(base, b'\n');
    LOCK.store(false, Ordering::Release);
}

macro_rules! println {
    ($($t:tt)*) => {{
        let mut l = $crate::console::Line::new();
        let _ = core::fmt::Write::write_fmt(&mut l, format_args!($($t)*));
        $crate::console::write_line(l.as_str());
    }};
}
pub(crate) use println;
