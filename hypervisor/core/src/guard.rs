//! Device pages a guest shares with the hypervisor. On the Raspberry Pi the hypervisor drives the
//! mini-UART (whose pins are muxed in the GPIO block, beside every other pin Dom0 uses) and resets
//! the board through the PM watchdog (in the PM block, beside the power domains Dom0's V3D driver
//! needs). Mapping those pages to Dom0 would let it take the console's pins or reset the board behind
//! the hypervisor's back; leaving them out (or disabling the PM node) would take the LEDs, buttons and
//! the V3D power domain from Dom0. So the page is a stage-2 hole, trapped and passed through register
//! by register, with the hypervisor's bits kept: a finer split is impossible, the registers share
//! one 4 KiB page.

use crate::fdtr::Fdt;
use alloc::string::String;
use alloc::vec::Vec;

use crate::dt::{self, is_compatible, reg_phys};
use crate::Region;

/// A register page passed through except for `keep`: bits of a register a guest write leaves as they
/// are (all bits: the register is read-only for the guest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardedPage {
    /// Physical (and, direct-mapped, guest) address of the page.
    pub base: u64,
    /// What it is, for messages.
    pub what: &'static str,
    /// (offset, bits kept).
    pub keep: Vec<(u32, u32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarded {
    /// Read the register and return it.
    Read,
    /// Write `value`, but keep the bits in `keep` as they are (read-modify-write when not zero).
    Write { value: u32, keep: u32 },
    /// The whole register is the hypervisor's: ignore the write (and say so).
    Refuse,
    /// Not a 32-bit aligned access: inject an abort.
    Abort,
}

impl GuardedPage {
    pub fn access(&self, offset: u32, size: u8, write: Option<u32>) -> Guarded {
        if size != 4 || !offset.is_multiple_of(4) || offset >= 0x1000 {
            return Guarded::Abort;
        }
        let Some(value) = write else { return Guarded::Read };
        let keep = self.keep.iter().filter(|(o, _)| *o == offset).fold(0, |k, (_, m)| k | m);
        match keep {
            u32::MAX => Guarded::Refuse,
            keep => Guarded::Write { value, keep },
        }
    }
}

/// Nodes Dom0 must not drive because they share the page of the hypervisor's UART at `hv_uart` (the
/// Pi's mini-UART sits in the `aux` block with SPI1/2), unless that page is Dom0's emulated console
/// (`vuart`; QEMU virt). The PM block is not among them: its page is guarded instead (see above).
pub fn hypervisor_nodes(fdt: &Fdt<'_>, hv_uart: u64, vuart: u64) -> Vec<String> {
    let page = Region::new(hv_uart & !0xFFF, 0x1000);
    let mut out = Vec::new();
    if page.base == vuart & !0xFFF {
        return out;
    }
    dt::walk(fdt, |path, _| {
        if reg_phys(fdt, path).unwrap_or_default().iter().any(|r| r.overlaps(&page)) {
            out.push(String::from(path));
        }
    });
    out
}

/// PM block registers of the watchdog the hypervisor resets with (Linux's bcm2835_wdt.c).
const PM_RSTC: u32 = 0x1C;
const PM_RSTS: u32 = 0x20;
const PM_WDOG: u32 = 0x24;

/// BCM2711 GPIO: function select, 3 bits per pin, 10 pins per register; pull-up/down, 2 bits per pin,
/// 16 pins per register from GPIO_PUP_PDN_CNTRL_REG0 (BCM2711 ARM peripherals, 5.2).
fn gpio_pin_bits(pin: u32, bcm2711: bool) -> Vec<(u32, u32)> {
    let mut v = Vec::from([((pin / 10) * 4, 7 << ((pin % 10) * 3))]);
    if bcm2711 {
        v.push((0xE4 + (pin / 16) * 4, 3 << ((pin % 16) * 2)));
    }
    v
}

fn by_phandle(fdt: &Fdt<'_>, phandle: u32) -> Option<String> {
    let mut found = None;
    dt::walk(fdt, |path, node| {
        if found.is_none()
            && node.property("phandle").and_then(|p| dt::read_cells(p.value, 1))
                == Some(u64::from(phandle))
        {
            found = Some(String::from(path));
        }
    });
    found
}

/// The guarded pages for the hypervisor's console UART `uart_path` (its GPIO pins, from its
/// `pinctrl-0` groups' `brcm,pins`) and for the PM watchdog at `pm` (when the hypervisor resets with
/// it). Empty on boards without those (QEMU virt).
pub fn guarded_pages(fdt: &Fdt<'_>, uart_path: &str, pm: Option<Region>) -> Vec<GuardedPage> {
    let mut pages = Vec::new();
    // Loops, not `flat_map` chains: smaller in the EL2 binary (issue 11's budget).
    let mut pins: Vec<(String, u32)> = Vec::new();
    let pinctrl = dt::node(fdt, uart_path).and_then(|n| n.property("pinctrl-0"));
    for ph in pinctrl.map(|p| dt::u32s(p.value)).into_iter().flatten() {
        let Some(group) = by_phandle(fdt, ph) else { continue };
        let Some(g) = dt::node(fdt, &group) else { continue };
        let Some(p) = g.property("brcm,pins") else { continue };
        for pin in dt::u32s(p.value) {
            pins.push((String::from(dt::parent_path(&group)), pin));
        }
    }
    if let Some((ctrl, _)) = pins.first() {
        let node = dt::node(fdt, ctrl);
        let bcm2711 = node.as_ref().is_some_and(|n| is_compatible(n, &["brcm,bcm2711-gpio"]));
        if let Some(r) = reg_phys(fdt, ctrl).and_then(|r| r.first().copied()) {
            let mut keep = Vec::new();
            for (_, p) in &pins {
                for (o, m) in gpio_pin_bits(*p, bcm2711) {
                    keep.push((o + (r.base & 0xFFF) as u32, m));
                }
            }
            pages.push(GuardedPage {
                base: r.base & !0xFFF,
                what: "GPIO pin mux of the hypervisor's UART",
                keep,
            });
        }
    }
    if let Some(pm) = pm {
        let o = (pm.base & 0xFFF) as u32;
        pages.push(GuardedPage {
            base: pm.base & !0xFFF,
            what: "PM watchdog",
            keep: Vec::from([
                (o + PM_RSTC, u32::MAX),
                (o + PM_RSTS, u32::MAX),
                (o + PM_WDOG, u32::MAX),
            ]),
        });
    }
    pages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guarded_registers_keep_the_hypervisor_bits() {
        let gpio = GuardedPage {
            base: 0xFE20_0000,
            what: "gpio",
            keep: gpio_pin_bits(14, true).into_iter().chain(gpio_pin_bits(15, true)).collect(),
        };
        assert_eq!(gpio.keep, [(4, 7 << 12), (0xE4, 3 << 28), (4, 7 << 15), (0xE4, 3 << 30)]);
        assert_eq!(gpio.access(4, 4, Some(0)), Guarded::Write { value: 0, keep: 0x3F000 });
        assert_eq!(
            gpio.access(0x1C, 4, Some(1 << 14)),
            Guarded::Write { value: 1 << 14, keep: 0 },
            "GPSET0 stays Dom0's"
        );
        assert_eq!(gpio.access(4, 4, None), Guarded::Read);
        assert_eq!(gpio.access(5, 1, Some(0)), Guarded::Abort);
        let pm = GuardedPage { base: 0xFE10_0000, what: "pm", keep: Vec::from([(0x24, u32::MAX)]) };
        assert_eq!(pm.access(0x24, 4, Some(0x5A00_000A)), Guarded::Refuse);
        assert_eq!(
            pm.access(0x10C, 4, Some(0x5A00_1000)),
            Guarded::Write { value: 0x5A00_1000, keep: 0 },
            "V3D power domain (PM_GRAFX) stays Dom0's"
        );
    }
}
