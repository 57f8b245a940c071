//! The physical GICv2: distributor (owned by the hypervisor), CPU interface with EOImode = 1 (priority
//! drop on EOIR, deactivation on DIR, so that list registers with the HW bit let Dom0's EOI deactivate
//! forwarded interrupts), and the hypervisor control interface (GICH) with its list registers.

use crate::mmio::{read32, write32};

#[derive(Clone, Copy)]
pub struct Gic {
    pub dist: u64,
    pub cpu: u64,
    pub hyp: u64,
    pub lines: u32,
    pub nr_lrs: usize,
}

const GICD_CTLR: u64 = 0x000;
const GICD_TYPER: u64 = 0x004;
const GICD_ISENABLER: u64 = 0x100;
const GICD_ICENABLER: u64 = 0x180;
const GICD_ICPENDR: u64 = 0x280;
const GICD_ICACTIVER: u64 = 0x380;
const GICD_IPRIORITYR: u64 = 0x400;
const GICD_ITARGETSR: u64 = 0x800;
const GICD_SGIR: u64 = 0xF00;
const GICC_CTLR: u64 = 0x000;
const GICC_PMR: u64 = 0x004;
const GICC_BPR: u64 = 0x008;
const GICC_IAR: u64 = 0x00C;
const GICC_EOIR: u64 = 0x010;
const GICC_DIR: u64 = 0x1000;
const GICH_HCR: u64 = 0x000;
const GICH_VTR: u64 = 0x004;
const GICH_ELSR0: u64 = 0x030;
const GICH_LR0: u64 = 0x100;

pub const DEFAULT_PRIORITY: u32 = 0xA0;

impl Gic {
    pub fn probe(dist: u64, cpu: u64, hyp: u64) -> Gic {
        let lines = ((read32(dist + GICD_TYPER) & 0x1F) + 1) * 32;
        let nr_lrs = ((read32(hyp + GICH_VTR) & 0x3F) + 1) as usize; // ListRegs is N-1
        Gic { dist, cpu, hyp, lines, nr_lrs }
    }

    /// Boot CPU: every SPI disabled, inactive, default priority, routed to CPU 0 until Dom0 says otherwise.
    pub fn dist_init(&self) {
        write32(self.dist + GICD_CTLR, 0);
        for i in (32..self.lines).step_by(32) {
            let off = u64::from(i / 32) * 4;
            write32(self.dist + GICD_ICENABLER + off, !0);
            write32(self.dist + GICD_ICPENDR + off, !0);
            write32(self.dist + GICD_ICACTIVER + off, !0);
        }
        for i in (32..self.lines).step_by(4) {
            write32(self.dist + GICD_IPRIORITYR + u64::from(i), DEFAULT_PRIORITY * 0x0101_0101);
            write32(self.dist + GICD_ITARGETSR + u64::from(i), 0x0101_0101);
        }
        write32(self.dist + GICD_CTLR, 1);
    }

    /// Every CPU: its banked SGIs/PPIs, the CPU interface (PMR open, EOImode = 1) and GICH.
    pub fn cpu_init(&self, enabled_ppis: u32) {
        write32(self.dist + GICD_ICENABLER, 0xFFFF_0000);
        write32(self.dist + GICD_ICACTIVER, !0);
        for i in (0..32).step_by(4) {
            write32(self.dist + GICD_IPRIORITYR + i, DEFAULT_PRIORITY * 0x0101_0101);
        }
        write32(self.dist + GICD_ISENABLER, 0xFFFF | enabled_ppis);
        write32(self.cpu + GICC_PMR, 0xFF);
        write32(self.cpu + GICC_BPR, 0);
        // Enable (Grp0 without Security Extensions, Grp1 in the Non-secure view) | EOImode (bit 9).
        write32(self.cpu + GICC_CTLR, 0x201);
        for i in 0..self.nr_lrs {
            self.set_lr(i, 0);
        }
        write32(self.hyp + GICH_HCR, 1);
    }

    /// This CPU's interface mask as the distributor reports it (ITARGETSR0 reads the own bit).
    pub fn own_target_mask(&self) -> u8 {
        read32(self.dist + GICD_ITARGETSR) as u8
    }

    pub fn iar(&self) -> u32 {
        read32(self.cpu + GICC_IAR)
    }
    pub fn eoi(&self, iar: u32) {
        write32(self.cpu + GICC_EOIR, iar);
    }
    pub fn deactivate(&self, iar: u32) {
        write32(self.cpu + GICC_DIR, iar);
    }
    pub fn send_sgi(&self, target_mask: u8, id: u32) {
        write32(self.dist + GICD_SGIR, (u32::from(target_mask) << 16) | (id & 0xF));
    }
    pub fn spi_priority(&self, id: u32) -> u8 {
        crate::mmio::read(self.dist + GICD_IPRIORITYR + u64::from(id), 1) as u8
    }
    pub fn lr(&self, i: usize) -> u32 {
        read32(self.hyp + GICH_LR0 + 4 * i as u64)
    }
    pub fn set_lr(&self, i: usize, v: u32) {
        write32(self.hyp + GICH_LR0 + 4 * i as u64, v);
    }
    /// Empty list registers (bit n = LRn).
    pub fn elsr(&self) -> u64 {
        u64::from(read32(self.hyp + GICH_ELSR0)) | (u64::from(read32(self.hyp + GICH_ELSR0 + 4)) << 32)
    }
    pub fn set_hcr(&self, v: u32) {
        write32(self.hyp + GICH_HCR, v);
    }
}
