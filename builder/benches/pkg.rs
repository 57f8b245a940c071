//! `cargo bench -p rpixen --bench pkg`: our `.deb` reader (ar + xz + tar, no dpkg) against `dpkg-deb -x`
//! on the largest pinned package (Debian's arm64 linux-image, ~100 MB .deb, ~180 MB unpacked), and the
//! whole kernel package build (deb -> layer tar -> gzip OCI layout) from the cache, timed in one run.
//! Each figure is the best of a few runs (the machine is shared).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use rpixen::pkg::{PkgDef, PkgOptions};

const RUNS: usize = 3;

fn best(mut f: impl FnMut()) -> Duration {
    (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap()
}

fn main() {
    let repo = testkit::repo_root();
    let opts = PkgOptions::with_cache(testkit::pkg_cache());
    let def = PkgDef::load(&repo.join("pkg/kernel")).unwrap();
    let deb: PathBuf = rpixen::pkg::fetch(&def, &opts).unwrap().remove(0);
    let tmp = tempfile::tempdir().unwrap();

    let ours = best(|| {
        let d = tmp.path().join("ours");
        let _ = std::fs::remove_dir_all(&d);
        rpixen::pkg::deb::unpack_all(&deb, &d).unwrap();
    });
    let dpkg = best(|| {
        let d = tmp.path().join("dpkg");
        let _ = std::fs::remove_dir_all(&d);
        let st = Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&d).status().unwrap();
        assert!(st.success());
    });
    println!(
        "unpack linux-image .deb   ours {:>6.2} s   dpkg-deb -x {:>6.2} s   ratio {:.2}x",
        ours.as_secs_f64(),
        dpkg.as_secs_f64(),
        dpkg.as_secs_f64() / ours.as_secs_f64()
    );

    let mut offline = opts.clone();
    offline.offline = true;
    let build = best(|| {
        let out = tmp.path().join("kernel-layout");
        rpixen::pkg::build(&repo.join("pkg/kernel"), &out, &offline).unwrap();
    });
    println!("kernel package build from the cache (offline): {:.2} s", build.as_secs_f64());
}
