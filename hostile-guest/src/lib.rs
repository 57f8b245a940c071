//! The decisions of the hostile guest that need no hardware, with host unit tests: what its boot
//! arguments say, and which answers to a distributor access are architecturally acceptable.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

/// What the test passes on the guest's command line (`/chosen/bootargs`), besides the device tree:
/// the addresses a Dom0 cannot learn from its own tree.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Bootargs<'a> {
    /// Where the hypervisor image sits (`hostile.hv=`).
    pub hv: Option<u64>,
    /// The physical GIC hypervisor-control and virtual-CPU frames (`hostile.gich=`, `hostile.gicv=`).
    pub gich: Option<u64>,
    pub gicv: Option<u64>,
    /// How many vCPUs the guest must see in `/cpus` (`hostile.vcpus=`).
    pub vcpus: Option<usize>,
    /// Iterations of the forbidden-address loop (`hostile.loop=`).
    pub loop_iterations: Option<u32>,
    /// Run only these cases (`hostile.only=a,b`), for bisecting one defect at a time.
    pub only: Option<&'a str>,
    /// Leave these cases out (`hostile.skip=a,b`): known to break the hypervisor for the cases after.
    pub skip: Option<&'a str>,
    /// What this instance does (`hostile.mode=`): attack as Dom0 (the default), attack as a DomU, or
    /// stand by as a victim whose heartbeat and memory the attacker must not disturb.
    pub mode: Mode,
    /// Addresses a DomU attacks (`hostile.targets=name@addr[+size],...`): host-physical ranges it
    /// must not reach, named as IPAs. What a DomU cannot learn from its own tree: where Dom0, the
    /// other domains, the hypervisor and the physical devices are.
    pub targets: Option<&'a str>,
}

/// See [`Bootargs::mode`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Dom0,
    Domu,
    Bystander,
}

/// One range a DomU attacks: `size` 0 is one address, otherwise the whole range is swept at
/// [`SWEEP_STRIDE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    pub name: &'a str,
    pub addr: u64,
    pub size: u64,
}

/// A sweep touches one word every 64 KiB: a bystander's 128 KiB pattern buffer lying anywhere in a
/// swept range is hit at least once, and a 64 MiB range costs 2,048 refused accesses.
pub const SWEEP_STRIDE: u64 = 0x1_0000;
/// Where in each stride the sweep touches (not the first word, so an off-by-a-page mapping shows).
pub const SWEEP_OFFSET: u64 = 0x800;

impl Target<'_> {
    /// The addresses the attack touches, in order.
    pub fn addresses(&self) -> impl Iterator<Item = u64> + '_ {
        let (first, n) = if self.size == 0 {
            (self.addr, 1)
        } else {
            (self.addr + SWEEP_OFFSET, self.size.div_ceil(SWEEP_STRIDE))
        };
        (0..n).map(move |i| first + i * SWEEP_STRIDE)
    }

    /// Whether the sweep writes into `[addr, addr + len)`.
    pub fn hits(&self, addr: u64, len: u64) -> bool {
        self.addresses().any(|a| a >= addr && a < addr + len)
    }
}

/// Parses `hostile.targets=`; a malformed entry is an error naming it (the run must not silently
/// attack less than the test asked for).
pub fn targets(list: &str) -> impl Iterator<Item = Result<Target<'_>, &str>> {
    list.split(',').filter(|e| !e.is_empty()).map(|e| {
        let (name, rest) = e.split_once('@').ok_or(e)?;
        let (addr, size) = match rest.split_once('+') {
            Some((a, s)) => (number(a).ok_or(e)?, number(s).ok_or(e)?),
            None => (number(rest).ok_or(e)?, 0),
        };
        if name.is_empty() {
            return Err(e);
        }
        Ok(Target { name, addr, size })
    })
}

fn number(v: &str) -> Option<u64> {
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

impl<'a> Bootargs<'a> {
    /// Unknown words are ignored (the command line is shared with whatever else boots).
    pub fn parse(cmdline: &'a str) -> Bootargs<'a> {
        let mut b = Bootargs::default();
        for word in cmdline.split_ascii_whitespace() {
            let Some((k, v)) = word.split_once('=') else { continue };
            match k {
                "hostile.hv" => b.hv = number(v),
                "hostile.gich" => b.gich = number(v),
                "hostile.gicv" => b.gicv = number(v),
                "hostile.vcpus" => b.vcpus = number(v).map(|n| n as usize),
                "hostile.loop" => b.loop_iterations = number(v).map(|n| n as u32),
                "hostile.only" => b.only = Some(v),
                "hostile.skip" => b.skip = Some(v),
                "hostile.targets" => b.targets = Some(v),
                "hostile.mode" => {
                    b.mode = match v {
                        "domu" => Mode::Domu,
                        "bystander" => Mode::Bystander,
                        _ => Mode::Dom0,
                    }
                }
                _ => {}
            }
        }
        b
    }

    pub fn selects(&self, case: &str) -> bool {
        self.only.is_none_or(|o| o.split(',').any(|c| c == case))
            && !self.skip.is_some_and(|s| s.split(',').any(|c| c == case))
    }
}

/// Reads a big-endian number of `cells` 32-bit cells.
pub fn read_cells(b: &[u8], cells: usize) -> Option<u64> {
    let b = b.get(..cells * 4)?;
    Some(
        b.chunks(4).fold(0, |acc, c| {
            (acc << 32) | u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        }),
    )
}

/// Translates a child bus address through a parent's `ranges` property (entries of child address,
/// parent address, size; cells as given). Empty `ranges` is the identity; no matching entry is None.
pub fn translate(
    addr: u64,
    ranges: &[u8],
    child_ac: usize,
    parent_ac: usize,
    size_c: usize,
) -> Option<u64> {
    if ranges.is_empty() {
        return Some(addr);
    }
    let entry = (child_ac + parent_ac + size_c) * 4;
    ranges.chunks_exact(entry).find_map(|e| {
        let child = read_cells(e, child_ac)?;
        let parent = read_cells(&e[child_ac * 4..], parent_ac)?;
        let size = read_cells(&e[(child_ac + parent_ac) * 4..], size_c)?;
        (addr >= child && addr - child < size).then(|| parent + (addr - child))
    })
}

/// What one probe of an MMIO address gave: a value, or a synchronous abort with its ESR_EL1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Value(u64),
    Abort(u64),
}

/// Exception class of a data abort taken from the current EL (the hypervisor injects this one).
pub const EC_DABT_CUR: u64 = 0x25;
/// Exception class of an unknown/undefined instruction.
pub const EC_UNKNOWN: u64 = 0x00;

/// Judges a read of `width` bytes at byte `off` (0-3) of a distributor register whose aligned
/// 32-bit read gave `word` (`None`: the word read aborted).
///
/// GICv2 (IHI 0048B 4.1.4, Xen's vgic-v2.c): every register is word-accessible, some also
/// byte-accessible, none halfword- or doubleword-accessible, and nothing misaligned. An access the
/// hypervisor allows must give the matching bytes of the word; anything else must be read-as-zero or
/// an injected data abort. A physical access by the hypervisor on the guest's behalf is neither
/// (on QEMU it shows as an EL2 alignment fault: `hv: PANIC` and a hung guest).
pub fn judge_gicd_read(
    width: u8,
    off: u32,
    word: Option<u32>,
    got: Probe,
) -> Result<(), &'static str> {
    let aligned = off.is_multiple_of(u32::from(width));
    match got {
        Probe::Abort(esr) if esr >> 26 == EC_DABT_CUR => Ok(()),
        Probe::Abort(_) => Err("an exception other than a data abort"),
        Probe::Value(0) => Ok(()),
        Probe::Value(v) => {
            if !aligned || width == 2 || width == 8 {
                return Err("a value from a misaligned or halfword/doubleword access");
            }
            let Some(word) = word else { return Err("a value where the word read aborted") };
            let mask = if width == 4 { u32::MAX } else { 0xFF };
            if v == u64::from((word >> (8 * off)) & mask) {
                Ok(())
            } else {
                Err("bytes that differ from the word read")
            }
        }
    }
}

/// SMCCC's answer to an unknown function: -1 in x0, or in w0 for an SMC32/HVC32 function ID.
pub fn is_not_supported(fid: u32, x0: u64) -> bool {
    if fid & 0x4000_0000 != 0 {
        x0 == u64::MAX
    } else {
        x0 as u32 == u32::MAX
    }
}

/// PSCI CPU_ON for an entry point the caller may not use: INVALID_ADDRESS (-9) or INVALID_PARAMETERS (-2).
pub fn is_refused_entry(ret: i64) -> bool {
    ret == -9 || ret == -2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootargs() {
        let b =
            Bootargs::parse("console=hvc0 hostile.hv=0x40200000 hostile.vcpus=3 hostile.only=a,b");
        assert_eq!(b.hv, Some(0x4020_0000));
        assert_eq!(b.vcpus, Some(3));
        assert!(b.selects("b") && !b.selects("c"));
        assert!(!Bootargs::parse("hostile.skip=x,y").selects("y"));
        assert!(Bootargs::parse("hostile.skip=x,y").selects("z"));
        assert!(Bootargs::parse("").selects("anything"));
        assert_eq!(Bootargs::parse("hostile.gich=zz").gich, None);
    }

    #[test]
    fn modes_and_targets() {
        let b = Bootargs::parse(
            "hostile.mode=domu hostile.targets=dom0@0x48000000+0x4000000,uart@0x9000000",
        );
        assert_eq!(b.mode, Mode::Domu);
        assert_eq!(Bootargs::parse("hostile.mode=bystander").mode, Mode::Bystander);
        assert_eq!(Bootargs::parse("").mode, Mode::Dom0);
        let t: Vec<_> = targets(b.targets.unwrap()).collect();
        assert_eq!(
            t,
            [
                Ok(Target { name: "dom0", addr: 0x4800_0000, size: 0x400_0000 }),
                Ok(Target { name: "uart", addr: 0x900_0000, size: 0 })
            ]
        );
        let bad: Vec<_> = targets("a@0x10,b@zz,@0x1,c").collect();
        assert_eq!(bad[1..], [Err("b@zz"), Err("@0x1"), Err("c")]);
    }

    #[test]
    fn sweeps_hit_any_pattern_buffer_in_range() {
        let one = Target { name: "x", addr: 0x900_0000, size: 0 };
        assert_eq!(one.addresses().collect::<Vec<_>>(), [0x900_0000]);
        let t = Target { name: "d", addr: 0x4800_0000, size: 0x400_0000 };
        assert_eq!(t.addresses().count(), 1024);
        assert_eq!(t.addresses().next(), Some(0x4800_0800));
        assert!(t.addresses().all(|a| a < 0x4c00_0000));
        // A 128 KiB buffer anywhere inside (page-aligned or not) is hit; one outside is not.
        for start in [0x4800_0000, 0x4812_3000, 0x4bfd_f000, 0x4a00_0ff8] {
            assert!(t.hits(start, 0x2_0000), "{start:#x}");
        }
        assert!(!t.hits(0x4c00_0000, 0x2_0000));
        assert!(!t.hits(0x4800_1000, 0x1000), "a page between two touches");
    }

    #[test]
    fn gicd_reads() {
        let abort = Probe::Abort(EC_DABT_CUR << 26 | 0x10);
        assert_eq!(judge_gicd_read(1, 1, Some(0x1234_5678), Probe::Value(0x56)), Ok(()));
        assert!(judge_gicd_read(1, 1, Some(0x1234_5678), Probe::Value(0x12)).is_err());
        assert_eq!(judge_gicd_read(4, 1, Some(1), abort), Ok(()));
        assert_eq!(judge_gicd_read(4, 1, Some(1), Probe::Value(0)), Ok(()), "read-as-zero");
        assert!(judge_gicd_read(4, 1, Some(1), Probe::Value(1)).is_err(), "misaligned value");
        assert!(judge_gicd_read(2, 0, Some(0xFFFF), Probe::Value(0xFFFF)).is_err(), "halfword");
        assert!(judge_gicd_read(8, 0, Some(1), Probe::Value(1)).is_err(), "doubleword");
        assert!(
            judge_gicd_read(4, 0, Some(1), Probe::Abort(1 << 25)).is_err(),
            "undef is not a data abort"
        );
    }

    #[test]
    fn ranges_translation() {
        // The Pi's /soc: <0x7e000000 0x0 0xfe000000 0x1800000>, <0x40000000 0x0 0xff800000 0x800000>.
        let mut r = Vec::new();
        for c in
            [0x7e00_0000u32, 0, 0xfe00_0000, 0x180_0000, 0x4000_0000, 0, 0xff80_0000, 0x80_0000]
        {
            r.extend_from_slice(&c.to_be_bytes());
        }
        assert_eq!(translate(0x4004_1000, &r, 1, 2, 1), Some(0xff84_1000));
        assert_eq!(translate(0x7e20_1000, &r, 1, 2, 1), Some(0xfe20_1000));
        assert_eq!(translate(0x1000, &r, 1, 2, 1), None);
        assert_eq!(translate(0x1000, &[], 1, 2, 1), Some(0x1000));
        assert_eq!(read_cells(&[0, 0, 0, 1, 0, 0, 0, 2], 2), Some(0x1_0000_0002));
    }

    #[test]
    fn smccc_answers() {
        assert!(is_not_supported(0xC400_00FF, u64::MAX));
        assert!(!is_not_supported(0xC400_00FF, 0xFFFF_FFFF));
        assert!(is_not_supported(0x8400_00FF, 0xFFFF_FFFF));
        assert!(is_refused_entry(-9) && is_refused_entry(-2) && !is_refused_entry(0));
    }
}
