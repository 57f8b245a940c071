//! Which physical CPUs exist and their index: the position of their MPIDR affinity among the device
//! tree's `/cpus/cpu@*` `reg` values, so that cores numbered in Aff1 (Cortex-A76/A55 clusters report
//! MPIDR 0x000, 0x100, 0x200, ...) get distinct indexes.

/// Most physical CPUs (and Dom0 vCPUs) the hypervisor runs.
pub const MAX_CPUS: usize = 8;
/// MPIDR_EL1 affinity fields Aff3 (39:32) and Aff2..Aff0 (23:0).
pub const MPIDR_AFFINITY: u64 = 0xFF_00FF_FFFF;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuMap {
    mpidr: [u64; MAX_CPUS],
    len: usize,
}

/// CPUs of the device tree left out of the map, for the boot log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ignored {
    pub count: usize,
    pub first_mpidr: Option<u64>,
}

impl CpuMap {
    /// The first `MAX_CPUS` distinct CPUs of the device tree, in its order.
    pub fn from_dt(mpidrs: &[u64]) -> (CpuMap, Ignored) {
        let mut map = CpuMap { mpidr: [0; MAX_CPUS], len: 0 };
        let mut ignored = Ignored { count: 0, first_mpidr: None };
        for &m in mpidrs {
            let m = m & MPIDR_AFFINITY;
            if map.index_of(m).is_some() {
                continue;
            }
            if map.len == MAX_CPUS {
                ignored.count += 1;
                ignored.first_mpidr.get_or_insert(m);
                continue;
            }
            map.mpidr[map.len] = m;
            map.len += 1;
        }
        (map, ignored)
    }

    /// The index of the CPU with this MPIDR (other bits than the affinity fields are ignored).
    pub fn index_of(&self, mpidr: u64) -> Option<usize> {
        let m = mpidr & MPIDR_AFFINITY;
        self.mpidr[..self.len].iter().position(|&x| x == m)
    }

    pub fn mpidr(&self, index: usize) -> Option<u64> {
        self.mpidr[..self.len].get(index).copied()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The MPIDRs of the first `n` CPUs (Dom0's vCPUs under `dom0_max_vcpus`).
    pub fn first(&self, n: usize) -> &[u64] {
        &self.mpidr[..n.min(self.len)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defect 8: CPUs numbered in Aff1 get distinct indexes; the index comes from the DT's order.
    #[test]
    fn defect8_index_from_dt_affinity_not_aff0() {
        let (map, ignored) = CpuMap::from_dt(&[0x000, 0x100, 0x200, 0x300]);
        assert_eq!(ignored.count, 0);
        let got: alloc::vec::Vec<_> = [0x8000_0000u64, 0x8000_0100, 0x8000_0200, 0x8000_0300]
            .iter()
            .map(|&m| map.index_of(m))
            .collect();
        assert_eq!(
            got,
            [Some(0), Some(1), Some(2), Some(3)],
            "MPIDR bit 31 (RES1) ignored, Aff1 counts"
        );
        assert_eq!(map.index_of(0x400), None);
    }

    /// Defect 8: more CPUs than MAX_CPUS are refused, not written past the end of the arrays.
    #[test]
    fn defect8_cpus_beyond_max_are_ignored() {
        let mpidrs: alloc::vec::Vec<u64> = (0..10).collect();
        let (map, ignored) = CpuMap::from_dt(&mpidrs);
        assert_eq!((map.len(), ignored), (MAX_CPUS, Ignored { count: 2, first_mpidr: Some(8) }));
        assert_eq!(map.index_of(9), None);
        assert_eq!(map.first(2), [0, 1]);
    }
}
