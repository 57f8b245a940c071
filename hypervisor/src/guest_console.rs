//! Dom0's console device: the emulated PL011 (`rpixen_hv_core::vuart`), its line buffer, and the
//! relay to the hypervisor's UART.

use rpixen_hv_core::vuart::{LineBuffer, Pl011};

use crate::arch::mrs;
use crate::console;

struct State {
    uart: Pl011,
    line: LineBuffer<512>,
    /// When Dom0 last wrote (counter ticks).
    last_tx: u64,
}

/// `None` until Dom0 first touches its console: an all-zero static lands in `.bss`, while the
/// PL011's non-zero reset values would put its ~650 bytes into the Image (issue 11's size budget).
static VUART: spin::Mutex<Option<State>> = spin::Mutex::new(None);

/// The console's state, made at its reset values on first use.
#[inline(never)]
fn state(g: &mut Option<State>) -> &mut State {
    g.get_or_insert_with(|| State { uart: Pl011::new(), line: LineBuffer::new(), last_tx: 0 })
}

pub fn read(off: u32) -> u32 {
    state(&mut VUART.lock()).uart.read(off)
}

pub fn write(off: u32, v: u32) {
    let mut g = VUART.lock();
    let st = state(&mut g);
    if let Some(b) = st.uart.write(off, v) {
        st.last_tx = mrs!("cntpct_el0");
        if let Some(l) = st.line.push(b) {
            console::write_guest_line(l);
        }
    }
}

/// Writes out a partial Dom0 line (before power-off, so the last prompt is not lost).
pub fn flush() {
    let mut g = VUART.lock();
    if let Some(l) = state(&mut g).line.take_partial() {
        console::write_guest_line(l);
        console::write_guest_line(b"\n");
    }
}

/// A byte of console input for Dom0 (dropped when its receive FIFO is full, as hardware would).
pub fn push_rx(b: u8) {
    state(&mut VUART.lock()).uart.push_rx(b);
}

/// On Dom0's timer ticks: shows a partial line that has waited 50 ms (a prompt, an echoed
/// keystroke). Returns the level of the PL011's interrupt.
pub fn poll() -> bool {
    let Some(mut g) = VUART.try_lock() else { return false };
    let g = state(&mut g);
    let now = mrs!("cntpct_el0");
    if now.wrapping_sub(g.last_tx) > mrs!("cntfrq_el0") / 20 {
        if let Some(l) = g.line.take_partial() {
            console::write_guest_line(l);
        }
    }
    g.uart.irq_level()
}
