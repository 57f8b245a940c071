//! Our hypervisor boots Debian's arm64 kernel as Dom0 on QEMU virt (GICv2, 4 × Cortex-A72, 2 GiB),
//! started directly by QEMU (`-kernel`, modules by `-device loader`, Xen's /chosen bindings in the DT).
//! The U-Boot path (`rpixen live`) is in live_boot.rs.

use std::time::Duration;

use crate::common::*;

const LIMIT: Duration = Duration::from_secs(240);

#[test]
fn dom0_reaches_userspace_with_four_vcpus_and_powers_off_through_psci() {
    let dir = tempfile::tempdir().unwrap();
    let initrd = initramfs(dir.path(), "");
    let args = virt_direct_args(
        dir.path(),
        4,
        VIRT_HV_ARGS,
        "console=ttyAMA0 earlycon rdinit=/init",
        &initrd,
    );
    let mut q = testkit::Qemu::start_with(&args, 1);
    let outcome = q.wait_for(MARKER, FAILURES, LIMIT).unwrap_or_else(|e| panic!("{e}"));
    let status = q
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("poweroff did not end QEMU: {e}"));
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
    // The hypervisor's first page (its Image header and entry code), then RAM 1 MiB further: past the
    // Image's .bss now (image_size < 1 MiB), RAM that is not Dom0's either.
    let probe = format!(
        "echo probe-read; devmem {a:#x} 32; echo \"read-status=$?\"; echo probe-write; devmem {a:#x} 32 0x12345678; \
         echo \"write-status=$?\"; echo probe-bss; devmem {b:#x} 32; echo \"bss-status=$?\"",
        a = HV_ADDR_VIRT,
        b = HV_ADDR_VIRT + 0x10_0000
    );
    let initrd = initramfs(dir.path(), &probe);
    let args = virt_direct_args(dir.path(), 2, VIRT_HV_ARGS, VIRT_DOM0_ARGS, &initrd);
    let mut q = testkit::Qemu::start_with(&args, 1);
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
    let args = virt_direct_args(
        dir.path(),
        1,
        "console=dtuart dtuart=serial0 hv_selftest=el2-fault",
        "console=ttyAMA0",
        &initrd,
    );
    let mut q = testkit::Qemu::start_with(&args, 1);
    let o = q
        .wait_for("hv: PANIC", &["Booting Linux", "no fault?"], Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_millis(300));
    let out = q.output();
    let line =
        out.lines().find(|l| l.contains("hv: PANIC")).unwrap_or_else(|| panic!("{}", o.output));
    // A data abort taken at EL2 (EC 0x25) on the address read, with the faulting PC.
    assert!(line.contains("unexpected exception (vector 4) EC=0x25 ESR=0x96"), "{line}");
    assert!(line.contains("FAR=0x10000000000 ELR=0x4020"), "{line}");
}

/// Kills QEMU (by PID, via `Child::kill`) when the test ends, whatever happened.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn typed_input_reaches_dom0_and_its_prompt_is_shown() {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    let dir = tempfile::tempdir().unwrap();
    // A prompt without a newline, then a command read from the console.
    let initrd = initramfs(dir.path(), "echo -n 'type a command: '; read cmd; eval \"$cmd\"");
    let args = virt_direct_args(dir.path(), 2, VIRT_HV_ARGS, VIRT_DOM0_ARGS, &initrd);
    let child = Command::new("qemu-system-aarch64")
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
        .args(args.build())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut q = KillOnDrop(child);
    let out = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = q.0.stdout.take().unwrap();
    let sink = out.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let text = || String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
    let wait = |what: &str| {
        let start = Instant::now();
        while !text().contains(what) {
            assert!(start.elapsed() < LIMIT, "no {what:?} within {LIMIT:?}:\n{}", text());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // The prompt has no newline: it must still appear (flushed after a pause in Dom0's output).
    wait("type a command: ");
    q.0.stdin.as_mut().unwrap().write_all(b"echo HELLO-$((6*7))\r").unwrap();
    wait("HELLO-42");
    wait("hv: dom0 system_off");
    let out = text();
    assert!(
        out.contains("type a command: echo HELLO-$((6*7))"),
        "the echo of the typed line follows the prompt:\n{out}"
    );
}

#[test]
fn dom0_cpu_hotplug_goes_through_psci_cpu_off_and_on() {
    let dir = tempfile::tempdir().unwrap();
    let c = "/sys/devices/system/cpu";
    let script = format!(
        "echo 0 > {c}/cpu1/online; echo \"after-off online=$(cat {c}/online)\"; \
         echo 1 > {c}/cpu1/online; echo \"after-on online=$(cat {c}/online)\""
    );
    let initrd = initramfs(dir.path(), &script);
    let args = virt_direct_args(dir.path(), 4, VIRT_HV_ARGS, VIRT_DOM0_ARGS, &initrd);
    let mut q = testkit::Qemu::start_with(&args, 1);
    q.wait_for("after-on online=", FAILURES, LIMIT).unwrap_or_else(|e| panic!("{e}"));
    q.wait_exit(Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    let out = q.output();
    for line in ["psci: CPU1 killed", "after-off online=0,2-3", "after-on online=0-3"] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
}

#[test]
fn dom0_reboot_resets_the_machine_through_psci() {
    let dir = tempfile::tempdir().unwrap();
    let initrd = initramfs(dir.path(), "echo rebooting; reboot -f");
    let args = virt_direct_args(dir.path(), 2, VIRT_HV_ARGS, VIRT_DOM0_ARGS, &initrd);
    // With -no-reboot QEMU exits on a reset instead of restarting the machine.
    let mut q = testkit::Qemu::start_with(&args.no_reboot(), 1);
    q.wait_for("rebooting", FAILURES, LIMIT).unwrap_or_else(|e| panic!("{e}"));
    let status = q
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("reset did not end QEMU: {e}"));
    let out = q.output();
    assert!(out.contains("hv: dom0 system_reset"), "{out}");
    assert!(!out.contains("hv: dom0 system_off"), "{out}");
    assert!(status.success(), "{status}");
}
