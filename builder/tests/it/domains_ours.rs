//! Static DomUs under our hypervisor, from the same image `domains_xen` boots under Xen 4.20: QEMU
//! `virt` `-smp 4`, Debian's U-Boot running the boot script, which loads Dom0 and two DomUs and writes
//! their `/chosen/<name>` `xen,domain` nodes. Every domain is an initramfs from OCI layouts (busybox
//! and the real aarch64 `dom0-init` as PID 1). The console is a socket: the test types into a DomU
//! after CTRL-a three times, reboots one DomU (only it restarts) and powers the other off (only it
//! stops), while Dom0 keeps answering.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::domains_xen::{domus_image, from_domu, last, ready_domains, Console, BOOT_LIMIT, READY};
use testkit::uboot_qemu;

/// Our hypervisor's failure lines, on top of the guests' own.
const HV_FAILURES: &[&str] = &["hv: FATAL", "hv: PANIC"];
const TYPE_LIMIT: Duration = Duration::from_secs(180);

/// The hypervisor binary, built with `hypervisor/build.sh` (`RPIXEN_HV_BIN` names another build).
fn hv_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("RPIXEN_HV_BIN") {
        return PathBuf::from(p);
    }
    let out = testkit::cache_dir().join("rpixen-hv-domus.bin");
    testkit::run(Command::new(testkit::repo_root().join("hypervisor/build.sh")).arg(&out));
    out
}

fn check_no_failure(out: &str, from: usize) {
    if let Some(f) = HV_FAILURES.iter().find(|f| out[from..].contains(**f)) {
        panic!("failure pattern {f:?}:\n{}", last(out));
    }
}

/// Waits for `done` on the output after `from`, failing early on the hypervisor's failure lines.
fn wait(
    con: &Console,
    from: usize,
    what: &str,
    limit: Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    con.wait(from, what, limit, |o| {
        check_no_failure(o, 0);
        done(o)
    })
}

/// CTRL-a three times; the hypervisor names the domain that now has the input, as Xen does.
fn switch_to(con: &mut Console, domid: u32) {
    let target = format!("*** Serial input to DOM{domid} ");
    for _ in 0..4 {
        let from = con.output().len();
        con.send(b"\x01\x01\x01");
        let out = wait(con, from, "the input switch", Duration::from_secs(60), |o| {
            o.contains("*** Serial input to DOM")
        });
        if out[from..].contains(&target) {
            return;
        }
    }
    panic!("CTRL-a never reached DOM{domid}:\n{}", last(&con.output()));
}

/// Types `echo <marker>-$(hostname)` and waits for the answer line `<prefix><marker>-<host>`.
fn answer(con: &mut Console, marker: &str, prefix: &str, host: &str) {
    let from = con.output().len();
    con.send(format!("echo {marker}-$(hostname)\n").as_bytes());
    let want = format!("{prefix}{marker}-{host}");
    wait(con, from, &want, TYPE_LIMIT, |o| o.lines().any(|l| l.starts_with(&want)));
}

#[test]
fn our_hypervisor_boots_dom0_and_two_domus_from_the_live_image() {
    let dir = tempfile::tempdir().unwrap();
    let img = domus_image(dir.path(), ("rpixen", &hv_bin()));
    let args = testkit::QemuArgs::virt().smp(4).bios(&uboot_qemu()).disk(&img);
    let _turn = crate::image_qemu::one_boot();
    let mut con = Console::start(args);
    let out = wait(&con, 0, "three readiness lines", BOOT_LIMIT, |o| {
        ready_domains(o) == (true, true, true)
    });
    let all_ready = con.started.elapsed();
    eprintln!("rpixen hypervisor: QEMU start to Dom0 + 2 DomUs ready: {all_ready:?}");
    for line in out.lines().filter(|l| l.contains(READY)) {
        eprintln!("  {line}");
    }
    // The partition: DomU vCPUs on the highest CPUs, Dom0 on the rest (its Linux brings up two).
    for line in [
        "hv: d1 (edge1): 1 vCPU on cpu3, VMID 2, RAM 0x40000000 at host",
        "hv: d2 (edge2): 1 vCPU on cpu2, VMID 3, RAM 0x40000000 at host",
        "smp: Brought up 1 node, 2 CPUs",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{}", last(&out));
    }
    // Each DomU's Linux boots on its vCPU 0 (Xen's affinity 0) and sees exactly its 256 MiB.
    for n in [1, 2] {
        let prefix = format!("(d{n}) ");
        let mine = |what: &str| out.lines().any(|l| l.starts_with(&prefix) && l.contains(what));
        assert!(mine("Booting Linux on physical CPU 0x0000000000"), "d{n}:\n{}", last(&out));
        assert!(mine("K/262144K available"), "d{n} memory:\n{}", last(&out));
    }

    // Typing after CTRL-a three times reaches DomU 1's shell; its answer comes back prefixed.
    switch_to(&mut con, 1);
    answer(&mut con, "typed-into", "(d1) ", "edge1");

    // DomU 1's reboot restarts it alone: it reaches readiness again, from its pristine files.
    let reboot_at = con.output().len();
    con.send(b"reboot\n");
    let out = wait(&con, reboot_at, "d1's second readiness", BOOT_LIMIT, |o| {
        o.lines().any(|l| from_domu(l, 1) && l.contains(READY))
    });
    let after = &out[reboot_at..];
    assert!(after.contains("hv: d1 (edge1) system_reset: restarting it alone"), "{}", last(&out));
    assert!(!after.contains("U-Boot 20"), "the board was reset:\n{}", last(&out));
    answer(&mut con, "after-reboot", "(d1) ", "edge1");

    // DomU 2's poweroff stops it alone.
    switch_to(&mut con, 2);
    answer(&mut con, "typed-into", "(d2) ", "edge2");
    let off_at = con.output().len();
    con.send(b"poweroff\n");
    wait(&con, off_at, "d2's stop", TYPE_LIMIT, |o| {
        o.contains("hv: d2 (edge2) stopped; the other domains run on")
    });

    // Dom0 still answers (its Linux never restarted), and so does the rebooted DomU 1.
    switch_to(&mut con, 0);
    answer(&mut con, "dom0-alive", "", "rpixen");
    switch_to(&mut con, 1);
    answer(&mut con, "still-here", "(d1) ", "edge1");
    let out = con.output();
    assert_eq!(out.matches("Booting Linux on physical CPU").count(), 4, "{}", last(&out));
    assert!(!out.contains("hv: dom0 system_"), "{}", last(&out));
    // Whole lines only: a DomU's prefix always starts a line.
    for l in out.lines() {
        for p in ["(d1) ", "(d2) "] {
            if let Some(i) = l.find(p) {
                assert_eq!(i, 0, "a DomU line inside another: {l:?}");
            }
        }
    }
}
