//! The container as a user without our host tools builds it: from a fresh `git clone`, the local
//! stand-in for the Rust image (scripts/rust-base-image.sh: debootstrap + the pinned toolchain,
//! `docker import`), then `docker build` of the Dockerfile's default target (`ARTIFACTS=source`:
//! rpixen and every package built inside the container). Its `docker run --rm rpixen live` must write
//! the same bytes as the clone's `make live` (the native build of the same board), and boot in QEMU to
//! Dom0's readiness line.
//!
//! About 15 minutes on a 2-core machine, most of it compiling rpixen's dependencies inside the
//! container: outside `make test` (ignored), run by `make test-source-build`.
//!
//! The engine is the test's own and goes with it; the image it built stays as a `docker save` archive,
//! `$RPIXEN_TEST_CACHE/rpixen-source-image.tar` (`docker load -i` it; the docker bench measures it
//! with `RPIXEN_DOCKER_IMAGE`, instead of building its own).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::pkg_flow::{board, make, xdg_cache, BOOT_LIMIT, FAILURES, READY, SERIAL};

const BASE_TAG: &str = "rpixen-rust-test:1.95-bookworm";
const TAG: &str = "rpixen-source-test";
/// Where the built image is kept, in the test cache.
const SAVED: &str = "rpixen-source-image.tar";

fn mb(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1e6)
}

#[test]
#[ignore = "about 15 minutes: make test-source-build"]
fn source_build_from_a_clean_clone_matches_make_live_and_boots() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let root = testkit::repo_root();
    let tmp = tempfile::tempdir_in(testkit::cache_dir()).unwrap();
    let clone = tmp.path().join("rpixen");
    testkit::run(
        Command::new("git").args(["clone", "-q", "--no-hardlinks"]).arg(&root).arg(&clone),
    );
    let dockerd = testkit::Dockerd::start();

    let started = Instant::now();
    let status = Command::new("bash")
        .arg(clone.join("scripts/rust-base-image.sh"))
        .arg(BASE_TAG)
        .env("DOCKER", "/usr/bin/docker")
        .env("DOCKER_HOST", &dockerd.host)
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .unwrap();
    assert!(status.success(), "scripts/rust-base-image.sh failed");
    let base_time = started.elapsed();

    // The default target: no ARTIFACTS argument.
    let started = Instant::now();
    let status = dockerd
        .command()
        .current_dir(&clone)
        .args(["build", "--progress=plain", "--network=host", "--build-arg"])
        .arg(format!("RUST_IMAGE={BASE_TAG}"))
        .args(["-t", TAG, "."])
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .unwrap();
    assert!(status.success(), "docker build of the default (source) target failed");
    let build_time = started.elapsed();
    let (base_size, image_size) = (dockerd.image_size(BASE_TAG), dockerd.image_size(TAG));
    eprintln!(
        "source build: base image {} in {base_time:?}, docker build {} in {build_time:?}",
        mb(base_size),
        mb(image_size)
    );

    // The user's command, as the README gives it; stdout is the image.
    let board = board();
    let started = Instant::now();
    let out = dockerd
        .command()
        .args(["run", "--rm", TAG, "live", &board])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "docker run {TAG} live failed");
    eprintln!("docker run --rm {TAG} live {board}: {:?}", started.elapsed());
    let image = tmp.path().join("container-live.raw");
    std::fs::write(&image, &out.stdout).unwrap();

    // The native build of the same board from the same clone. Crates.io dependencies come from this
    // checkout's target folder; the clone's own crates (rpixen, dom0-init, the hypervisor) are built
    // from the clone's sources.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    make(&clone, &["live"], &[("CARGO_TARGET_DIR", &target), ("XDG_CACHE_HOME", &xdg_cache())]);
    let native = std::fs::read(clone.join("dist/live.raw")).unwrap();
    assert!(
        out.stdout.len() == native.len() && out.stdout == native,
        "docker run {TAG} live ({} bytes) differs from make live ({} bytes); cmp {} {}",
        out.stdout.len(),
        native.len(),
        image.display(),
        clone.join("dist/live.raw").display()
    );
    drop(out);

    // U-Boot from the container's own package, as `make run` takes it from dist/pkg.
    let uboot = tmp.path().join("u-boot.bin");
    let o = dockerd.docker(&[
        "run",
        "--rm",
        TAG,
        "pkg",
        "cat",
        "u-boot",
        "u-boot/qemu_arm64/u-boot.bin",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(&uboot, &o.stdout).unwrap();
    // Kept past the engine, whose data goes with it: the image the test proved equal to `make live`.
    let saved = testkit::cache_dir().join(SAVED);
    let o = dockerd.command().args(["save", "-o"]).arg(&saved).arg(TAG).output().unwrap();
    assert!(o.status.success(), "docker save {TAG}: {}", String::from_utf8_lossy(&o.stderr));
    eprintln!("image {TAG} saved as {}", saved.display());
    drop(dockerd);

    let started = Instant::now();
    let args = testkit::QemuArgs::virt().bios(&uboot).disk(&image).no_reboot();
    let mut q = testkit::Qemu::start_with(&args, 1);
    let ready = q.wait_for(READY, FAILURES, BOOT_LIMIT).unwrap_or_else(|e| panic!("{e}"));
    assert!(ready.output.contains("with script"), "U-Boot did not run boot.scr:\n{}", ready.output);
    eprintln!(
        "container-built image ({board}): Dom0 ready {:?} after QEMU started",
        started.elapsed()
    );
}
