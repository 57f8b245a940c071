//! Static DomUs as Xen's dom0less binding describes them (`docs/misc/arm/device-tree/booting.txt`,
//! "Creating Multiple Domains directly from Xen"), the nodes ImageBuilder writes into `/chosen`:
//!
//! ```text
//! chosen { #address-cells = <1>; #size-cells = <1>;
//!     domU1 { compatible = "xen,domain"; #address-cells = <2>; #size-cells = <2>;
//!             memory = <0 262144>;            // KiB, a 64-bit integer (two cells)
//!             cpus = <1>; vpl011;
//!             xen,static-mem = <0x50000000 0x10000000>;   // optional, /chosen's cells
//!             module@4a000000 { compatible = "multiboot,kernel", "multiboot,module";
//!                               reg = <0 0x4a000000 0 0xffffff>; bootargs = "..."; };
//!             module@4b000000 { compatible = "multiboot,ramdisk", "multiboot,module"; reg = ...; };
//!     };
//! };
//! ```
//! `xen,static-mem` comes in two generations: Xen 4.16 sized its cells with the domain node's
//! `#xen,static-mem-address-cells`/`#xen,static-mem-size-cells`; since 4.17 (commit 942ac5fc15) it
//! uses the parent's (`/chosen`) `#address-cells`/`#size-cells`. Both are read.

use crate::fdtr::{Fdt, FdtNode};
use alloc::string::String;
use alloc::vec::Vec;

use crate::dt::{self, is_compatible, prop_str};
use crate::Region;

/// One DomU, as its `/chosen/<name>` node describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSpec<'a> {
    /// The node name (`domU1`), used in messages.
    pub name: &'a str,
    /// Guest RAM in bytes (`memory` is in KiB).
    pub memory: u64,
    pub cpus: u32,
    /// `vpl011`: an emulated SBSA UART at `guest::PL011`.
    pub vpl011: bool,
    pub kernel: Region,
    /// The kernel module's `bootargs` (empty when absent).
    pub bootargs: &'a str,
    pub ramdisk: Option<Region>,
    /// `xen,static-mem`: exactly these host ranges back the guest RAM (their sizes add up to
    /// `memory`). Empty: the hypervisor picks the RAM.
    pub static_mem: Vec<Region>,
}

/// What is wrong with a domain node: the node path, the property (or module) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub node: String,
    pub property: &'static str,
    pub problem: &'static str,
}

impl SpecError {
    fn new(node: &str, property: &'static str, problem: &'static str) -> Self {
        SpecError { node: String::from(node), property, problem }
    }
}

/// Every `xen,domain` child of `/chosen`, in tree order.
pub fn parse<'a>(fdt: &Fdt<'a>) -> Result<Vec<DomainSpec<'a>>, SpecError> {
    let Some(chosen) = dt::node(fdt, "/chosen") else { return Ok(Vec::new()) };
    let parent_cells = dt::child_cells(&chosen);
    let mut out = Vec::new();
    for node in chosen.children().filter(|n| is_compatible(n, &["xen,domain"])) {
        out.push(parse_domain(&node, parent_cells)?);
    }
    Ok(out)
}

fn u32_prop(node: &FdtNode<'_, '_>, path: &str, name: &'static str) -> Result<u32, SpecError> {
    let p = node.property(name).ok_or_else(|| SpecError::new(path, name, "missing"))?;
    match p.value {
        [a, b, c, d] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => Err(SpecError::new(path, name, "must be one 32-bit cell")),
    }
}

/// Decodes a `reg`-style property into exactly-sized pairs.
fn ranges(
    value: &[u8],
    (ac, sc): (usize, usize),
    path: &str,
    name: &'static str,
) -> Result<Vec<Region>, SpecError> {
    let step = (ac + sc) * 4;
    if ac == 0
        || ac > 2
        || sc == 0
        || sc > 2
        || value.is_empty()
        || !value.len().is_multiple_of(step)
    {
        return Err(SpecError::new(path, name, "does not match #address-cells/#size-cells"));
    }
    let pairs = dt::decode_pairs(value, ac, sc);
    if pairs.iter().any(|&(_, size)| size == 0) {
        return Err(SpecError::new(path, name, "has an empty range"));
    }
    Ok(pairs.into_iter().map(|(b, s)| Region::new(b, s)).collect())
}

fn parse_domain<'a>(
    node: &FdtNode<'_, 'a>,
    parent_cells: (usize, usize),
) -> Result<DomainSpec<'a>, SpecError> {
    let mut path = String::from("/chosen/");
    path.push_str(node.name);
    let path = path.as_str();

    let memory_kib = match node.property("memory").map(|p| p.value) {
        None => return Err(SpecError::new(path, "memory", "missing")),
        // Xen reads it with dt_property_read_u64: two cells.
        Some(v) if v.len() == 8 => dt::read_cells(v, 2).unwrap_or(0),
        Some(_) => {
            return Err(SpecError::new(
                path,
                "memory",
                "must be a 64-bit integer (two cells), in KiB",
            ))
        }
    };
    let memory = memory_kib
        .checked_mul(1024)
        .filter(|m| *m != 0 && m.is_multiple_of(4096))
        .ok_or_else(|| SpecError::new(path, "memory", "must be a non-zero multiple of 4 KiB"))?;
    let cpus = u32_prop(node, path, "cpus")?;
    if cpus == 0 {
        return Err(SpecError::new(path, "cpus", "must be at least 1"));
    }
    if node.property("direct-map").is_some() {
        return Err(SpecError::new(
            path,
            "direct-map",
            "not supported (DomUs use Xen's guest layout)",
        ));
    }

    let static_mem = match node.property("xen,static-mem") {
        None => Vec::new(),
        Some(p) => {
            let old_ac = node.property("#xen,static-mem-address-cells");
            let old_sc = node.property("#xen,static-mem-size-cells");
            let cells = match (old_ac, old_sc) {
                (None, None) => parent_cells,
                (Some(_), Some(_)) => (
                    u32_prop(node, path, "#xen,static-mem-address-cells")? as usize,
                    u32_prop(node, path, "#xen,static-mem-size-cells")? as usize,
                ),
                _ => {
                    return Err(SpecError::new(
                        path,
                        "xen,static-mem",
                        "#xen,static-mem-address-cells and -size-cells must come together",
                    ))
                }
            };
            let r = ranges(p.value, cells, path, "xen,static-mem")?;
            if r.iter().any(|b| !b.base.is_multiple_of(4096) || !b.size.is_multiple_of(4096)) {
                return Err(SpecError::new(path, "xen,static-mem", "ranges must be 4 KiB aligned"));
            }
            if r.iter().map(|b| b.size).sum::<u64>() != memory {
                return Err(SpecError::new(
                    path,
                    "xen,static-mem",
                    "sizes do not add up to memory",
                ));
            }
            r
        }
    };

    if node.property("#address-cells").is_none() || node.property("#size-cells").is_none() {
        return Err(SpecError::new(path, "#address-cells", "both cell sizes are required"));
    }
    let module_cells = dt::child_cells(node);
    let mut kernel = None;
    let mut ramdisk = None;
    let mut bootargs = "";
    let mut untyped = 0;
    for m in node.children() {
        if is_compatible(&m, &["multiboot,device-tree"]) {
            return Err(SpecError::new(
                path,
                "multiboot,device-tree",
                "partial device trees (passthrough) are not supported",
            ));
        }
        let is_kernel = if is_compatible(&m, &["multiboot,kernel"]) {
            true
        } else if is_compatible(&m, &["multiboot,ramdisk"]) {
            false
        } else if is_compatible(&m, &["multiboot,module"]) {
            // Untyped modules, as Xen takes them: the first is the kernel, the second the ramdisk.
            untyped += 1;
            match untyped {
                1 => true,
                2 => false,
                _ => continue,
            }
        } else {
            continue;
        };
        let what = if is_kernel { "multiboot,kernel" } else { "multiboot,ramdisk" };
        let reg = m.property("reg").ok_or_else(|| SpecError::new(path, what, "has no reg"))?;
        let r = ranges(reg.value, module_cells, path, what)?;
        let [region] = r[..] else {
            return Err(SpecError::new(path, what, "reg must be one range"));
        };
        let slot = if is_kernel { &mut kernel } else { &mut ramdisk };
        if slot.replace(region).is_some() {
            return Err(SpecError::new(path, what, "given twice"));
        }
        if is_kernel {
            bootargs = prop_str(&m, "bootargs").unwrap_or("");
        }
    }
    let kernel = kernel.ok_or_else(|| SpecError::new(path, "multiboot,kernel", "missing"))?;
    Ok(DomainSpec {
        name: node.name,
        memory,
        cpus,
        vpl011: node.property("vpl011").is_some(),
        kernel,
        bootargs,
        ramdisk,
        static_mem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_fdt::FdtWriter;

    /// A `/chosen` as ImageBuilder writes it: Dom0 modules plus the given domain nodes.
    fn tree(chosen_cells: (u32, u32), domains: &dyn Fn(&mut FdtWriter)) -> Vec<u8> {
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        w.property_u32("#size-cells", 2).unwrap();
        let c = w.begin_node("chosen").unwrap();
        w.property_u32("#address-cells", chosen_cells.0).unwrap();
        w.property_u32("#size-cells", chosen_cells.1).unwrap();
        let k = w.begin_node("module@40400000").unwrap();
        w.property_string_list(
            "compatible",
            alloc::vec!["multiboot,kernel".into(), "multiboot,module".into()],
        )
        .unwrap();
        w.property_array_u32("reg", &[0x4040_0000, 0x100_0000]).unwrap();
        w.end_node(k).unwrap();
        domains(&mut w);
        w.end_node(c).unwrap();
        w.end_node(root).unwrap();
        w.finish().unwrap()
    }

    fn module(w: &mut FdtWriter, name: &str, kind: &str, reg: &[u32], bootargs: Option<&str>) {
        let m = w.begin_node(name).unwrap();
        w.property_string_list("compatible", alloc::vec![kind.into(), "multiboot,module".into()])
            .unwrap();
        w.property_array_u32("reg", reg).unwrap();
        if let Some(b) = bootargs {
            w.property_string("bootargs", b).unwrap();
        }
        w.end_node(m).unwrap();
    }

    /// A domain node with 2-cell addresses and sizes, its kernel and ramdisk.
    fn domain(w: &mut FdtWriter, name: &str, extra: &dyn Fn(&mut FdtWriter)) {
        domain_with(w, name, &[0, 262_144], 1, extra)
    }

    fn domain_with(
        w: &mut FdtWriter,
        name: &str,
        memory: &[u32],
        cpus: u32,
        extra: &dyn Fn(&mut FdtWriter),
    ) {
        let d = w.begin_node(name).unwrap();
        w.property_string("compatible", "xen,domain").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        w.property_u32("#size-cells", 2).unwrap();
        w.property_array_u32("memory", memory).unwrap();
        w.property_u32("cpus", cpus).unwrap();
        extra(w);
        module(
            w,
            "module@4a000000",
            "multiboot,kernel",
            &[0, 0x4a00_0000, 0, 0x80_0000],
            Some("console=ttyAMA0 rdinit=/init"),
        );
        module(w, "module@4b000000", "multiboot,ramdisk", &[0, 0x4b00_0000, 0, 0x40_0000], None);
        w.end_node(d).unwrap();
    }

    fn parse_blob(blob: &[u8]) -> Result<Vec<DomainSpec<'_>>, SpecError> {
        parse(&Fdt::new(blob).unwrap())
    }

    #[test]
    fn imagebuilder_domains_are_read() {
        let blob = tree((2, 2), &|w| {
            domain(w, "domU1", &|w| w.property_null("vpl011").unwrap());
            domain_with(w, "domU2", &[0, 131_072], 2, &|_| {});
        });
        let d = parse_blob(&blob).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].name, "domU1");
        assert_eq!(d[0].memory, 256 << 20);
        assert_eq!(d[0].cpus, 1);
        assert!(d[0].vpl011 && !d[1].vpl011);
        assert_eq!(d[0].kernel, Region::new(0x4a00_0000, 0x80_0000));
        assert_eq!(d[0].ramdisk, Some(Region::new(0x4b00_0000, 0x40_0000)));
        assert_eq!(d[0].bootargs, "console=ttyAMA0 rdinit=/init");
        assert!(d[0].static_mem.is_empty());
        assert_eq!((d[1].name, d[1].cpus, d[1].memory), ("domU2", 2, 128 << 20));
    }

    #[test]
    fn no_domains_is_an_empty_list() {
        let blob = tree((2, 2), &|_| {});
        assert_eq!(parse_blob(&blob).unwrap(), []);
    }

    #[test]
    fn static_mem_uses_chosen_cells_since_xen_4_17() {
        let blob = tree((1, 1), &|w| {
            domain(w, "domU1", &|w| {
                w.property_array_u32("xen,static-mem", &[0x5000_0000, 0x1000_0000]).unwrap()
            })
        });
        let d = parse_blob(&blob).unwrap();
        assert_eq!(d[0].static_mem, [Region::new(0x5000_0000, 0x1000_0000)]);
    }

    #[test]
    fn static_mem_uses_its_own_cells_in_xen_4_16() {
        let blob = tree((1, 1), &|w| {
            domain(w, "domU1", &|w| {
                w.property_u32("#xen,static-mem-address-cells", 2).unwrap();
                w.property_u32("#xen,static-mem-size-cells", 1).unwrap();
                w.property_array_u32("xen,static-mem", &[0x1, 0x0, 0x0800_0000, 0, 0, 0x0800_0000])
                    .unwrap();
            })
        });
        let d = parse_blob(&blob).unwrap();
        assert_eq!(
            d[0].static_mem,
            [Region::new(0x1_0000_0000, 0x0800_0000), Region::new(0, 0x0800_0000)]
        );
    }

    fn error_of(extra: &dyn Fn(&mut FdtWriter)) -> SpecError {
        let blob = tree((1, 1), &|w| domain(w, "domU1", extra));
        parse_blob(&blob).unwrap_err()
    }

    #[test]
    fn errors_name_the_node_and_property() {
        let blob = tree((1, 1), &|w| domain_with(w, "domU1", &[262_144], 1, &|_| {}));
        let e = parse_blob(&blob).unwrap_err();
        assert_eq!((e.node.as_str(), e.property), ("/chosen/domU1", "memory"));
        assert!(e.problem.contains("two cells"));
        let blob = tree((1, 1), &|w| domain_with(w, "domU1", &[0, 262_144], 0, &|_| {}));
        assert_eq!(parse_blob(&blob).unwrap_err().property, "cpus");
        let blob = tree((1, 1), &|w| domain_with(w, "domU1", &[0, 3], 1, &|_| {}));
        assert_eq!(parse_blob(&blob).unwrap_err().property, "memory");
        let e = error_of(&|w| w.property_array_u32("xen,static-mem", &[0x5000_0000]).unwrap());
        assert_eq!(e.property, "xen,static-mem");
        let e = error_of(&|w| {
            w.property_array_u32("xen,static-mem", &[0x5000_0000, 0x0800_0000]).unwrap()
        });
        assert_eq!((e.property, e.problem), ("xen,static-mem", "sizes do not add up to memory"));
        let e = error_of(&|w| {
            w.property_u32("#xen,static-mem-size-cells", 1).unwrap();
            w.property_array_u32("xen,static-mem", &[0x5000_0000, 0x1000_0000]).unwrap();
        });
        assert_eq!(e.property, "xen,static-mem");
        assert!(e.problem.contains("must come together"));
        let e = error_of(&|w| w.property_null("direct-map").unwrap());
        assert_eq!(e.property, "direct-map");
        let e = error_of(&|w| {
            module(w, "module@4c000000", "multiboot,kernel", &[0, 0x4c00_0000, 0, 0x1000], None)
        });
        assert_eq!((e.property, e.problem), ("multiboot,kernel", "given twice"));
        let e = error_of(&|w| {
            module(w, "module@4c000000", "multiboot,ramdisk", &[0x4c00_0000, 0x1000], None)
        });
        assert_eq!(e.property, "multiboot,ramdisk");
    }

    #[test]
    fn a_domain_without_kernel_or_cpus_is_an_error() {
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        let c = w.begin_node("chosen").unwrap();
        let d = w.begin_node("domU9").unwrap();
        w.property_string("compatible", "xen,domain").unwrap();
        w.property_u32("#address-cells", 1).unwrap();
        w.property_u32("#size-cells", 1).unwrap();
        w.property_array_u32("memory", &[0, 65_536]).unwrap();
        w.property_u32("cpus", 1).unwrap();
        w.end_node(d).unwrap();
        w.end_node(c).unwrap();
        w.end_node(root).unwrap();
        let blob = w.finish().unwrap();
        let e = parse_blob(&blob).unwrap_err();
        assert_eq!(
            (e.node.as_str(), e.property, e.problem),
            ("/chosen/domU9", "multiboot,kernel", "missing")
        );
    }
}
