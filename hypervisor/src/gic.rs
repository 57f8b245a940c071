//! The physical GICv2: distributor (owned by the hypervisor), CPU interface with EOImode = 1 (priority
//! drop on EOIR, deactivation on DIR, so that list registers with the HW bit let the guest's EOI
//! deactivate forwarded interrupts), and the hypervisor control interface (GICH) with its list
//! registers. Offsets and list-register bits: `rpixen_hv_core::gicv2`.

use rpixen_hv_core::gicv2::{gicc, gicd, gich, Lr, SPI_BASE};
use rpixen_hv_core::vgicd::DEFAULT_PRIORITY;

use crate::arch;
use crate::mmio::Mmio;

pub struct Gic {
    dist: Mmio,
    cpu: Mmio,
    hyp: Mmio,
    pub lines: u32,
    pub nr_lrs: usize,
}

const PRIO4: u32 = DEFAULT_PRIORITY as u32 * 0x0101_0101;

impl Gic {
    pub fn probe(dist: Mmio, cpu: Mmio, hyp: Mmio) -> Gic {
        let lines = ((dist.read32(gicd::TYPER) & 0x1F) + 1) * 32;
        let nr_lrs = ((hyp.read32(gich::VTR) & 0x3F) + 1) as usize; // ListRegs is N-1
        Gic { dist, cpu, hyp, lines: lines.min(1020), nr_lrs }
    }

    pub fn iidr(&self) -> u32 {
        self.dist.read32(gicd::IIDR)
    }

    /// Boot CPU: every SPI disabled, inactive, default priority, routed to the boot CPU until the
    /// guest that owns it says otherwise.
    pub fn dist_init(&self, boot_if: u8) {
        self.dist.write32(gicd::CTLR, 0);
        for id in (SPI_BASE..self.lines).step_by(32) {
            let off = id / 8;
            self.dist.write32(gicd::ICENABLER + off, !0);
            self.dist.write32(gicd::ICPENDR + off, !0);
            self.dist.write32(gicd::ICACTIVER + off, !0);
        }
        for id in (SPI_BASE..self.lines).step_by(4) {
            self.dist.write32(gicd::IPRIORITYR + id, PRIO4);
            self.dist.write32(gicd::ITARGETSR + id, u32::from(boot_if) * 0x0101_0101);
        }
        self.dist.write32(gicd::CTLR, 1);
    }

    /// Every CPU: its banked SGIs/PPIs (only SGIs and `ppis` enabled), the CPU interface (PMR open,
    /// EOImode = 1), and GICH with empty list registers.
    pub fn cpu_init(&self, ppis: u32) {
        self.dist.write32(gicd::ICENABLER, 0xFFFF_0000 & !ppis);
        self.dist.write32(gicd::ICACTIVER, !0);
        for i in (0..32).step_by(4) {
            self.dist.write32(gicd::IPRIORITYR + i, PRIO4);
        }
        self.dist.write32(gicd::ISENABLER, 0xFFFF | ppis);
        self.cpu.write32(gicc::PMR, 0xFF);
        self.cpu.write32(gicc::BPR, 0);
        self.cpu.write32(gicc::CTLR, gicc::CTLR_ENABLE_EOIMODE);
        for i in 0..self.nr_lrs {
            self.write_lr(i, Lr(0));
        }
        self.clear_apr();
        self.hyp.write32(gich::HCR, gich::HCR_EN);
    }

    /// This CPU's interface mask as the distributor reports it (ITARGETSR0 reads the own bit).
    pub fn own_target_mask(&self) -> u8 {
        self.dist.read8(gicd::ITARGETSR)
    }

    pub fn iar(&self) -> u32 {
        self.cpu.read32(gicc::IAR)
    }
    pub fn eoi(&self, iar: u32) {
        self.cpu.write32(gicc::EOIR, iar);
    }
    pub fn deactivate(&self, intid: u32) {
        self.cpu.write32(gicc::DIR, intid);
    }

    /// A physical SGI. Whatever the target will read (its mailbox) must be visible first: Linux's
    /// `gic_ipi_send_mask` has the same `dmb ishst` before GICD_SGIR.
    pub fn send_sgi(&self, target_if: u8, id: u32) {
        arch::dmb_ishst();
        self.dist.write32(gicd::SGIR, (u32::from(target_if) << 16) | (id & 0xF));
    }

    pub fn enable(&self, word: u32, mask: u32) {
        self.dist.write32(gicd::ISENABLER + 4 * word, mask);
    }
    pub fn disable(&self, word: u32, mask: u32) {
        self.dist.write32(gicd::ICENABLER + 4 * word, mask);
    }
    /// Routes SPI `intid` to the CPU interfaces in `if_mask`.
    pub fn route(&self, intid: u32, if_mask: u8) {
        if intid >= SPI_BASE && intid < self.lines {
            self.dist.write8(gicd::ITARGETSR + intid, if_mask);
        }
    }
    /// Sets the trigger-mode fields `mask` of ICFGR word `word` to `value`.
    pub fn configure(&self, word: u32, mask: u32, value: u32) {
        if word >= 2 && word * 16 < self.lines {
            let old = self.dist.read32(gicd::ICFGR + 4 * word);
            self.dist.write32(gicd::ICFGR + 4 * word, (old & !mask) | (value & mask));
        }
    }

    pub fn read_lrs(&self, out: &mut [Lr]) {
        for (i, l) in out.iter_mut().enumerate().take(self.nr_lrs) {
            *l = Lr(self.hyp.read32(gich::LR0 + 4 * i as u32));
        }
    }
    pub fn write_lr(&self, i: usize, v: Lr) {
        self.hyp.write32(gich::LR0 + 4 * i as u32, v.0);
    }
    pub fn set_hcr(&self, v: u32) {
        self.hyp.write32(gich::HCR, v);
    }
    /// Forgets the virtual CPU interface's active priorities (a vCPU powering off leaves none).
    pub fn clear_apr(&self) {
        self.hyp.write32(gich::APR, 0);
    }
}
