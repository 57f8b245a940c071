//! Boot-time benchmark, one run, same QEMU machine for all (virt, virtualization=on, GICv2,
//! 4 × Cortex-A72, 2 GiB, TCG): wall time from QEMU start to Dom0's /init marker for
//! 1. bare Debian 6.12 Linux (`-kernel Image -initrd`, `mem=512M` to match Dom0),
//! 2. the same kernel as Dom0 under rpixen's hypervisor (dom0_mem=512M),
//! 3. the same kernel as Dom0 under Debian's Xen 4.20 (dom0_mem=512M, dom0_max_vcpus=4),
//!
//! each started directly by QEMU (`-kernel`, modules by `-device loader`, Xen's /chosen bindings), the
//! configurations interleaved, median of RUNS. Prints the ratios and the binary sizes.
//! `BENCH_NO_XEN=1` leaves Xen out (its boot takes minutes under TCG on a busy machine);
//! `RPIXEN_HV_BIN=FILE` times another build of ours (e.g. an older commit's).
//! Targets: ours within 10 % of bare, faster than Xen, binary under 200 KB.

#[path = "../tests/it/common.rs"]
mod common;

use std::time::Duration;

use common::*;

const RUNS: usize = 3;

fn time_to_marker(args: &testkit::QemuArgs) -> Duration {
    let mut q = testkit::Qemu::start_with(args, 1);
    let o =
        q.wait_for(MARKER, FAILURES, Duration::from_secs(300)).unwrap_or_else(|e| panic!("{e}"));
    o.elapsed
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would too: only run when benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let initrd = initramfs(dir.path(), "");
    let hv = hv_bin();
    let xen = testkit::debian_package("xen-hypervisor-4.20-arm64").join("boot/xen-4.20-arm64");
    let k = kernel();
    let bare = testkit::QemuArgs::virt()
        .smp(4)
        .kernel(&k)
        .initrd(&initrd)
        .append("console=ttyAMA0 rdinit=/init mem=512M");
    let ours_dir = dir.path().join("ours");
    let xen_dir = dir.path().join("xen");
    std::fs::create_dir_all(&ours_dir).unwrap();
    std::fs::create_dir_all(&xen_dir).unwrap();
    let ours = virt_direct_args_for(&hv, &ours_dir, 4, VIRT_HV_ARGS, VIRT_DOM0_ARGS, &initrd);
    let xen_args = virt_direct_args_for(
        &xen,
        &xen_dir,
        4,
        "console=dtuart dtuart=serial0 sync_console dom0_mem=512M dom0_max_vcpus=4",
        "console=hvc0 rdinit=/init",
        &initrd,
    );

    let with_xen = std::env::var_os("BENCH_NO_XEN").is_none();
    let (mut tb, mut to, mut tx) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..RUNS {
        tb.push(time_to_marker(&bare));
        to.push(time_to_marker(&ours));
        if with_xen {
            tx.push(time_to_marker(&xen_args));
        }
        eprintln!(
            "run {}: bare {:.2?}, rpixen {:.2?} ({:.2}x), xen {:.2?}",
            run + 1,
            tb[run],
            to[run],
            to[run].as_secs_f64() / tb[run].as_secs_f64(),
            tx.get(run).copied().unwrap_or_default()
        );
    }
    let (b, o) = (median(tb), median(to));
    let hv_size = std::fs::metadata(&hv).unwrap().len();
    let xen_size = std::fs::metadata(&xen).unwrap().len();
    println!("boot to Dom0 /init marker (median of {RUNS}, QEMU virt TCG, 4 vCPUs):");
    println!("  bare Linux          {:>8.2?}", b);
    println!(
        "  Linux under rpixen  {:>8.2?}  ({:.2}x bare, target <= 1.10x)",
        o,
        o.as_secs_f64() / b.as_secs_f64()
    );
    if with_xen {
        let x = median(tx);
        println!(
            "  Linux under Xen 4.20{:>8.2?}  ({:.2}x bare; rpixen/xen = {:.2}, target < 1)",
            x,
            x.as_secs_f64() / b.as_secs_f64(),
            o.as_secs_f64() / x.as_secs_f64()
        );
    }
    println!(
        "binary size: rpixen {} bytes ({:.1} KB, target < 200 KB), Xen 4.20 {} bytes; rpixen/xen = {:.3}",
        hv_size,
        hv_size as f64 / 1024.0,
        xen_size,
        hv_size as f64 / xen_size as f64
    );
}
