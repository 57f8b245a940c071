//! Dom0's console: an emulated PL011 (ARM DDI 0183) at the address of the board's PL011, relayed
//! line by line through the hypervisor's console.
//!
//! Why emulate instead of sharing the UART: the hypervisor keeps printing after Dom0 starts (PSCI
//! events, refused accesses), and both must appear on one serial line without interleaving mid-line.
//! Every Dom0 byte goes to a line buffer; a complete line is written under the console lock, so a
//! hypervisor line can only fall between two Dom0 lines. The transmit FIFO always reports room, so
//! Linux's amba-pl011 driver writes synchronously and never waits for a TX interrupt; no virtual
//! interrupt is raised for transmission. Input: the hypervisor polls its UART (on Dom0's timer ticks)
//! and feeds a small receive FIFO; the PL011's receive interrupt is then raised as a level: virtual
//! SPI pending while the FIFO is not empty and the receive interrupt is unmasked.

pub const DR: u32 = 0x000;
pub const FR: u32 = 0x018;
const FR_TXFE: u32 = 1 << 7;
const FR_RXFE: u32 = 1 << 4;
const INT_RX: u32 = 1 << 4;
const INT_RT: u32 = 1 << 6;
const RX_FIFO: usize = 64;

/// Register state a driver reads back.
#[derive(Debug, Clone, Copy)]
pub struct Pl011 {
    ibrd: u32,
    fbrd: u32,
    lcr_h: u32,
    cr: u32,
    ifls: u32,
    imsc: u32,
    dmacr: u32,
    rx: [u8; RX_FIFO],
    rx_head: usize,
    rx_len: usize,
}

/// PL011 r1p5 identification, as QEMU reports it (PeriphID0-3, PCellID0-3).
const ID: [u32; 8] = [0x11, 0x10, 0x14, 0x00, 0x0D, 0xF0, 0x05, 0xB1];

impl Default for Pl011 {
    fn default() -> Self {
        Self::new()
    }
}

impl Pl011 {
    pub const fn new() -> Pl011 {
        Pl011 {
            ibrd: 0,
            fbrd: 0,
            lcr_h: 0x70,
            cr: 0x301,
            ifls: 0x12,
            imsc: 0,
            dmacr: 0,
            rx: [0; RX_FIFO],
            rx_head: 0,
            rx_len: 0,
        }
    }

    /// A received byte for Dom0; false when the FIFO is full (the byte is dropped, as hardware would).
    pub fn push_rx(&mut self, b: u8) -> bool {
        if self.rx_len == RX_FIFO {
            return false;
        }
        self.rx[(self.rx_head + self.rx_len) % RX_FIFO] = b;
        self.rx_len += 1;
        true
    }

    fn ris(&self) -> u32 {
        if self.rx_len > 0 {
            INT_RX | INT_RT
        } else {
            0
        }
    }

    /// The level of the UART's interrupt line.
    pub fn irq_level(&self) -> bool {
        self.ris() & self.imsc != 0
    }

    /// Reads a register; reading DR takes a byte from the receive FIFO.
    pub fn read(&mut self, off: u32) -> u32 {
        match off {
            DR if self.rx_len > 0 => {
                let b = self.rx[self.rx_head];
                self.rx_head = (self.rx_head + 1) % RX_FIFO;
                self.rx_len -= 1;
                u32::from(b)
            }
            FR => FR_TXFE | if self.rx_len == 0 { FR_RXFE } else { 0 },
            0x03C => self.ris(),
            0x040 => self.ris() & self.imsc,
            0x024 => self.ibrd,
            0x028 => self.fbrd,
            0x02C => self.lcr_h,
            0x030 => self.cr,
            0x034 => self.ifls,
            0x038 => self.imsc,
            0x048 => self.dmacr,
            0xFE0..=0xFFC => ID[((off - 0xFE0) / 4) as usize],
            // DR with an empty receive FIFO, RSR and everything else read 0.
            _ => 0,
        }
    }

    /// Applies a write; returns the byte to transmit for a DR write.
    pub fn write(&mut self, off: u32, v: u32) -> Option<u8> {
        match off {
            DR => return Some(v as u8),
            0x024 => self.ibrd = v & 0xFFFF,
            0x028 => self.fbrd = v & 0x3F,
            0x02C => self.lcr_h = v & 0xFF,
            0x030 => self.cr = v & 0xFFFF,
            0x034 => self.ifls = v & 0x3F,
            0x038 => self.imsc = v & 0x7FF,
            // DMA stays off: a DMA engine would bypass the emulation.
            0x048 => self.dmacr = 0,
            _ => {}
        }
        None
    }
}

/// Collects a guest's output until a line is complete.
pub struct LineBuffer<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Default for LineBuffer<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> LineBuffer<N> {
    pub const fn new() -> Self {
        LineBuffer { buf: [0; N], len: 0 }
    }

    /// Adds a byte; returns the full line (with its `\n`) when one is complete or the buffer is full.
    /// Carriage returns are dropped: the console writes `\r\n` itself.
    pub fn push(&mut self, b: u8) -> Option<&[u8]> {
        if b == b'\r' {
            return None;
        }
        if self.len == N {
            self.len = 0;
        }
        self.buf[self.len] = b;
        self.len += 1;
        if b == b'\n' || self.len == N {
            let n = self.len;
            self.len = 0;
            return Some(&self.buf[..n]);
        }
        None
    }

    /// Takes a partial line (for example a shell prompt) out of the buffer.
    pub fn take_partial(&mut self) -> Option<&[u8]> {
        if self.len == 0 {
            return None;
        }
        let n = self.len;
        self.len = 0;
        Some(&self.buf[..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transmit_is_always_ready_and_ids_match_pl011() {
        let mut u = Pl011::new();
        assert_eq!(u.read(FR) & (1 << 5), 0, "TXFF never set");
        assert_eq!(u.read(FR) & (1 << 3), 0, "never busy");
        assert_eq!(u.write(DR, 0x141), Some(b'A'));
        u.write(0x030, 0x301);
        assert_eq!(u.read(0x030), 0x301);
        u.write(0x048, 3);
        assert_eq!(u.read(0x048), 0, "DMA refused");
        let id: [u32; 8] = core::array::from_fn(|i| u.read(0xFE0 + 4 * i as u32));
        assert_eq!(id, ID);
    }

    #[test]
    fn receive_fifo_drives_the_interrupt_level() {
        let mut u = Pl011::new();
        assert!(u.push_rx(b'x') && u.push_rx(b'y'));
        assert!(!u.irq_level(), "masked");
        u.write(0x038, INT_RX | INT_RT);
        assert!(u.irq_level());
        assert_eq!(u.read(FR) & FR_RXFE, 0);
        assert_eq!(u.read(0x040), INT_RX | INT_RT);
        assert_eq!(u.read(DR), u32::from(b'x'));
        assert_eq!(u.read(DR), u32::from(b'y'));
        assert_eq!(u.read(FR) & FR_RXFE, FR_RXFE);
        assert!(!u.irq_level());
        for _ in 0..RX_FIFO {
            assert!(u.push_rx(b'z'));
        }
        assert!(!u.push_rx(b'!'), "full");
    }

    #[test]
    fn lines_come_out_whole() {
        let mut lb = LineBuffer::<8>::new();
        for &b in b"ab\r" {
            assert_eq!(lb.push(b), None);
        }
        assert_eq!(lb.push(b'\n'), Some(&b"ab\n"[..]));
        for &b in b"0123456" {
            assert_eq!(lb.push(b), None);
        }
        assert_eq!(lb.push(b'7'), Some(&b"01234567"[..]), "a full buffer is flushed");
        lb.push(b'$');
        assert_eq!(lb.take_partial(), Some(&b"$"[..]));
        assert_eq!(lb.take_partial(), None);
    }
}
