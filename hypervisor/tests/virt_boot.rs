//! Our hypervisor boots Debian's arm64 kernel as Dom0 on QEMU virt (GICv2, 4 × Cortex-A72, 2 GiB),
//! started directly by QEMU (`-kernel`, modules by `-device loader`, Xen's /chosen bindings in the DT).
//! The U-Boot path (`rpixen live`) is in live_boot.rs.

mod common;

use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(240);

#[test]
fn dom0_reaches_userspace_with_four_vcpus_and_powers_off_through_psci() {
    let dir = tempfile::tempdir().unwrap();
    let initrd = initramfs(dir.path(), "");
    let args = virt_direct_args(
        dir.path(),
        4,
        "console=dtuart dtuart=serial0 sync_console dom0_mem=512M",
        "console=ttyAMA0 earlycon rdinit=/init",
        &initrd,
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut q = testkit::Qemu::start(&args, 1);
    let outcome = q.wait_for(MARKER, FAILURES, LIMIT).unwrap_or_else(|e| panic!("{e}"));
    let status = q.wait_exit(Duration::from_secs(60)).unwrap_or_else(|e| panic!("poweroff did not end QEMU: {e}"));
    let out = q.output();
    assert_dom0_booted(&out, 4, 512);
    assert!(out.contains("hv: console /pl011@9000000 (Pl011 at 0x9000000), sync"), "{out}");
    assert!(out.contains("hv: dom0 system_off"), "{out}");
    assert!(status.success(), "QEMU exit status {status} after PSCI SYSTEM_OFF");
    eprintln!("Dom0 /init reached in {:?}", outcome.elapsed);
}

#[test]
fn dom0_cannot_read_or_write_hypervisor_memory() {
    let dir = tempfile::tempdir().unwrap();
    // The hypervisor's first page (its Image header and entry code), then a page of its .bss (stacks,
    // page tables, heap) 1 MiB further.
    let probe = format!(
        "echo probe-read; devmem {a:#x} 32; echo \"read-status=$?\"; echo probe-write; devmem {a:#x} 32 0x12345678; \
         echo \"write-status=$?\"; echo probe-bss; devmem {b:#x} 32; echo \"bss-status=$?\"",
        a = HV_ADDR_VIRT,
        b = HV_ADDR_VIRT + 0x10_0000
    );
    let initrd = initramfs(dir.path(), &probe);
    let args = virt_direct_args(
        dir.path(),
        2,
        "console=dtuart dtuart=serial0 sync_console dom0_mem=512M",
        "console=ttyAMA0 rdinit=/init",
        &initrd,
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut q = testkit::Qemu::start(&args, 1);
    q.wait_for("bss-status=", FAILURES, LIMIT).unwrap_or_else(|e| panic!("{e}"));
    q.wait_exit(Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    let out = q.output();
    for line in [
        format!("hv: refused dom0 read at IPA {HV_ADDR_VIRT:#x}"),
        format!("hv: refused dom0 write at IPA {HV_ADDR_VIRT:#x}"),
        format!("hv: refused dom0 read at IPA {:#x}", HV_ADDR_VIRT + 0x10_0000),
        // busybox's devmem died of SIGBUS (128 + 7): the access failed inside Dom0...
        "read-status=135".to_owned(),
        "write-status=135".to_owned(),
        "bss-status=135".to_owned(),
        // ...and the hypervisor kept running: it still serves Dom0's power-off.
        "hv: dom0 system_off".to_owned(),
    ] {
        assert!(out.contains(&line), "missing {line:?} in:\n{out}");
    }
    assert!(!out.contains("0x12345678"), "{out}");
}

#[test]
fn an_unexpected_el2_exception_is_reported_with_its_syndrome() {
    let dir = tempfile::tempdir().unwrap();
    let initrd = initramfs(dir.path(), "");
    let args = virt_direct_args(dir.path(), 1, "console=dtuart dtuart=serial0 hv_selftest=el2-fault", "console=ttyAMA0", &initrd);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut q = testkit::Qemu::start(&args, 1);
    let o = q.wait_for("hv: PANIC", &["Booting Linux", "no fault?"], Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_millis(300));
    let out = q.output();
    let line = out.lines().find(|l| l.contains("hv: PANIC")).unwrap_or_else(|| panic!("{}", o.output));
    // A data abort taken at EL2 (EC 0x25) on the address read, with the faulting PC.
    assert!(line.contains("unexpected exception (vector 4) EC=0x25 ESR=0x96"), "{line}");
    assert!(line.contains("FAR=0x10000000000 ELR=0x4020"), "{line}");
}
