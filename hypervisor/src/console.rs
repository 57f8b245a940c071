//! The hypervisor's console: a polled PL011 or BCM2835 mini-UART, whole lines under one lock so that
//! hypervisor lines and relayed Dom0 lines never interleave mid-line (the `sync_console` behaviour is
//! the only one: every line is on the wire before the caller continues).

use core::cell::UnsafeCell;
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

/// One argument of a console line. The hypervisor formats its own lines: `core::fmt` (padding,
/// `Debug` builders, integer tables, `Arguments` plumbing) was about a tenth of the EL2 binary, whose
/// budget is Bao's 90,112-byte Pi 4 build.
#[derive(Clone, Copy)]
pub enum Arg<'a> {
    Str(&'a str),
    Dec(u64),
    /// `0x`-prefixed lower-case hex, as `{:#x}` prints it.
    Hex(u64),
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(s: &'a str) -> Self {
        Arg::Str(s)
    }
}

impl<'a> From<&'a alloc::string::String> for Arg<'a> {
    fn from(s: &'a alloc::string::String) -> Self {
        Arg::Str(s)
    }
}

macro_rules! arg_from_uint {
    ($($t:ty)*) => {$(
        impl From<$t> for Arg<'_> {
            fn from(v: $t) -> Self {
                Arg::Dec(v as u64)
            }
        }
    )*};
}
arg_from_uint!(u8 u16 u32 u64 usize);

/// `v` printed as `0x...`.
pub fn hex(v: impl Into<u64>) -> Arg<'static> {
    Arg::Hex(v.into())
}

/// One console line being assembled (truncated at 320 bytes).
pub struct Line {
    b: [u8; 320],
    n: usize,
}

impl Line {
    pub fn new() -> Self {
        Line { b: [0; 320], n: 0 }
    }

    pub fn put(&mut self, bytes: &[u8]) -> &mut Self {
        let take = bytes.len().min(self.b.len() - self.n);
        self.b[self.n..self.n + take].copy_from_slice(&bytes[..take]);
        self.n += take;
        self
    }

    fn put_digits(&mut self, mut v: u64, base: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b"0123456789abcdef"[(v % base) as usize];
            v /= base;
            if v == 0 {
                break;
            }
        }
        self.put(&digits[i..]);
    }

    pub fn arg(&mut self, a: Arg<'_>) -> &mut Self {
        match a {
            Arg::Str(s) => {
                self.put(s.as_bytes());
            }
            Arg::Dec(v) => self.put_digits(v, 10),
            Arg::Hex(v) => {
                self.put(b"0x");
                self.put_digits(v, 16);
            }
        }
        self
    }

    /// `fmt` with each `{}` replaced by the next argument (missing ones print nothing). Works on
    /// bytes: `str` slicing would link the char-boundary panic and its Unicode tables.
    pub fn format(&mut self, fmt: &str, args: &[Arg<'_>]) -> &mut Self {
        let mut args = args.iter();
        let f = fmt.as_bytes();
        let mut i = 0;
        while i < f.len() {
            if f[i] == b'{' && f.get(i + 1) == Some(&b'}') {
                if let Some(a) = args.next() {
                    self.arg(*a);
                }
                i += 2;
            } else {
                self.put(&f[i..=i]);
                i += 1;
            }
        }
        self
    }

    /// Writes the line (and its newline) under the console lock.
    pub fn emit(&self) {
        with_lock(|u| {
            if MID_LINE.swap(false, Ordering::Relaxed) {
                put_bytes(u, b"\n");
            }
            put_bytes(u, &self.b[..self.n]);
            put_bytes(u, b"\n");
        });
    }
}

/// Prints one hypervisor line.
pub fn print_line(fmt: &str, args: &[Arg<'_>]) {
    Line::new().format(fmt, args).emit();
}

/// Writes Dom0 console output as it is: a complete line, or a partial one that has waited long enough
/// (a prompt); after a partial one the terminal is mid-line until Dom0 ends the line.
pub fn write_guest_line(bytes: &[u8]) {
    with_lock(|u| {
        put_bytes(u, bytes);
        MID_LINE.store(bytes.last() != Some(&b'\n'), Ordering::Relaxed);
    });
}

/// Writes a DomU's whole `(dN) ` line, on a line of its own (after Dom0's partial prompt, a new line
/// first), so domains' lines never share one.
pub fn write_domu_line(bytes: &[u8]) {
    with_lock(|u| {
        if MID_LINE.swap(false, Ordering::Relaxed) {
            put_bytes(u, b"\n");
        }
        put_bytes(u, bytes);
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
pub fn print_limited(now: u64, fmt: &str, args: &[Arg<'_>]) {
    let verdict = GUEST_CAUSED.lock().check(now);
    if let Verdict::Print { suppressed } = verdict {
        if suppressed != 0 {
            print_line("hv: {} messages suppressed", &[suppressed.into()]);
        }
        print_line(fmt, args);
    }
}

/// Reports what the rate limit held back (before power-off or reset, when no later message would).
pub fn flush_suppressed() {
    let n = GUEST_CAUSED.lock().take_suppressed();
    if n != 0 {
        print_line("hv: {} messages suppressed", &[n.into()]);
    }
}

/// `hvprintln!("text {} {}", a, hex(b))`: each `{}` takes the next argument (a string, an unsigned
/// integer printed in decimal, or `hex(v)`).
macro_rules! hvprintln {
    ($fmt:literal $(, $a:expr)* $(,)?) => {
        $crate::console::print_line($fmt, &[$($crate::console::Arg::from($a)),*])
    };
}
pub(crate) use hvprintln;

/// `hvprintln!` for lines a guest can provoke (rate-limited).
macro_rules! guest_caused {
    ($fmt:literal $(, $a:expr)* $(,)?) => {
        $crate::console::print_limited(
            $crate::arch::mrs!("cntpct_el0"),
            $fmt,
            &[$($crate::console::Arg::from($a)),*],
        )
    };
}
pub(crate) use guest_caused;
