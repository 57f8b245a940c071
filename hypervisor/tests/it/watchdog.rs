//! Dom0's virtual SP805 watchdog, booted directly by QEMU on virt and on raspi4b, and on virt through
//! U-Boot and the live image: Debian's
//! `sp805_wdt` binds to it, and busybox's `watchdog` daemon drives it as it would any hardware
//! watchdog. Fed, the board keeps running past twice the timeout; killed without the magic close (as
//! a hung Dom0 stops feeding), the hypervisor resets the board, and QEMU's reset starts the
//! hypervisor and Dom0 again.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;

const LIMIT: Duration = Duration::from_secs(300);
const BANNER: &str = "hv: rpixen hypervisor, EL2 entry";
const FED: &str = "WDOG-FED-PAST-TWICE-THE-TIMEOUT";

/// An initramfs whose /init loads sp805_wdt, feeds a 4 s watchdog every second for 10 s (2.5
/// timeouts), then kills the daemon by SIGKILL: no magic close, so the watchdog keeps running unfed
/// (the kernel says "watchdog did not stop!").
fn starving_initramfs(dir: &Path) -> std::path::PathBuf {
    let ko = kernel_module(dir, "drivers/watchdog/sp805_wdt");
    let script = format!(
        "insmod /sp805_wdt.ko\nls /dev/watchdog0 && echo WDOG-DEVICE-PRESENT\n\
         watchdog -F -T 4 -t 1 /dev/watchdog & pid=$!\nsleep 10\necho {FED}\n\
         kill -9 $pid\necho WDOG-STARVED\nsleep 60\necho WDOG-NO-RESET"
    );
    initramfs_with(dir, &script, &[(&ko, "sp805_wdt.ko")])
}

/// Waits until `needle` has appeared `n` times.
fn wait_count(q: &mut testkit::Qemu, needle: &str, n: usize, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        let out = q.output();
        if out.matches(needle).count() >= n {
            return out;
        }
        if let Some(f) = FAILURES.iter().find(|f| out.contains(**f)) {
            panic!("failure pattern {f:?}:\n{out}");
        }
        assert!(start.elapsed() < limit, "{needle:?} not seen {n} times within {limit:?}:\n{out}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The fed phase, the reset with its console line (after ~4 s), and the second boot.
fn feed_then_starve(q: &mut testkit::Qemu, page: &str) {
    let started = Instant::now();
    q.wait_for("WDOG-STARVED", FAILURES, LIMIT).unwrap_or_else(|e| panic!("{e}"));
    let out = q.output();
    assert!(out.contains(&format!("hv: dom0 watchdog: virtual SP805 at {page}")), "{out}");
    assert!(out.contains("WDOG-DEVICE-PRESENT"), "sp805_wdt did not bind:\n{out}");
    assert!(out.contains(FED), "{out}");
    assert!(!out.contains("hv: watchdog:"), "reset while fed:\n{out}");
    assert_eq!(out.matches(BANNER).count(), 1, "{out}");

    let out = q
        .wait_for("hv: watchdog: Dom0 did not feed it for ", &["WDOG-NO-RESET"], LIMIT)
        .unwrap_or_else(|e| panic!("{e}"))
        .output;
    let line = out.lines().find(|l| l.contains("hv: watchdog:")).unwrap().to_owned();
    let ms: u64 = line
        .split("for ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no milliseconds in {line:?}"));
    // The driver loads half the timeout per period; the board resets after two periods. The upper
    // bound leaves room for a slow TCG host: the timer fires at the deadline, the line is printed
    // when the CPU takes the interrupt.
    assert!((4000..8000).contains(&ms), "reset after {ms} ms, not ~4000: {line}");
    assert!(line.ends_with("ms: resetting the board"), "{line}");
    // The reset restarts the machine: the hypervisor's banner, then Dom0's /init, a second time.
    let out = wait_count(q, MARKER, 2, LIMIT);
    assert_eq!(out.matches(BANNER).count(), 2, "{out}");
    assert!(!out.contains("WDOG-NO-RESET") && !out.contains("hv: dom0 system_"), "{out}");
    eprintln!("watchdog test: {line}; two boots in {:?}", started.elapsed());
}

#[test]
fn virt_a_fed_watchdog_keeps_dom0_running_and_a_starved_one_resets_the_board() {
    let dir = tempfile::tempdir().unwrap();
    let initrd = starving_initramfs(dir.path());
    let args = virt_direct_args(dir.path(), 2, VIRT_HV_ARGS, VIRT_DOM0_ARGS, &initrd);
    let mut q = testkit::Qemu::start_with(&args, 1);
    feed_then_starve(&mut q, "0xb000000");
}

/// The same on raspi4b, where the reset goes through the BCM2835 PM watchdog.
#[test]
fn raspi4b_a_fed_watchdog_keeps_dom0_running_and_a_starved_one_resets_the_board() {
    let dir = tempfile::tempdir().unwrap();
    let initrd = starving_initramfs(dir.path());
    let args = crate::raspi4b_boot::pi_direct_args(dir.path(), &initrd);
    let mut q = testkit::Qemu::start_with(&args, 2);
    feed_then_starve(&mut q, "0xfc100000");
}

/// The boot path of a device: Debian's U-Boot runs the live image's boot script, so after the
/// hypervisor's reset U-Boot starts again (where an update's trial falls back to the committed slot).
#[test]
fn virt_uboot_a_starved_watchdog_resets_into_uboot_again() {
    const UBOOT_BANNER: &str = "U-Boot 20";
    let dir = tempfile::tempdir().unwrap();
    let uboot = testkit::uboot_qemu();
    let manifest = live_manifest(
        dir.path(),
        "qemu-virt",
        &uboot,
        None,
        "serial0",
        "console=dtuart dtuart=serial0 sync_console",
        VIRT_DOM0_ARGS,
    );
    let initrd = starving_initramfs(dir.path());
    let img = dir.path().join("live.raw");
    rpixen_live(&manifest, &initrd, &img);
    let args = virt_uboot_args(&uboot, &img);
    let mut q = testkit::Qemu::start_with(&args, 1);
    feed_then_starve(&mut q, "0xb000000");
    let out = q.output();
    assert_eq!(out.matches(UBOOT_BANNER).count(), 2, "{out}");
    let reset = out.find("hv: watchdog:").unwrap();
    assert!(out[reset..].contains(UBOOT_BANNER), "U-Boot did not start after the reset:\n{out}");
}

/// `dom0_watchdog=`: the watchdog runs from boot, so a Dom0 that never feeds it (here: no driver, no
/// daemon; as a kernel that hangs in an update's trial boot) still ends in a reset.
#[test]
fn virt_a_watchdog_running_from_boot_resets_a_dom0_that_never_feeds_it() {
    let dir = tempfile::tempdir().unwrap();
    let initrd = initramfs(dir.path(), "sleep 120\necho WDOG-NO-RESET");
    let args = virt_direct_args(
        dir.path(),
        2,
        "console=dtuart dtuart=serial0 sync_console dom0_mem=512M dom0_watchdog=20",
        VIRT_DOM0_ARGS,
        &initrd,
    );
    let mut q = testkit::Qemu::start_with(&args, 1);
    let out = q
        .wait_for("hv: watchdog: Dom0 did not feed it for ", &["WDOG-NO-RESET"], LIMIT)
        .unwrap_or_else(|e| panic!("{e}"))
        .output;
    assert!(
        out.contains("hv: dom0 watchdog: virtual SP805 at 0xb000000, running from boot"),
        "{out}"
    );
    let line = out.lines().find(|l| l.contains("hv: watchdog:")).unwrap().to_owned();
    let ms: u64 =
        line.split("for ").nth(1).and_then(|r| r.split(' ').next()).unwrap().parse().unwrap();
    assert!((20_000..24_000).contains(&ms), "{line}");
    let out = wait_count(&mut q, BANNER, 2, LIMIT);
    assert!(!out.contains("WDOG-NO-RESET") && !out.contains("hv: dom0 system_"), "{out}");
    eprintln!("watchdog test: {line}");
}
