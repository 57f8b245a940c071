//! `cargo bench -p rpixen --bench rootfs`: our layers-to-rootfs and pull against the shell pipelines, in
//! one run, on the same realistic layers (Debian arm64 linux-image + busybox-static, ~185 MB unpacked):
//!
//! - layers -> squashfs: ours vs `tar -xzf` each layer + `mksquashfs` (same compressor and level);
//! - layers -> cpio.gz:  ours vs `tar -xzf` each layer + `find | cpio -o -H newc | gzip`;
//! - pull from a local docker-registry: ours vs `skopeo copy` to an OCI layout;
//! - a cached rebuild of an unchanged manifest (target: under one second).
//!
//! Each figure is the best of a few runs (the machine is shared). Target: at least 1.5x faster.

// A bench uses a few of the tests' fixtures; the rest are the tests' own.
#[allow(dead_code)]
#[path = "../tests/it/common.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rpixen::manifest::{self, RootfsFormat};
use rpixen::oci::layout::{Compression, ImageBuilder, LayerTar};
use rpixen::oci::registry::push_layout;
use rpixen::oci::{self, OciOptions};
use rpixen::rootfs::cpio::{write_compressed, CpioCompression};
use rpixen::rootfs::squashfs::write_squashfs;
use rpixen::rootfs::tree::Tree;
use rpixen::rootfs::unpack::{unpack_layers, Limits};

const RUNS: usize = 3;

fn best(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap()
}

fn sh(script: &str) {
    let st = Command::new("bash").arg("-c").arg(script).status().unwrap();
    assert!(st.success(), "failed: {script}");
}

fn du(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn report(what: &str, ours: Duration, theirs: Duration, peer: &str) {
    println!(
        "{what:<22} ours {:>7.2} s   {peer:<34} {:>7.2} s   speed-up {:.2}x{}",
        ours.as_secs_f64(),
        theirs.as_secs_f64(),
        theirs.as_secs_f64() / ours.as_secs_f64(),
        if theirs.as_secs_f64() / ours.as_secs_f64() >= 1.5 {
            ""
        } else {
            "  (below the 1.5x target)"
        }
    );
}

fn main() {
    let kernel = testkit::test_kernel_package();
    let busybox = testkit::debian_package("busybox-static");
    let work = testkit::cache_dir().join("bench-rootfs");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();

    // Three gzip layers, as a package build would make them.
    let mut l1 = LayerTar::new();
    l1.host_dir(&kernel.join("boot"), "boot")
        .unwrap()
        .host_dir(&busybox.join("usr"), "usr")
        .unwrap();
    let mut l2 = LayerTar::new();
    l2.host_dir(&kernel.join("usr/lib/modules"), "usr/lib/modules").unwrap();
    let mut l3 = LayerTar::new();
    let dtbs = std::fs::read_dir(kernel.join("usr/lib"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .find(|n| n.to_string_lossy().starts_with("linux-image"))
        .unwrap();
    let dtbs = dtbs.to_string_lossy().into_owned();
    l3.host_dir(&kernel.join("usr/lib").join(&dtbs), &format!("usr/lib/{dtbs}"))
        .unwrap()
        .host_dir(&kernel.join("usr/share"), "usr/share")
        .unwrap();
    let tars: Vec<Vec<u8>> = vec![l1.finish(), l2.finish(), l3.finish()];
    let unpacked: usize = tars.iter().map(Vec::len).sum();
    let mut b = ImageBuilder::new();
    for t in &tars {
        b = b.layer(t, Compression::Gzip).unwrap();
    }
    drop(tars);
    let layout = work.join("layout");
    b.write(&layout, "latest").unwrap();
    drop(b);
    let tmp = work.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut opts = common::opts(&tmp);
    opts.pkg_dir = work.join("pkg");
    common::fake_dom0_init(&opts.pkg_dir, "#!/bin/sh\n");
    let r = format!("oci:{}", layout.display());
    let image = oci::resolve(&opts, &r).unwrap();
    let blobs: Vec<String> = image.layers.iter().map(|l| l.path.display().to_string()).collect();
    let compressed: u64 = image.layers.iter().map(|l| l.descriptor.size()).sum();
    println!(
        "layers: {} ({} MB unpacked tar, {} MB gzip), {} cores",
        blobs.len(),
        unpacked >> 20,
        compressed >> 20,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );

    let build_tree = |opts: &OciOptions| -> Tree {
        let image = oci::resolve(opts, &r).unwrap();
        let mut tree = Tree::new();
        unpack_layers(&mut tree, &image.name, &image.layers, &Limits::default()).unwrap();
        tree
    };
    let extract = |dir: &Path| {
        let mut s = format!("rm -rf {0} && mkdir -p {0}", dir.display());
        for b in &blobs {
            s.push_str(&format!(" && tar -xzf {b} -C {}", dir.display()));
        }
        s
    };

    // layers -> squashfs
    let ours_sq = work.join("ours.squashfs");
    let t_ours_sq = best(RUNS, || {
        let tree = build_tree(&opts);
        write_squashfs(
            &tree,
            &mut std::io::BufWriter::new(std::fs::File::create(&ours_sq).unwrap()),
        )
        .unwrap();
    });
    let dir = work.join("extract");
    let theirs_sq = work.join("theirs.squashfs");
    let t_theirs_sq = best(RUNS, || {
        sh(&format!(
            "{} && mksquashfs {} {} -noappend -quiet -no-progress -comp zstd -Xcompression-level 3 >/dev/null",
            extract(&dir),
            dir.display(),
            theirs_sq.display()
        ))
    });
    report("layers -> squashfs", t_ours_sq, t_theirs_sq, "tar -xzf + mksquashfs (zstd 3)");
    println!(
        "{:<22} ours {} MB, mksquashfs {} MB",
        "  squashfs size",
        du(&ours_sq) >> 20,
        du(&theirs_sq) >> 20
    );
    // Same content: the listings (type, mode, owner, size, name) read back by unsquashfs agree.
    let listing = |f: &Path| {
        let out = Command::new("unsquashfs").arg("-lln").arg(f).output().unwrap();
        let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("squashfs-root/"))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                format!(
                    "{} {} {} {}",
                    f[0],
                    f[1],
                    if f[0].starts_with('d') { "-" } else { f[2] },
                    f[5..].join(" ")
                )
            })
            .collect();
        lines.sort();
        lines
    };
    let (a, b) = (listing(&ours_sq), listing(&theirs_sq));
    assert_eq!(a.len(), b.len(), "squashfs entry counts differ");
    assert!(a == b, "squashfs listings differ, e.g. {:?}", a.iter().zip(&b).find(|(x, y)| x != y));
    println!(
        "{:<22} {} entries, identical listings (unsquashfs -lln)",
        "  squashfs check",
        a.len()
    );

    // layers -> cpio.gz
    let ours_cpio = work.join("ours.cpio.gz");
    let t_ours_cpio = best(RUNS, || {
        let tree = build_tree(&opts);
        let mut out = std::io::BufWriter::new(std::fs::File::create(&ours_cpio).unwrap());
        write_compressed(&tree, CpioCompression::Gzip, &mut out).unwrap();
    });
    let theirs_cpio = work.join("theirs.cpio.gz");
    let t_theirs_cpio = best(RUNS, || {
        sh(&format!(
            "{} && cd {} && find . | cpio -o -H newc --quiet | gzip > {}",
            extract(&dir),
            dir.display(),
            theirs_cpio.display()
        ))
    });
    report("layers -> cpio.gz", t_ours_cpio, t_theirs_cpio, "tar -xzf + find|cpio -o|gzip");
    println!(
        "{:<22} ours {} MB, cpio|gzip {} MB",
        "  cpio.gz size",
        du(&ours_cpio) >> 20,
        du(&theirs_cpio) >> 20
    );
    let names = |f: &Path| {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "gzip -dc {} | cpio -it --quiet | sed 's|^\\./||' | grep -vx '\\.' | sort",
                f.display()
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (a, b) = (names(&ours_cpio), names(&theirs_cpio));
    assert!(a == b, "cpio member lists differ");
    println!("{:<22} {} members, identical names (cpio -it)", "  cpio check", a.lines().count());

    // pull from a local registry
    let reg = common::Registry::start();
    let target = format!("{}/bench/kernel:v1", reg.host());
    push_layout(&opts, &layout, "latest", &target).unwrap();
    let pull_cache = work.join("pull-cache");
    let t_ours_pull = best(2 * RUNS, || {
        let _ = std::fs::remove_dir_all(&pull_cache);
        let o = OciOptions { cache_dir: pull_cache.clone(), ..opts.clone() };
        oci::resolve(&o, &target).unwrap();
    });
    let skopeo_dest = work.join("skopeo");
    let t_skopeo = best(2 * RUNS, || {
        sh(&format!(
            "rm -rf {0} && skopeo copy -q --src-tls-verify=false docker://{target} oci:{0}:latest",
            skopeo_dest.display()
        ))
    });
    report("pull (local registry)", t_ours_pull, t_skopeo, "skopeo copy docker:// -> oci:");
    drop(reg);

    // cached rebuild of an unchanged manifest
    let manifest_path = work.join("m.yml");
    std::fs::write(
        &manifest_path,
        common::manifest_with_rootfs(&format!("rootfs:\n  format: cpio\n  images: [\"{r}\"]\n")),
    )
    .unwrap();
    let manifest = manifest::load(&manifest_path).unwrap();
    let out = work.join("built.cpio.gz");
    let first = Instant::now();
    let rep = rpixen::rootfs::build(
        &opts,
        &manifest,
        RootfsFormat::Cpio,
        &mut std::fs::File::create(&out).unwrap(),
    )
    .unwrap();
    let t_first = first.elapsed();
    assert!(!rep.cached);
    let t_cached = best(RUNS, || {
        let rep = rpixen::rootfs::build(
            &opts,
            &manifest,
            RootfsFormat::Cpio,
            &mut std::fs::File::create(&out).unwrap(),
        )
        .unwrap();
        assert!(rep.cached);
    });
    println!(
        "{:<22} first build {:.2} s, cached rebuild {:.3} s{}",
        "rootfs::build",
        t_first.as_secs_f64(),
        t_cached.as_secs_f64(),
        if t_cached < Duration::from_secs(1) { " (under 1 s)" } else { "  (over the 1 s target)" }
    );
    let _ = std::fs::remove_dir_all(&work);
}
