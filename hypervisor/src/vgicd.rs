//! Dom0's view of the GICv2 distributor (IHI 0048B §4.3), decided per trapped access.
//!
//! Dom0 is the only guest and vCPU n runs on pCPU n, so the shared-peripheral (SPI) registers pass
//! straight through to the physical distributor: Dom0 enables, prioritises, targets and configures its
//! own SPIs, and SPIs arrive at EL2 and are forwarded with the list-register HW bit. What must not pass
//! through is virtualised: the global enable (the hypervisor needs its own PPIs and SGIs), the banked
//! SGI/PPI registers (the hypervisor owns IDs 0-31 physically), `ITARGETSR0-7` (each vCPU reads its own
//! bit, as Linux's `gic_get_cpumask` requires), and `SGIR` (IPIs become virtual SGIs).

/// Per-vCPU banked state for INTIDs 0-31.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Banked {
    pub enable: u32,
    pub priority: [u8; 32],
}

impl Default for Banked {
    fn default() -> Self {
        Banked { enable: 0, priority: [0xA0; 32] }
    }
}

/// What the trap handler does with an access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A read answered from virtual state.
    Read(u32),
    /// A write absorbed (virtual state updated, or ignored).
    Done,
    /// Perform the same access, same width, on the physical distributor.
    Passthrough,
    /// Write this value instead of the guest's, physically.
    PassthroughValue(u32),
    /// Raise virtual SGI `intid` on every vCPU in `targets` (bit n = vCPU n); `source` is the sender.
    Sgi { intid: u32, targets: u8 },
}

/// A pending list-register value (GICH_LR, IHI 0048B 5.3.2). With `hw_pid` the HW bit links the virtual
/// interrupt to a physical one, which Dom0's EOI then deactivates; otherwise the CPUID field names an
/// SGI's source vCPU. Priority is the guest's 8-bit priority, of which the LR holds the top 5 bits (a
/// fixed 0x1F would sit below Linux's PMR of 0xF0 forever).
pub fn lr_value(vid: u32, hw_pid: Option<u32>, priority: u8, source: u32) -> u32 {
    let mut v = (vid & 0x3FF) | (u32::from(priority >> 3) << 23) | (1 << 28);
    match hw_pid {
        Some(p) => v |= (1 << 31) | ((p & 0x3FF) << 10),
        None => v |= (source & 7) << 10,
    }
    v
}

pub const CTLR: u32 = 0x000;
pub const SGIR: u32 = 0xF00;

fn replicate(byte: u8, width: u8) -> u32 {
    let b = u32::from(byte);
    match width {
        1 => b,
        2 => b | b << 8,
        _ => b | b << 8 | b << 16 | b << 24,
    }
}

/// Decides one access at `off` within the GICD page. `write` carries the value for stores.
/// `ctlr` is the distributor's virtual enable; `nr_vcpus` bounds SGI and SPI target masks.
pub fn access(off: u32, width: u8, write: Option<u32>, vcpu: usize, nr_vcpus: usize, ctlr: &mut u32, b: &mut Banked) -> Outcome {
    let read = |v: u32| if write.is_some() { Outcome::Done } else { Outcome::Read(v) };
    let valid_cpus = ((1u32 << nr_vcpus) - 1) as u8;
    match off {
        CTLR => match write {
            Some(v) => {
                *ctlr = v & 1;
                Outcome::Done
            }
            None => Outcome::Read(*ctlr),
        },
        0x004 | 0x008 | 0xFD0..=0xFFC => read(0).passthrough_read(write),
        0x080..=0x0FC => read(0),
        0x100..=0x1FC => {
            let set = off < 0x180;
            if (off & 0x7F) != 0 {
                return Outcome::Passthrough;
            }
            match write {
                Some(v) if set => b.enable |= v,
                Some(v) => b.enable &= !v,
                None => return Outcome::Read(b.enable),
            }
            Outcome::Done
        }
        // Pending and active state of INTIDs 0-31 lives in the list registers; SPIs are physical.
        0x200..=0x2FC => if off & 0x7F == 0 { read(0) } else { Outcome::Passthrough },
        0x300..=0x3FC => {
            if off & 0x7F == 0 || write.is_some() {
                // Linux clears every active bit at init; the physical state belongs to the HW-bit flow.
                read(0)
            } else {
                Outcome::Passthrough
            }
        }
        0x400..=0x7FB => {
            let first = (off - 0x400) as usize;
            if first >= 32 {
                return Outcome::Passthrough;
            }
            let n = usize::from(width).min(32 - first);
            match write {
                Some(v) => {
                    for i in 0..n {
                        b.priority[first + i] = (v >> (8 * i)) as u8;
                    }
                    Outcome::Done
                }
                None => Outcome::Read((0..n).fold(0, |acc, i| acc | u32::from(b.priority[first + i]) << (8 * i))),
            }
        }
        0x800..=0x81F => read(replicate(1 << vcpu, width)),
        0x820..=0xBFB => match write {
            Some(v) => Outcome::PassthroughValue(v & replicate(valid_cpus, width)),
            None => Outcome::Passthrough,
        },
        // SGIs are edge-triggered (read-only); PPI configuration is the hypervisor's.
        0xC00 => read(0xAAAA_AAAA),
        0xC04 => read(0),
        0xC08..=0xCFC => Outcome::Passthrough,
        SGIR => match write {
            Some(v) => {
                let intid = v & 0xF;
                let list = ((v >> 16) & 0xFF) as u8;
                let targets = match (v >> 24) & 3 {
                    0 => list,
                    1 => valid_cpus & !(1 << vcpu),
                    2 => 1 << vcpu,
                    _ => 0,
                } & valid_cpus;
                Outcome::Sgi { intid, targets }
            }
            None => Outcome::Read(0),
        },
        _ => read(0),
    }
}

trait ReadPassthrough {
    fn passthrough_read(self, write: Option<u32>) -> Outcome;
}

impl ReadPassthrough for Outcome {
    /// Identification registers: reads come from the hardware, writes are ignored.
    fn passthrough_read(self, write: Option<u32>) -> Outcome {
        if write.is_some() {
            Outcome::Done
        } else {
            Outcome::Passthrough
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(off: u32, width: u8, write: Option<u32>, vcpu: usize) -> (Outcome, u32, Banked) {
        let (mut ctlr, mut b) = (0, Banked::default());
        let o = access(off, width, write, vcpu, 4, &mut ctlr, &mut b);
        (o, ctlr, b)
    }

    #[test]
    fn itargetsr0_reads_own_cpu_bit() {
        assert_eq!(run(0x800, 4, None, 0).0, Outcome::Read(0x0101_0101));
        assert_eq!(run(0x81C, 4, None, 2).0, Outcome::Read(0x0404_0404));
        assert_eq!(run(0x81F, 1, None, 3).0, Outcome::Read(0x08));
        assert_eq!(run(0x800, 4, Some(0xFF), 0).0, Outcome::Done);
    }

    #[test]
    fn spi_registers_pass_through_with_targets_masked() {
        assert_eq!(run(0x104, 4, Some(1), 0).0, Outcome::Passthrough);
        assert_eq!(run(0x420, 1, Some(0xA0), 0).0, Outcome::Passthrough);
        assert_eq!(run(0x820, 4, Some(0xFFFF_FFFF), 0).0, Outcome::PassthroughValue(0x0F0F_0F0F));
        assert_eq!(run(0x821, 1, Some(0x12), 0).0, Outcome::PassthroughValue(0x02));
        assert_eq!(run(0xC08, 4, Some(0x55), 0).0, Outcome::Passthrough);
        assert_eq!(run(0x384, 4, Some(!0), 0).0, Outcome::Done, "ICACTIVER writes ignored");
    }

    #[test]
    fn banked_state_is_virtual() {
        let (mut ctlr, mut b) = (0, Banked::default());
        assert_eq!(access(0x100, 4, Some(1 << 27), 1, 4, &mut ctlr, &mut b), Outcome::Done);
        assert_eq!(access(0x100, 4, None, 1, 4, &mut ctlr, &mut b), Outcome::Read(1 << 27));
        access(0x180, 4, Some(1 << 27), 1, 4, &mut ctlr, &mut b);
        assert_eq!(b.enable, 0);
        access(0x418, 4, Some(0x8070_6050), 1, 4, &mut ctlr, &mut b);
        assert_eq!(&b.priority[24..28], &[0x50, 0x60, 0x70, 0x80]);
        assert_eq!(access(0x41B, 1, None, 1, 4, &mut ctlr, &mut b), Outcome::Read(0x80));
        access(CTLR, 4, Some(1), 1, 4, &mut ctlr, &mut b);
        assert_eq!(ctlr, 1);
        assert_eq!(access(0x004, 4, None, 0, 4, &mut ctlr, &mut b), Outcome::Passthrough);
    }

    #[test]
    fn list_register_encoding() {
        // SPI 33 forwarded with the HW bit, Linux's default priority 0xA0.
        assert_eq!(lr_value(33, Some(33), 0xA0, 0), (1 << 31) | (1 << 28) | (0x14 << 23) | (33 << 10) | 33);
        // SGI 1 from vCPU 3: no HW bit, CPUID = 3, group 0.
        let v = lr_value(1, None, 0xA0, 3);
        assert_eq!((v >> 31, (v >> 10) & 7, v & 0x3FF, (v >> 28) & 3, (v >> 30) & 1), (0, 3, 1, 1, 0));
    }

    #[test]
    fn sgir_filters() {
        assert_eq!(run(SGIR, 4, Some(0x0006_0003), 0).0, Outcome::Sgi { intid: 3, targets: 0b0110 });
        assert_eq!(run(SGIR, 4, Some(0x0100_0001), 2).0, Outcome::Sgi { intid: 1, targets: 0b1011 });
        assert_eq!(run(SGIR, 4, Some(0x0200_0005), 3).0, Outcome::Sgi { intid: 5, targets: 0b1000 });
        assert_eq!(run(SGIR, 4, Some(0x00F0_0000), 0).0, Outcome::Sgi { intid: 0, targets: 0 }, "no such vCPUs");
    }
}
