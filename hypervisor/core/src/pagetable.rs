//! Builds the hypervisor's own EL2 stage-1 tables and Dom0's stage-2 tables (4 KiB granule, both
//! starting at level 1) into a caller-provided pool of 4 KiB tables. Descriptor bits: ARM DDI 0487
//! D8.3; stage-2 values as Xen's (`lpae.h`, `p2m.c`).

/// One 4 KiB translation table, page-aligned wherever it is (a static pool or the heap).
#[repr(C, align(4096))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Table(pub [u64; 512]);

impl Table {
    pub const ZERO: Table = Table([0; 512]);
}

/// Which translation regime the tables are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Regime {
    /// EL2 stage 1, 39-bit VA (T0SZ = 25): one level-1 table of 512 × 1 GiB.
    El2Stage1,
    /// Stage 2, 40-bit IPA (T0SZ = 24, SL0 = 1): two concatenated level-1 tables (8 KiB root).
    Stage2,
}

impl Regime {
    fn root_tables(self) -> usize {
        match self {
            Regime::El2Stage1 => 1,
            Regime::Stage2 => 2,
        }
    }
    pub fn limit(self) -> u64 {
        (self.root_tables() as u64) << 39
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mem {
    /// RAM: Normal write-back, inner shareable. At EL2: read-write, never executable.
    Normal,
    /// The hypervisor's code at EL2: read-only, executable.
    Text,
    /// The hypervisor's constants at EL2: read-only, never executable.
    ReadOnly,
    /// The boot-time identity map's RAM at EL2, before the image's sections are known: RWX.
    Boot,
    /// MMIO: stage 1 Device-nGnRnE; stage 2 leaves the type to Dom0's stage 1 (Xen's `p2m_mmio_direct_c`).
    Device,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// The pool of tables is used up.
    OutOfTables,
    /// The address is beyond the regime's range or not 4 KiB aligned.
    BadRange,
    /// The range overlaps a mapping made with a larger block.
    Overlap,
}

impl MapError {
    pub fn message(self) -> &'static str {
        match self {
            MapError::OutOfTables => "out of tables",
            MapError::BadRange => "address out of range or not 4 KiB aligned",
            MapError::Overlap => "overlaps a block mapping",
        }
    }
}

/// MAIR_EL2 for the stage-1 attribute indices used here: 0 = Device-nGnRnE, 1 = Normal WB RW-allocate.
pub const MAIR_EL2: u64 = 0xFF << 8;
/// TCR_EL2: T0SZ 25, IRGN0/ORGN0 WBWA, SH0 inner, TG0 4K, PS 40-bit, RES1 bits 31 and 23.
pub const TCR_EL2: u64 = (1 << 31) | (1 << 23) | (2 << 16) | (3 << 12) | (1 << 10) | (1 << 8) | 25;
/// VTCR_EL2: T0SZ 24, SL0 = 1 (start at level 1), WBWA, inner shareable, 4K, PS 40-bit, RES1 bit 31.
pub const VTCR_EL2: u64 = (1 << 31) | (2 << 16) | (3 << 12) | (1 << 10) | (1 << 8) | (1 << 6) | 24;

const VALID: u64 = 1;
const TABLE: u64 = 1 << 1;
const AF: u64 = 1 << 10;
const XN: u64 = 1 << 54;
const AP_RO: u64 = 1 << 7;
const ADDR_MASK: u64 = 0x0000_FFFF_FFFF_F000;

pub fn leaf(regime: Regime, mem: Mem, pa: u64, level: u32) -> u64 {
    let kind = if level == 3 { VALID | TABLE } else { VALID };
    let attrs = match (regime, mem) {
        // AttrIndx 1, AP[1] (RES1 in the one-privilege-level EL2 regime), inner shareable.
        (Regime::El2Stage1, Mem::Boot) => (1 << 2) | (1 << 6) | (3 << 8),
        (Regime::El2Stage1, Mem::Normal) => (1 << 2) | (1 << 6) | (3 << 8) | XN,
        // AP[2]: read-only.
        (Regime::El2Stage1, Mem::Text) => (1 << 2) | (1 << 6) | AP_RO | (3 << 8),
        (Regime::El2Stage1, Mem::ReadOnly) => (1 << 2) | (1 << 6) | AP_RO | (3 << 8) | XN,
        (Regime::El2Stage1, Mem::Device) => (1 << 6) | XN,
        // MemAttr 0xF (Normal WB), S2AP RW, inner shareable: a guest's RAM.
        (Regime::Stage2, Mem::Normal | Mem::Text | Mem::ReadOnly | Mem::Boot) => {
            (0xF << 2) | (3 << 6) | (3 << 8)
        }
        // MemAttr 0xF, S2AP RW, outer shareable, never executable.
        (Regime::Stage2, Mem::Device) => (0xF << 2) | (3 << 6) | (2 << 8) | XN,
    };
    (pa & ADDR_MASK) | kind | attrs | AF
}

/// A table set being built. `pool[0..root_tables]` is the root.
pub struct Tables<'a> {
    regime: Regime,
    pool: &'a mut [Table],
    pool_pa: u64,
    used: usize,
    first_leaf_level: u32,
}

fn level_shift(level: u32) -> u32 {
    39 - 9 * level
}

impl<'a> Tables<'a> {
    /// `pool_pa` is the physical address of `pool[0]` (8 KiB aligned for stage 2). The pool is cleared.
    pub fn new(regime: Regime, pool: &'a mut [Table], pool_pa: u64) -> Tables<'a> {
        for t in pool.iter_mut() {
            t.0.fill(0);
        }
        let used = regime.root_tables();
        Tables { regime, pool, pool_pa, used, first_leaf_level: 1 }
    }

    /// Use no blocks larger than `level` allows (1: 1 GiB, 2: 2 MiB, 3: pages only).
    pub fn largest_block_level(&mut self, level: u32) {
        self.first_leaf_level = level.clamp(1, 3);
    }

    pub fn root_pa(&self) -> u64 {
        self.pool_pa
    }

    fn index_of(&self, desc: u64) -> usize {
        (((desc & ADDR_MASK) - self.pool_pa) / 4096) as usize
    }

    /// The descriptor slot for `va` at `level`, creating intermediate tables.
    fn slot(&mut self, va: u64, level: u32) -> Result<&mut u64, MapError> {
        let top = (va >> 30) as usize;
        let (mut t, mut i) = (top / 512, top % 512);
        for l in 1..level {
            let desc = self.pool[t].0[i];
            let next = if desc & VALID == 0 {
                if self.used == self.pool.len() {
                    return Err(MapError::OutOfTables);
                }
                let n = self.used;
                self.used += 1;
                self.pool[t].0[i] = (self.pool_pa + 4096 * n as u64) | VALID | TABLE;
                n
            } else if desc & TABLE == 0 {
                return Err(MapError::Overlap);
            } else {
                self.index_of(desc)
            };
            t = next;
            i = ((va >> level_shift(l + 1)) & 511) as usize;
        }
        Ok(&mut self.pool[t].0[i])
    }

    /// Maps `[va, va+size)` to `[pa, pa+size)` with the largest blocks alignment allows.
    pub fn map(
        &mut self,
        mut va: u64,
        mut pa: u64,
        mut size: u64,
        mem: Mem,
    ) -> Result<(), MapError> {
        if !va.is_multiple_of(4096)
            || !pa.is_multiple_of(4096)
            || !size.is_multiple_of(4096)
            || va.checked_add(size).is_none_or(|e| e > self.regime.limit())
        {
            return Err(MapError::BadRange);
        }
        while size > 0 {
            let level = (self.first_leaf_level..=3)
                .find(|&l| {
                    let b = 1u64 << level_shift(l);
                    va.is_multiple_of(b) && pa.is_multiple_of(b) && size >= b
                })
                .unwrap_or(3);
            let regime = self.regime;
            let slot = self.slot(va, level)?;
            if *slot & VALID != 0 {
                return Err(MapError::Overlap);
            }
            *slot = leaf(regime, mem, pa, level);
            let b = 1u64 << level_shift(level);
            va += b;
            pa += b;
            size -= b;
        }
        Ok(())
    }

    /// Walks the tables: the output address and leaf descriptor for `va`, if mapped.
    pub fn translate(&self, va: u64) -> Option<(u64, u64)> {
        if va >= self.regime.limit() {
            return None;
        }
        let top = (va >> 30) as usize;
        let (mut t, mut i) = (top / 512, top % 512);
        for level in 1..=3 {
            let desc = self.pool[t].0[i];
            if desc & VALID == 0 {
                return None;
            }
            let is_table = level < 3 && desc & TABLE != 0;
            if !is_table {
                let mask = (1u64 << level_shift(level)) - 1;
                return Some(((desc & ADDR_MASK & !mask) | (va & mask), desc));
            }
            t = self.index_of(desc);
            i = ((va >> level_shift(level + 1)) & 511) as usize;
        }
        None
    }

    pub fn tables_used(&self) -> usize {
        self.used
    }
}

/// The hypervisor's image at EL2: code, then constants (and relocated pointers), then writable data
/// up to the end of its .bss; each boundary 4 KiB aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageSections {
    pub start: u64,
    pub text_end: u64,
    pub ro_end: u64,
    pub end: u64,
}

/// The final EL2 map, W^X: the image's code RX, its constants R, its data and every other RAM byte
/// (heap, stacks, tables) RW and never executable; everything that is not RAM is Device.
pub fn el2_plan(
    ram: &[crate::Region],
    image: ImageSections,
) -> alloc::vec::Vec<(crate::Region, Mem)> {
    use crate::region::{align_down, align_up, gaps};
    use crate::Region;
    let mut out = alloc::vec::Vec::new();
    let sections = [
        (Region::new(image.start, image.text_end - image.start), Mem::Text),
        (Region::new(image.text_end, image.ro_end - image.text_end), Mem::ReadOnly),
        (Region::new(image.ro_end, image.end - image.ro_end), Mem::Normal),
    ];
    out.extend(sections.iter().filter(|(r, _)| r.size != 0).copied());
    let image_r = Region::new(image.start, image.end - image.start);
    let ram_pages: alloc::vec::Vec<Region> = ram
        .iter()
        .map(|r| {
            Region::new(
                align_down(r.base, 4096),
                align_up(r.end(), 4096) - align_down(r.base, 4096),
            )
        })
        .collect();
    for r in &ram_pages {
        out.extend(gaps(&[image_r], r.base, r.end()).into_iter().map(|g| (g, Mem::Normal)));
    }
    for g in gaps(&ram_pages, 0, Regime::El2Stage1.limit()) {
        let base = align_up(g.base, 4096);
        let end = align_down(g.end(), 4096);
        if end > base {
            out.push((Region::new(base, end - base), Mem::Device));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::gaps;
    use crate::Region;

    #[test]
    fn stage2_maps_ram_and_devices_but_not_holes() {
        let mut pool = vec![Table::ZERO; 32];
        let mut t = Tables::new(Regime::Stage2, &mut pool, 0x4010_0000);
        // virt-like: Dom0 RAM 0x60000000+512M; devices everywhere except host RAM and the GIC frames.
        t.map(0x6000_0000, 0x6000_0000, 0x2000_0000, Mem::Normal).unwrap();
        let used = [
            Region::new(0x4000_0000, 0x8000_0000),
            Region::new(0x0800_0000, 0x1_0000),
            Region::new(0x0801_0000, 0x4_0000),
        ];
        for g in gaps(&used, 0, 1 << 40) {
            t.map(g.base, g.base, g.size, Mem::Device).unwrap();
        }
        t.map(0x0801_0000, 0x0804_0000, 0x1_0000, Mem::Device).unwrap(); // GICV at GICC's IPA
        let (pa, d) = t.translate(0x6123_4567).unwrap();
        assert_eq!(pa, 0x6123_4567);
        assert_eq!((d >> 2) & 0xF, 0xF);
        assert_eq!((d >> 8) & 3, 3);
        assert_eq!(d & AF, AF);
        assert_eq!(t.translate(0x0801_0004).unwrap().0, 0x0804_0004);
        assert!(t.translate(0x0800_0000).is_none(), "GICD traps");
        assert!(t.translate(0x4060_0000).is_none(), "hypervisor memory is not mapped");
        assert!(t.translate(0xBFFF_F000).is_none());
        let (pa, d) = t.translate(0x80_0000_1000).unwrap(); // virt's 64-bit PCIe window needs 40 bits
        assert_eq!(pa, 0x80_0000_1000);
        assert_eq!(d & XN, XN);
        assert!(t.tables_used() < 32);
        assert_eq!(t.map(0x6000_0000, 0x6000_0000, 0x1000, Mem::Normal), Err(MapError::Overlap));
        assert_eq!(t.map(1 << 40, 0, 0x1000, Mem::Normal), Err(MapError::BadRange));
    }

    #[test]
    fn stage1_uses_blocks_and_runs_out_cleanly() {
        let mut pool = vec![Table::ZERO; 2];
        let mut t = Tables::new(Regime::El2Stage1, &mut pool, 0x1000_0000);
        t.map(0x4000_0000, 0x4000_0000, 0x8000_0000, Mem::Normal).unwrap();
        assert_eq!(t.tables_used(), 1, "1 GiB blocks need no extra table");
        let (_, d) = t.translate(0x7000_0000).unwrap();
        assert_eq!((d >> 2) & 7, 1);
        t.map(0, 0, 0x20_0000, Mem::Device).unwrap();
        assert_eq!(t.map(0x20_1000, 0x20_1000, 0x1000, Mem::Device), Err(MapError::OutOfTables));
    }

    #[test]
    fn pages_only_when_asked() {
        let mut pool = vec![Table::ZERO; 8];
        let mut t = Tables::new(Regime::Stage2, &mut pool, 0);
        t.largest_block_level(3);
        t.map(0x4000_0000, 0x4000_0000, 0x40_0000, Mem::Normal).unwrap();
        assert_eq!(t.translate(0x4020_0000).unwrap().1 & 3, 3, "a level-3 page, not a 2 MiB block");
        assert_eq!(t.tables_used(), 2 + 1 + 2);
        assert_eq!(
            t.map(0x8000_0000, 0x8000_0000, 0x1000_0000, Mem::Normal),
            Err(MapError::OutOfTables)
        );
    }

    #[test]
    fn register_values_match_the_brief() {
        assert_eq!(VTCR_EL2, 0x8002_3558);
    }

    /// Defect 9: EL2's own map is W^X: code read-only and executable, constants read-only, data,
    /// heap and all other RAM writable but never executable.
    #[test]
    fn defect9_el2_map_is_write_xor_execute() {
        let ram = [Region::new(0x4000_0000, 0x8000_0000)];
        let image = ImageSections {
            start: 0x4020_0000,
            text_end: 0x4021_6000,
            ro_end: 0x4021_C000,
            end: 0x402E_6000,
        };
        let plan = el2_plan(&ram, image);
        let mut pool = vec![Table::ZERO; 16];
        let mut t = Tables::new(Regime::El2Stage1, &mut pool, 0x1000_0000);
        for (r, mem) in &plan {
            t.map(r.base, r.base, r.size, *mem).unwrap();
        }
        let attrs = |va: u64| {
            let (_, d) = t.translate(va).unwrap();
            (d & AP_RO != 0, d & XN != 0)
        };
        assert_eq!(attrs(0x4020_0000), (true, false), "text: RX");
        assert_eq!(attrs(0x4021_6000), (true, true), "rodata: R");
        assert_eq!(attrs(0x4021_C000), (false, true), "data/bss: RW, XN");
        assert_eq!(attrs(0x6000_0000), (false, true), "other RAM (heap arena, Dom0): RW, XN");
        assert_eq!(attrs(0x0900_0000), (false, true), "device");
        for (r, mem) in &plan {
            for va in [r.base, r.end() - 4096] {
                let (ro, xn) = attrs(va);
                assert!(ro || xn, "{mem:?} at {va:#x} is writable and executable");
            }
        }
    }
}
