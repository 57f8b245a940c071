//! Helpers for integration tests that run real programs: QEMU boots with their serial lines captured to
//! files, and the pinned Debian arm64 packages the boots need.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod dockerd;
mod qemu_args;
pub use dockerd::Dockerd;
pub use qemu_args::{QemuArgs, VIRT_MACHINE};

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit sits in the workspace")
        .to_owned()
}

/// Where tests keep downloads and build outputs that outlive one test run.
pub fn cache_dir() -> PathBuf {
    let dir = std::env::var_os("RPIXEN_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/test-cache"));
    std::fs::create_dir_all(&dir).expect("create the test cache");
    dir
}

/// Runs a command to completion and returns its stdout; panics with its stderr when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A QEMU process whose serial ports write to files; killed (by PID) when dropped.
pub struct Qemu {
    child: Child,
    serial_logs: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

/// What a boot printed, and why waiting stopped.
#[derive(Debug)]
pub struct BootOutcome {
    pub output: String,
    pub elapsed: Duration,
}

impl Qemu {
    /// Starts `qemu-system-aarch64` with `args` plus `serials` serial ports, each logged to its own file.
    pub fn start(args: &[&str], serials: usize) -> Qemu {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new("qemu-system-aarch64");
        cmd.args(["-display", "none", "-monitor", "none"]);
        let mut serial_logs = Vec::new();
        for i in 0..serials {
            let log = dir.path().join(format!("serial{i}.log"));
            std::fs::write(&log, b"").expect("create serial log");
            cmd.arg("-serial").arg(format!("file:{}", log.display()));
            serial_logs.push(log);
        }
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start qemu-system-aarch64: {e}"));
        Qemu { child, serial_logs, _dir: dir }
    }

    /// Starts QEMU with a built argument list (see [`QemuArgs`]).
    pub fn start_with(args: &QemuArgs, serials: usize) -> Qemu {
        let args = args.build();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Qemu::start(&args, serials)
    }

    /// Everything the serial ports printed so far, port 0 first.
    pub fn output(&self) -> String {
        let mut all = String::new();
        for log in &self.serial_logs {
            let mut bytes = Vec::new();
            if let Ok(mut f) = std::fs::File::open(log) {
                let _ = f.read_to_end(&mut bytes);
            }
            all.push_str(&String::from_utf8_lossy(&bytes));
        }
        all
    }

    /// The output of one serial port.
    pub fn serial(&self, port: usize) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.serial_logs[port]).unwrap_or_default())
            .into_owned()
    }

    /// Waits until `marker` appears on a serial port. Fails early when one of `failures` appears or
    /// QEMU exits, and after `limit` of wall-clock time.
    pub fn wait_for(
        &mut self,
        marker: &str,
        failures: &[&str],
        limit: Duration,
    ) -> Result<BootOutcome, String> {
        let start = Instant::now();
        loop {
            let output = self.output();
            if output.contains(marker) {
                return Ok(BootOutcome { output, elapsed: start.elapsed() });
            }
            if let Some(f) = failures.iter().find(|f| output.contains(**f)) {
                return Err(format!("failure pattern {f:?} on the console:\n{}", tail(&output)));
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let output = self.output();
                if output.contains(marker) {
                    return Ok(BootOutcome { output, elapsed: start.elapsed() });
                }
                return Err(format!(
                    "QEMU exited ({status}) before {marker:?}:\n{}\n{}",
                    tail(&output),
                    self.stderr()
                ));
            }
            if start.elapsed() > limit {
                return Err(format!("no {marker:?} within {limit:?}:\n{}", tail(&output)));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for QEMU to exit by itself (for example after a guest PSCI SYSTEM_OFF).
    pub fn wait_exit(&mut self, limit: Duration) -> Result<std::process::ExitStatus, String> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Ok(status);
            }
            if start.elapsed() > limit {
                return Err(format!(
                    "QEMU still running after {limit:?}:\n{}",
                    tail(&self.output())
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(e) = self.child.stderr.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One command to QEMU's human monitor on `socket` (see [`QemuArgs::monitor_socket`]), e.g.
/// `set_link n off` or `device_add virtio-rng-pci,bus=rp1`.
pub fn monitor_command(socket: &Path, command: &str) {
    use std::io::Write;
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("QEMU monitor {}: {e}", socket.display()));
    s.write_all(format!("{command}\n").as_bytes()).expect("write to the QEMU monitor");
    // The monitor acts on the line once it has read it; give it that moment before hanging up.
    std::thread::sleep(Duration::from_millis(500));
}

fn tail(s: &str) -> &str {
    let start = s.len().saturating_sub(6000);
    let start = (start..s.len()).find(|i| s.is_char_boundary(*i)).unwrap_or(s.len());
    &s[start..]
}

/// A pinned Debian arm64 package, unpacked; fetched once into the test cache.
/// (`linux-image-6.12.117+deb13-arm64`, `u-boot-qemu`, `u-boot-rpi`, `busybox-static`,
/// `raspi-firmware`, `xen-hypervisor-4.20-arm64`: any `.deb` a `pkg/*/pkg.yml` pins.)
///
/// Goes through `rpixen pkg fetch`, so the same pins, sha256 checks and download cache serve the tests
/// and the package builds.
pub fn debian_package(name: &str) -> PathBuf {
    let dest = cache_dir().join("debs");
    let dir = dest.join(name);
    if !dir.join(".done").exists() {
        run(rpixen_command()
            .args(["pkg", "fetch", "--deb", name, "--unpack"])
            .arg(&dest)
            .arg("--cache")
            .arg(pkg_cache()));
    }
    dir
}

/// Debian's U-Boot for QEMU `virt` (`u-boot-qemu`, `qemu_arm64`), what tests start as `-bios`.
pub fn uboot_qemu() -> PathBuf {
    debian_package("u-boot-qemu").join("usr/lib/u-boot/qemu_arm64/u-boot.bin")
}

/// Debian's U-Boot for the Raspberry Pi 4 (`u-boot-rpi`, `rpi_arm64`), what raspi4b boots as
/// `-kernel`.
pub fn uboot_rpi() -> PathBuf {
    debian_package("u-boot-rpi").join("usr/lib/u-boot/rpi_arm64/u-boot.bin")
}

/// The download cache tests share (`.deb` files by sha256, apt's private indexes).
pub fn pkg_cache() -> PathBuf {
    cache_dir().join("pkg-cache")
}

/// The `rpixen` that `make test`'s own `cargo test --workspace --release` built (it sets `RPIXEN_BIN`).
/// A `cargo run -p rpixen` from inside that run would build rpixen again, because features unify
/// differently for one package than for the workspace: minutes of LTO for the same program.
fn prebuilt_rpixen() -> Option<PathBuf> {
    let bin = PathBuf::from(std::env::var_os("RPIXEN_BIN")?);
    bin.is_file().then_some(bin)
}

/// `rpixen` run from the workspace root through `cargo run` (the profile this test kit was built with),
/// for helpers in crates that cannot name the `rpixen` binary themselves.
pub fn rpixen_command() -> Command {
    if let Some(bin) = prebuilt_rpixen() {
        // The same working directory as `cargo run` below: callers pass paths relative to the repo.
        let mut cmd = Command::new(bin);
        cmd.current_dir(repo_root());
        return cmd;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root()).args(["run", "-q", "-p", "rpixen"]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    cmd.arg("--");
    cmd
}

/// Builds dom0-init as it is packaged (static aarch64 musl, `release-small`) and returns its path.
pub fn aarch64_dom0_init() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(Command::new(cargo).current_dir(repo_root()).args([
        "build",
        "-q",
        "-p",
        "dom0-init",
        "--target",
        "aarch64-unknown-linux-musl",
        "--profile",
        "release-small",
    ]));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("aarch64-unknown-linux-musl/release-small/dom0-init")
}

/// The Debian kernel package every test and bench boots or reads DTBs from (pinned by `pkg/kernel`).
pub const TEST_KERNEL: &str = "linux-image-6.12.117+deb13-arm64";

/// The unpacked [`TEST_KERNEL`] package.
pub fn test_kernel_package() -> PathBuf {
    debian_package(TEST_KERNEL)
}

/// The arm64 kernel Image of [`TEST_KERNEL`] (gzip-compressed, as Debian ships it).
pub fn test_kernel_image() -> PathBuf {
    let version = TEST_KERNEL.trim_start_matches("linux-image-");
    test_kernel_package().join(format!("boot/vmlinuz-{version}"))
}

/// The module tree of [`TEST_KERNEL`] (`usr/lib/modules/RELEASE`, holding `kernel/` and `modules.*`).
pub fn test_kernel_modules() -> PathBuf {
    let version = TEST_KERNEL.trim_start_matches("linux-image-");
    test_kernel_package().join(format!("usr/lib/modules/{version}"))
}

/// The Raspberry Pi 4 device tree of [`TEST_KERNEL`].
pub fn test_kernel_rpi4_dtb() -> PathBuf {
    test_kernel_package().join(format!("usr/lib/{TEST_KERNEL}/broadcom/bcm2711-rpi-4-b.dtb"))
}

/// A board manifest (`images/qemu-virt.yml`) whose `rootfs:` section is replaced by `rootfs_yaml`.
pub fn qemu_virt_manifest_with_rootfs(rootfs_yaml: &str) -> String {
    let base = std::fs::read_to_string(repo_root().join("images/qemu-virt.yml"))
        .expect("images/qemu-virt.yml");
    let start = base.find("\nrootfs:\n").expect("qemu-virt.yml has a rootfs section") + 1;
    let end = start + base[start..].find("\ninit:").expect("init follows rootfs") + 1;
    format!("{}{}{}", &base[..start], rootfs_yaml, &base[end..])
}

/// A `docker-registry` (Debian's distribution registry) on 127.0.0.1 with its storage in a temp dir;
/// killed by PID when dropped.
pub struct Registry {
    child: Child,
    pub port: u16,
    pub storage: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_with_htpasswd(None)
    }

    /// With `Some((user, bcrypt_hash))`, the registry requires HTTP basic auth against that htpasswd
    /// line.
    pub fn start_with_htpasswd(auth: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let auth_yaml = match auth {
            Some((user, hash)) => {
                let htpasswd = dir.path().join("htpasswd");
                std::fs::write(&htpasswd, format!("{user}:{hash}\n")).expect("write htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: rpixen-test\n    path: {}\n",
                    htpasswd.display()
                )
            }
            None => String::new(),
        };
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).expect("registry storage");
        // The kernel picks a free port; we release it and give it to the registry (a small race,
        // retried).
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
                     delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth_yaml}",
                    storage.display()
                ),
            )
            .expect("registry config");
            let log = std::fs::File::create(dir.path().join("registry.log")).expect("registry log");
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("registry log"))
                .stderr(log)
                .spawn()
                .expect("docker-registry (Debian package docker-registry) must be installed");
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Registry { child, port, storage, _dir: dir };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "docker-registry did not start:\n{}",
            std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default()
        );
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The stored file of a blob, as the filesystem driver lays it out.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.storage.join(format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cosign key pair made by `cosign generate-key-pair` (cosign 2.5, Debian trixie) in its own folder,
/// and cosign run offline against loopback registries: no transparency log, plain HTTP, a private
/// HOME so nothing is read from or cached in the user's.
pub struct CosignKeys {
    dir: tempfile::TempDir,
    pub password: String,
}

impl CosignKeys {
    pub fn generate(password: &str) -> CosignKeys {
        let keys =
            CosignKeys { dir: tempfile::tempdir().expect("tempdir"), password: password.into() };
        let out = keys.cosign(&["generate-key-pair"]);
        assert!(out.status.success(), "cosign generate-key-pair: {}", output_text(&out));
        keys
    }

    /// `cosign.key` (encrypted with [`CosignKeys::password`]).
    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("cosign.key")
    }

    /// `cosign.pub`.
    pub fn pub_path(&self) -> PathBuf {
        self.dir.path().join("cosign.pub")
    }

    /// Runs cosign with this pair's password in `COSIGN_PASSWORD`.
    pub fn cosign(&self, args: &[&str]) -> std::process::Output {
        Command::new("cosign")
            .args(args)
            .current_dir(self.dir.path())
            .env("COSIGN_PASSWORD", &self.password)
            .env("HOME", self.dir.path())
            .output()
            .expect("cosign (Debian trixie package cosign) must be installed")
    }

    /// `cosign sign --key` of a reference in a loopback registry; panics when cosign fails.
    pub fn sign(&self, reference: &str) {
        let key = self.key_path();
        let out = self.cosign(&[
            "sign",
            "--key",
            key.to_str().expect("utf-8 temp path"),
            "--tlog-upload=false",
            "--allow-http-registry",
            "--allow-insecure-registry",
            "--yes",
            reference,
        ]);
        assert!(out.status.success(), "cosign sign {reference}: {}", output_text(&out));
    }

    /// `cosign verify --key` of a reference in a loopback registry; the caller checks the status.
    pub fn verify(&self, reference: &str) -> std::process::Output {
        let key = self.pub_path();
        self.cosign(&[
            "verify",
            "--key",
            key.to_str().expect("utf-8 temp path"),
            "--insecure-ignore-tlog",
            "--allow-http-registry",
            "--allow-insecure-registry",
            reference,
        ])
    }
}

/// stdout and stderr of a finished command, for assertion messages.
pub fn output_text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `rpixen pkg build pkg/NAME -o DIR/NAME` for each of `names`, with the shared download cache, so
/// that `RPIXEN_PKG_DIR=DIR rpixen live BOARD` builds the board image a user gets from `make live`.
/// `rpixen` is the binary at `rpixen` (a test's `CARGO_BIN_EXE_rpixen` or `target/release/rpixen`).
/// Built anew on every call: the packages follow this checkout's pkg.yml files and sources.
pub fn build_packages(rpixen: &Path, dir: &Path, names: &[&str]) -> PathBuf {
    std::fs::create_dir_all(dir).expect("package folder");
    for name in names {
        run(Command::new(rpixen)
            .current_dir(repo_root())
            .args(["pkg", "build", &format!("pkg/{name}"), "--cache"])
            .arg(pkg_cache())
            .arg("-o")
            .arg(dir.join(name)));
    }
    dir.to_owned()
}

/// The release `rpixen` binary of this checkout, built first (for crates that cannot name it).
pub fn rpixen_release_binary() -> PathBuf {
    if let Some(bin) = prebuilt_rpixen() {
        return bin;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(Command::new(cargo).current_dir(repo_root()).args([
        "build",
        "-q",
        "--release",
        "-p",
        "rpixen",
    ]));
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
        .join("release/rpixen")
}

/// For `make bench`: times the contenders in turns (one warm-up round, then `runs` rounds of each
/// once), so load from other processes on a shared machine hits all of them alike; returns each one's
/// median.
pub fn race<const N: usize>(runs: usize, mut contenders: [&mut dyn FnMut(); N]) -> [Duration; N] {
    // The warm-up round puts every contender's inputs in the page cache.
    for f in contenders.iter_mut() {
        f();
    }
    let mut times: [Vec<Duration>; N] = std::array::from_fn(|_| Vec::new());
    for _ in 0..runs {
        for (f, t) in contenders.iter_mut().zip(times.iter_mut()) {
            let start = Instant::now();
            f();
            t.push(start.elapsed());
        }
    }
    times.map(|mut v| {
        v.sort();
        v[v.len() / 2]
    })
}
