//! Shared by the `oci_*` tests: the test images they build with our layout writer, the checks run with
//! independent tools, and a real `docker-registry` started on 127.0.0.1 for the duration of a test.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rpixen::oci::layout::{Compression, EntryMeta, ImageBuilder, LayerTar};
use rpixen::oci::OciOptions;

/// Options with the cache and package folder inside `tmp`.
pub fn opts(tmp: &Path) -> OciOptions {
    OciOptions { cache_dir: tmp.join("cache"), pkg_dir: tmp.join("pkg"), progress: false, ..OciOptions::from_env() }
}

/// Three layers (gzip, uncompressed, zstd) exercising whiteouts, an opaque directory, a hard link, a
/// symlink written through, a device node, a setuid file with an xattr and a non-root owner.
pub fn layered_image() -> ImageBuilder {
    let mut l1 = LayerTar::new();
    l1.dir("etc", 0o755)
        .file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644)
        .file("etc/old", b"old", 0o644)
        .dir("opt/app", 0o755)
        .file("opt/app/lower", b"lower", 0o644)
        .dir("usr/lib", 0o755)
        .file("usr/lib/libc.so", b"libc", 0o755)
        .symlink("lib", "usr/lib")
        .file_with(
            "bin/ping",
            b"ping",
            &EntryMeta { mode: 0o4755, mtime: 7, xattrs: vec![("security.capability".into(), vec![1, 0, 0, 2])], ..Default::default() },
        );
    let mut l2 = LayerTar::new();
    l2.whiteout("etc/old")
        .opaque("opt/app")
        .file("opt/app/upper", b"upper", 0o600)
        .file("lib/libm.so", b"libm", 0o755)
        .file_with("home/user/f", b"mine", &EntryMeta { mode: 0o640, uid: 1000, gid: 100, ..Default::default() })
        .hardlink("bin/ping6", "bin/ping")
        .char_device("dev/console", 5, 1, 0o600)
        .block_device("dev/vda", 254, 0, 0o660)
        .fifo("run/initctl", 0o600);
    let mut l3 = LayerTar::new();
    l3.file("etc/motd", b"hello from zstd\n", 0o644);
    ImageBuilder::new()
        .layer(&l1.finish(), Compression::Gzip)
        .unwrap()
        .layer(&l2.finish(), Compression::None)
        .unwrap()
        .layer(&l3.finish(), Compression::Zstd)
        .unwrap()
}

/// Runs a shell command line; returns stdout, panics with stderr on failure.
pub fn sh(script: &str) -> String {
    testkit::run(Command::new("sh").arg("-c").arg(script))
}

/// `cpio -itv` listing (numeric owners) of a gzip- or zstd-compressed archive.
pub fn cpio_list(path: &Path) -> String {
    sh(&format!("(zstdcat -q {0} 2>/dev/null || gzip -dc {0}) | cpio -itv --numeric-uid-gid --quiet", path.display()))
}

/// One file's contents from a compressed cpio archive, read by GNU cpio.
pub fn cpio_cat(path: &Path, member: &str) -> String {
    sh(&format!("gzip -dc {} | cpio -i --to-stdout --quiet {member}", path.display()))
}

/// `unsquashfs -lln` listing.
pub fn squashfs_list(path: &Path) -> String {
    testkit::run(Command::new("unsquashfs").arg("-lln").arg(path))
}

/// The listing line whose last field is `name` (cpio) or ends with `/name` (unsquashfs).
pub fn line_for<'a>(listing: &'a str, name: &str) -> &'a str {
    listing
        .lines()
        .find(|l| {
            let last = l.split(" -> ").next().unwrap_or(l).split_whitespace().last().unwrap_or("");
            last == name || last.ends_with(&format!("/{name}"))
        })
        .unwrap_or_else(|| panic!("no `{name}` in:\n{listing}"))
}

pub fn has(listing: &str, name: &str) -> bool {
    listing.lines().any(|l| {
        let last = l.split(" -> ").next().unwrap_or(l).split_whitespace().last().unwrap_or("");
        last == name || last.ends_with(&format!("/{name}"))
    })
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
        Registry::start_with_auth(None)
    }

    /// With `Some((user, password))`, the registry requires HTTP basic auth (htpasswd, bcrypt).
    pub fn start_with_auth(auth: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let auth_yaml = match auth {
            Some((user, password)) => {
                let htpasswd = dir.path().join("htpasswd");
                let hash = bcrypt::hash(password, 4).unwrap();
                std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
                format!("auth:\n  htpasswd:\n    realm: rpixen-test\n    path: {}\n", htpasswd.display())
            }
            None => String::new(),
        };
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        // The kernel picks a free port; we release it and give it to the registry (a small race, retried).
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth_yaml}",
                    storage.display()
                ),
            )
            .unwrap();
            let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
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
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.storage.join(format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A board manifest (images/qemu-virt.yml) whose `rootfs:` section is replaced by `rootfs_yaml`.
pub fn manifest_with_rootfs(rootfs_yaml: &str) -> String {
    let base = std::fs::read_to_string(testkit::repo_root().join("images/qemu-virt.yml")).unwrap();
    let start = base.find("\nrootfs:\n").expect("qemu-virt.yml has a rootfs section") + 1;
    let end = start + base[start..].find("\ninit:").expect("init follows rootfs") + 1;
    format!("{}{}{}", &base[..start], rootfs_yaml, &base[end..])
}

/// A fake `dom0-init` package (a shell script at `sbin/dom0-init`) in `pkg_dir`.
pub fn fake_dom0_init(pkg_dir: &Path, script: &str) {
    let mut t = LayerTar::new();
    t.dir("sbin", 0o755).file("sbin/dom0-init", script.as_bytes(), 0o755);
    ImageBuilder::new().layer(&t.finish(), Compression::Gzip).unwrap().write(&pkg_dir.join("dom0-init"), "latest").unwrap();
}
