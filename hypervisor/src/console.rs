//! The hypervisor's console: a polled PL011 or BCM2835 mini-UART, whole lines under one lock so that
//! hypervisor lines and relayed Dom0 lines never interleave mid-line (the `sync_console` behaviour is
//! the only one: every line is on the wire before the caller continues).

use core::cell::UnsafeCell;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

use rpixen_hv_core::ratelimit::{RateLimit, Verdict};

use crate::mmio::Mmio;

#[derive(Clone, Copy)]
pub enum Uart {
    /// PL011: DR at +0x00, FR at +0x18 (TXFF bit 5).
    Pl011(Mmio),
    /// Mini-UART (the DT's reg points at AUX_MU_IO): IO at +0x00, LSR at +0x14 (TX empty bit 5).
    Mini(Mmio),
}

impl Uart {
    /// A received byte, if one is waiting.
    pub fn getc(&self) -> Option<u8> {
        match *self {
            Uart::Pl011(m) => (m.read32(0x18) & (1 << 4) == 0).then(|| m.read32(0) as u8),
            Uart::Mini(m) => (m.read32(0x14) & 1 != 0).then(|| m.read32(0) as u8),
        }
    }

    fn putc(&self, b: u8) {
        match *self {
            Uart::Pl011(m) => {
                while m.read32(0x18) & (1 << 5) != 0 {}
                m.write32(0, u32::from(b));
            }
            Uart::Mini(m) => {
                while m.read32(0x14) & (1 << 5) == 0 {}
                m.write32(0, u32::from(b));
            }
        }
    }
}

struct ConsoleCell(UnsafeCell<Option<Uart>>);
// SAFETY: written once by the boot CPU before any other CPU runs (set_uart), read-only afterwards.
unsafe impl Sync for ConsoleCell {}

static UART: ConsoleCell = ConsoleCell(UnsafeCell::new(None));
static LOCK: spin::Mutex<()> = spin::Mutex::new(());
/// Exclusive loads/stores need Normal memory, i.e. the EL2 MMU on; before that only the boot CPU runs.
static LOCKING: AtomicBool = AtomicBool::new(false);
/// Dom0 left a partial line (a prompt) on the terminal: the next hypervisor line starts a new one.
static MID_LINE: AtomicBool = AtomicBool::new(false);

pub fn set_uart(u: Uart) {
    // SAFETY: see ConsoleCell.
    unsafe { *UART.0.get() = Some(u) };
}

pub fn uart() -> Option<Uart> {
    // SAFETY: see ConsoleCell.
    unsafe { *UART.0.get() }
}

pub fn enable_locking() {
    LOCKING.store(true, Ordering::Release);
}

fn with_lock(f: impl FnOnce(&Uart)) {
    let Some(u) = uart() else { return };
    if LOCKING.load(Ordering::Acquire) {
        let _g = LOCK.lock();
        f(&u);
    } else {
        f(&u);
    }
}

fn put_bytes(u: &Uart, bytes: &[u8]) {
    for &b in bytes {
        if b == b'\n' {
            u.putc(b'\r');
        }
        u.putc(b);
    }
}

struct LineBuf {
    b: [u8; 320],
    n: usize,
}

impl Write for LineBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let take = s.len().min(self.b.len() - self.n);
        self.b[self.n..self.n + take].copy_from_slice(&s.as_bytes()[..take]);
        self.n += take;
        Ok(())
    }
}

/// Prints one hypervisor line.
pub fn print_line(args: fmt::Arguments<'_>) {
    let mut line = LineBuf { b: [0; 320], n: 0 };
    let _ = line.write_fmt(args);
    with_lock(|u| {
        if MID_LINE.swap(false, Ordering::Relaxed) {
            put_bytes(u, b"\n");
        }
        put_bytes(u, &line.b[..line.n]);
        put_bytes(u, b"\n");
    });
}

/// Writes Dom0 console output as it is: a complete line, or a partial one that has waited long enough
/// (a prompt); after a partial one the terminal is mid-line until Dom0 ends the line.
pub fn write_guest_line(bytes: &[u8]) {
    with_lock(|u| {
        put_bytes(u, bytes);
        MID_LINE.store(bytes.last() != Some(&b'\n'), Ordering::Relaxed);
    });
}

/// Messages a guest can provoke: 5 at once, then one a second (EL2 prints with IRQs masked and a line
/// takes ~7 ms at 115200 baud, so an unlimited stream would stall this CPU and every CPU waiting for
/// the console).
static GUEST_CAUSED: spin::Mutex<RateLimit> = spin::Mutex::new(RateLimit::new(5, u64::MAX));

/// Sets the rate limit's refill to one message per second of the counter at `freq` Hz.
pub fn set_rate_limit(freq: u64) {
    *GUEST_CAUSED.lock() = RateLimit::new(5, freq.max(1));
}

/// Prints a line a guest caused, unless the rate limit says otherwise.
pub fn print_limited(now: u64, args: fmt::Arguments<'_>) {
    let verdict = GUEST_CAUSED.lock().check(now);
    if let Verdict::Print { suppressed } = verdict {
        if suppressed != 0 {
            print_line(format_args!("hv: {} messages suppressed", suppressed));
        }
        print_line(args);
    }
}

/// Reports what the rate limit held back (before power-off or reset, when no later message would).
pub fn flush_suppressed() {
    let n = GUEST_CAUSED.lock().take_suppressed();
    if n != 0 {
        print_line(format_args!("hv: {} messages suppressed", n));
    }
}

macro_rules! hvprintln {
    ($($t:tt)*) => { $crate::console::print_line(format_args!($($t)*)) };
}
pub(crate) use hvprintln;

/// `hvprintln!` for lines a guest can provoke (rate-limited).
macro_rules! guest_caused {
    ($($t:tt)*) => { $crate::console::print_limited($crate::arch::mrs!("cntpct_el0"), format_args!($($t)*)) };
}
pub(crate) use guest_caused;
