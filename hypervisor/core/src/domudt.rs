//! A DomU's device tree, node for node what Xen's `prepare_dtb_domU` writes (xen-project/xen
//! `common/device-tree/dom0less-build.c`, `arch/arm/domain_build.c`), so a guest sees the same tree
//! under either hypervisor: `/chosen` (bootargs, initrd), `/cpus` (PSCI), `/memory`, a GICv2 at
//! `GUEST_GICD_BASE`, the virtual timer, `/psci` (hvc) and, with `vpl011`, an `arm,sbsa-uart`.
//!
//! One difference: `/psci`'s legacy `cpu_off`/`cpu_on` hold PSCI 0.2 function IDs (Xen writes its
//! hypercall numbers 1 and 2); Linux reads them only for a `arm,psci` (0.1) tree, and these are the
//! IDs this hypervisor answers.

use alloc::vec::Vec;

use crate::dom0dt::unit_name;
use crate::fdtw::{FdtWriteError, FdtWriter};
use crate::guest;
use crate::Region;

pub struct DomuDtConfig<'a> {
    /// Guest RAM banks (guest physical).
    pub memory: &'a [Region],
    pub vcpus: u32,
    pub bootargs: &'a str,
    /// Where the initrd sits in guest memory.
    pub initrd: Option<Region>,
    pub vpl011: bool,
    /// The host's first CPU `compatible` (raw property bytes), copied as Xen does.
    pub cpu_compatible: &'a [u8],
    /// The host timer's `clock-frequency`, when its firmware needed one.
    pub timer_clock_frequency: Option<u32>,
}

const PSCI_COMPATIBLE: &[&str] = &["arm,psci-1.0", "arm,psci-0.2", "arm,psci"];
/// GIC `interrupts` flags: CPU mask 0xf, level-low (timer) or level-high (UART).
const PPI_LEVEL_LOW: u32 = 0xf08;
const SPI_LEVEL_HIGH: u32 = 0xf04;

fn reg(ranges: &[Region]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ranges.len() * 16);
    for r in ranges {
        out.extend_from_slice(&r.base.to_be_bytes());
        out.extend_from_slice(&r.size.to_be_bytes());
    }
    out
}

pub fn build(cfg: &DomuDtConfig<'_>) -> Result<Vec<u8>, FdtWriteError> {
    let mut w = FdtWriter::new(&[]);
    w.begin_node("");
    w.property_u32("#address-cells", 2);
    w.property_u32("#size-cells", 2);

    w.begin_node("chosen");
    if !cfg.bootargs.is_empty() {
        w.property_string("bootargs", cfg.bootargs);
    }
    if let Some(rd) = cfg.initrd {
        w.property_u64("linux,initrd-start", rd.base);
        w.property_u64("linux,initrd-end", rd.end());
    }
    w.end_node();

    w.begin_node("cpus");
    w.property_u32("#address-cells", 1);
    w.property_u32("#size-cells", 0);
    for n in 0..cfg.vcpus {
        let mpidr = guest::vcpu_mpidr(n);
        w.begin_node(&unit_name("cpu", mpidr));
        w.property("compatible", cfg.cpu_compatible);
        w.property_string("device_type", "cpu");
        w.property_u32("reg", mpidr as u32);
        w.property_string("enable-method", "psci");
        w.end_node();
    }
    w.end_node();

    if let Some(first) = cfg.memory.first() {
        w.begin_node(&unit_name("memory", first.base));
        w.property_string("device_type", "memory");
        w.property("reg", &reg(cfg.memory));
        w.end_node();
    }

    w.begin_node(&unit_name("interrupt-controller", guest::GICD.base));
    w.property_u32("#address-cells", 0);
    w.property_u32("#interrupt-cells", 3);
    w.property_flag("interrupt-controller");
    w.property_string("compatible", "arm,gic-400");
    w.property("reg", &reg(&[guest::GICD, guest::GICC]));
    w.property_u32("linux,phandle", guest::PHANDLE_GIC);
    w.property_u32("phandle", guest::PHANDLE_GIC);
    w.end_node();

    w.begin_node("timer");
    w.property_string("compatible", "arm,armv8-timer");
    let irqs = [
        1,
        guest::TIMER_PHYS_S_INTID - 16,
        PPI_LEVEL_LOW,
        1,
        guest::TIMER_PHYS_NS_INTID - 16,
        PPI_LEVEL_LOW,
        1,
        guest::TIMER_VIRT_INTID - 16,
        PPI_LEVEL_LOW,
    ];
    w.property_u32s("interrupts", &irqs);
    w.property_u32("interrupt-parent", guest::PHANDLE_GIC);
    if let Some(f) = cfg.timer_clock_frequency {
        w.property_u32("clock-frequency", f);
    }
    w.end_node();

    w.begin_node("psci");
    w.property_strings("compatible", PSCI_COMPATIBLE);
    w.property_string("method", "hvc");
    w.property_u32("cpu_off", crate::psci::CPU_OFF);
    w.property_u32("cpu_on", crate::psci::CPU_ON_64);
    w.end_node();

    if cfg.vpl011 {
        w.begin_node(&unit_name("sbsa-uart", guest::PL011.base));
        w.property_string("compatible", "arm,sbsa-uart");
        w.property("reg", &reg(&[guest::PL011]));
        w.property_u32s("interrupts", &[0, guest::VPL011_INTID - 32, SPI_LEVEL_HIGH]);
        w.property_u32("interrupt-parent", guest::PHANDLE_GIC);
        w.property_u32("current-speed", 115_200);
        w.end_node();
    }

    w.end_node();
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dt;

    fn config<'a>(memory: &'a [Region]) -> DomuDtConfig<'a> {
        DomuDtConfig {
            memory,
            vcpus: 2,
            bootargs: "console=ttyAMA0 rdinit=/sbin/init",
            initrd: Some(Region::new(0x4400_0000, 0x20_0000)),
            vpl011: true,
            cpu_compatible: b"arm,cortex-a72\0",
            timer_clock_frequency: None,
        }
    }

    fn dtc_source(blob: &[u8]) -> String {
        let dir = std::env::temp_dir().join(format!("domudt-{}-{:p}", std::process::id(), blob));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("domu.dtb");
        std::fs::write(&path, blob).unwrap();
        // -f would hide warnings; dtc's checks (unit names vs reg, interrupt cells, phandles) are
        // the point.
        let out = std::process::Command::new("dtc")
            .args(["-I", "dtb", "-O", "dts"])
            .arg(&path)
            .output()
            .expect("dtc (device-tree-compiler) must be installed");
        std::fs::remove_dir_all(&dir).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "dtc failed: {stderr}");
        assert!(!stderr.contains("Warning"), "dtc warnings: {stderr}");
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn tree_passes_dtc_and_has_xens_nodes() {
        let mem = [Region::new(0x4000_0000, 0x1000_0000)];
        let blob = build(&config(&mem)).unwrap();
        let dts = dtc_source(&blob);
        for want in [
            "memory@40000000 {",
            "reg = <0x00 0x40000000 0x00 0x10000000>;",
            "interrupt-controller@3001000 {",
            "reg = <0x00 0x3001000 0x00 0x1000 0x00 0x3002000 0x00 0x2000>;",
            "compatible = \"arm,gic-400\";",
            "phandle = <0xfde8>;",
            "interrupts = <0x01 0x0d 0xf08 0x01 0x0e 0xf08 0x01 0x0b 0xf08>;",
            "sbsa-uart@22000000 {",
            "compatible = \"arm,sbsa-uart\";",
            "interrupts = <0x00 0x00 0xf04>;",
            "method = \"hvc\";",
            "bootargs = \"console=ttyAMA0 rdinit=/sbin/init\";",
            "cpu@1 {",
        ] {
            assert!(dts.contains(want), "missing {want:?} in\n{dts}");
        }
        let fdt = crate::fdtr::Fdt::new(&blob).unwrap();
        let chosen = dt::node(&fdt, "/chosen").unwrap();
        assert_eq!(
            dt::read_cells(chosen.property("linux,initrd-end").unwrap().value, 2),
            Some(0x4420_0000)
        );
        let cpus: Vec<_> = dt::node(&fdt, "/cpus").unwrap().children().map(|c| c.name).collect();
        assert_eq!(cpus, ["cpu@0", "cpu@1"]);
        assert_eq!(fdt.memory_reservations().count(), 0);
    }

    #[test]
    fn without_vpl011_or_initrd_those_nodes_are_absent() {
        let mem = [Region::new(0x4000_0000, 0xC000_0000), Region::new(0x2_0000_0000, 0x4000_0000)];
        let mut cfg = config(&mem);
        cfg.vpl011 = false;
        cfg.initrd = None;
        cfg.timer_clock_frequency = Some(62_500_000);
        let blob = build(&cfg).unwrap();
        let dts = dtc_source(&blob);
        assert!(!dts.contains("sbsa-uart") && !dts.contains("linux,initrd"), "{dts}");
        assert!(dts.contains("clock-frequency = <0x3b9aca0>;"), "{dts}");
        let fdt = crate::fdtr::Fdt::new(&blob).unwrap();
        let banks: Vec<_> = fdt
            .memory()
            .regions()
            .map(|r| (r.starting_address as u64, r.size.unwrap() as u64))
            .collect();
        assert_eq!(banks, [(0x4000_0000, 0xC000_0000), (0x2_0000_0000, 0x4000_0000)]);
    }
}
