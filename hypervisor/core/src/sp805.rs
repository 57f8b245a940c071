//! A virtual ARM SP805 watchdog (ARM DDI 0270B) for Dom0, so that a Dom0 that hangs during an
//! update's trial boot ends in a board reset (issue 14).
//!
//! Why an SP805: Linux drives it with a driver Debian builds (`sp805_wdt`, bound through the AMBA bus
//! by the PrimeCell ids below), and it needs nothing but MMIO — no SMC, no hypercall ABI — so the same
//! `dom0-init` watchdog feeding works under Xen (`xen_wdt`) and here. Dom0 never gets the board's own
//! watchdog (the Pi's PM block is the hypervisor's: `guard.rs`).
//!
//! Time is the generic counter: the node's clock runs at `CNTFRQ_EL0`, and `now` is `CNTPCT_EL0`. The
//! counter is derived from `now` on every access instead of being stepped, so no EL2 timer tick is
//! needed to keep it; the EL2 binary only arms its hypervisor timer at [`Sp805::reset_deadline`].
//!
//! What the hardware does and this model keeps: the counter runs while INTEN is set, counting LOAD+1
//! ticks per period; at the end of a period the interrupt is raised and the counter reloads; at the end
//! of the next period with the interrupt still raised and RESEN set, the board resets. Writing LOAD or
//! INTCLR reloads the counter (INTCLR also clears the interrupt); every register but LOCK ignores
//! writes while locked. What it leaves out: the interrupt line is not delivered (Linux's driver does
//! not request it; RIS/MIS read correctly) and the integration-test registers read as zero.

/// Bytes of MMIO the device occupies.
pub const SIZE: u64 = 0x1000;
/// The device-tree `compatible` Linux's AMBA bus and `sp805_wdt` match.
pub const COMPATIBLE: [&str; 2] = ["arm,sp805", "arm,primecell"];
/// The driver's clock names: the counter clock and the bus clock (both the counter frequency here).
pub const CLOCK_NAMES: [&str; 2] = ["wdog_clk", "apb_pclk"];

const LOAD: u32 = 0x000;
const VALUE: u32 = 0x004;
const CONTROL: u32 = 0x008;
const INTCLR: u32 = 0x00C;
const RIS: u32 = 0x010;
const MIS: u32 = 0x014;
const LOCK: u32 = 0xC00;
/// WDOGLOCK's key: writing it unlocks, writing anything else locks.
pub const UNLOCK_KEY: u32 = 0x1ACC_E551;
const INTEN: u32 = 1 << 0;
const RESEN: u32 = 1 << 1;
/// PeriphID0-3 (part 0x805, designer ARM, revision 1) and PCellID0-3, as the TRM gives them.
const ID: [u32; 8] = [0x05, 0x18, 0x14, 0x00, 0x0D, 0xF0, 0x05, 0xB1];

/// Where Dom0's watchdog page goes, per board (`compatible` of the root): an address that is neither
/// RAM nor a device on that board, so no driver of Dom0's needs it and the hypervisor never touches
/// the physical page (it is a stage-2 hole).
/// - QEMU virt: 0x0B00_0000, between the last virtio-mmio transport (0x0A00_0000 + 32 x 0x200) and
///   the platform bus at 0x0C00_0000 (QEMU's `hw/arm/virt.c` memory map has nothing there).
/// - Raspberry Pi 4: 0xFC10_0000, inside the 0x7C00_0000 bus window the SoC's `ranges` map to
///   0xFC00_0000 (above the last RAM byte below 4 GiB, 0xFBFF_FFFF on 8 GiB boards) where the
///   BCM2711 tree places no device (its first, PCIe, is at 0x7D50_0000).
pub const BOARD_PAGES: [(&str, u64); 2] =
    [("linux,dummy-virt", 0x0B00_0000), ("brcm,bcm2711", 0xFC10_0000)];

/// The board's watchdog page for the host tree whose root is compatible with `board` and whose
/// RAM and device ranges are `used`; `None` on other boards, or when the page is in use after all
/// (an overlay added a device there): Dom0 then gets no watchdog rather than a broken device.
pub fn dom0_page<'a>(
    mut board: impl Iterator<Item = &'a str>,
    used: &[crate::Region],
) -> Option<u64> {
    let page = board.find_map(|b| BOARD_PAGES.iter().find(|(c, _)| *c == b))?.1;
    (!used.iter().any(|r| r.size > 0 && r.base < page + SIZE && page < r.end())).then_some(page)
}

/// [`dom0_page`] for a host tree: its root's `compatible`, and as used ranges `ram` and the `reg`
/// of every node on a memory-mapped bus.
pub fn dom0_page_in(fdt: &crate::fdtr::Fdt<'_>, ram: &[crate::Region]) -> Option<u64> {
    let mut used = ram.to_vec();
    crate::dt::walk(fdt, |path, node| {
        if node.property("reg").is_some() {
            used.extend(crate::dt::reg_phys(fdt, path).unwrap_or_default());
        }
    });
    dom0_page(fdt.root().compatible().all(), &used)
}

/// What a guest access does, for the trap handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sp805Access {
    /// Done (a write), or the value read.
    Done(u32),
    /// Not a 32-bit aligned access inside the device: inject an abort.
    Abort,
}

/// The watchdog's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sp805 {
    load: u32,
    control: u32,
    locked: bool,
    /// The counter tick at which the current count began (the last reload).
    start: u64,
}

impl Default for Sp805 {
    fn default() -> Self {
        Self::new()
    }
}

/// Where the count stands at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Count {
    /// Whole periods completed since the last reload.
    periods: u64,
    /// Ticks left in the current period.
    left: u64,
}

impl Sp805 {
    /// The reset state: LOAD = 0xFFFFFFFF, stopped, unlocked.
    pub const fn new() -> Sp805 {
        Sp805 { load: u32::MAX, control: 0, locked: false, start: 0 }
    }

    /// Running from `now` with a reset after `secs` seconds at `freq` ticks per second, locked, as
    /// Linux's driver leaves it (for `dom0_watchdog=`): two periods of half the timeout each, as
    /// `sp805_wdt` loads it.
    pub fn started(secs: u32, freq: u64, now: u64) -> Sp805 {
        let load = (freq / 2 * u64::from(secs)).saturating_sub(1).min(u64::from(u32::MAX));
        Sp805 { load: load as u32, control: INTEN | RESEN, locked: true, start: now }
    }

    fn period(&self) -> u64 {
        u64::from(self.load) + 1
    }

    fn count(&self, now: u64) -> Count {
        let elapsed = now.saturating_sub(self.start);
        let period = self.period();
        Count { periods: elapsed / period, left: period - elapsed % period }
    }

    fn running(&self) -> bool {
        self.control & INTEN != 0
    }

    fn raw_interrupt(&self, now: u64) -> bool {
        self.running() && self.count(now).periods >= 1
    }

    /// The counter tick at which the board must reset, or `None` while the watchdog cannot reset it
    /// (stopped, or RESEN clear).
    pub fn reset_deadline(&self) -> Option<u64> {
        (self.running() && self.control & RESEN != 0)
            .then(|| self.start.saturating_add(2 * self.period()))
    }

    /// The counter tick of the last reload (start, LOAD or INTCLR write): the last time Dom0 fed it.
    pub fn last_fed(&self) -> u64 {
        self.start
    }

    /// Whether the board must be reset at `now`.
    pub fn expired(&self, now: u64) -> bool {
        self.reset_deadline().is_some_and(|d| now >= d)
    }

    /// A 32-bit read of the register at `offset`.
    pub fn read(&self, offset: u64, width: u8, now: u64) -> Sp805Access {
        let Some(off) = register(offset, width) else { return Sp805Access::Abort };
        let ris = u32::from(self.raw_interrupt(now));
        Sp805Access::Done(match off {
            LOAD => self.load,
            VALUE if self.running() => (self.count(now).left - 1) as u32,
            VALUE => self.load,
            CONTROL => self.control,
            RIS => ris,
            MIS => ris & self.control & INTEN,
            LOCK => u32::from(self.locked),
            0xFE0..=0xFFC => ID[((off - 0xFE0) / 4) as usize],
            _ => 0,
        })
    }

    /// A 32-bit write of `value` to the register at `offset`.
    pub fn write(&mut self, offset: u64, width: u8, value: u32, now: u64) -> Sp805Access {
        let Some(off) = register(offset, width) else { return Sp805Access::Abort };
        if off == LOCK {
            self.locked = value != UNLOCK_KEY;
            return Sp805Access::Done(0);
        }
        if self.locked {
            return Sp805Access::Done(0);
        }
        match off {
            LOAD => {
                // A zero load would reset the board at once; the hardware treats it as 1.
                self.load = value.max(1);
                self.start = now;
            }
            CONTROL => {
                let starting = !self.running() && value & INTEN != 0;
                self.control = value & (INTEN | RESEN);
                if starting {
                    self.start = now;
                }
            }
            INTCLR => self.start = now,
            _ => {}
        }
        Sp805Access::Done(0)
    }
}

fn register(offset: u64, width: u8) -> Option<u32> {
    (width == 4 && offset.is_multiple_of(4) && offset < SIZE).then_some(offset as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Linux's sp805_wdt does to start and to ping: LOAD, INTCLR, CONTROL, then lock.
    fn linux_ping(w: &mut Sp805, load: u32, now: u64) {
        w.write(LOCK as u64, 4, UNLOCK_KEY, now);
        w.write(LOAD as u64, 4, load, now);
        w.write(INTCLR as u64, 4, 0, now);
        w.write(CONTROL as u64, 4, INTEN | RESEN, now);
        w.write(LOCK as u64, 4, 0, now);
    }

    fn read(w: &Sp805, off: u32, now: u64) -> u32 {
        match w.read(off as u64, 4, now) {
            Sp805Access::Done(v) => v,
            Sp805Access::Abort => panic!("abort at {off:#x}"),
        }
    }

    #[test]
    fn amba_ids_are_the_sp805s() {
        let w = Sp805::new();
        let id: [u32; 8] = core::array::from_fn(|i| read(&w, 0xFE0 + 4 * i as u32, 0));
        assert_eq!(id, ID);
        // The AMBA bus assembles PeriphID0-3 into 0x00141805, the id sp805_wdt's table names.
        let periph = id[..4].iter().enumerate().fold(0, |acc, (i, b)| acc | (b & 0xFF) << (8 * i));
        assert_eq!(periph, 0x0014_1805);
    }

    #[test]
    fn an_unfed_watchdog_resets_after_two_periods() {
        let mut w = Sp805::new();
        assert_eq!(w.reset_deadline(), None, "stopped at reset");
        linux_ping(&mut w, 999, 10_000);
        assert_eq!(w.reset_deadline(), Some(12_000));
        assert!(!w.expired(11_999));
        assert_eq!(read(&w, RIS, 10_999), 0);
        assert_eq!(read(&w, RIS, 11_000), 1, "first period over: interrupt raised");
        assert_eq!(read(&w, MIS, 11_000), 1);
        assert!(w.expired(12_000));
    }

    #[test]
    fn feeding_moves_the_deadline_and_clears_the_interrupt() {
        let mut w = Sp805::new();
        linux_ping(&mut w, 999, 0);
        linux_ping(&mut w, 999, 1_500);
        assert_eq!(read(&w, RIS, 1_500), 0);
        assert_eq!(w.reset_deadline(), Some(3_500));
        assert!(!w.expired(3_000));
    }

    #[test]
    fn value_counts_down_and_reloads() {
        let mut w = Sp805::new();
        linux_ping(&mut w, 99, 0);
        assert_eq!(read(&w, VALUE, 0), 99);
        assert_eq!(read(&w, VALUE, 40), 59);
        assert_eq!(read(&w, VALUE, 100), 99, "reloaded at the end of the period");
    }

    #[test]
    fn locked_registers_ignore_writes_and_stopping_disarms() {
        let mut w = Sp805::new();
        linux_ping(&mut w, 999, 0);
        assert_eq!(read(&w, LOCK, 0), 1);
        w.write(CONTROL as u64, 4, 0, 10);
        assert_eq!(w.reset_deadline(), Some(2_000), "a locked CONTROL write is ignored");
        w.write(LOCK as u64, 4, UNLOCK_KEY, 10);
        w.write(CONTROL as u64, 4, 0, 10);
        assert_eq!(w.reset_deadline(), None);
        w.write(CONTROL as u64, 4, INTEN, 20);
        assert_eq!(w.reset_deadline(), None, "RESEN clear: the interrupt only");
    }

    #[test]
    fn odd_accesses_abort() {
        let mut w = Sp805::new();
        assert_eq!(w.read(0x2, 4, 0), Sp805Access::Abort);
        assert_eq!(w.read(0x0, 1, 0), Sp805Access::Abort);
        assert_eq!(w.write(0x1000, 4, 0, 0), Sp805Access::Abort);
    }

    #[test]
    fn the_board_page_is_refused_when_something_uses_it() {
        use crate::Region;
        let virt = ["linux,dummy-virt"];
        let ram = [Region::new(0x4000_0000, 0x8000_0000), Region::new(0x0A00_0000, 0x200)];
        assert_eq!(dom0_page(virt.iter().copied(), &ram), Some(0x0B00_0000));
        let pi = ["raspberrypi,4-model-b", "brcm,bcm2711"];
        assert_eq!(dom0_page(pi.iter().copied(), &[]), Some(0xFC10_0000));
        let overlay = [Region::new(0x0B00_0FFC, 4)];
        assert_eq!(dom0_page(virt.iter().copied(), &overlay), None);
        assert_eq!(dom0_page(["acme,board"].iter().copied(), &[]), None);
    }

    #[test]
    fn a_watchdog_started_at_boot_resets_after_its_timeout_unless_linux_takes_it_over() {
        let w = Sp805::started(20, 1_000, 500);
        assert_eq!(w.reset_deadline(), Some(20_500));
        // What sp805_wdt's wdt_is_running checks: both enables set.
        assert_eq!(read(&w, CONTROL, 500), INTEN | RESEN);
        let mut w = w;
        linux_ping(&mut w, 999, 10_000);
        assert_eq!(w.reset_deadline(), Some(12_000));
    }

    #[test]
    fn a_zero_load_does_not_reset_at_once() {
        let mut w = Sp805::new();
        linux_ping(&mut w, 0, 100);
        assert_eq!(w.reset_deadline(), Some(104));
    }
}
