//! Small helpers over the device-tree reader (`crate::fdtr`): paths, cell sizes, `reg` decoding and
//! bus-address translation through `ranges` (the Pi's peripherals sit behind `/soc` ranges; the
//! reader does not translate).

use alloc::string::String;
use alloc::vec::Vec;

use crate::fdtr::{Fdt, FdtNode};
use crate::Region;

/// Reads big-endian cells as one number (1 or 2 cells).
pub fn read_cells(bytes: &[u8], cells: usize) -> Option<u64> {
    if cells == 0 {
        return Some(0);
    }
    let b = bytes.get(..cells * 4)?;
    let mut v: u64 = 0;
    for c in b.chunks_exact(4) {
        v = (v << 32) | u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    Some(v)
}

/// Big-endian u32 cells of a property.
pub fn u32s(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
}

/// The NUL-separated strings of a property.
pub fn strings(bytes: &[u8]) -> impl Iterator<Item = &str> {
    bytes.split(|b| *b == 0).filter(|s| !s.is_empty()).filter_map(|s| core::str::from_utf8(s).ok())
}

/// A string property without its terminating NUL.
pub fn prop_str<'a>(node: &FdtNode<'_, 'a>, name: &str) -> Option<&'a str> {
    let v = node.property(name)?.value;
    core::str::from_utf8(v.strip_suffix(&[0]).unwrap_or(v)).ok()
}

pub fn is_compatible(node: &FdtNode<'_, '_>, any_of: &[&str]) -> bool {
    node.property("compatible").is_some_and(|p| strings(p.value).any(|c| any_of.contains(&c)))
}

/// `#address-cells` and `#size-cells` a node gives its children (defaults 2 and 1, as in the spec).
pub fn child_cells(node: &FdtNode<'_, '_>) -> (usize, usize) {
    let get = |n: &str, d: usize| {
        node.property(n).and_then(|p| read_cells(p.value, 1)).map_or(d, |v| v as usize)
    };
    (get("#address-cells", 2), get("#size-cells", 1))
}

pub fn parent_path(path: &str) -> &str {
    // A byte search: `rfind('/')` links char searching and `memrchr` (~450 bytes of the EL2 binary).
    match path.bytes().rposition(|b| b == b'/') {
        Some(0) | None => "/",
        // `get`: see cmdline::parse_size.
        Some(i) => path.get(..i).unwrap_or("/"),
    }
}

/// Decodes `reg`-style pairs with the given cell sizes.
pub fn decode_pairs(bytes: &[u8], ac: usize, sc: usize) -> Vec<(u64, u64)> {
    let step = (ac + sc) * 4;
    if step == 0 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(bytes.len() / step);
    for c in bytes.chunks_exact(step) {
        if let (Some(a), Some(s)) =
            (read_cells(c, ac), c.get(ac * 4..).and_then(|c| read_cells(c, sc)))
        {
            out.push((a, s));
        }
    }
    out
}

/// The `reg` entries of the node at `path`, translated to CPU physical addresses through every
/// ancestor's `ranges`. `None` when the node does not exist or an ancestor has no `ranges` (not
/// memory-mapped).
pub fn reg_phys(fdt: &Fdt<'_>, path: &str) -> Option<Vec<Region>> {
    let this = node(fdt, path)?;
    let parent = node(fdt, parent_path(path))?;
    let (ac, sc) = child_cells(&parent);
    let mut out = Vec::new();
    for (addr, size) in decode_pairs(this.property("reg")?.value, ac, sc) {
        out.push(Region::new(translate(fdt, parent_path(path), addr)?, size));
    }
    Some(out)
}

/// Translates an address on the bus of node `bus` (a path) up to the root.
pub fn translate(fdt: &Fdt<'_>, bus: &str, mut addr: u64) -> Option<u64> {
    let mut cur = String::from(bus);
    while cur != "/" {
        let this = node(fdt, &cur)?;
        let ranges = this.property("ranges")?.value;
        let (cac, csc) = child_cells(&this);
        let up = String::from(parent_path(&cur));
        let (pac, _) = child_cells(&node(fdt, &up)?);
        if !ranges.is_empty() {
            let step = (cac + pac + csc) * 4;
            let mut found = None;
            for c in ranges.chunks_exact(step) {
                let child = read_cells(c, cac)?;
                let parent = read_cells(&c[cac * 4..], pac)?;
                let len = read_cells(&c[(cac + pac) * 4..], csc)?;
                if addr >= child && addr - child < len {
                    found = Some(parent + (addr - child));
                    break;
                }
            }
            addr = found?;
        }
        cur = up;
    }
    Some(addr)
}

/// The node at an absolute `path`. Unit addresses may be left out (`/soc/serial` matches
/// `/soc/serial@7e201000`). (`fdt` 0.1.5's `find_node` missed nodes in some trees, seen with QEMU's
/// random `/chosen/rng-seed`; `fdtr`'s does not: regression test in tests/it/host_dtb.rs.)
pub fn node<'b, 'a: 'b>(fdt: &'b Fdt<'a>, path: &str) -> Option<FdtNode<'b, 'a>> {
    path.starts_with('/').then(|| fdt.find_node(path))?
}

/// Calls `f(path, node)` for every node, parents before children.
pub fn walk<'b, 'a: 'b>(fdt: &'b Fdt<'a>, mut f: impl FnMut(&str, &FdtNode<'b, 'a>)) {
    fn rec<'b, 'a: 'b>(
        node: FdtNode<'b, 'a>,
        path: &mut String,
        f: &mut dyn FnMut(&str, &FdtNode<'b, 'a>),
    ) {
        f(path, &node);
        for child in node.children() {
            let len = path.len();
            if !path.ends_with('/') {
                path.push('/');
            }
            path.push_str(child.name);
            rec(child, path, f);
            path.truncate(len);
        }
    }
    if let Some(root) = fdt.find_node("/") {
        rec(root, &mut String::from("/"), &mut f);
    }
}

/// Resolves an alias (`serial1`) or returns a path unchanged.
pub fn resolve_alias<'a>(fdt: &Fdt<'a>, name: &'a str) -> Option<&'a str> {
    if name.starts_with('/') {
        return Some(name);
    }
    let aliases = node(fdt, "/aliases")?;
    prop_str(&aliases, name)
}
