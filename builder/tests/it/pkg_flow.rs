//! The user-facing flows, run for real:
//! - from a fresh `git clone` of this repository, `make live` then the `make run` QEMU invocation boots
//!   to Dom0's readiness line;
//! - a Docker engine (Debian's docker.io, started here with the vfs driver) builds the `rpixen` image
//!   from the Dockerfile; `docker run --rm rpixen live > live.raw` writes the same bytes as `make live`,
//!   and that image boots in QEMU; `/in` and `/out` mounts work, for `installer_raw` too.
//!
//! Both are slow (cargo, package builds, a QEMU boot: about 7 minutes each on two cores); they run
//! one at a time, outside `make test` (ignored), by `make test-long`: CI's 40 minutes cannot hold
//! them beside the rest. CI's own run is a fresh clone running `make test`. The board is `make`'s
//! default (`qemu-virt`, our hypervisor); `BOARD=qemu-virt-xen` runs the same flows with Xen.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(crate) static SERIAL: Mutex<()> = Mutex::new(());

pub(crate) const READY: &str = "rpixen: dom0 ready";
pub(crate) const FAILURES: &[&str] =
    &["Kernel panic", "(XEN) Panic", "rpixen: cannot load", "Unknown command", "panicked at"];
pub(crate) const BOOT_LIMIT: Duration = Duration::from_secs(420);

/// The board under test: `$BOARD` as `make` reads it, else make's default.
pub(crate) fn board() -> String {
    std::env::var("BOARD").unwrap_or_else(|_| "qemu-virt".into())
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `make TARGETS` in `dir`, output on the test's stderr, with the shared test download cache.
pub(crate) fn make(dir: &Path, targets: &[&str], env: &[(&str, &Path)]) {
    let mut cmd = Command::new("make");
    cmd.current_dir(dir).args(targets).stdout(Stdio::from(std::io::stderr()));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let status = cmd.status().expect("run make");
    eprintln!("make {targets:?} in {}: {status} after {:?}", dir.display(), started.elapsed());
    assert!(status.success(), "make {targets:?} failed in {}", dir.display());
}

/// `$XDG_CACHE_HOME` whose `rpixen/` is the shared test download cache, so `make` needs no download that
/// another test already made.
pub(crate) fn xdg_cache() -> PathBuf {
    let xdg = testkit::cache_dir().join("xdg");
    std::fs::create_dir_all(&xdg).unwrap();
    let link = xdg.join("rpixen");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink(testkit::pkg_cache(), &link).unwrap();
    }
    xdg
}

/// Boots `image` with exactly the arguments `make run` uses (scripts/run-qemu.sh --args), serial to a
/// file, and waits for Dom0's readiness line.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn boot_to_ready(repo: &Path, rpixen: &Path, image: &Path) -> Duration {
    let run_dir = tempfile::tempdir().unwrap();
    let out = testkit::run(
        Command::new("bash")
            .arg(repo.join("scripts/run-qemu.sh"))
            .args(["--args", &board()])
            .arg(image)
            .current_dir(repo)
            .env("RPIXEN", rpixen)
            .env("RPIXEN_RUN_DIR", run_dir.path())
            // `make run`'s SSH forward on a free port: 2222 may be taken by a developer's `make run`.
            .env("RPIXEN_SSH_PORT", free_port().to_string()),
    );
    let args: Vec<&str> = out.lines().collect();
    let mut q = testkit::Qemu::start(&args, 1);
    let outcome = q.wait_for(READY, FAILURES, BOOT_LIMIT).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        outcome.output.contains("with script"),
        "U-Boot did not run boot.scr:\n{}",
        outcome.output
    );
    outcome.elapsed
}

#[test]
#[ignore = "about 7 minutes: make test-long"]
fn fresh_clone_make_live_and_run_boots_to_dom0_ready() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let root = testkit::repo_root();
    let tmp = tempfile::tempdir_in(testkit::cache_dir()).unwrap();
    let clone = tmp.path().join("rpixen");
    testkit::run(
        Command::new("git").args(["clone", "-q", "--no-hardlinks"]).arg(&root).arg(&clone),
    );
    // This checkout's target folder: crates.io dependencies are shared (building them again would cost
    // CI a quarter of an hour), while the clone's own crates are built anew from the clone's sources,
    // because cargo keys path crates by their location.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    make(&clone, &["live"], &[("CARGO_TARGET_DIR", &target), ("XDG_CACHE_HOME", &xdg_cache())]);
    let image = clone.join("dist/live.raw");
    assert!(image.is_file(), "make live wrote no dist/live.raw");
    // The release files of the same image; the used-card copy bmaptool makes from them is what boots
    // (one QEMU for both flows).
    let release = tmp.path().join("release");
    std::fs::create_dir_all(&release).unwrap();
    let rpixen = target.join("release/rpixen");
    let card = crate::release_flow::check_release(
        &rpixen,
        &clone,
        &[("XDG_CACHE_HOME", &xdg_cache())],
        &image,
        &release,
    );
    let took = boot_to_ready(&clone, &rpixen, &card);
    eprintln!("fresh clone: bmaptool's copy of `make live` on a used card: Dom0 ready {took:?} after QEMU started");
}

/// The partition named `name` of a GPT image, as an mtools `IMAGE@@OFFSET` drive.
fn partition(image: &Path, name: &str) -> String {
    let table = testkit::run(Command::new("partx").args(["-g", "-o", "START,NAME"]).arg(image));
    let start: u64 = table
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no partition {name} in:\n{table}"));
    format!("{}@@{}", image.display(), start * 512)
}

#[test]
#[ignore = "about 8 minutes: make test-long"]
fn docker_run_live_matches_make_live_and_boots() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let root = testkit::repo_root();
    let xdg = xdg_cache();
    let dockerd = testkit::Dockerd::start();
    let tag = "rpixen-test";
    let started = Instant::now();
    make(
        &root,
        &["live", "docker", &format!("DOCKER_TAG={tag}")],
        &[("XDG_CACHE_HOME", &xdg), ("DOCKER_HOST", Path::new(&dockerd.host))],
    );
    eprintln!("make live docker: {:?}", started.elapsed());
    let want = std::fs::read(root.join("dist/live.raw")).unwrap();

    // stdout carries only the image; every log line goes to stderr.
    let started = Instant::now();
    let board = board();
    let out = dockerd
        .command()
        .args(["run", "--rm", tag, "live", &board])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "docker run {tag} live failed");
    eprintln!("docker run live: {} bytes in {:?}", out.stdout.len(), started.elapsed());
    assert!(
        out.stdout.len() == want.len() && out.stdout == want,
        "docker run live differs from make live"
    );

    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("live.raw");
    std::fs::write(&image, &out.stdout).unwrap();
    drop(out);

    // /in overrides a CONFIG file, /out receives the image.
    let (in_dir, out_dir) = (tmp.path().join("in"), tmp.path().join("out"));
    std::fs::create_dir_all(in_dir.join("sub")).unwrap();
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::write(in_dir.join("sub/server"), b"zedcloud.example.invalid\n").unwrap();
    let o = dockerd.docker(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/in:ro", s(&in_dir)),
        "-v",
        &format!("{}:/out", s(&out_dir)),
        tag,
        "live",
        &board,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout.is_empty(), "with /out mounted stdout stays empty");
    let written = out_dir.join("live.raw");
    let config = testkit::run(
        Command::new("mtype").arg("-i").arg(partition(&written, "CONFIG")).arg("::/sub/server"),
    );
    assert_eq!(config, "zedcloud.example.invalid\n");

    // installer_raw takes the same mounts: /out receives installer.raw, whose CONFIG (copied to the
    // target by the installer) holds the /in file; tests/it/installer.rs boots one.
    let o = dockerd.docker(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/in:ro", s(&in_dir)),
        "-v",
        &format!("{}:/out", s(&out_dir)),
        tag,
        "installer_raw",
        &board,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let installer = out_dir.join("installer.raw");
    let config = testkit::run(
        Command::new("mtype").arg("-i").arg(partition(&installer, "CONFIG")).arg("::/sub/server"),
    );
    assert_eq!(config, "zedcloud.example.invalid\n");
    partition(&installer, "INSTALLER");
    let o = dockerd.docker(&["run", "--rm", tag, "version"]);
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("rpixen "), "{o:?}");

    let took = boot_to_ready(&root, &root.join("target/release/rpixen"), &image);
    eprintln!("docker-built image: Dom0 ready {took:?} after QEMU started");
}
