//! The static partition (Bao/Jailhouse style, no scheduler): which physical CPUs each DomU's vCPUs
//! are pinned to, which host RAM backs each DomU's guest RAM, and each DomU's stage 2 (default
//! deny: its RAM, the GIC virtual CPU interface at `GUEST_GICC_BASE`, and emulated GICD/vPL011 pages;
//! every other address is refused). Dom0 keeps the CPUs no DomU takes; its stage 2 maps only its
//! own RAM (`stage2::dom0`), so DomU RAM is never Dom0's.

use alloc::string::String;
use alloc::vec::Vec;

use crate::cpus::MAX_CPUS;
use crate::dom0less::DomainSpec;
use crate::guest;
use crate::placement::{place_dom0, SZ_2M};
use crate::Region;

/// Guest-physical `ipa..ipa+size` backed by host `pa..pa+size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub ipa: u64,
    pub pa: u64,
    pub size: u64,
}

impl Mapping {
    pub fn contains_ipa(&self, ipa: u64) -> bool {
        ipa >= self.ipa && ipa - self.ipa < self.size
    }

    pub fn host(&self) -> Region {
        Region::new(self.pa, self.size)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// The DomUs ask for more vCPUs than there are physical CPUs besides Dom0's boot CPU.
    TooManyVcpus { domain: String, wanted: u32, free: usize },
    /// No free host RAM range of the domain's size.
    NoRoomForMemory { domain: String, size: u64 },
    /// A `xen,static-mem` range is not host RAM.
    StaticMemNotRam { domain: String, range: Region },
    /// A `xen,static-mem` range overlaps the hypervisor, Dom0, a boot module or another domain.
    StaticMemBusy { domain: String, range: Region },
    /// More guest RAM than Xen's guest layout has room for.
    TooMuchMemory { domain: String },
}

impl PlanError {
    pub fn domain(&self) -> &str {
        match self {
            PlanError::TooManyVcpus { domain, .. }
            | PlanError::NoRoomForMemory { domain, .. }
            | PlanError::StaticMemNotRam { domain, .. }
            | PlanError::StaticMemBusy { domain, .. }
            | PlanError::TooMuchMemory { domain } => domain,
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            PlanError::TooManyVcpus { .. } => "cpus: more vCPUs than free physical CPUs",
            PlanError::NoRoomForMemory { .. } => "memory: no free host RAM range that large",
            PlanError::StaticMemNotRam { .. } => "xen,static-mem: a range is not host RAM",
            PlanError::StaticMemBusy { .. } => {
                "xen,static-mem: a range overlaps the hypervisor, Dom0, a module or another domain"
            }
            PlanError::TooMuchMemory { .. } => "memory: larger than the guest address space",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomuPlan {
    /// Physical CPU index of each vCPU (vCPU n runs only on `pcpus[n]`).
    pub pcpus: Vec<usize>,
    /// Guest RAM, in guest order (RAM0 first).
    pub ram: Vec<Mapping>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Dom0's physical CPUs, ascending (its vCPU n runs on `dom0_pcpus[n]`).
    pub dom0_pcpus: Vec<usize>,
    /// One plan per spec, in spec order.
    pub domus: Vec<DomuPlan>,
}

/// Pins DomU vCPUs to the highest-numbered physical CPUs (never `boot_cpu`, which stays Dom0's),
/// then gives Dom0 what is left (at most `dom0_max_vcpus`, always the boot CPU).
pub fn plan_cpus(
    specs: &[DomainSpec<'_>],
    nr_pcpus: usize,
    boot_cpu: usize,
    dom0_max_vcpus: Option<usize>,
) -> Result<(Vec<usize>, Vec<Vec<usize>>), PlanError> {
    let mut free: Vec<usize> = Vec::new();
    for c in (0..nr_pcpus).rev() {
        if c != boot_cpu {
            free.push(c);
        }
    }
    let mut domus = Vec::new();
    for s in specs {
        let wanted = s.cpus as usize;
        if wanted > free.len() {
            return Err(PlanError::TooManyVcpus {
                domain: String::from(s.name),
                wanted: s.cpus,
                free: free.len(),
            });
        }
        // split_off, not drain: moving drain's tail links compiler_builtins' memmove (1 KiB).
        let rest = free.split_off(wanted);
        domus.push(core::mem::replace(&mut free, rest));
    }
    // Ascending, the boot CPU always in, at most `dom0_max_vcpus` (the boot CPU counts first).
    let max = dom0_max_vcpus.unwrap_or(usize::MAX).max(1);
    let mut others_left = max - 1;
    let mut dom0 = Vec::new();
    for c in 0..nr_pcpus {
        if c == boot_cpu {
            dom0.push(c);
        } else if free.contains(&c) && others_left > 0 {
            dom0.push(c);
            others_left -= 1;
        }
    }
    Ok((dom0, domus))
}

/// Lays `host` ranges (in order) into Xen's guest RAM banks: RAM0 up to 3 GiB, then RAM1.
fn into_guest_banks(host: &[Region]) -> Option<Vec<Mapping>> {
    let total: u64 = host.iter().map(|r| r.size).sum();
    let banks = guest::ram_banks(total)?;
    let mut out = Vec::new();
    let mut bank_iter = banks.iter().flatten().copied();
    let mut bank = bank_iter.next()?;
    let mut bank_used = 0;
    for r in host {
        let mut done = 0;
        while done < r.size {
            if bank_used == bank.size {
                bank = bank_iter.next()?;
                bank_used = 0;
            }
            let n = (r.size - done).min(bank.size - bank_used);
            out.push(Mapping { ipa: bank.base + bank_used, pa: r.base + done, size: n });
            done += n;
            bank_used += n;
        }
    }
    Some(out)
}

/// Backs each DomU's RAM: its `xen,static-mem` ranges exactly, or else the highest free 2 MiB-aligned
/// range of host RAM clear of `busy` (the hypervisor, Dom0's RAM, boot modules, the DTB, reserved
/// memory) and of the domains placed before it.
pub fn plan_memory(
    specs: &[DomainSpec<'_>],
    host_ram: &[Region],
    busy: &[Region],
) -> Result<Vec<Vec<Mapping>>, PlanError> {
    let mut taken: Vec<Region> = busy.to_vec();
    let mut host_of: Vec<Option<Vec<Region>>> = alloc::vec![None; specs.len()];
    // Static ranges are fixed: claim them before placing the others around them.
    for (i, s) in specs.iter().enumerate().filter(|(_, s)| !s.static_mem.is_empty()) {
        for r in &s.static_mem {
            let in_ram = host_ram.iter().any(|b| b.base <= r.base && r.end() <= b.end());
            if !in_ram {
                return Err(PlanError::StaticMemNotRam { domain: s.name.into(), range: *r });
            }
            if taken.iter().any(|t| t.overlaps(r)) {
                return Err(PlanError::StaticMemBusy { domain: s.name.into(), range: *r });
            }
            taken.push(*r);
        }
        host_of[i] = Some(s.static_mem.clone());
    }
    for (i, s) in specs.iter().enumerate().filter(|(_, s)| s.static_mem.is_empty()) {
        let size = crate::region::align_up(s.memory, SZ_2M);
        let r = place_dom0(host_ram, &taken, size, u64::MAX, SZ_2M)
            .ok_or_else(|| PlanError::NoRoomForMemory { domain: s.name.into(), size })?;
        taken.push(r);
        host_of[i] = Some(alloc::vec![Region::new(r.base, s.memory)]);
    }
    // A loop, not `collect::<Result<..>>`: smaller in the EL2 binary.
    let mut out = Vec::new();
    for (s, host) in specs.iter().zip(host_of) {
        let banks = into_guest_banks(&host.unwrap_or_default())
            .ok_or_else(|| PlanError::TooMuchMemory { domain: s.name.into() })?;
        out.push(banks);
    }
    Ok(out)
}

pub fn plan(
    specs: &[DomainSpec<'_>],
    nr_pcpus: usize,
    boot_cpu: usize,
    dom0_max_vcpus: Option<usize>,
    host_ram: &[Region],
    busy: &[Region],
) -> Result<Partition, PlanError> {
    let (dom0_pcpus, cpus) = plan_cpus(specs, nr_pcpus, boot_cpu, dom0_max_vcpus)?;
    let ram = plan_memory(specs, host_ram, busy)?;
    let domus = cpus.into_iter().zip(ram).map(|(pcpus, ram)| DomuPlan { pcpus, ram }).collect();
    Ok(Partition { dom0_pcpus, domus })
}

/// What a DomU guest-physical address is.
/// Which domain and vCPU each physical CPU runs: `(0, v)` is Dom0's vCPU `v`, `(d, v)` DomU `d`'s
/// (Xen's domain IDs: the DomUs are 1, 2, ... in `/chosen` order). CPUs no domain uses stay `None`
/// and are never started.
pub fn cpu_roles(dom0_pcpus: &[usize], domus: &[Vec<usize>]) -> [Option<(u8, u8)>; MAX_CPUS] {
    let mut roles = [None; MAX_CPUS];
    let all = core::iter::once(dom0_pcpus).chain(domus.iter().map(Vec::as_slice));
    for (d, pcpus) in all.enumerate() {
        for (v, &p) in pcpus.iter().enumerate() {
            if let Some(slot) = roles.get_mut(p) {
                *slot = Some((d as u8, v as u8));
            }
        }
    }
    roles
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomuAccess {
    /// Its RAM (mapped).
    Ram,
    /// The GIC CPU interface window (mapped to the host's GICV).
    GicCpu,
    /// The virtual distributor (a stage-2 hole, emulated).
    Gicd,
    /// The vPL011 (a hole, emulated), only with `vpl011`.
    Vpl011,
    /// Anything else: refused with an abort.
    Denied,
}

/// A DomU's stage 2: the mappings to install; everything else is a hole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomuStage2 {
    pub ram: Vec<Mapping>,
    /// `GUEST_GICC_BASE` → the host's GICV frame.
    pub gicv: Mapping,
    pub vpl011: bool,
}

impl DomuStage2 {
    pub fn new(ram: &[Mapping], host_gicv: u64, vpl011: bool) -> Self {
        DomuStage2 {
            ram: ram.to_vec(),
            gicv: Mapping { ipa: guest::GICC.base, pa: host_gicv, size: guest::GICC.size },
            vpl011,
        }
    }

    /// Every mapping (RAM, then the GICV window).
    pub fn mappings(&self) -> impl Iterator<Item = Mapping> + '_ {
        self.ram.iter().copied().chain(core::iter::once(self.gicv))
    }

    pub fn classify(&self, ipa: u64) -> DomuAccess {
        if self.ram.iter().any(|m| m.contains_ipa(ipa)) {
            DomuAccess::Ram
        } else if self.gicv.contains_ipa(ipa) {
            DomuAccess::GicCpu
        } else if guest::GICD.contains(ipa) {
            DomuAccess::Gicd
        } else if self.vpl011 && guest::PL011.contains(ipa) {
            DomuAccess::Vpl011
        } else {
            DomuAccess::Denied
        }
    }

    /// The host address behind a guest RAM address (for loading the kernel and scrubbing).
    pub fn host_of(&self, ipa: u64) -> Option<u64> {
        self.ram.iter().find(|m| m.contains_ipa(ipa)).map(|m| m.pa + (ipa - m.ipa))
    }

    /// The host ranges behind guest RAM `[ipa, ipa + len)`, in order (a boot file copied into a
    /// DomU whose `xen,static-mem` banks are not contiguous lands in several pieces). `None` when
    /// any byte of it is not the domain's RAM.
    pub fn host_ranges(&self, ipa: u64, len: u64) -> Option<Vec<Region>> {
        let mut out = Vec::new();
        let mut at = ipa;
        let end = ipa.checked_add(len)?;
        while at < end {
            let m = self.ram.iter().find(|m| m.contains_ipa(at))?;
            let n = (m.ipa + m.size - at).min(end - at);
            out.push(Region::new(m.pa + (at - m.ipa), n));
            at += n;
        }
        Some(out)
    }

    /// Loading the domain, decided once at build: each boot file (host `src`, guest address) as host
    /// copies `(from, to)`, and the host ranges to zero around them (`scrub_plan`). Loading then
    /// allocates nothing: it runs on the DomU's own CPU beside the others, and the hypervisor's heap
    /// has one owner, the boot CPU. A file that does not lie in the domain's RAM is left out.
    pub fn load_plan(&self, files: &[(Region, u64)]) -> (Vec<(u64, Region)>, Vec<Region>) {
        let mut copies = Vec::new();
        let mut written = Vec::new();
        for &(src, ipa) in files {
            let Some(pieces) = self.host_ranges(ipa, src.size) else { continue };
            written.push(Region::new(ipa, src.size));
            let mut from = src.base;
            for p in pieces {
                copies.push((from, p));
                from += p.size;
            }
        }
        (copies, self.scrub_plan(&written))
    }

    /// The host ranges to zero before the domain (re)starts: all its RAM except the bytes the load
    /// writes right after (`written`: guest ranges of its kernel, initrd and device tree), so no byte
    /// a previous owner or run left survives, and none is written twice (zeroing 256 MiB takes
    /// seconds under TCG, the kernel alone is a sixth of it). A written range that is not all RAM
    /// is not loaded (`host_ranges` is `None`), so it is zeroed.
    pub fn scrub_plan(&self, written: &[Region]) -> Vec<Region> {
        let mut host = Vec::new();
        for w in written {
            host.extend(self.host_ranges(w.base, w.size).unwrap_or_default());
        }
        let mut out = Vec::new();
        for m in &self.ram {
            out.extend(crate::region::gaps(&host, m.pa, m.pa + m.size));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage2;

    fn spec(name: &'static str, cpus: u32, memory: u64) -> DomainSpec<'static> {
        DomainSpec {
            name,
            memory,
            cpus,
            vpl011: true,
            kernel: Region::new(0x4a00_0000, 0x80_0000),
            bootargs: "",
            ramdisk: None,
            static_mem: Vec::new(),
        }
    }

    #[test]
    fn each_domu_vcpu_gets_its_own_pcpu_and_dom0_keeps_the_rest() {
        let specs = [spec("domU1", 1, 1 << 28), spec("domU2", 1, 1 << 28)];
        let (dom0, domus) = plan_cpus(&specs, 4, 0, None).unwrap();
        assert_eq!(dom0, [0, 1]);
        assert_eq!(domus, [alloc::vec![3], alloc::vec![2]]);
        // The boot CPU is never taken, wherever it is.
        let (dom0, domus) = plan_cpus(&specs, 4, 3, None).unwrap();
        assert_eq!(dom0, [0, 3]);
        assert_eq!(domus, [alloc::vec![2], alloc::vec![1]]);
        // dom0_max_vcpus trims Dom0 but keeps the boot CPU.
        let (dom0, _) = plan_cpus(&[spec("domU1", 1, 1 << 28)], 4, 2, Some(1)).unwrap();
        assert_eq!(dom0, [2]);
    }

    #[test]
    fn more_vcpus_than_free_cpus_is_an_error_naming_the_domain() {
        let specs = [spec("domU1", 2, 1 << 28), spec("domU2", 2, 1 << 28)];
        let e = plan_cpus(&specs, 4, 0, None).unwrap_err();
        assert_eq!(e, PlanError::TooManyVcpus { domain: "domU2".into(), wanted: 2, free: 1 });
        assert_eq!(e.domain(), "domU2");
        assert!(plan_cpus(&[spec("domU1", 1, 1 << 28)], 1, 0, None).is_err());
    }

    #[test]
    fn memory_is_placed_clear_of_busy_ranges_and_of_each_other() {
        let ram = [Region::new(0x4000_0000, 0x8000_0000)];
        let dom0 = Region::new(0x6000_0000, 0x2000_0000);
        let hv = Region::new(0x4020_0000, 0x20_0000);
        let specs = [spec("domU1", 1, 256 << 20), spec("domU2", 1, 128 << 20)];
        let plans = plan_memory(&specs, &ram, &[dom0, hv]).unwrap();
        let host: Vec<Region> = plans.iter().map(|m| m[0].host()).collect();
        assert_eq!(host[0], Region::new(0xB000_0000, 256 << 20));
        assert_eq!(host[1], Region::new(0xA800_0000, 128 << 20));
        for h in &host {
            assert!(!h.overlaps(&dom0) && !h.overlaps(&hv));
        }
        assert_eq!(plans[0], [Mapping { ipa: 0x4000_0000, pa: 0xB000_0000, size: 256 << 20 }]);
        // Dom0's stage 2 maps none of it.
        let p = stage2::dom0(&[dom0], &ram, &[], (0x801_0000, 0x804_0000, 0x2000));
        assert!(host.iter().all(|h| !p.maps(h.base) && !p.maps(h.end() - 1)));
    }

    #[test]
    fn static_mem_is_used_exactly_and_checked() {
        let ram = [Region::new(0x4000_0000, 0x8000_0000)];
        let dom0 = Region::new(0x6000_0000, 0x2000_0000);
        let mut s = spec("domU1", 1, 256 << 20);
        s.static_mem =
            alloc::vec![Region::new(0x9000_0000, 128 << 20), Region::new(0xA000_0000, 128 << 20)];
        let plans = plan_memory(core::slice::from_ref(&s), &ram, &[dom0]).unwrap();
        assert_eq!(
            plans[0],
            [
                Mapping { ipa: 0x4000_0000, pa: 0x9000_0000, size: 128 << 20 },
                Mapping { ipa: 0x4800_0000, pa: 0xA000_0000, size: 128 << 20 },
            ]
        );
        s.static_mem = alloc::vec![Region::new(0x7000_0000, 256 << 20)];
        let e = plan_memory(core::slice::from_ref(&s), &ram, &[dom0]).unwrap_err();
        assert!(matches!(e, PlanError::StaticMemBusy { .. }), "{e:?}");
        s.static_mem = alloc::vec![Region::new(0x1_0000_0000, 256 << 20)];
        let e = plan_memory(core::slice::from_ref(&s), &ram, &[dom0]).unwrap_err();
        assert!(matches!(e, PlanError::StaticMemNotRam { .. }), "{e:?}");
        // A second domain is placed around the first one's static range.
        s.static_mem = alloc::vec![Region::new(0xB000_0000, 256 << 20)];
        let specs = [s, spec("domU2", 1, 256 << 20)];
        let plans = plan_memory(&specs, &ram, &[dom0]).unwrap();
        assert_eq!(plans[1][0].host(), Region::new(0xA000_0000, 256 << 20));
    }

    #[test]
    fn memory_that_does_not_fit_is_an_error() {
        let ram = [Region::new(0x4000_0000, 0x4000_0000)];
        let e = plan_memory(&[spec("big", 1, 2 << 30)], &ram, &[]).unwrap_err();
        assert_eq!(e, PlanError::NoRoomForMemory { domain: "big".into(), size: 2 << 30 });
    }

    #[test]
    fn guest_ram_past_3_gib_goes_to_the_high_bank() {
        let m = into_guest_banks(&[Region::new(0x1_0000_0000, 4 << 30)]).unwrap();
        assert_eq!(
            m,
            [
                Mapping { ipa: 0x4000_0000, pa: 0x1_0000_0000, size: 3 << 30 },
                Mapping { ipa: 0x2_0000_0000, pa: 0x1_C000_0000, size: 1 << 30 },
            ]
        );
    }

    #[test]
    fn cpu_roles_name_each_pcpus_domain_and_vcpu() {
        let r = cpu_roles(&[0, 1], &[alloc::vec![3], alloc::vec![2]]);
        assert_eq!(r[..5], [Some((0, 0)), Some((0, 1)), Some((2, 0)), Some((1, 0)), None]);
        let r = cpu_roles(&[0], &[alloc::vec![2, 1]]);
        assert_eq!(r[1], Some((1, 1)));
        assert_eq!(r[3], None, "a CPU nobody uses");
    }

    #[test]
    fn host_ranges_follow_the_banks() {
        let ram = [
            Mapping { ipa: 0x4000_0000, pa: 0x9000_0000, size: 0x1000 },
            Mapping { ipa: 0x4000_1000, pa: 0xA000_0000, size: 0x1000 },
        ];
        let s2 = DomuStage2::new(&ram, 0x0804_0000, true);
        assert_eq!(
            s2.host_ranges(0x4000_0800, 0x1000),
            Some(alloc::vec![Region::new(0x9000_0800, 0x800), Region::new(0xA000_0000, 0x800)])
        );
        assert_eq!(s2.host_ranges(0x4000_0000, 0x1000), Some(alloc::vec![ram[0].host()]));
        assert_eq!(s2.host_ranges(0x4000_1800, 0x1000), None, "runs past its RAM");
        assert_eq!(s2.host_ranges(0x4000_0000, 0), Some(Vec::new()));
    }

    #[test]
    fn scrub_plan_and_the_loaded_files_cover_all_ram_once() {
        // Two banks (static memory in two pieces); the kernel straddles them.
        let ram = [
            Mapping { ipa: 0x4000_0000, pa: 0x9000_0000, size: 0x10_0000 },
            Mapping { ipa: 0x4010_0000, pa: 0xA000_0000, size: 0x10_0000 },
        ];
        let s2 = DomuStage2::new(&ram, 0x0804_0000, true);
        let kernel = Region::new(0x4008_0000, 0x10_0007);
        let dtb = Region::new(0x4019_0000, 0x4B1);
        let outside = Region::new(0x401F_F000, 0x2000); // runs past its RAM: not loaded
        let zero = s2.scrub_plan(&[kernel, dtb, outside]);
        assert_eq!(
            zero,
            [
                Region::new(0x9000_0000, 0x8_0000),
                Region::new(0xA008_0007, 0x1_0000 - 7),
                Region::new(0xA009_04B1, 0x7_0000 - 0x4B1),
            ]
        );
        // Every byte of RAM is either zeroed or written, never both.
        let mut pieces: Vec<Region> = zero.clone();
        for w in [kernel, dtb] {
            pieces.extend(s2.host_ranges(w.base, w.size).unwrap());
        }
        crate::region::sort(&mut pieces);
        let total: u64 = pieces.iter().map(|r| r.size).sum();
        assert_eq!(total, 0x20_0000);
        for pair in pieces.windows(2) {
            assert!(!pair[0].overlaps(&pair[1]), "{pair:x?}");
        }
        // Nothing loaded: all of it.
        assert_eq!(s2.scrub_plan(&[]), [ram[0].host(), ram[1].host()]);
        // The load plan: the kernel in two pieces, the DTB in one, the file past RAM not at all;
        // the same scrub.
        let (copies, scrub) = s2.load_plan(&[
            (Region::new(0x7000_0000, kernel.size), kernel.base),
            (Region::new(0x7100_0000, dtb.size), dtb.base),
            (Region::new(0x7200_0000, outside.size), outside.base),
        ]);
        assert_eq!(
            copies,
            [
                (0x7000_0000, Region::new(0x9008_0000, 0x8_0000)),
                (0x7008_0000, Region::new(0xA000_0000, 0x8_0007)),
                (0x7100_0000, Region::new(0xA009_0000, 0x4B1)),
            ]
        );
        assert_eq!(scrub, zero);
    }

    #[test]
    fn domu_stage2_is_default_deny() {
        let ram = [Mapping { ipa: 0x4000_0000, pa: 0xB000_0000, size: 256 << 20 }];
        let s2 = DomuStage2::new(&ram, 0x0804_0000, true);
        assert_eq!(s2.classify(0x4000_0000), DomuAccess::Ram);
        assert_eq!(s2.classify(0x4FFF_FFFF), DomuAccess::Ram);
        assert_eq!(s2.classify(0x5000_0000), DomuAccess::Denied, "past its RAM");
        assert_eq!(s2.classify(0xB000_0000), DomuAccess::Denied, "a host address");
        assert_eq!(s2.classify(0x0300_1004), DomuAccess::Gicd);
        assert_eq!(s2.classify(0x0300_2000), DomuAccess::GicCpu);
        assert_eq!(s2.classify(0x2200_0018), DomuAccess::Vpl011);
        assert_eq!(s2.classify(0x0800_0000), DomuAccess::Denied, "the host GICD");
        assert_eq!(s2.classify(0x0900_0000), DomuAccess::Denied, "the host UART");
        assert_eq!(s2.host_of(0x4000_1000), Some(0xB000_1000));
        assert_eq!(s2.host_of(0x5000_0000), None);
        let no_uart = DomuStage2::new(&ram, 0x0804_0000, false);
        assert_eq!(no_uart.classify(0x2200_0000), DomuAccess::Denied);
        let maps: Vec<Mapping> = s2.mappings().collect();
        assert_eq!(maps.len(), 2);
        assert_eq!(maps[1], Mapping { ipa: 0x0300_2000, pa: 0x0804_0000, size: 0x2000 });
    }
}
