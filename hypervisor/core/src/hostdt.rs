//! What the hypervisor learns from the host device tree: RAM, the GIC, the CPUs and how to start them,
//! its console UART, and the boot modules described with Xen's `/chosen` bindings
//! (xen/docs/misc/arm/device-tree/booting.txt).

use crate::fdtr::Fdt;
use alloc::string::String;
use alloc::vec::Vec;

use crate::dt::{self, child_cells, decode_pairs, is_compatible, prop_str, reg_phys};
use crate::Region;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UartKind {
    Pl011,
    /// The BCM2835 auxiliary mini-UART (16550-like, 32-bit registers, `reg-shift = 2`).
    MiniUart,
}

impl UartKind {
    /// The name the console line gives it.
    pub fn name(self) -> &'static str {
        match self {
            UartKind::Pl011 => "Pl011",
            UartKind::MiniUart => "MiniUart",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uart {
    pub path: String,
    pub kind: UartKind,
    pub base: u64,
    /// Its SPI as an INTID (GIC `interrupts = <0 spi flags>`).
    pub intid: Option<u32>,
}

fn spi_intid(fdt: &Fdt<'_>, path: &str) -> Option<u32> {
    let cells: Vec<u32> = dt::u32s(dt::node(fdt, path)?.property("interrupts")?.value).collect();
    match cells.as_slice() {
        [0, spi, _, ..] => Some(spi + 32),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gic {
    pub dist: Region,
    pub cpu: Region,
    pub hyp: Region,
    pub vcpu: Region,
    /// The maintenance interrupt's INTID (a PPI).
    pub maint_intid: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnableMethod {
    Psci,
    SpinTable { release_addr: u64 },
    Unknown,
}

impl EnableMethod {
    /// The DT's `enable-method` value it came from.
    pub fn name(&self) -> &'static str {
        match self {
            EnableMethod::Psci => "psci",
            EnableMethod::SpinTable { .. } => "spin-table",
            EnableMethod::Unknown => "unknown enable-method",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cpu {
    pub mpidr: u64,
    pub method: EnableMethod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleKind {
    Kernel,
    Ramdisk,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module<'a> {
    pub kind: ModuleKind,
    pub region: Region,
    pub bootargs: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo<'a> {
    pub ram: Vec<Region>,
    pub memreserve: Vec<Region>,
    /// `/reserved-memory` children with `no-map` (never usable as Dom0 RAM).
    pub nomap: Vec<Region>,
    pub gic: Gic,
    pub cpus: Vec<Cpu>,
    pub psci_method: Option<&'a str>,
    /// The hypervisor's command line: `xen,xen-bootargs`.
    pub hv_bootargs: &'a str,
    /// Dom0's command line, Xen's order: the kernel module's `bootargs`, `xen,dom0-bootargs`, then
    /// plain `bootargs` when no Xen property is present.
    pub dom0_bootargs: &'a str,
    pub kernel: Option<Module<'a>>,
    pub ramdisk: Option<Module<'a>>,
    pub stdout_path: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostDtError {
    /// The blob is not a valid flattened device tree.
    BadBlob,
    /// No `memory` node with a non-empty `reg`.
    NoMemory,
    /// No GICv2 node (`arm,cortex-a15-gic` / `arm,gic-400`) with four `reg` ranges.
    NoGicV2,
    /// No `/cpus/cpu@*` nodes.
    NoCpus,
    /// A `/chosen` module node has an unreadable `reg`.
    BadModule,
}

impl HostDtError {
    pub fn message(self) -> &'static str {
        match self {
            HostDtError::BadBlob => "not a valid flattened device tree",
            HostDtError::NoMemory => "no memory node with a non-empty reg",
            HostDtError::NoGicV2 => "no GICv2 node with four reg ranges",
            HostDtError::NoCpus => "no /cpus/cpu@* nodes",
            HostDtError::BadModule => "a /chosen module node has an unreadable reg",
        }
    }
}

pub const GIC_COMPATIBLE: &[&str] =
    &["arm,cortex-a15-gic", "arm,gic-400", "arm,cortex-a7-gic", "arm,arm11mp-gic"];

pub fn parse<'a>(fdt: &Fdt<'a>) -> Result<HostInfo<'a>, HostDtError> {
    let mut ram = Vec::new();
    let mut gic_path = None;
    let mut cpu_paths = Vec::new();
    let mut nomap = Vec::new();
    dt::walk(fdt, |path, node| {
        if prop_str(node, "device_type") == Some("memory") && dt::parent_path(path) == "/" {
            for r in reg_phys(fdt, path).unwrap_or_default() {
                if r.size != 0 {
                    ram.push(r);
                }
            }
        } else if is_compatible(node, GIC_COMPATIBLE) && gic_path.is_none() {
            gic_path = Some(String::from(path));
        } else if dt::parent_path(path) == "/cpus" && prop_str(node, "device_type") == Some("cpu") {
            cpu_paths.push(String::from(path));
        } else if dt::parent_path(path) == "/reserved-memory" && node.property("no-map").is_some() {
            nomap.extend(reg_phys(fdt, path).unwrap_or_default());
        }
    });
    if ram.is_empty() {
        return Err(HostDtError::NoMemory);
    }
    crate::region::sort(&mut ram);
    let gic = gic_path.ok_or(HostDtError::NoGicV2)?;
    let regs = reg_phys(fdt, &gic).ok_or(HostDtError::NoGicV2)?;
    if regs.len() < 4 {
        return Err(HostDtError::NoGicV2);
    }
    let maint = match dt::node(fdt, &gic).and_then(|n| n.property("interrupts")) {
        Some(p) => {
            let mut c = dt::u32s(p.value);
            match (c.next(), c.next()) {
                (Some(1), Some(n)) => n + 16,
                (Some(_), Some(n)) => n + 32,
                _ => 25,
            }
        }
        None => 25,
    };
    let gic = Gic { dist: regs[0], cpu: regs[1], hyp: regs[2], vcpu: regs[3], maint_intid: maint };

    let cpus_node = dt::node(fdt, "/cpus").ok_or(HostDtError::NoCpus)?;
    let (cac, _) = child_cells(&cpus_node);
    let mut cpus = Vec::new();
    for path in &cpu_paths {
        let Some(node) = dt::node(fdt, path) else { continue };
        let Some(mpidr) = node.property("reg").and_then(|p| dt::read_cells(p.value, cac)) else {
            continue;
        };
        let method = match prop_str(&node, "enable-method") {
            Some("psci") => EnableMethod::Psci,
            Some("spin-table") => match node
                .property("cpu-release-addr")
                .map(|p| dt::read_cells(p.value, p.value.len() / 4))
            {
                Some(Some(a)) => EnableMethod::SpinTable { release_addr: a },
                _ => EnableMethod::Unknown,
            },
            _ => EnableMethod::Unknown,
        };
        cpus.push(Cpu { mpidr, method });
    }
    if cpus.is_empty() {
        return Err(HostDtError::NoCpus);
    }
    let psci_method = fdt
        .find_compatible(&["arm,psci-1.0", "arm,psci-0.2", "arm,psci"])
        .and_then(|n| prop_str(&n, "method"));

    let chosen = dt::node(fdt, "/chosen");
    let (mut kernel, mut ramdisk) = (None, None);
    let (mut hv_bootargs, mut xen_dom0, mut plain) = ("", None, None);
    let mut stdout_path = None;
    if let Some(chosen) = chosen {
        let (ac, sc) = child_cells(&chosen);
        hv_bootargs = prop_str(&chosen, "xen,xen-bootargs").unwrap_or("");
        xen_dom0 = prop_str(&chosen, "xen,dom0-bootargs");
        plain = prop_str(&chosen, "bootargs");
        stdout_path = prop_str(&chosen, "stdout-path");
        let mut generic = 0;
        for child in chosen.children() {
            let kind = if is_compatible(&child, &["multiboot,kernel", "xen,linux-zimage"]) {
                ModuleKind::Kernel
            } else if is_compatible(&child, &["multiboot,ramdisk", "xen,linux-initrd"]) {
                ModuleKind::Ramdisk
            } else if is_compatible(&child, &["multiboot,module", "xen,multiboot-module"]) {
                // Untyped modules: the first is the kernel, the second the ramdisk.
                generic += 1;
                match generic {
                    1 => ModuleKind::Kernel,
                    2 => ModuleKind::Ramdisk,
                    _ => continue,
                }
            } else {
                continue;
            };
            let reg = child.property("reg").ok_or(HostDtError::BadModule)?;
            let &(base, size) =
                decode_pairs(reg.value, ac, sc).first().ok_or(HostDtError::BadModule)?;
            let m = Module {
                kind,
                region: Region::new(base, size),
                bootargs: prop_str(&child, "bootargs"),
            };
            match kind {
                ModuleKind::Kernel if kernel.is_none() => kernel = Some(m),
                ModuleKind::Ramdisk if ramdisk.is_none() => ramdisk = Some(m),
                _ => {}
            }
        }
    }
    let xen_props = !hv_bootargs.is_empty() || xen_dom0.is_some();
    let dom0_bootargs = kernel
        .as_ref()
        .and_then(|k: &Module<'a>| k.bootargs)
        .or(xen_dom0)
        .or(if xen_props { None } else { plain })
        .unwrap_or("");
    let memreserve = fdt
        .memory_reservations()
        .map(|r| Region::new(r.address() as u64, r.size() as u64))
        .collect();
    Ok(HostInfo {
        ram,
        memreserve,
        nomap,
        gic,
        cpus,
        psci_method,
        hv_bootargs,
        dom0_bootargs,
        kernel,
        ramdisk,
        stdout_path,
    })
}

/// Finds the console UART named by `dtuart=` (an alias or a path), or by `/chosen/stdout-path`.
pub fn find_uart(fdt: &Fdt<'_>, name: &str) -> Option<Uart> {
    let name = name.split(':').next()?;
    let path = dt::resolve_alias(fdt, name)?;
    let node = dt::node(fdt, path)?;
    let kind = if is_compatible(&node, &["arm,pl011"]) {
        UartKind::Pl011
    } else if is_compatible(&node, &["brcm,bcm2835-aux-uart"]) {
        UartKind::MiniUart
    } else {
        return None;
    };
    let base = reg_phys(fdt, path)?.first()?.base;
    Some(Uart { path: String::from(path), kind, base, intid: spi_intid(fdt, path) })
}

/// The first enabled PL011 in the tree (the Dom0 console on boards whose HV console is elsewhere).
pub fn first_pl011(fdt: &Fdt<'_>) -> Option<Uart> {
    let mut found = None;
    dt::walk(fdt, |path, node| {
        if found.is_none()
            && is_compatible(node, &["arm,pl011"])
            && prop_str(node, "status").is_none_or(|s| s == "okay" || s == "ok")
        {
            found = Some(String::from(path));
        }
    });
    let path = found?;
    let base = reg_phys(fdt, &path)?.first()?.base;
    let intid = spi_intid(fdt, &path);
    Some(Uart { path, kind: UartKind::Pl011, base, intid })
}
