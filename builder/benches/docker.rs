//! `cargo bench -p rpixen --bench docker`: the container's overhead. `docker run --rm rpixen live`
//! (the user's command, image on stdout) against the native `rpixen live` of the same board with the
//! same packages, timed in one run (interleaved rounds, medians). The container image is built as
//! `make docker` builds it, by a Docker engine of the bench's own. Skips, saying why, only when
//! Docker is not installed.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 5;
const TAG: &str = "rpixen-bench";
const BOARD: &str = "qemu-virt";

/// `$XDG_CACHE_HOME` whose `rpixen/` is the tests' download cache, so `make pkgs` downloads nothing
/// the tests already fetched.
fn xdg_cache() -> PathBuf {
    let xdg = testkit::cache_dir().join("xdg");
    std::fs::create_dir_all(&xdg).unwrap();
    let link = xdg.join("rpixen");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink(testkit::pkg_cache(), &link).unwrap();
    }
    xdg
}

/// Runs `cmd` with stdout into `out`; panics on failure.
fn to_file(cmd: &mut Command, out: &Path) {
    let status = cmd
        .stdout(File::create(out).unwrap())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed ({status})");
}

fn main() {
    if let Some(why) = testkit::Dockerd::unavailable() {
        println!("docker bench: skipped: {why}");
        return;
    }
    let root = testkit::repo_root();
    let dockerd = testkit::Dockerd::start();
    let started = Instant::now();
    let status = Command::new("make")
        .current_dir(&root)
        .args(["docker", &format!("DOCKER_TAG={TAG}")])
        .env("XDG_CACHE_HOME", xdg_cache())
        .env("DOCKER_HOST", &dockerd.host)
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .unwrap();
    assert!(status.success(), "make docker failed");
    eprintln!("make docker: {:?}", started.elapsed());

    let native_rpixen = Path::new(env!("CARGO_BIN_EXE_rpixen"));
    let dir = tempfile::tempdir_in(testkit::cache_dir()).unwrap();
    let (in_docker, native) = (dir.path().join("docker.raw"), dir.path().join("native.raw"));
    let [t_docker, t_native] = testkit::race(
        RUNS,
        [
            &mut || {
                to_file(dockerd.command().args(["run", "--rm", TAG, "live", BOARD]), &in_docker)
            },
            &mut || {
                to_file(
                    Command::new(native_rpixen)
                        .current_dir(&root)
                        .args(["live", BOARD])
                        .env("RPIXEN_PKG_DIR", root.join("dist/pkg")),
                    &native,
                )
            },
        ],
    );
    // The same image both ways, or the comparison is void.
    testkit::run(Command::new("cmp").arg(&in_docker).arg(&native));

    let size = std::fs::metadata(&native).unwrap().len();
    let ms = |t: Duration| t.as_secs_f64() * 1e3;
    println!(
        "docker bench: `rpixen live {BOARD}` ({} MiB to stdout), median of {RUNS} interleaved rounds",
        size >> 20
    );
    println!("  docker run --rm {TAG} live : {:>8.1} ms", ms(t_docker));
    println!("  native rpixen live          : {:>8.1} ms", ms(t_native));
    println!(
        "  the container takes {:.2}x the native time (+{:.0} ms: engine, container start, stdout pipe)",
        t_docker.as_secs_f64() / t_native.as_secs_f64(),
        ms(t_docker.saturating_sub(t_native))
    );
}
