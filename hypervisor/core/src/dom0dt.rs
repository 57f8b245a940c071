//! Builds Dom0's device tree from the host's (Xen's `prepare_dtb_hwdom`, minus everything that would
//! tell Linux it runs on Xen):
//! - `/memory`: only Dom0's banks (IPA = PA);
//! - `/chosen`: Dom0's `bootargs` and `linux,initrd-start/end`; `xen,*` properties, module nodes and
//!   other domains' nodes (`xen,domain`, as Xen's `handle_node` skips them) gone;
//!   `stdout-path` points at Dom0's console;
//! - GIC: `reg` = GICD + GICC only (GICV is mapped at GICC's address), no maintenance interrupt;
//! - timer: the hypervisor timer PPI dropped; PMU dropped (its PPI is not forwarded);
//! - `/cpus`: `enable-method = "psci"` everywhere, `cpu-release-addr` gone; a new `/psci` with
//!   `method = "hvc"` replaces the host's;
//! - nodes the hypervisor keeps for itself get `status = "disabled"`;
//! - Dom0's console UART loses its child nodes (serdev devices such as the Pi's `bluetooth`);
//! - overlay metadata nodes (`__symbols__`) are dropped;
//! - the hypervisor's virtual SP805 watchdog (`crate::sp805`) is added at the root with a
//!   `fixed-clock` at the counter frequency, the binding Linux's `sp805_wdt` and AMBA bus read.
//!
//! No `/hypervisor` node is written: Dom0 must not take the Xen PV paths.

use crate::fdtr::{Fdt, FdtNode};
use alloc::string::String;
use alloc::vec::Vec;

use crate::dt::{self, child_cells, is_compatible, prop_str};
use crate::fdtw::FdtWriter;
use crate::hostdt::GIC_COMPATIBLE;
use crate::Region;

pub struct Dom0DtConfig<'a> {
    pub memory: &'a [Region],
    pub bootargs: &'a str,
    pub initrd: Option<Region>,
    /// Paths of nodes Dom0 must not drive (the hypervisor's UART, devices sharing its page or IRQ,
    /// the power-management block the hypervisor resets with).
    pub disable: &'a [&'a str],
    /// `stdout-path` for Dom0, or `None` to drop the host's.
    pub stdout_path: Option<&'a str>,
    /// The MPIDRs of Dom0's vCPUs (`dom0_max_vcpus`): other `/cpus/cpu@*` nodes are left out, and so
    /// is `cpu-map`, whose phandles would name them. `None` keeps every CPU.
    pub cpus: Option<&'a [u64]>,
    /// The virtual SP805 watchdog Dom0 gets, if any.
    pub watchdog: Option<WatchdogNode>,
}

/// Where Dom0's virtual SP805 sits and the frequency its clock runs at (CNTFRQ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchdogNode {
    pub base: u64,
    pub clock_hz: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dom0DtError {
    /// The host blob is not a valid device tree.
    BadHostBlob,
    /// The writer rejected the tree (a bug: the message names the step).
    Writer(&'static str),
}

/// `name@<hex>` without `core::fmt` (its machinery is a large part of the EL2 binary).
pub fn unit_name(name: &str, addr: u64) -> String {
    let mut s = String::from(name);
    s.push('@');
    let digits = (64 - (addr | 1).leading_zeros()).div_ceil(4);
    for i in (0..digits).rev() {
        s.push(char::from(b"0123456789abcdef"[(addr >> (i * 4)) as usize & 0xf]));
    }
    s
}

const PMU_COMPATIBLE: &[&str] =
    &["arm,armv8-pmuv3", "arm,cortex-a72-pmu", "arm,cortex-a53-pmu", "arm,cortex-a15-pmu"];
const PSCI_COMPATIBLE: &[&str] = &["arm,psci-1.0", "arm,psci-0.2", "arm,psci"];
/// `/chosen` nodes that describe other domains (Xen's `handle_node` skips them for Dom0 too).
const DOMAIN_COMPATIBLE: &[&str] = &["xen,domain", "xen,domain-shared-memory-v1", "xen,evtchn-v1"];
const MODULE_COMPATIBLE: &[&str] =
    &["multiboot,module", "xen,multiboot-module", "xen,linux-zimage", "xen,linux-initrd"];

pub fn build(host: &[u8], cfg: &Dom0DtConfig<'_>) -> Result<Vec<u8>, Dom0DtError> {
    let fdt = Fdt::new(host).map_err(|_| Dom0DtError::BadHostBlob)?;
    let rsv: Vec<(u64, u64)> =
        fdt.memory_reservations().map(|r| (r.address() as u64, r.size() as u64)).collect();
    let mut w = FdtWriter::new(&rsv);
    let root = fdt.find_node("/").ok_or(Dom0DtError::BadHostBlob)?;
    let mut path = String::from("/");
    copy_node(&mut w, root, &mut path, cfg, (2, 1), &mut 0)?;
    w.finish().map_err(|_| Dom0DtError::Writer("finish"))
}

/// Whether a `/cpus` child stays: not a CPU, or a CPU Dom0 gets.
fn keeps_cpu(node: &FdtNode<'_, '_>, cfg: &Dom0DtConfig<'_>, address_cells: usize) -> bool {
    let Some(keep) = cfg.cpus else { return true };
    if prop_str(node, "device_type") != Some("cpu") {
        return true;
    }
    node.property("reg")
        .and_then(|p| dt::read_cells(p.value, address_cells))
        .is_some_and(|m| keep.contains(&(m & crate::cpus::MPIDR_AFFINITY)))
}

fn encode_cells(out: &mut Vec<u8>, v: u64, cells: usize) {
    if cells == 2 {
        out.extend_from_slice(&v.to_be_bytes());
    } else if cells == 1 {
        out.extend_from_slice(&(v as u32).to_be_bytes());
    }
}

fn copy_node(
    w: &mut FdtWriter,
    node: FdtNode<'_, '_>,
    path: &mut String,
    cfg: &Dom0DtConfig<'_>,
    parent_cells: (usize, usize),
    max_phandle: &mut u32,
) -> Result<(), Dom0DtError> {
    let is_root = path == "/";
    let name = if is_root { "" } else { node.name };
    w.begin_node(name);
    let parent = dt::parent_path(path);
    let is_chosen = path == "/chosen";
    let is_cpu = parent == "/cpus" && prop_str(&node, "device_type") == Some("cpu");
    let is_gic = is_compatible(&node, GIC_COMPATIBLE);
    let is_timer = is_compatible(&node, &["arm,armv8-timer", "arm,armv7-timer"]);
    let disabled = cfg.disable.contains(&path.as_str());
    let my_cells = child_cells(&node);

    for p in node.properties() {
        let (n, v) = (p.name, p.value);
        if n == "phandle" || n == "linux,phandle" {
            *max_phandle = (*max_phandle).max(dt::read_cells(v, 1).unwrap_or(0) as u32);
        }
        if is_chosen
            && (n.starts_with("xen,")
                || n.starts_with("linux,initrd-")
                || n.starts_with("linux,uefi-")
                || n == "bootargs"
                || n == "stdout-path")
        {
            continue;
        }
        if is_cpu && (n == "enable-method" || n == "cpu-release-addr") {
            continue;
        }
        if disabled && n == "status" {
            continue;
        }
        if is_gic && n == "reg" {
            // GICD and GICC only: the guest never sees GICH/GICV.
            let step = (parent_cells.0 + parent_cells.1) * 4;
            w.property(n, &v[..(2 * step).min(v.len())]);
            continue;
        }
        if is_gic && n == "interrupts" {
            continue;
        }
        if is_timer && n == "interrupts" {
            // S-phys, NS-phys, virt; the fourth (hypervisor) PPI belongs to EL2.
            w.property(n, &v[..v.len().min(9 * 4)]);
            continue;
        }
        w.property(n, v);
    }
    if is_chosen {
        w.property_string("bootargs", cfg.bootargs);
        if let Some(rd) = cfg.initrd {
            w.property_u64("linux,initrd-start", rd.base);
            w.property_u64("linux,initrd-end", rd.end());
        }
        if let Some(s) = cfg.stdout_path {
            w.property_string("stdout-path", s);
        }
    }
    if is_cpu {
        w.property_string("enable-method", "psci");
    }
    if disabled {
        w.property_string("status", "disabled");
    }

    for child in node.children() {
        let child_is_memory = is_root && prop_str(&child, "device_type") == Some("memory");
        let skip = child_is_memory
            || (is_root && (is_compatible(&child, PSCI_COMPATIBLE) || child.name == "hypervisor"))
            || (is_chosen && is_compatible(&child, MODULE_COMPATIBLE))
            || (is_chosen && is_compatible(&child, DOMAIN_COMPATIBLE))
            || is_compatible(&child, PMU_COMPATIBLE)
            || (path == "/cpus" && !keeps_cpu(&child, cfg, my_cells.0))
            // serdev devices on Dom0's console UART (the Pi's `bluetooth`): Linux would hand the port
            // to their driver instead of keeping it a console.
            || cfg.stdout_path == Some(path.as_str())
            || (path == "/cpus" && child.name == "cpu-map" && cfg.cpus.is_some())
            // Overlay metadata (`__symbols__`, `__overrides__`): Dom0 applies no overlays, and the
            // paths in them name nodes Dom0 may not get.
            || child.name.starts_with("__");
        if skip {
            continue;
        }
        let len = path.len();
        if !path.ends_with('/') {
            path.push('/');
        }
        path.push_str(child.name);
        copy_node(w, child, path, cfg, my_cells, max_phandle)?;
        path.truncate(len);
    }

    if is_root {
        for bank in cfg.memory {
            w.begin_node(&unit_name("memory", bank.base));
            w.property_string("device_type", "memory");
            let mut reg = Vec::new();
            encode_cells(&mut reg, bank.base, my_cells.0);
            encode_cells(&mut reg, bank.size, my_cells.1);
            w.property("reg", &reg);
            w.end_node();
        }
        w.begin_node("psci");
        w.property_strings("compatible", PSCI_COMPATIBLE);
        w.property_string("method", "hvc");
        w.property_u32("cpu_off", crate::psci::CPU_OFF);
        w.property_u32("cpu_on", crate::psci::CPU_ON_64);
        w.end_node();
        if let Some(wd) = cfg.watchdog {
            // Every node is copied by now: one past the highest phandle is nobody's.
            write_watchdog(w, wd, my_cells, *max_phandle + 1);
        }
    }
    w.end_node();
    Ok(())
}

/// The SP805 node (`arm,sp805.yaml`: `reg`, `clocks`, `clock-names`; no interrupt, which Linux's
/// driver does not use) and the fixed clock both its clocks name.
fn write_watchdog(w: &mut FdtWriter, wd: WatchdogNode, cells: (usize, usize), phandle: u32) {
    w.begin_node("watchdog-clock");
    w.property_string("compatible", "fixed-clock");
    w.property_u32("#clock-cells", 0);
    w.property_u32("clock-frequency", wd.clock_hz);
    w.property_string("clock-output-names", "watchdog-clock");
    w.property_u32("phandle", phandle);
    w.end_node();
    w.begin_node(&unit_name("watchdog", wd.base));
    w.property_strings("compatible", &crate::sp805::COMPATIBLE);
    let mut reg = Vec::new();
    encode_cells(&mut reg, wd.base, cells.0);
    encode_cells(&mut reg, crate::sp805::SIZE, cells.1);
    w.property("reg", &reg);
    w.property_u32s("clocks", &[phandle, phandle]);
    w.property_strings("clock-names", &crate::sp805::CLOCK_NAMES);
    w.end_node();
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_fdt::{FdtReserveEntry, FdtWriter};

    /// A small host tree in the shape of QEMU virt's, with Xen-style /chosen modules.
    fn host_tree() -> Vec<u8> {
        let mut w =
            FdtWriter::new_with_mem_reserv(&[FdtReserveEntry::new(0x1000, 0x1000).unwrap()])
                .unwrap();
        let r = w.begin_node("").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        w.property_u32("#size-cells", 2).unwrap();
        let m = w.begin_node("memory@40000000").unwrap();
        w.property_string("device_type", "memory").unwrap();
        w.property_array_u64("reg", &[0x4000_0000, 0x8000_0000]).unwrap();
        w.end_node(m).unwrap();
        let c = w.begin_node("chosen").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        w.property_u32("#size-cells", 2).unwrap();
        w.property_string("xen,xen-bootargs", "console=dtuart dtuart=serial0 dom0_mem=512M")
            .unwrap();
        w.property_string("xen,dom0-bootargs", "console=ttyAMA0").unwrap();
        w.property_string("stdout-path", "/pl011@9000000").unwrap();
        w.property_string("u-boot,version", "2025.01").unwrap();
        let k = w.begin_node("module@40800000").unwrap();
        w.property_string_list(
            "compatible",
            alloc::vec!["multiboot,kernel".into(), "multiboot,module".into()],
        )
        .unwrap();
        w.property_array_u64("reg", &[0x4080_0000, 0x240_0000]).unwrap();
        w.end_node(k).unwrap();
        let d = w.begin_node("module@44000000").unwrap();
        w.property_string_list(
            "compatible",
            alloc::vec!["multiboot,ramdisk".into(), "multiboot,module".into()],
        )
        .unwrap();
        w.property_array_u64("reg", &[0x4400_0000, 0x10_0000]).unwrap();
        w.end_node(d).unwrap();
        let domu = w.begin_node("domU1").unwrap();
        w.property_string("compatible", "xen,domain").unwrap();
        w.property_array_u32("memory", &[0, 65536]).unwrap();
        let dk = w.begin_node("module@4a000000").unwrap();
        w.property_string_list(
            "compatible",
            alloc::vec!["multiboot,kernel".into(), "multiboot,module".into()],
        )
        .unwrap();
        w.property_array_u64("reg", &[0x4a00_0000, 0x10_0000]).unwrap();
        w.end_node(dk).unwrap();
        w.end_node(domu).unwrap();
        w.end_node(c).unwrap();
        let cpus = w.begin_node("cpus").unwrap();
        w.property_u32("#address-cells", 1).unwrap();
        w.property_u32("#size-cells", 0).unwrap();
        for i in 0..2u32 {
            let n = w.begin_node(&alloc::format!("cpu@{i}")).unwrap();
            w.property_string("device_type", "cpu").unwrap();
            w.property_u32("reg", i).unwrap();
            w.property_string("enable-method", "spin-table").unwrap();
            w.property_u64("cpu-release-addr", 0xd8 + 8 * u64::from(i)).unwrap();
            w.end_node(n).unwrap();
        }
        w.end_node(cpus).unwrap();
        let p = w.begin_node("psci").unwrap();
        w.property_string("compatible", "arm,psci-1.0").unwrap();
        w.property_string("method", "smc").unwrap();
        w.end_node(p).unwrap();
        let g = w.begin_node("intc@8000000").unwrap();
        w.property_string("compatible", "arm,cortex-a15-gic").unwrap();
        w.property_array_u64(
            "reg",
            &[
                0x800_0000, 0x1_0000, 0x801_0000, 0x1_0000, 0x803_0000, 0x1_0000, 0x804_0000,
                0x1_0000,
            ],
        )
        .unwrap();
        w.property_array_u32("interrupts", &[1, 9, 4]).unwrap();
        w.property_phandle(0x8002).unwrap();
        w.end_node(g).unwrap();
        let t = w.begin_node("timer").unwrap();
        w.property_string("compatible", "arm,armv8-timer").unwrap();
        w.property_array_u32(
            "interrupts",
            &[1, 13, 0xf04, 1, 14, 0xf04, 1, 11, 0xf04, 1, 10, 0xf04],
        )
        .unwrap();
        w.end_node(t).unwrap();
        let pmu = w.begin_node("pmu").unwrap();
        w.property_string("compatible", "arm,armv8-pmuv3").unwrap();
        w.end_node(pmu).unwrap();
        let u = w.begin_node("pl011@9000000").unwrap();
        w.property_string("compatible", "arm,pl011").unwrap();
        w.property_array_u64("reg", &[0x900_0000, 0x1000]).unwrap();
        w.end_node(u).unwrap();
        let a = w.begin_node("aliases").unwrap();
        w.property_string("serial0", "/pl011@9000000").unwrap();
        w.end_node(a).unwrap();
        w.end_node(r).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn host_info_reads_xen_bindings() {
        let blob = host_tree();
        let fdt = Fdt::new(&blob).unwrap();
        let info = crate::hostdt::parse(&fdt).unwrap();
        assert_eq!(info.ram, [Region::new(0x4000_0000, 0x8000_0000)]);
        assert_eq!(info.hv_bootargs, "console=dtuart dtuart=serial0 dom0_mem=512M");
        assert_eq!(info.dom0_bootargs, "console=ttyAMA0");
        assert_eq!(info.kernel.as_ref().unwrap().region, Region::new(0x4080_0000, 0x240_0000));
        assert_eq!(info.ramdisk.as_ref().unwrap().region, Region::new(0x4400_0000, 0x10_0000));
        assert_eq!(info.gic.vcpu, Region::new(0x804_0000, 0x1_0000));
        assert_eq!(info.gic.maint_intid, 25);
        assert_eq!(
            info.cpus[1].method,
            crate::hostdt::EnableMethod::SpinTable { release_addr: 0xe0 }
        );
        assert_eq!(info.psci_method, Some("smc"));
        let uart = crate::hostdt::find_uart(&fdt, "serial0").unwrap();
        assert_eq!((uart.base, uart.kind), (0x900_0000, crate::hostdt::UartKind::Pl011));
    }

    #[test]
    fn dom0_tree_hides_the_hypervisor() {
        let blob = host_tree();
        let mem = [Region::new(0x6000_0000, 0x2000_0000)];
        let cfg = Dom0DtConfig {
            memory: &mem,
            bootargs: "console=ttyAMA0 rdinit=/init",
            initrd: Some(Region::new(0x6300_0000, 0x1000)),
            disable: &["/pmu", "/timer"],
            stdout_path: Some("/pl011@9000000"),
            cpus: None,
            watchdog: None,
        };
        let out = build(&blob, &cfg).unwrap();
        let fdt = Fdt::new(&out).unwrap();
        let memory: Vec<_> = fdt
            .memory()
            .regions()
            .map(|r| (r.starting_address as u64, r.size.unwrap() as u64))
            .collect();
        assert_eq!(memory, [(0x6000_0000, 0x2000_0000)]);
        let chosen = dt::node(&fdt, "/chosen").unwrap();
        assert_eq!(prop_str(&chosen, "bootargs"), Some("console=ttyAMA0 rdinit=/init"));
        assert!(
            chosen.property("xen,xen-bootargs").is_none()
                && chosen.property("xen,dom0-bootargs").is_none()
        );
        assert_eq!(chosen.children().count(), 0, "module and DomU nodes removed");
        assert_eq!(
            dt::read_cells(chosen.property("linux,initrd-end").unwrap().value, 2),
            Some(0x6300_1000)
        );
        assert_eq!(prop_str(&chosen, "u-boot,version"), Some("2025.01"));
        let gic = dt::node(&fdt, "/intc@8000000").unwrap();
        assert_eq!(gic.property("reg").unwrap().value.len(), 32, "GICD + GICC only");
        assert!(gic.property("interrupts").is_none());
        assert!(gic.property("phandle").is_some());
        let timer = dt::node(&fdt, "/timer").unwrap();
        assert_eq!(
            dt::u32s(timer.property("interrupts").unwrap().value).collect::<Vec<_>>(),
            [1, 13, 0xf04, 1, 14, 0xf04, 1, 11, 0xf04]
        );
        assert_eq!(prop_str(&timer, "status"), Some("disabled"));
        assert!(dt::node(&fdt, "/pmu").is_none());
        for cpu in dt::node(&fdt, "/cpus").unwrap().children() {
            assert_eq!(prop_str(&cpu, "enable-method"), Some("psci"));
            assert!(cpu.property("cpu-release-addr").is_none());
        }
        let psci = fdt.find_compatible(&["arm,psci-1.0"]).unwrap();
        assert_eq!(prop_str(&psci, "method"), Some("hvc"));
        assert_eq!(fdt.memory_reservations().count(), 1);
        assert!(dt::node(&fdt, "/hypervisor").is_none());
    }

    #[test]
    fn unit_names_are_lower_hex() {
        assert_eq!(unit_name("memory", 0x4000_0000), "memory@40000000");
        assert_eq!(unit_name("memory", 0), "memory@0");
        assert_eq!(unit_name("x", u64::MAX), "x@ffffffffffffffff");
    }

    /// Defect 8: `dom0_max_vcpus` trims Dom0's `/cpus` (and drops `cpu-map`, which would name the
    /// CPUs left out).
    #[test]
    fn defect8_dom0_max_vcpus_trims_cpus() {
        let blob = host_tree();
        let mem = [Region::new(0x6000_0000, 0x2000_0000)];
        let keep = [0u64];
        let cfg = Dom0DtConfig {
            memory: &mem,
            bootargs: "",
            initrd: None,
            disable: &[],
            stdout_path: None,
            cpus: Some(&keep),
            watchdog: None,
        };
        let out = build(&blob, &cfg).unwrap();
        let fdt = Fdt::new(&out).unwrap();
        let names: Vec<&str> =
            dt::node(&fdt, "/cpus").unwrap().children().map(|c| c.name).collect();
        assert_eq!(names, ["cpu@0"]);
    }

    /// The watchdog's nodes as Linux's AMBA bus and `sp805_wdt` read them, checked by `dtc` (which
    /// rejects a `clocks` phandle no node has, and warns about unit names that do not match `reg`).
    #[test]
    fn the_watchdog_node_and_its_clock_pass_dtc() {
        let blob = host_tree();
        let mem = [Region::new(0x6000_0000, 0x2000_0000)];
        let cfg = Dom0DtConfig {
            memory: &mem,
            bootargs: "",
            initrd: None,
            disable: &[],
            stdout_path: None,
            cpus: None,
            watchdog: Some(WatchdogNode { base: 0x0B00_0000, clock_hz: 62_500_000 }),
        };
        let out = build(&blob, &cfg).unwrap();
        let dir = std::env::temp_dir().join(format!("rpixen-dom0dt-wdog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dom0.dtb");
        std::fs::write(&path, &out).unwrap();
        let dtc = std::process::Command::new("dtc")
            .args(["-I", "dtb", "-O", "dts"])
            .arg(&path)
            .output()
            .expect("dtc (device-tree-compiler) must be installed");
        let (dts, stderr) =
            (String::from_utf8(dtc.stdout).unwrap(), String::from_utf8_lossy(&dtc.stderr));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(dtc.status.success(), "dtc failed: {stderr}");
        assert!(!stderr.contains("watchdog"), "dtc warnings about the watchdog: {stderr}");

        let fdt = Fdt::new(&out).unwrap();
        let wd = dt::node(&fdt, "/watchdog@b000000").unwrap();
        let strs = |n: &FdtNode<'_, '_>, p: &str| -> Vec<String> {
            dt::strings(n.property(p).unwrap().value).map(String::from).collect()
        };
        assert_eq!(strs(&wd, "compatible"), ["arm,sp805", "arm,primecell"]);
        assert_eq!(strs(&wd, "clock-names"), ["wdog_clk", "apb_pclk"]);
        assert_eq!(
            dt::reg_phys(&fdt, "/watchdog@b000000").unwrap(),
            [Region::new(0xB00_0000, 0x1000)]
        );
        let clocks: Vec<u32> = dt::u32s(wd.property("clocks").unwrap().value).collect();
        let clk = dt::node(&fdt, "/watchdog-clock").unwrap();
        let phandle = clk.property("phandle").unwrap().as_usize().unwrap() as u32;
        assert_eq!(clocks, [phandle, phandle]);
        assert_eq!(prop_str(&clk, "compatible"), Some("fixed-clock"));
        assert_eq!(clk.property("clock-frequency").unwrap().as_usize(), Some(62_500_000));
        let gic = dt::node(&fdt, "/intc@8000000").unwrap();
        assert_ne!(gic.property("phandle").unwrap().as_usize(), Some(phandle as usize), "{dts}");
    }
}
