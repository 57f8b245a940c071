//! The host-DT reader and the Dom0 DT builder on the real device trees: QEMU virt's (dumped by QEMU)
//! and Debian's Raspberry Pi 4 DTB. `dtc` and `fdtget` check the results independently.

use std::process::Command;

use rpixen_hv_core::dom0dt::{self, Dom0DtConfig};
use rpixen_hv_core::fdtr::Fdt;
use rpixen_hv_core::hostdt::{self, EnableMethod, UartKind};
use rpixen_hv_core::Region;

fn fdtget(dtb: &std::path::Path, args: &[&str]) -> String {
    testkit::run(Command::new("fdtget").arg(dtb).args(args)).trim().to_owned()
}

#[test]
fn pi4_tree_translates_soc_addresses_and_lists_spin_table_cpus() {
    let dir = tempfile::tempdir().unwrap();
    let dtb = host_copy(&crate::common::pi_dtb(), dir.path());
    let blob = std::fs::read(dtb).unwrap();
    let fdt = Fdt::new(&blob).unwrap();
    let info = hostdt::parse(&fdt).unwrap();
    assert_eq!(info.gic.dist, Region::new(0xFF84_1000, 0x1000));
    assert_eq!(info.gic.cpu, Region::new(0xFF84_2000, 0x2000));
    assert_eq!(info.gic.vcpu, Region::new(0xFF84_6000, 0x2000));
    assert_eq!(info.gic.maint_intid, 25);
    let release: Vec<_> = info.cpus.iter().map(|c| c.method).collect();
    assert_eq!(
        release,
        [0xd8, 0xe0, 0xe8, 0xf0].map(|a| EnableMethod::SpinTable { release_addr: a }),
    );
    assert_eq!(info.psci_method, None);
    let mini = hostdt::find_uart(&fdt, "serial1").unwrap();
    assert_eq!((mini.kind, mini.base), (UartKind::MiniUart, 0xFE21_5040));
    let pl011 = hostdt::first_pl011(&fdt).unwrap();
    assert_eq!((pl011.path.as_str(), pl011.base), ("/soc/serial@7e201000", 0xFE20_1000));
}

#[test]
fn virt_tree_with_any_rng_seed_is_read() {
    // fdt 0.1.5's find_node failed on some of QEMU's random /chosen/rng-seed values; this one.
    let dir = tempfile::tempdir().unwrap();
    let dtb = crate::common::virt_dtb(dir.path(), 4);
    let seed = [
        "0x55be5acb",
        "0xdbcd337a",
        "0xe6655ec9",
        "0x44bda257",
        "0x184e6d10",
        "0x6babf989",
        "0x7619472d",
        "0xc1af42d6",
    ];
    let mut args = vec!["-t", "x", "/chosen", "rng-seed"];
    args.extend(seed);
    testkit::run(Command::new("fdtput").arg(&dtb).args(&args));
    let blob = std::fs::read(&dtb).unwrap();
    let fdt = Fdt::new(&blob).unwrap();
    let info = hostdt::parse(&fdt).unwrap();
    assert_eq!(info.gic.dist.base, 0x0800_0000);
    assert_eq!(info.ram, [Region::new(0x4000_0000, 0x8000_0000)]);
    assert_eq!(info.cpus.len(), 4);
    assert!(info.cpus.iter().all(|c| c.method == EnableMethod::Psci));
    assert_eq!(hostdt::find_uart(&fdt, "serial0").unwrap().base, 0x0900_0000);
}

#[test]
fn dom0_tree_for_the_pi_passes_dtc_and_hides_the_hypervisor() {
    let dir = tempfile::tempdir().unwrap();
    let host = crate::common::pi_dtb();
    crate::common::add_chosen(
        &host_copy(&host, dir.path()),
        "console=dtuart dtuart=serial1 dom0_mem=512M",
        "console=ttyAMA0",
        (0x100_0000, 0x10_0000),
        (0x400_0000, 0x1000),
    );
    let blob = std::fs::read(dir.path().join("host.dtb")).unwrap();
    let mem = [Region::new(0x1C00_0000, 0x2000_0000)];
    let disable =
        ["/soc/serial@7e215040", "/soc/aux@7e215000", "/soc/spi@7e215080", "/soc/spi@7e2150c0"];
    let cfg = Dom0DtConfig {
        memory: &mem,
        bootargs: "console=ttyAMA0 rdinit=/init",
        initrd: Some(Region::new(0x1E80_0000, 0x1000)),
        disable: &disable,
        stdout_path: Some("/soc/serial@7e201000"),
        cpus: None,
        watchdog: None,
    };
    let out = dom0dt::build(&blob, &cfg).unwrap();
    let path = dir.path().join("dom0.dtb");
    std::fs::write(&path, &out).unwrap();
    // dtc must accept it (it rejects malformed blobs).
    let dts = testkit::run(Command::new("dtc").args(["-I", "dtb", "-O", "dts", "-q"]).arg(&path));
    assert!(!dts.contains("xen,"), "{dts}");
    assert!(!dts.contains("multiboot"), "{dts}");
    assert!(!dts.contains("spin-table") && !dts.contains("cpu-release-addr"), "{dts}");
    assert_eq!(fdtget(&path, &["/chosen", "bootargs"]), "console=ttyAMA0 rdinit=/init");
    assert_eq!(fdtget(&path, &["/chosen", "stdout-path"]), "/soc/serial@7e201000");
    assert_eq!(fdtget(&path, &["-t", "x", "/memory@1c000000", "reg"]), "0 1c000000 20000000");
    for d in disable {
        assert_eq!(fdtget(&path, &[d, "status"]), "disabled", "{d}");
    }
    assert_eq!(fdtget(&path, &["/psci", "method"]), "hvc");
    assert_eq!(fdtget(&path, &["/cpus/cpu@2", "enable-method"]), "psci");
    assert_eq!(
        fdtget(&path, &["-t", "x", "/soc/interrupt-controller@40041000", "reg"]),
        "40041000 1000 40042000 2000"
    );
    // No other memory node survives (the host's memory@0), nor overlay metadata.
    assert!(!dts.contains("memory@0 "), "{dts}");
    assert!(!dts.contains("__symbols__"), "{dts}");
    // The timer loses its hypervisor PPI (10).
    assert_eq!(fdtget(&path, &["-t", "x", "/timer", "interrupts"]), "1 d f08 1 e f08 1 b f08");
}

/// A copy of a Pi DTB with the memory the firmware (or QEMU raspi4b) fills in: 960 MiB at 0.
fn host_copy(src: &std::path::Path, dir: &std::path::Path) -> std::path::PathBuf {
    let dst = dir.join("host.dtb");
    std::fs::copy(src, &dst).unwrap();
    testkit::run(Command::new("fdtput").arg(&dst).args([
        "-t",
        "x",
        "/memory@0",
        "reg",
        "0",
        "0",
        "3c000000",
    ]));
    dst
}

/// Defect 10 on the real Pi tree: Dom0's console UART has no serdev child, the PM node (V3D power
/// domain) stays enabled, and the pages holding the hypervisor's UART pin mux and its PM watchdog are
/// stage-2 holes whose guarded registers keep the hypervisor's bits.
#[test]
fn defect10_pi_dom0_keeps_v3d_power_but_not_the_hypervisors_pins_or_watchdog() {
    use rpixen_hv_core::guard::{self, Guarded};
    use rpixen_hv_core::stage2;

    let dir = tempfile::tempdir().unwrap();
    let host = host_copy(&crate::common::pi_dtb(), dir.path());
    let blob = std::fs::read(&host).unwrap();
    let fdt = Fdt::new(&blob).unwrap();
    let info = hostdt::parse(&fdt).unwrap();
    let hv_uart = hostdt::find_uart(&fdt, "serial1").unwrap();
    let vuart = hostdt::first_pl011(&fdt).unwrap();
    assert_eq!((hv_uart.kind, vuart.path.as_str()), (UartKind::MiniUart, "/soc/serial@7e201000"));

    let disable = guard::hypervisor_nodes(&fdt, hv_uart.base, vuart.base);
    assert_eq!(
        disable,
        ["/soc/aux@7e215000", "/soc/serial@7e215040", "/soc/spi@7e215080", "/soc/spi@7e2150c0"]
    );
    let disable_refs: Vec<&str> = disable.iter().map(String::as_str).collect();
    let mem = [Region::new(0x1C00_0000, 0x2000_0000)];
    let cfg = Dom0DtConfig {
        memory: &mem,
        bootargs: "console=ttyAMA0",
        initrd: None,
        disable: &disable_refs,
        stdout_path: Some(&vuart.path),
        cpus: None,
        watchdog: None,
    };
    let path = dir.path().join("dom0.dtb");
    std::fs::write(&path, dom0dt::build(&blob, &cfg).unwrap()).unwrap();
    let dts = testkit::run(Command::new("dtc").args(["-I", "dtb", "-O", "dts", "-q"]).arg(&path));
    assert!(!dts.contains("brcm,bcm43438-bt"), "a serdev child on Dom0's console:\n{dts}");
    let pm_status = Command::new("fdtget")
        .arg(&path)
        .args(["/soc/watchdog@7e100000", "status"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&pm_status.stdout).contains("disabled"),
        "the PM node (V3D power domain) was disabled"
    );

    let pm = rpixen_hv_core::dt::reg_phys(&fdt, "/soc/watchdog@7e100000").unwrap()[0];
    let pages = guard::guarded_pages(&fdt, &hv_uart.path, Some(pm));
    let gpio = pages.iter().find(|p| p.base == 0xFE20_0000).expect("GPIO page guarded");
    // Pins 14 and 15 (ALT5, the mini-UART): GPFSEL1 bits 12-17 and their pulls.
    assert_eq!(gpio.access(4, 4, Some(0)), Guarded::Write { value: 0, keep: 0x3F000 });
    assert_eq!(gpio.access(0xE4, 4, Some(0)), Guarded::Write { value: 0, keep: 0xF000_0000 });
    let pmp = pages.iter().find(|p| p.base == 0xFE10_0000).expect("PM page guarded");
    for wd in [0x1C, 0x20, 0x24] {
        assert_eq!(
            pmp.access(wd, 4, Some(0x5A00_0020)),
            Guarded::Refuse,
            "watchdog register {wd:#x}"
        );
    }
    assert_eq!(
        pmp.access(0x10C, 4, Some(0x5A00_1041)),
        Guarded::Write { value: 0x5A00_1041, keep: 0 },
        "PM_GRAFX (V3D)"
    );

    let g = info.gic;
    let mut traps = vec![
        g.dist,
        g.cpu,
        g.hyp,
        g.vcpu,
        Region::new(vuart.base, 0x1000),
        Region::new(hv_uart.base, 0x1000),
    ];
    traps.extend(pages.iter().map(|p| Region::new(p.base, 0x1000)));
    let plan = stage2::dom0(&mem, &info.ram, &traps, (g.cpu.base, g.vcpu.base, 0x2000));
    for hole in [0xFE20_0000u64, 0xFE10_0000, 0xFE21_5000, 0xFE20_1000] {
        assert!(!plan.maps(hole), "{hole:#x} mapped for Dom0");
    }
    for mapped in [0xFEC0_0000u64, 0xFE00_A000, 0xFEC1_1000, 0xFE20_2000] {
        assert!(
            plan.maps(mapped),
            "{mapped:#x} (V3D, ASB, RPiVid ASB, SD host) not mapped for Dom0"
        );
    }
}

/// Dom0's watchdog page is free in the real trees: no node of Debian's Pi 4 tree (with the memory an
/// 8 GiB board's firmware writes; the root has one size cell) nor of QEMU virt's own tree has a `reg` there; a node placed on it
/// (as an overlay could) makes the hypervisor offer no watchdog.
#[test]
fn the_watchdog_page_is_free_in_the_pi_and_virt_trees() {
    use rpixen_hv_core::sp805::dom0_page_in;
    let dir = tempfile::tempdir().unwrap();
    let pi = dir.path().join("pi.dtb");
    std::fs::copy(crate::common::pi_dtb(), &pi).unwrap();
    testkit::run(Command::new("fdtput").arg(&pi).args([
        "-t",
        "x",
        "/memory@0",
        "reg",
        "0",
        "0",
        "3b400000",
        "0",
        "40000000",
        "bc000000",
        "1",
        "0",
        "80000000",
        "1",
        "80000000",
        "80000000",
    ]));
    let blob = std::fs::read(&pi).unwrap();
    let fdt = Fdt::new(&blob).unwrap();
    let ram = hostdt::parse(&fdt).unwrap().ram;
    assert_eq!(ram.iter().map(|r| r.end()).max(), Some(0x2_0000_0000), "8 GiB: {ram:?}");
    assert_eq!(dom0_page_in(&fdt, &ram), Some(0xFC10_0000));

    let virt = crate::common::virt_dtb(dir.path(), 4);
    let blob = std::fs::read(&virt).unwrap();
    let fdt = Fdt::new(&blob).unwrap();
    let ram = hostdt::parse(&fdt).unwrap().ram;
    assert_eq!(dom0_page_in(&fdt, &ram), Some(0x0B00_0000));

    testkit::run(Command::new("fdtput").arg(&virt).args(["-c", "/device@b000800"]));
    testkit::run(Command::new("fdtput").arg(&virt).args([
        "-t",
        "x",
        "/device@b000800",
        "reg",
        "0",
        "b000800",
        "0",
        "100",
    ]));
    let blob = std::fs::read(&virt).unwrap();
    let fdt = Fdt::new(&blob).unwrap();
    assert_eq!(dom0_page_in(&fdt, &ram), None);
}

/// Every node of a tree with its properties: (path, [(name, value)]), depth first.
type TreeDump = Vec<(String, Vec<(String, Vec<u8>)>)>;

/// The dump of `blob`, read with `core::fdtr`.
fn dump_fdtr(blob: &[u8]) -> TreeDump {
    fn rec(n: rpixen_hv_core::fdtr::FdtNode<'_, '_>, path: String, out: &mut TreeDump) {
        let props = n.properties().map(|p| (p.name.to_owned(), p.value.to_vec())).collect();
        out.push((path.clone(), props));
        for c in n.children() {
            rec(c, format!("{}/{}", path.trim_end_matches('/'), c.name), out);
        }
    }
    let mut out = Vec::new();
    rec(Fdt::new(blob).unwrap().find_node("/").unwrap(), "/".into(), &mut out);
    out
}

/// The dump of `blob`, read with the `fdt` crate (the reader the hypervisor used before `fdtr`).
fn dump_fdt_crate(blob: &[u8]) -> TreeDump {
    fn rec(n: fdt::node::FdtNode<'_, '_>, path: String, out: &mut TreeDump) {
        let props = n.properties().map(|p| (p.name.to_owned(), p.value.to_vec())).collect();
        out.push((path.clone(), props));
        for c in n.children() {
            rec(c, format!("{}/{}", path.trim_end_matches('/'), c.name), out);
        }
    }
    let mut out = Vec::new();
    rec(fdt::Fdt::new(blob).unwrap().find_node("/").unwrap(), "/".into(), &mut out);
    out
}

#[test]
fn fdtr_reads_the_real_trees_as_the_fdt_crate_does_and_survives_their_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let virt = std::fs::read(crate::common::virt_dtb(dir.path(), 4)).unwrap();
    let pi = std::fs::read(crate::common::pi_dtb()).unwrap();
    for (board, blob) in [("virt", &virt), ("pi4", &pi)] {
        let ours = dump_fdtr(blob);
        assert!(ours.len() > 30, "{board}: {} nodes", ours.len());
        assert_eq!(ours, dump_fdt_crate(blob), "{board}");
        let (a, b) = (Fdt::new(blob).unwrap(), fdt::Fdt::new(blob).unwrap());
        let rsv_a: Vec<_> = a.memory_reservations().map(|r| (r.address(), r.size())).collect();
        let rsv_b: Vec<_> =
            b.memory_reservations().map(|r| (r.address() as usize, r.size())).collect();
        assert_eq!(rsv_a, rsv_b, "{board}");
        assert_eq!(a.total_size(), b.total_size());
        // fdt's all_nodes names the root "/" (its find_node("/") names it ""); fdtr says "" in both.
        let all_a: Vec<_> = a.all_nodes().map(|n| n.name).collect();
        let all_b: Vec<_> = b.all_nodes().map(|n| n.name).collect();
        assert_eq!((all_a[0], all_b[0]), ("", "/"));
        assert_eq!(all_a[1..], all_b[1..], "{board}: depth-first order");
        for compat in
            [&["arm,pl011"][..], &["arm,gic-400", "arm,cortex-a15-gic"], &["brcm,bcm2835-aux-uart"]]
        {
            assert_eq!(
                a.find_compatible(compat).map(|n| n.name),
                b.find_compatible(compat).map(|n| n.name)
            );
        }
        let board_a: Vec<_> = a.root().compatible().all().collect();
        let board_b: Vec<_> = b.root().compatible().all().collect();
        assert_eq!(board_a, board_b);
        // Damaged copies: an error or a readable tree, never a panic (this runs every truncation
        // point of the header and structure block, and a byte flip at every 7th offset).
        let off_strings = u32::from_be_bytes(blob[12..16].try_into().unwrap()) as usize;
        for cut in 0..off_strings.min(blob.len()) {
            if let Ok(f) = Fdt::new(&blob[..cut]) {
                let _ = f.all_nodes().map(|n| n.properties().count()).sum::<usize>();
            }
        }
        for at in (0..blob.len()).step_by(7) {
            let mut bad = blob.clone();
            bad[at] ^= 0xA5;
            if let Ok(f) = Fdt::new(&bad) {
                for n in f.all_nodes() {
                    let _ = (
                        n.properties().count(),
                        n.children().count(),
                        n.compatible().map(|c| c.first()),
                    );
                }
                let _ = (
                    f.find_node("/soc/serial"),
                    f.find_node("serial1"),
                    f.memory().regions().count(),
                );
            }
        }
    }
}
