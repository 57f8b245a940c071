//! Dom0's virtual SP805 watchdog on QEMU virt (direct boot): Debian's `sp805_wdt` binds to it, and
//! busybox's `watchdog` daemon drives it as it would any hardware watchdog. Fed, the board keeps
//! running past twice the timeout; killed without the magic close (as a hung Dom0 stops feeding),
//! the hypervisor resets the board, and QEMU's reset starts the hypervisor and Dom0 again.

use std::time::{Duration, Instant};

use crate::common::*;

const LIMIT: Duration = Duration::from_secs(300);
const BANNER: &str = "hv: rpixen hypervisor, EL2 entry";
const FED: &str = "WDOG-FED-PAST-TWICE-THE-TIMEOUT";

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

#[test]
fn a_fed_watchdog_keeps_dom0_running_and_a_starved_one_resets_the_board() {
    let dir = tempfile::tempdir().unwrap();
    let ko = kernel_module(dir.path(), "drivers/watchdog/sp805_wdt");
    // A 4 s timeout fed every second for 10 s (2.5 timeouts), then the daemon dies by SIGKILL: no
    // magic close, so the watchdog keeps running unfed (the kernel says "watchdog did not stop!").
    let script = format!(
        "insmod /sp805_wdt.ko\nls /dev/watchdog0 && echo WDOG-DEVICE-PRESENT\n\
         watchdog -F -T 4 -t 1 /dev/watchdog & pid=$!\nsleep 10\necho {FED}\n\
         kill -9 $pid\necho WDOG-STARVED\nsleep 60\necho WDOG-NO-RESET"
    );
    let initrd = initramfs_with(dir.path(), &script, &[(&ko, "sp805_wdt.ko")]);
    let args = virt_direct_args(
        dir.path(),
        2,
        "console=dtuart dtuart=serial0 sync_console dom0_mem=512M",
        "console=ttyAMA0 rdinit=/init",
        &initrd,
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let mut q = testkit::Qemu::start(&args, 1);
    q.wait_for("WDOG-STARVED", FAILURES, LIMIT).unwrap_or_else(|e| panic!("{e}"));
    let out = q.output();
    assert!(out.contains("hv: dom0 watchdog: virtual SP805 at 0xb000000"), "{out}");
    assert!(out.contains("WDOG-DEVICE-PRESENT"), "sp805_wdt did not bind:\n{out}");
    assert!(out.contains(FED), "{out}");
    assert!(!out.contains("hv: watchdog:"), "reset while fed:\n{out}");
    assert_eq!(out.matches(BANNER).count(), 1, "{out}");

    let out = q
        .wait_for("hv: watchdog: Dom0 did not feed it for ", &["WDOG-NO-RESET"], LIMIT)
        .unwrap_or_else(|e| panic!("{e}"))
        .output;
    let line = out.lines().find(|l| l.contains("hv: watchdog:")).unwrap();
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
    let out = wait_count(&mut q, MARKER, 2, LIMIT);
    assert_eq!(out.matches(BANNER).count(), 2, "{out}");
    assert!(!out.contains("WDOG-NO-RESET"), "{out}");
    eprintln!("watchdog test: {line}; two boots in {:?}", started.elapsed());
}
