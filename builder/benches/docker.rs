//! `cargo bench -p rpixen --bench docker`: the container's overhead. `docker run --rm rpixen live`
//! (the user's command, image on stdout) against the native `rpixen live` of the same board with the
//! same packages, timed in one run (interleaved rounds, medians), in a Docker engine of the bench's
//! own. The image is built as `make docker` builds it, or, with `RPIXEN_DOCKER_IMAGE=FILE`, loaded
//! from a `docker save` archive (`make test-source-build` leaves the one it built and checked in the
//! test cache): a container build costs minutes of CPU that the measurement does not need. Skips,
//! saying why, only when Docker is not installed.

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
    let work = tempfile::tempdir_in(testkit::cache_dir()).unwrap();
    let started = Instant::now();
    let pkg = match std::env::var_os("RPIXEN_DOCKER_IMAGE") {
        Some(saved) => load(&dockerd, Path::new(&saved), &work.path().join("pkg")),
        None => make_docker(&dockerd, &root),
    };
    eprintln!("image {TAG} ready: {:?}", started.elapsed());

    let native_rpixen = Path::new(env!("CARGO_BIN_EXE_rpixen"));
    let (in_docker, native) = (work.path().join("docker.raw"), work.path().join("native.raw"));
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
                        .env("RPIXEN_PKG_DIR", &pkg),
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

/// `make docker` into the bench's engine, tagged TAG; returns the packages it put in the image.
fn make_docker(dockerd: &testkit::Dockerd, root: &Path) -> PathBuf {
    let status = Command::new("make")
        .current_dir(root)
        .args(["docker", &format!("DOCKER_TAG={TAG}")])
        .env("XDG_CACHE_HOME", xdg_cache())
        .env("DOCKER_HOST", &dockerd.host)
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .unwrap();
    assert!(status.success(), "make docker failed");
    root.join("dist/pkg")
}

/// Loads a `docker save` archive and tags its image TAG; returns the image's own packages, copied out
/// into `pkg`, so the native run reads the same bytes as the container.
fn load(dockerd: &testkit::Dockerd, saved: &Path, pkg: &Path) -> PathBuf {
    let o = dockerd.command().args(["load", "-i"]).arg(saved).output().unwrap();
    assert!(o.status.success(), "docker load -i {}: {}", saved.display(), testkit::output_text(&o));
    let loaded = loaded_image(&String::from_utf8_lossy(&o.stdout))
        .unwrap_or_else(|| panic!("docker load -i {}: no image in its output", saved.display()));
    let docker = |args: &[&str]| {
        let o = dockerd.docker(args);
        assert!(o.status.success(), "docker {args:?}: {}", testkit::output_text(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    docker(&["tag", &loaded, TAG]);
    // A FROM scratch image has no shell to run; a created container is enough to copy from.
    let container = docker(&["create", TAG]);
    docker(&["cp", &format!("{container}:/usr/share/rpixen/pkg"), pkg.to_str().unwrap()]);
    docker(&["rm", &container]);
    pkg.to_owned()
}

/// The image `docker load` names: `Loaded image: NAME:TAG` (or `Loaded image ID: sha256:…`).
fn loaded_image(out: &str) -> Option<String> {
    out.lines()
        .filter_map(|l| {
            l.strip_prefix("Loaded image: ").or_else(|| l.strip_prefix("Loaded image ID: "))
        })
        .map(|s| s.trim().to_owned())
        .next()
}
