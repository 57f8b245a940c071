//! A Docker engine of a test's own (Debian's docker.io with the vfs driver): socket, state and data
//! under /tmp and the test cache, stopped by PID and removed on drop, so two runs never share images
//! and a developer's own engine is never touched.
//!
//! `RPIXEN_DOCKERD_DATA=DIR` keeps the engine's data (images, BuildKit's cache) in DIR across runs,
//! for a developer re-running a container test: the base image is kept and a source change rebuilds
//! only our crates. One engine at a time may use a DIR.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::cache_dir;

const DOCKERD: &str = "/usr/sbin/dockerd";
/// BuildKit's client: Debian's docker.io puts it there (`docker build` with `DOCKER_BUILDKIT=1`).
const DOCKER: &str = "/usr/bin/docker";

pub struct Dockerd {
    child: Child,
    /// `unix://…` for `DOCKER_HOST`.
    pub host: String,
    state: PathBuf,
}

impl Dockerd {
    /// Why no engine can be started here (`None`: it can): for benches, which skip with the reason.
    pub fn unavailable() -> Option<String> {
        for tool in [DOCKERD, DOCKER] {
            if !Path::new(tool).exists() {
                return Some(format!("{tool} missing: scripts/setup-host.sh installs docker.io"));
            }
        }
        None
    }

    pub fn start() -> Dockerd {
        if let Some(why) = Dockerd::unavailable() {
            panic!("{why}");
        }
        // All state is this process's own (two test runs may overlap) and removed on drop, the data
        // too unless RPIXEN_DOCKERD_DATA puts it elsewhere. Socket paths are limited to 108 bytes,
        // hence /tmp.
        let exec = PathBuf::from(format!("/tmp/rpixen-dockerd-{}", std::process::id()));
        let data = std::env::var_os("RPIXEN_DOCKERD_DATA")
            .map(PathBuf::from)
            .unwrap_or_else(|| exec.join("data"));
        std::fs::create_dir_all(&exec).expect("dockerd state folder");
        let sock = exec.join("docker.sock");
        let log_path = cache_dir().join(format!("dockerd-{}.log", std::process::id()));
        let log = std::fs::File::create(&log_path).expect("dockerd log");
        let child = Command::new(DOCKERD)
            .args(["--storage-driver", "vfs", "--iptables=false", "--bridge=none"])
            // Apart from any system dockerd sharing a system containerd.
            .args([
                "--containerd-namespace",
                "rpixen-test",
                "--containerd-plugins-namespace",
                "rpixen-test-plugins",
            ])
            .arg("--data-root")
            .arg(&data)
            .arg("--exec-root")
            .arg(exec.join("exec"))
            .arg("--pidfile")
            .arg(exec.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .stdout(log.try_clone().expect("dockerd log"))
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let d = Dockerd { child, host: format!("unix://{}", sock.display()), state: exec };
        let start = Instant::now();
        while !d.docker(&["info"]).status.success() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "dockerd did not come up (see {})",
                log_path.display()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        d
    }

    /// The docker CLI talking to this engine, with BuildKit.
    pub fn command(&self) -> Command {
        let mut c = Command::new(DOCKER);
        c.env("DOCKER_HOST", &self.host).env("DOCKER_BUILDKIT", "1");
        c
    }

    pub fn docker(&self, args: &[&str]) -> std::process::Output {
        self.command().args(args).output().expect("run docker")
    }

    /// An image's size in bytes, as `docker image inspect` reports it (uncompressed layers).
    pub fn image_size(&self, tag: &str) -> u64 {
        let o = self.docker(&["image", "inspect", "-f", "{{.Size}}", tag]);
        assert!(
            o.status.success(),
            "docker image inspect {tag}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().parse().expect("image size")
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SIGTERM lets dockerd stop its containerd; SIGKILL only if it hangs.
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.state);
    }
}
