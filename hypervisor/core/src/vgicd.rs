//! A domain's virtual GICv2 distributor (IHI 0048B §4.3), fully virtual as Xen's `vgic-v2.c`: no guest
//! access ever reaches the physical distributor. Each register has its legal widths in one table
//! (`REGISTERS`); an access of another width, a misaligned one or a doubleword is refused (the binary
//! injects a data abort, as Xen's `bad_width` does). A write can have physical *effects* the binary
//! applies with its own aligned word accesses: enabling, disabling, routing or configuring an interrupt
//! whose physical line belongs to this domain (`owned`), and virtual SGIs.
//!
//! Physical priorities stay the hypervisor's; the guest's priorities only go into list registers.

use crate::gicv2::{gicd, MAX_INTID, SPI_BASE};

/// Most vCPUs a domain can have (GICv2 has 8 CPU interfaces).
pub const MAX_VCPUS: usize = 8;
const WORDS: usize = (MAX_INTID as usize).div_ceil(32);
/// SGI enable bits: always set (RAO/WI on GIC-400, IHI 0048B 4.3.5).
const SGIS: u32 = 0xFFFF;
/// Linux's default priority, and the reset value here.
pub const DEFAULT_PRIORITY: u8 = 0xA0;

/// What a register does (the table's right column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ctlr,
    Typer,
    Iidr,
    /// Reserved, implementation-defined, group and security registers: read as zero, writes ignored.
    RazWi,
    SetEnable,
    ClearEnable,
    /// Pending and active state lives in list registers and the pending sets; RAZ/WI like Xen.
    PendActive,
    Priority,
    Targets,
    Config,
    Sgir,
    Pidr2,
}

/// Legal access sizes, as a bit mask of byte counts (1 | 4: byte or word).
const W: u8 = 4;
const BW: u8 = 1 | 4;

struct Register {
    start: u32,
    end: u32,
    widths: u8,
    kind: Kind,
}

const fn reg(start: u32, end: u32, widths: u8, kind: Kind) -> Register {
    Register { start, end, widths, kind }
}

/// The register table (Xen's `vgic_v2_distr_mmio_read/write`): offset range, legal widths, kind.
/// Halfword and doubleword accesses are never legal on a GICv2 distributor.
const REGISTERS: &[Register] = &[
    reg(gicd::CTLR, 0x004, W, Kind::Ctlr),
    reg(gicd::TYPER, 0x008, W, Kind::Typer),
    reg(gicd::IIDR, 0x00C, W, Kind::Iidr),
    reg(0x00C, gicd::IGROUPR, BW, Kind::RazWi),
    reg(gicd::IGROUPR, gicd::ISENABLER, W, Kind::RazWi),
    reg(gicd::ISENABLER, gicd::ICENABLER, W, Kind::SetEnable),
    reg(gicd::ICENABLER, gicd::ISPENDR, W, Kind::ClearEnable),
    reg(gicd::ISPENDR, gicd::IPRIORITYR, W, Kind::PendActive),
    reg(gicd::IPRIORITYR, 0x7FC, BW, Kind::Priority),
    reg(0x7FC, gicd::ITARGETSR, BW, Kind::RazWi),
    reg(gicd::ITARGETSR, 0xBFC, BW, Kind::Targets),
    reg(0xBFC, gicd::ICFGR, BW, Kind::RazWi),
    reg(gicd::ICFGR, 0xD00, W, Kind::Config),
    reg(0xD00, gicd::NSACR, BW, Kind::RazWi),
    reg(gicd::NSACR, gicd::SGIR, W, Kind::RazWi),
    reg(gicd::SGIR, 0xF04, W, Kind::Sgir),
    reg(0xF04, gicd::CPENDSGIR, BW, Kind::RazWi),
    // CPENDSGIR/SPENDSGIR: SGI pending state is virtual and kept per source in the pending sets.
    reg(gicd::CPENDSGIR, 0xF30, BW, Kind::RazWi),
    reg(0xF30, 0xFD0, BW, Kind::RazWi),
    reg(0xFD0, gicd::PIDR2, W, Kind::RazWi),
    reg(gicd::PIDR2, 0xFEC, W, Kind::Pidr2),
    reg(0xFEC, gicd::PAGE, W, Kind::RazWi),
];

/// The ID registers' architecture revision: GICv2.
const PIDR2_GICV2: u32 = 0x20;

/// A physical consequence of a guest write, carried out by the binary with aligned word accesses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Enable these physical interrupts (bit n = INTID 32*`word` + n). Word 0 is the calling CPU's
    /// banked SGI/PPI word.
    Enable {
        word: u32,
        mask: u32,
    },
    Disable {
        word: u32,
        mask: u32,
    },
    /// Route physical SPI `intid` to the physical CPU running `vcpu` (vCPU n = pCPU n for Dom0).
    Route {
        intid: u32,
        vcpu: u8,
    },
    /// Set the trigger mode of the physical interrupts whose 2-bit fields are in `mask` to `value`
    /// (ICFGR word `word`).
    Configure {
        word: u32,
        mask: u32,
        value: u32,
    },
    /// Raise virtual SGI `intid` on every vCPU in `targets` (bit n = vCPU n).
    Sgi {
        intid: u8,
        targets: u8,
    },
}

/// At most four effects per access (one per byte of a word).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Effects {
    list: [Option<Effect>; 4],
}

impl Effects {
    fn push(&mut self, e: Effect) {
        if let Some(slot) = self.list.iter_mut().find(|s| s.is_none()) {
            *slot = Some(e);
        }
    }
    pub fn iter(&self) -> impl Iterator<Item = Effect> + '_ {
        self.list.iter().flatten().copied()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// A read's value (only the low `width` bytes are meaningful).
    Read(u32),
    /// A write was absorbed; apply these effects.
    Write(Effects),
    /// Not a legal access: inject a data abort.
    Abort,
}

/// One access, as decoded from the trap: offset in the distributor frame, size in bytes, and for a
/// store the value already truncated to the size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub offset: u32,
    pub size: u8,
    pub write: Option<u32>,
}

/// Per-vCPU banked state of INTIDs 0-31.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Banked {
    enable: u32,
    priority: [u8; 32],
}

/// One domain's distributor.
#[derive(Debug, Clone)]
pub struct Distributor {
    nr_vcpus: u8,
    /// Interrupt IDs implemented (a multiple of 32, from the physical GICD_TYPER).
    lines: u32,
    iidr: u32,
    enabled: bool,
    banked: [Banked; MAX_VCPUS],
    /// Enable bits of SPIs, word n = INTIDs 32n..32n+31 (word 0 unused: banked).
    enable: [u32; WORDS],
    priority: [u8; MAX_INTID as usize],
    /// Each SPI's target vCPU (one, as Xen routes an SPI to a single CPU).
    target: [u8; MAX_INTID as usize],
    /// ICFGR, two bits per INTID.
    config: [u32; WORDS * 2],
    /// INTIDs whose physical interrupt belongs to this domain (forwarded with the HW bit).
    owned: [u32; WORDS],
}

impl Distributor {
    /// A distributor for `nr_vcpus` vCPUs over `lines` interrupt IDs; nothing owned yet.
    pub fn new(nr_vcpus: usize, lines: u32, iidr: u32) -> Distributor {
        let nr_vcpus = nr_vcpus.clamp(1, MAX_VCPUS) as u8;
        let lines = lines.clamp(32, MAX_INTID) & !31;
        Distributor {
            nr_vcpus,
            lines,
            iidr,
            enabled: false,
            banked: [Banked { enable: SGIS, priority: [DEFAULT_PRIORITY; 32] }; MAX_VCPUS],
            enable: [0; WORDS],
            priority: [DEFAULT_PRIORITY; MAX_INTID as usize],
            target: [0; MAX_INTID as usize],
            config: [0; WORDS * 2],
            owned: [0; WORDS],
        }
    }

    /// Gives the domain the physical interrupt `intid` (an SPI of a device it owns, or a PPI such as
    /// its virtual timer); its enables and routing then have physical effects.
    pub fn own(&mut self, intid: u32) {
        if intid < self.lines {
            self.owned[(intid / 32) as usize] |= 1 << (intid % 32);
        }
    }

    pub fn owns(&self, intid: u32) -> bool {
        intid < self.lines && self.owned[(intid / 32) as usize] & (1 << (intid % 32)) != 0
    }

    pub fn lines(&self) -> u32 {
        self.lines
    }

    pub fn nr_vcpus(&self) -> usize {
        usize::from(self.nr_vcpus)
    }

    fn all_vcpus(&self) -> u8 {
        ((1u16 << self.nr_vcpus) - 1) as u8
    }

    /// Whether the guest has enabled `intid` (for `vcpu`'s banked view of 0-31), distributor included.
    pub fn enabled(&self, vcpu: usize, intid: u32) -> bool {
        if !self.enabled || intid >= self.lines {
            return false;
        }
        let word = if intid < 32 {
            self.banked[vcpu % MAX_VCPUS].enable
        } else {
            self.enable[(intid / 32) as usize]
        };
        word & (1 << (intid % 32)) != 0
    }

    /// The guest's priority for `intid` as `vcpu` sees it.
    pub fn priority(&self, vcpu: usize, intid: u32) -> u8 {
        match intid {
            0..=31 => self.banked[vcpu % MAX_VCPUS].priority[intid as usize],
            _ if intid < self.lines => self.priority[intid as usize],
            _ => 0xFF,
        }
    }

    /// The vCPU an SPI is routed to.
    pub fn target(&self, intid: u32) -> usize {
        usize::from(self.target.get(intid as usize).copied().unwrap_or(0))
    }

    /// A vCPU turned off (PSCI CPU_OFF): its banked enables return to reset, as a powered-down CPU
    /// interface's would. Returns the owned PPIs to disable physically (a level-triggered timer PPI
    /// left enabled would keep waking the parked CPU).
    pub fn reset_banked(&mut self, vcpu: usize) -> u32 {
        let b = &mut self.banked[vcpu % MAX_VCPUS];
        let was = b.enable;
        *b = Banked { enable: SGIS, priority: [DEFAULT_PRIORITY; 32] };
        was & self.owned[0]
    }

    fn register(offset: u32) -> Option<&'static Register> {
        REGISTERS.iter().find(|r| (r.start..r.end).contains(&offset))
    }

    /// Whether the table allows an access of `size` bytes at `offset` (natural alignment, legal width).
    pub fn legal(offset: u32, size: u8) -> bool {
        matches!(size, 1 | 2 | 4)
            && offset.is_multiple_of(u32::from(size))
            && (offset >= gicd::PAGE
                || Self::register(offset).is_some_and(|r| r.widths & size != 0))
            && !(offset >= gicd::PAGE && size == 2)
    }

    /// Decides one access by `vcpu`.
    pub fn access(&mut self, vcpu: usize, a: Access) -> Reply {
        if !Self::legal(a.offset, a.size) {
            return Reply::Abort;
        }
        let vcpu = vcpu.min(usize::from(self.nr_vcpus) - 1);
        let Some(r) = Self::register(a.offset) else {
            // Beyond the architected page: reserved.
            return if a.write.is_some() {
                Reply::Write(Effects::default())
            } else {
                Reply::Read(0)
            };
        };
        let rel = a.offset - r.start;
        match a.write {
            None => Reply::Read(self.read(vcpu, r.kind, rel, a.size)),
            Some(v) => Reply::Write(self.write(vcpu, r.kind, rel, a.size, v)),
        }
    }

    fn read(&self, vcpu: usize, kind: Kind, rel: u32, size: u8) -> u32 {
        match kind {
            Kind::Ctlr => u32::from(self.enabled),
            // ITLinesNumber and CPUNumber, no security extensions.
            Kind::Typer => (self.lines / 32 - 1) | ((u32::from(self.nr_vcpus) - 1) << 5),
            Kind::Iidr => self.iidr,
            Kind::RazWi | Kind::PendActive | Kind::Sgir => 0,
            Kind::SetEnable | Kind::ClearEnable => self.enable_word(vcpu, rel / 4),
            Kind::Priority => self.bytes(rel, size, |id| self.priority(vcpu, id)),
            Kind::Targets => self.bytes(rel, size, |id| match id {
                // ITARGETSR0-7 read the reading CPU's own bit (Linux's gic_get_cpumask relies on it).
                0..=31 => 1 << vcpu,
                _ if id < self.lines => 1 << self.target[id as usize],
                _ => 0,
            }),
            Kind::Config => match rel / 4 {
                0 => 0xAAAA_AAAA, // SGIs: edge, read-only
                1 => 0,           // PPIs: level, implementation-defined read-only
                w => self
                    .config
                    .get(w as usize)
                    .copied()
                    .filter(|_| w * 16 < self.lines)
                    .unwrap_or(0),
            },
            Kind::Pidr2 => PIDR2_GICV2,
        }
    }

    fn enable_word(&self, vcpu: usize, word: u32) -> u32 {
        match word {
            0 => self.banked[vcpu].enable,
            w if w * 32 < self.lines => self.enable[w as usize],
            _ => 0,
        }
    }

    fn bytes(&self, rel: u32, size: u8, f: impl Fn(u32) -> u8) -> u32 {
        (0..u32::from(size)).fold(0, |acc, i| {
            let id = rel + i;
            let b = if id < self.lines { f(id) } else { 0 };
            acc | (u32::from(b) << (8 * i))
        })
    }

    fn write(&mut self, vcpu: usize, kind: Kind, rel: u32, size: u8, v: u32) -> Effects {
        let mut fx = Effects::default();
        let value = if size == 4 { v } else { v & ((1 << (8 * u32::from(size))) - 1) };
        match kind {
            Kind::Ctlr => self.enabled = value & 1 != 0,
            Kind::Typer | Kind::Iidr | Kind::RazWi | Kind::PendActive | Kind::Pidr2 => {}
            Kind::SetEnable | Kind::ClearEnable => {
                let word = rel / 4;
                if word * 32 >= self.lines {
                    return fx;
                }
                // SGIs are always enabled on GIC-400 (RAO/WI): the bits are kept but only PPIs matter.
                let set = kind == Kind::SetEnable;
                let cur = if word == 0 {
                    &mut self.banked[vcpu].enable
                } else {
                    &mut self.enable[word as usize]
                };
                let changed = if set { value & !*cur } else { value & *cur };
                if set {
                    *cur |= value;
                } else {
                    *cur &= !value;
                }
                if word == 0 {
                    *cur |= SGIS;
                }
                let phys = changed & self.owned[word as usize];
                if phys != 0 {
                    fx.push(if set {
                        Effect::Enable { word, mask: phys }
                    } else {
                        Effect::Disable { word, mask: phys }
                    });
                }
            }
            Kind::Priority => {
                for i in 0..u32::from(size) {
                    let id = rel + i;
                    let p = (value >> (8 * i)) as u8;
                    match id {
                        0..=31 => self.banked[vcpu].priority[id as usize] = p,
                        _ if id < self.lines => self.priority[id as usize] = p,
                        _ => {}
                    }
                }
            }
            Kind::Targets => {
                for i in 0..u32::from(size) {
                    let id = rel + i;
                    if id < SPI_BASE || id >= self.lines {
                        continue; // ITARGETSR0-7 are read-only
                    }
                    // Xen's rule: an SPI goes to one CPU, the lowest valid one named; none named keeps
                    // the old target.
                    let mask = ((value >> (8 * i)) as u8) & self.all_vcpus();
                    if mask == 0 {
                        continue;
                    }
                    let t = mask.trailing_zeros() as u8;
                    if self.target[id as usize] != t {
                        self.target[id as usize] = t;
                        if self.owns(id) {
                            fx.push(Effect::Route { intid: id, vcpu: t });
                        }
                    }
                }
                // A word write routing four owned SPIs needs four effects: `Effects` holds four.
            }
            Kind::Config => {
                let word = rel / 4;
                if word < 2 || word * 16 >= self.lines {
                    return fx;
                }
                // Only the upper bit of each field (edge = 1) is writable.
                let value = value & 0xAAAA_AAAA;
                self.config[word as usize] = value;
                let owned = self.owned[(word / 2) as usize] >> (16 * (word % 2));
                let mask =
                    (0..16).filter(|i| owned & (1 << i) != 0).fold(0u32, |m, i| m | (2 << (2 * i)));
                if mask != 0 {
                    fx.push(Effect::Configure { word, mask, value: value & mask });
                }
            }
            Kind::Sgir => {
                let intid = (value & 0xF) as u8;
                let list = ((value >> 16) & 0xFF) as u8;
                let targets = match (value >> 24) & 3 {
                    0 => list,
                    1 => self.all_vcpus() & !(1 << vcpu),
                    2 => 1 << vcpu,
                    _ => 0,
                } & self.all_vcpus();
                if targets != 0 {
                    fx.push(Effect::Sgi { intid, targets });
                }
            }
        }
        fx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dist() -> Distributor {
        let mut d = Distributor::new(4, 288, 0x0200_043B);
        for id in 32..288 {
            d.own(id);
        }
        d.own(crate::gicv2::VTIMER_INTID);
        d
    }

    fn rd(d: &mut Distributor, vcpu: usize, offset: u32, size: u8) -> Reply {
        d.access(vcpu, Access { offset, size, write: None })
    }
    fn wr(d: &mut Distributor, vcpu: usize, offset: u32, size: u8, v: u32) -> Reply {
        d.access(vcpu, Access { offset, size, write: Some(v) })
    }
    fn effects(r: Reply) -> alloc::vec::Vec<Effect> {
        match r {
            Reply::Write(fx) => fx.iter().collect(),
            other => panic!("not a write: {other:?}"),
        }
    }

    /// Defect 1 (new interface): misaligned accesses, halfwords and doublewords are aborts.
    #[test]
    fn defect1_illegal_widths_and_alignment_abort() {
        let mut d = dist();
        for (off, size) in [
            (0x101, 4),
            (0x102, 2),
            (0x421, 4),
            (0x822, 2),
            (0xC09, 4),
            (0x100, 8),
            (0x104, 1),
            (0xF00, 1),
            (0xC08, 1),
        ] {
            assert_eq!(wr(&mut d, 0, off, size, !0), Reply::Abort, "{off:#x}/{size}");
            assert_eq!(rd(&mut d, 0, off, size), Reply::Abort, "{off:#x}/{size}");
        }
        assert_eq!(rd(&mut d, 0, 0x421, 1), Reply::Read(0xA0));
        assert_eq!(rd(&mut d, 0, 0x1004, 4), Reply::Read(0), "reserved frame space");
    }

    /// Defect 2 (new interface): no byte of the banked words exists as a byte register, and SGIR
    /// takes only word stores.
    #[test]
    fn defect2_banked_bytes_abort_and_sgir_is_word_only() {
        let mut d = dist();
        for off in [0x101, 0x102, 0x103, 0x181, 0x183, 0x201, 0x282, 0x301, 0x383] {
            assert_eq!(wr(&mut d, 0, off, 1, 0x02), Reply::Abort, "{off:#x}");
        }
        assert_eq!(wr(&mut d, 0, gicd::SGIR, 1, 0x03), Reply::Abort);
        assert_eq!(
            effects(wr(&mut d, 0, gicd::SGIR, 4, 0x0006_0003)),
            [Effect::Sgi { intid: 3, targets: 0b0110 }]
        );
    }

    #[test]
    fn itargetsr0_reads_own_cpu_bit() {
        let mut d = dist();
        assert_eq!(rd(&mut d, 0, 0x800, 4), Reply::Read(0x0101_0101));
        assert_eq!(rd(&mut d, 2, 0x81C, 4), Reply::Read(0x0404_0404));
        assert_eq!(rd(&mut d, 3, 0x81F, 1), Reply::Read(0x08));
        assert_eq!(effects(wr(&mut d, 0, 0x800, 4, 0xFF)), []);
    }

    #[test]
    fn spi_enable_routing_and_config_only_for_owned_lines() {
        let mut d = dist();
        wr(&mut d, 0, gicd::CTLR, 4, 1);
        assert_eq!(
            effects(wr(&mut d, 0, 0x104, 4, 0b101)),
            [Effect::Enable { word: 1, mask: 0b101 }]
        );
        assert_eq!(
            effects(wr(&mut d, 0, 0x104, 4, 0b101)),
            [],
            "already enabled: nothing physical"
        );
        assert!(d.enabled(0, 32) && !d.enabled(0, 33));
        assert_eq!(effects(wr(&mut d, 1, 0x184, 4, 0b1)), [Effect::Disable { word: 1, mask: 1 }]);
        assert_eq!(rd(&mut d, 3, 0x104, 4), Reply::Read(0b100));
        // Routing: the lowest named vCPU wins; vCPUs that do not exist are ignored.
        assert_eq!(effects(wr(&mut d, 0, 0x821, 1, 0x16)), [Effect::Route { intid: 33, vcpu: 1 }]);
        assert_eq!(rd(&mut d, 0, 0x821, 1), Reply::Read(0x02));
        assert_eq!(effects(wr(&mut d, 0, 0x822, 1, 0xF0)), [], "no such vCPUs");
        assert_eq!(
            effects(wr(&mut d, 0, 0xC08, 4, 0xFFFF_FFFF)),
            [Effect::Configure { word: 2, mask: 0xAAAA_AAAA, value: 0xAAAA_AAAA }]
        );
        assert_eq!(rd(&mut d, 0, 0xC08, 4), Reply::Read(0xAAAA_AAAA));
        // A line the domain does not own changes virtual state only.
        let mut d = Distributor::new(4, 288, 0);
        d.own(40);
        assert_eq!(
            effects(wr(&mut d, 0, 0x104, 4, 0x301)),
            [Effect::Enable { word: 1, mask: 0x100 }]
        );
        assert_eq!(
            effects(wr(&mut d, 0, 0xC08, 4, 0xFFFF_FFFF)),
            [Effect::Configure { word: 2, mask: 2 << 16, value: 2 << 16 }]
        );
    }

    #[test]
    fn banked_state_is_virtual_and_per_vcpu() {
        let mut d = dist();
        wr(&mut d, 0, gicd::CTLR, 4, 1);
        assert_eq!(
            effects(wr(&mut d, 1, 0x100, 4, 1 << 27 | 1 << 5)),
            [Effect::Enable { word: 0, mask: 1 << 27 }]
        );
        assert_eq!(rd(&mut d, 1, 0x100, 4), Reply::Read(1 << 27 | 0xFFFF));
        assert_eq!(rd(&mut d, 0, 0x100, 4), Reply::Read(0xFFFF), "SGIs are always enabled");
        wr(&mut d, 0, 0x180, 4, !0);
        assert_eq!(rd(&mut d, 0, 0x100, 4), Reply::Read(0xFFFF));
        assert!(d.enabled(1, 27) && !d.enabled(0, 27));
        wr(&mut d, 1, 0x418, 4, 0x8070_6050);
        assert_eq!(d.priority(1, 25), 0x60);
        assert_eq!(d.priority(0, 25), DEFAULT_PRIORITY);
        assert_eq!(rd(&mut d, 1, 0x41B, 1), Reply::Read(0x80));
        assert_eq!(rd(&mut d, 0, gicd::TYPER, 4), Reply::Read(8 | (3 << 5)));
        assert_eq!(rd(&mut d, 0, gicd::PIDR2, 4), Reply::Read(0x20));
        assert_eq!(d.reset_banked(1), 1 << 27, "CPU_OFF disables the owned timer PPI");
        assert_eq!(rd(&mut d, 1, 0x100, 4), Reply::Read(0xFFFF));
        wr(&mut d, 0, gicd::CTLR, 4, 0);
        assert!(!d.enabled(0, 40), "distributor off");
    }

    #[test]
    fn sgir_filters() {
        let mut d = dist();
        assert_eq!(
            effects(wr(&mut d, 2, gicd::SGIR, 4, 0x0100_0001)),
            [Effect::Sgi { intid: 1, targets: 0b1011 }]
        );
        assert_eq!(
            effects(wr(&mut d, 3, gicd::SGIR, 4, 0x0200_0005)),
            [Effect::Sgi { intid: 5, targets: 0b1000 }]
        );
        assert_eq!(effects(wr(&mut d, 0, gicd::SGIR, 4, 0x00F0_0000)), [], "no such vCPUs");
        assert_eq!(effects(wr(&mut d, 0, gicd::SGIR, 4, 0x0300_0000)), [], "reserved filter");
    }

    proptest! {
        /// No access of any width or offset has a physical effect the table does not allow: only
        /// legal accesses are answered, and their effects touch only lines the domain owns, existing
        /// vCPUs, and the enable/config registers of existing interrupt words.
        #[test]
        fn no_access_reaches_hardware_unless_the_table_allows(
            offset in 0u32..0x1_0000, size in prop::sample::select(&[1u8, 2, 4, 8][..]),
            value in any::<u32>(), vcpu in 0usize..4, write in any::<bool>(), owned in prop::collection::vec(0u32..300, 0..20),
        ) {
            let mut d = Distributor::new(4, 288, 0);
            for id in &owned { d.own(*id); }
            let r = d.access(vcpu, Access { offset, size, write: write.then_some(value) });
            if !Distributor::legal(offset, size) {
                prop_assert_eq!(r, Reply::Abort);
            }
            prop_assert!(size != 8 && size != 2 || r == Reply::Abort);
            prop_assert!(offset % u32::from(size) == 0 || r == Reply::Abort);
            if let Reply::Write(fx) = r {
                for e in fx.iter() {
                    match e {
                        Effect::Enable { word, mask } | Effect::Disable { word, mask } => {
                            prop_assert!(offset & !0x7F == 0x100 || offset & !0x7F == 0x180);
                            prop_assert_eq!(word, (offset & 0x7F) / 4);
                            for b in 0..32 { if mask & (1 << b) != 0 { prop_assert!(d.owns(word * 32 + b)); } }
                        }
                        Effect::Route { intid, vcpu } => {
                            prop_assert!((0x820..0xBFC).contains(&offset));
                            prop_assert!(d.owns(intid) && intid >= 32 && vcpu < 4);
                        }
                        Effect::Configure { word, mask, .. } => {
                            prop_assert!((0xC08..0xD00).contains(&offset) && word >= 2);
                            for f in 0..16 { if mask & (3 << (2 * f)) != 0 { prop_assert!(d.owns(word * 16 + f)); } }
                        }
                        Effect::Sgi { intid, targets } => {
                            prop_assert!(offset == gicd::SGIR && size == 4 && intid < 16 && targets & !0xF == 0);
                        }
                    }
                }
            }
        }
    }
}
