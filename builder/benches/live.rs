//! `cargo bench -p rpixen --bench live`: the same boot and slot partition content assembled by shell
//! tooling (`truncate` + `sgdisk` + `mkfs.vfat` + `mcopy`, the slot FAT copied into IMGB with `dd`, the
//! way image scripts do it) and by `rpixen live`, timed in one run, plus a plain `cp` of the same
//! payload bytes as the floor.
//! Targets: at least 5x faster than the shell pipeline, within 1.5x of `cp`.

// A bench uses a few of the tests' fixtures; the rest are the tests' own.
#[allow(dead_code)]
#[path = "../tests/it/image_support.rs"]
mod image_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use image_support::*;

const RUNS: usize = 7;

fn sh(script: &str, dir: &Path) {
    let o = Command::new("bash").arg("-ec").arg(script).current_dir(dir).output().unwrap();
    assert!(o.status.success(), "{script}\n{}", String::from_utf8_lossy(&o.stderr));
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let manifest = xen_virt_manifest(d);
    let initrd = busybox_initramfs(d);
    let ours = d.join("ours.raw");
    let live_args = [
        "live",
        manifest.to_str().unwrap(),
        "--initrd",
        initrd.to_str().unwrap(),
        "-o",
        ours.to_str().unwrap(),
    ];
    let o = run_rpixen(&live_args, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // The payload: exactly the files on our boot FAT and in slot A (IMGA, after the 64 MiB BOOT),
    // taken from our image.
    for (dir, at) in [("payload", "1M"), ("slot", "65M")] {
        std::fs::create_dir(d.join(dir)).unwrap();
        sh(&format!("mcopy -s -i '{}@@{at}' '::*' {dir}/", ours.display()), d);
    }
    let sum = |dir: &str| -> u64 {
        std::fs::read_dir(d.join(dir)).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
    };
    let bytes = sum("payload") + 2 * sum("slot");
    let size_mib = std::fs::metadata(&ours).unwrap().len() >> 20;

    // Same partition layout and FAT geometry (FAT32, 512-byte clusters) as ours.
    let shell = format!(
        "rm -f shell.raw
         truncate -s {size_mib}M shell.raw
         sgdisk -n1:2048:+32M -t1:ef00 -c1:BOOT -A1:set:2 -n2:0:+32M -c2:IMGA -n3:0:+32M -c3:IMGB \
                -n4:0:+8M -c4:CONFIG -n6:0:+2M -c6:STATE -n5:0:+16M -c5:PERSIST shell.raw >/dev/null
         mkfs.vfat -F 32 -s 1 -n RPIXEN-BOOT --offset 2048 shell.raw 65536 >/dev/null 2>&1
         mcopy -i shell.raw@@1M payload/* ::
         mkfs.vfat -n RPIXEN-SLOT --offset $(( 65 * 2048 )) shell.raw 32768 >/dev/null 2>&1
         mcopy -i shell.raw@@65M slot/* ::
         dd if=shell.raw of=shell.raw bs=1M skip=65 seek=97 count=32 conv=notrunc status=none
         mkfs.vfat -n CONFIG --offset $(( (1 + 64 + 32 + 32) * 2048 )) shell.raw 8192 >/dev/null 2>&1"
    )
    .replace("+32M -t1:ef00", "+64M -t1:ef00");
    let [t_shell, t_ours, t_cp] = testkit::race(
        RUNS,
        [
            &mut || sh(&shell, d),
            &mut || {
                let o = run_rpixen(&live_args, &[]);
                assert!(o.status.success());
            },
            &mut || {
                sh("rm -rf cp.out && mkdir -p cp.out/a cp.out/b && cp payload/* cp.out/", d);
                sh("cp slot/* cp.out/a/ && cp slot/* cp.out/b/", d);
            },
        ],
    );
    // The shell result must be a correct FAT holding the same files, or the comparison is void.
    sh("dd if=shell.raw of=shell.fat bs=1M skip=1 count=64 status=none && fsck.fat -n shell.fat >/dev/null", d);
    sh("dd if=shell.raw of=slot.fat bs=1M skip=97 count=32 status=none && fsck.fat -n slot.fat >/dev/null", d);

    let mb = bytes as f64 / 1e6;
    let rate = |t: Duration| mb / t.as_secs_f64();
    println!("live bench: {size_mib} MiB image, {mb:.1} MB boot + 2 slots payload, median of {RUNS} interleaved rounds");
    println!("  shell (truncate+sgdisk+mkfs.vfat+mcopy): {:>8.1} ms", t_shell.as_secs_f64() * 1e3);
    println!(
        "  rpixen live -o                          : {:>8.1} ms  ({:.0} MB/s)",
        t_ours.as_secs_f64() * 1e3,
        rate(t_ours)
    );
    println!(
        "  cp of the payload                       : {:>8.1} ms  ({:.0} MB/s)",
        t_cp.as_secs_f64() * 1e3,
        rate(t_cp)
    );
    let speedup = t_shell.as_secs_f64() / t_ours.as_secs_f64();
    let vs_cp = t_ours.as_secs_f64() / t_cp.as_secs_f64();
    println!(
        "  rpixen is {speedup:.1}x faster than the shell pipeline (target >= 5x: {})",
        if speedup >= 5.0 { "met" } else { "MISSED" }
    );
    println!(
        "  rpixen takes {vs_cp:.2}x the time of cp (target <= 1.5x: {})",
        if vs_cp <= 1.5 { "met" } else { "MISSED" }
    );
}
