//! Physical address ranges.

/// A half-open physical (or, for a direct-mapped Dom0, intermediate-physical) range `[base, base+size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Region {
    pub base: u64,
    pub size: u64,
}

impl Region {
    pub const fn new(base: u64, size: u64) -> Region {
        Region { base, size }
    }
    pub const fn end(&self) -> u64 {
        self.base + self.size
    }
    pub fn overlaps(&self, o: &Region) -> bool {
        self.size != 0 && o.size != 0 && self.base < o.end() && o.base < self.end()
    }
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.base && addr < self.end()
    }
}

pub const fn align_up(x: u64, a: u64) -> u64 {
    (x + a - 1) & !(a - 1)
}

pub const fn align_down(x: u64, a: u64) -> u64 {
    x & !(a - 1)
}

/// Sorts regions by base (then size). An insertion sort: the lists are a handful of banks, and
/// `slice::sort*` costs the EL2 binary ~8 KiB of code per element type.
pub fn sort(v: &mut [Region]) {
    for i in 1..v.len() {
        let mut j = i;
        while j > 0 && v[j - 1] > v[j] {
            v.swap(j - 1, j);
            j -= 1;
        }
    }
}

/// The parts of `[start, end)` not covered by any of `used` (which need not be sorted or disjoint).
pub fn gaps(used: &[Region], start: u64, end: u64) -> alloc::vec::Vec<Region> {
    let mut sorted: alloc::vec::Vec<Region> =
        used.iter().copied().filter(|r| r.size != 0).collect();
    sort(&mut sorted);
    let mut out = alloc::vec::Vec::new();
    let mut cur = start;
    for r in sorted {
        if r.end() <= cur {
            continue;
        }
        if r.base >= end {
            break;
        }
        if r.base > cur {
            out.push(Region::new(cur, r.base - cur));
        }
        cur = cur.max(r.end());
    }
    if cur < end {
        out.push(Region::new(cur, end - cur));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_skip_used_ranges_in_any_order() {
        let used =
            [Region::new(0x3000, 0x1000), Region::new(0x1000, 0x800), Region::new(0x1400, 0x1000)];
        assert_eq!(
            gaps(&used, 0, 0x5000),
            [Region::new(0, 0x1000), Region::new(0x2400, 0xc00), Region::new(0x4000, 0x1000)]
        );
        assert_eq!(gaps(&[Region::new(0, 0x10000)], 0x1000, 0x2000), []);
    }

    #[test]
    fn sort_orders_by_base_then_size() {
        let mut v = [
            Region::new(0x3000, 1),
            Region::new(0x1000, 2),
            Region::new(0x1000, 1),
            Region::new(0, 5),
        ];
        sort(&mut v);
        let want = [(0, 5), (0x1000, 1), (0x1000, 2), (0x3000, 1)];
        assert_eq!(v.map(|r| (r.base, r.size)), want);
    }

    #[test]
    fn overlap_is_half_open() {
        assert!(!Region::new(0, 0x1000).overlaps(&Region::new(0x1000, 0x1000)));
        assert!(Region::new(0, 0x1001).overlaps(&Region::new(0x1000, 0x1000)));
    }
}
