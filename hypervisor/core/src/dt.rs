//! Small helpers over the `fdt` crate: paths, cell sizes, `reg` decoding and bus-address translation
//! through `ranges` (the Pi's peripherals sit behind `/soc` ranges; the crate does not translate).

use alloc::string::String;
use alloc::vec::Vec;
use fdt::node::FdtNode;
use fdt::Fdt;

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
    match path.rfind('/') {
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
    bytes
        .chunks_exact(step)
        .filter_map(|c| Some((read_cells(c, ac)?, read_cells(&c[ac * 4..], sc)?)))
        .collect()
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
/// `/soc/serial@7e201000`). Written over `children()` because `fdt` 0.1.5's `find_node` misses nodes
/// in some trees (seen with QEMU's random `/chosen/rng-seed`; regression test in tests/host_dtb.rs).
pub fn node<'b, 'a: 'b>(fdt: &'b Fdt<'a>, path: &str) -> Option<FdtNode<'b, 'a>> {
    let mut cur = fdt.find_node("/")?;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        let with_addr = part.contains('@');
        cur = cur.children().find(|c| {
            if with_addr {
                c.name == part
            } else {
                c.name.split('@').next() == Some(part)
            }
        })?;
    }
    Some(cur)
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

const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobError {
    /// Not a flattened device tree (bad magic or sizes).
    BadHeader,
    /// The structure block has an unknown token or runs past its end.
    BadStructure,
}

/// A copy of `blob` without FDT_NOP tokens. libfdt leaves NOPs where it deletes nodes and properties
/// (QEMU raspi4b drops PCIe and GENET that way, `fdtput -d` too), and `fdt` 0.1.5 only accepts them
/// in a few places ("bad node" assertion), so every tree is normalised before it is read.
pub fn strip_nops(blob: &[u8]) -> Result<Vec<u8>, BlobError> {
    let be = |o: usize| -> Result<u32, BlobError> {
        let b = blob.get(o..o + 4).ok_or(BlobError::BadHeader)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    if be(0)? != 0xd00d_feed {
        return Err(BlobError::BadHeader);
    }
    let total = be(4)? as usize;
    let (off_struct, off_strings, off_rsv) = (be(8)? as usize, be(12)? as usize, be(16)? as usize);
    let (size_strings, size_struct) = (be(32)? as usize, be(36)? as usize);
    let strukt = blob.get(off_struct..off_struct + size_struct).ok_or(BlobError::BadHeader)?;
    let strings = blob.get(off_strings..off_strings + size_strings).ok_or(BlobError::BadHeader)?;
    // The reservation block runs to the next block (dtc and libfdt order: reservations, structure, strings).
    let rsv_end = if off_struct > off_rsv { off_struct } else { total.min(blob.len()) };
    let rsv = blob.get(off_rsv..rsv_end).ok_or(BlobError::BadHeader)?;

    let mut out_struct = Vec::with_capacity(size_struct);
    let mut i = 0;
    let word = |i: usize| -> Result<u32, BlobError> {
        let b = strukt.get(i..i + 4).ok_or(BlobError::BadStructure)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    loop {
        let tok = word(i)?;
        let start = i;
        i += 4;
        match tok {
            FDT_NOP => continue,
            FDT_BEGIN_NODE => {
                let name_len = strukt
                    .get(i..)
                    .ok_or(BlobError::BadStructure)?
                    .iter()
                    .position(|b| *b == 0)
                    .ok_or(BlobError::BadStructure)?;
                i += (name_len + 1 + 3) & !3;
            }
            FDT_END_NODE => {}
            FDT_PROP => {
                let len = word(i)? as usize;
                i += 8 + ((len + 3) & !3);
            }
            FDT_END => {
                out_struct.extend_from_slice(&strukt[start..i]);
                break;
            }
            _ => return Err(BlobError::BadStructure),
        }
        out_struct.extend_from_slice(strukt.get(start..i).ok_or(BlobError::BadStructure)?);
    }

    // Header (40 bytes), memory reservations, structure, strings.
    let rsv_off = 40usize;
    let struct_off = rsv_off + rsv.len();
    let strings_off = struct_off + out_struct.len();
    let total = strings_off + strings.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&blob[..40]);
    let mut put = |o: usize, v: usize| out[o..o + 4].copy_from_slice(&(v as u32).to_be_bytes());
    put(4, total);
    put(8, struct_off);
    put(12, strings_off);
    put(16, rsv_off);
    put(36, out_struct.len());
    out.extend_from_slice(rsv);
    out.extend_from_slice(&out_struct);
    out.extend_from_slice(strings);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nops_are_removed_and_the_tree_still_reads() {
        let mut w =
            vm_fdt::FdtWriter::new_with_mem_reserv(&[
                vm_fdt::FdtReserveEntry::new(0, 0x1000).unwrap()
            ])
            .unwrap();
        let r = w.begin_node("").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        for name in ["a@1", "b@2", "c@3"] {
            let n = w.begin_node(name).unwrap();
            w.property_string("compatible", name).unwrap();
            w.end_node(n).unwrap();
        }
        w.end_node(r).unwrap();
        let mut blob = w.finish().unwrap();
        // Turn node b@2 into NOPs, as libfdt's fdt_nop_node does.
        let off_struct = u32::from_be_bytes(blob[8..12].try_into().unwrap()) as usize;
        let pos = blob.windows(4).position(|w| w == b"b@2\0").unwrap() - 4;
        assert!(pos > off_struct);
        let end = pos + 4 + 4 + 12 + 4 + 4; // BEGIN, "b@2\0", PROP header, value, END_NODE
        for i in (pos..end).step_by(4) {
            blob[i..i + 4].copy_from_slice(&FDT_NOP.to_be_bytes());
        }
        let clean = strip_nops(&blob).unwrap();
        assert!(clean.len() <= blob.len() - (end - pos));
        let fdt = fdt::Fdt::new(&clean).unwrap();
        let names: Vec<_> = fdt.find_node("/").unwrap().children().map(|c| c.name).collect();
        assert_eq!(names, ["a@1", "c@3"]);
        assert_eq!(prop_str(&node(&fdt, "/c@3").unwrap(), "compatible"), Some("c@3"));
        let rsv: Vec<_> =
            fdt.memory_reservations().map(|r| (r.address() as u64, r.size())).collect();
        assert_eq!(rsv, [(0, 0x1000)]);
        assert_eq!(strip_nops(b"nope"), Err(BlobError::BadHeader));
    }
}
