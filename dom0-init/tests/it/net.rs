//! A flashed device joins the network: `rpixen live` images booted the whole way (Debian's U-Boot
//! as `-bios` → boot.scr → Debian's Xen → Dom0 with dom0-init) on QEMU `virt` with user networking
//! and the guest's port 22 forwarded to the host.
//!
//! - NoCloud files, written onto the boot FAT with `mcopy` under the names rpi-imager uses, give
//!   the host name and the SSH key; the real `ssh` client logs in with that key (a password is
//!   refused); the address came from QEMU's DHCP server; SNTP from a server on the host's loopback
//!   sets the clock.
//! - Without NoCloud files: DHCP and root's key from CONFIG's `authorized_keys`.
//! - Bad input (malformed files, an unknown key, a missing file): one clear console line each,
//!   and the device is still reachable with the defaults.
//!
//! QEMU has no Wi-Fi device: the Wi-Fi path is covered by `net::wpa`'s unit tests only.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rpixen::oci::layout::{Compression, ImageBuilder};

pub(crate) const FAILURES: &[&str] =
    &["Kernel panic", "dom0-init: BUG", "Attempted to kill init", "(XEN) Panic"];
pub(crate) const BOOT_LIMIT: Duration = Duration::from_secs(420);
/// The time the test's SNTP server gives: 2033-05-18, well after any build of this image.
const SNTP_TIME: u64 = 2_000_000_000;

/// One boot at a time (TCG boots starve each other on a small machine).
static ONE_BOOT: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub(crate) fn one_boot() -> std::sync::MutexGuard<'static, ()> {
    ONE_BOOT.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) struct Fixture {
    pub(crate) dir: PathBuf,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dom0-init-net").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fx = Fixture { dir };
        fx.layout("pkg/dom0-init", |root| {
            std::fs::create_dir_all(root.join("sbin")).unwrap();
            std::fs::copy(testkit::aarch64_dom0_init(), root.join("sbin/dom0-init")).unwrap();
        });
        fx.layout("busybox", |root| {
            std::fs::create_dir_all(root.join("bin")).unwrap();
            let busybox = testkit::debian_package("busybox-static").join("usr/bin/busybox");
            std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
            for applet in ["sh", "ash", "cat", "date", "hostname", "id", "ls", "poweroff", "sleep"]
            {
                std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
            }
        });
        // Until modalias coldplug lands, the drivers are listed in `init.modules`.
        fx.layout("modules", |root| {
            let release = testkit::test_kernel_modules();
            let dest = root.join("lib/modules").join(release.file_name().unwrap());
            for m in [
                "modules.builtin",
                "kernel/drivers/virtio/virtio_mmio.ko.xz",
                "kernel/drivers/block/virtio_blk.ko.xz",
                "kernel/net/core/failover.ko.xz",
                "kernel/drivers/net/net_failover.ko.xz",
                "kernel/drivers/net/virtio_net.ko.xz",
                "kernel/fs/fat/fat.ko.xz",
                "kernel/fs/fat/vfat.ko.xz",
                "kernel/fs/nls/nls_cp437.ko.xz",
                "kernel/fs/nls/nls_ascii.ko.xz",
            ] {
                std::fs::create_dir_all(dest.join(m).parent().unwrap()).unwrap();
                std::fs::copy(release.join(m), dest.join(m)).unwrap();
            }
        });
        // The real dropbear package, built from its pkg.yml.
        let dropbear = fx.dir.join("dropbear");
        testkit::run(
            testkit::rpixen_command()
                .args(["pkg", "build"])
                .arg(testkit::repo_root().join("pkg/dropbear"))
                .arg("-o")
                .arg(&dropbear)
                .arg("--cache")
                .arg(testkit::pkg_cache()),
        );
        fx
    }

    fn layout(&self, name: &str, fill: impl FnOnce(&Path)) {
        let staging = self.dir.join("staging").join(name);
        std::fs::create_dir_all(&staging).unwrap();
        fill(&staging);
        ImageBuilder::new()
            .layer_from_dir(&staging, Compression::Gzip)
            .unwrap()
            .write(&self.dir.join(name), "latest")
            .unwrap();
    }

    /// `live.raw` from a manifest whose network services are those of `images/qemu-virt.yml`, with
    /// PERSIST formatted (first-boot formatting is not part of this test).
    fn live(&self, ntp_port: u16) -> PathBuf {
        let images: Vec<String> = ["busybox", "modules", "dropbear"]
            .iter()
            .map(|i| format!("\"oci:{}\"", self.dir.join(i).display()))
            .collect();
        let manifest = format!(
            r#"board:
  kind: qemu-virt
  uboot: {{file: {uboot}}}
  console: serial0
hypervisor:
  kind: xen
  binary: {{file: {xen}}}
  cmdline: "console=dtuart dtuart=serial0 sync_console dom0_max_vcpus=2"
dom0:
  kernel: {{file: {kernel}}}
  cmdline: "console=hvc0 rdinit=/init"
  memory: 512M
rootfs:
  format: cpio
  images: [{images}]
init:
  hostname: rpixen
  modules: [virtio_mmio, virtio_blk, virtio_net, vfat, nls_cp437, nls_ascii]
  onboot:
    - {{name: nocloud, command: [/proc/self/exe, nocloud]}}
  services:
    - {{name: network, command: [/proc/self/exe, network]}}
    - {{name: sshd, command: [/proc/self/exe, sshd]}}
  network:
    ntp: ["10.0.2.2:{ntp_port}"]
    wait_ms: 60000
partitions: {{boot: 64M, imga: 64M, imgb: 64M, config: 8M, persist: 16M}}
"#,
            uboot = testkit::uboot_qemu().display(),
            xen = testkit::debian_package("xen-hypervisor-4.20-arm64")
                .join("boot/xen-4.20-arm64")
                .display(),
            kernel = testkit::test_kernel_image().display(),
            images = images.join(", "),
        );
        let m = self.dir.join("m.yml");
        std::fs::write(&m, manifest).unwrap();
        let disk = self.dir.join("live.raw");
        let mut cmd = testkit::rpixen_command();
        cmd.args(["live", m.to_str().unwrap(), "-o", disk.to_str().unwrap()])
            .env("RPIXEN_PKG_DIR", self.dir.join("pkg"))
            .env("XDG_CACHE_HOME", self.dir.join("cache"));
        testkit::run(&mut cmd);
        let (start, size) = partition(&disk, "PERSIST");
        testkit::run(
            Command::new("mkfs.vfat")
                .args(["-n", "PERSIST", "--offset", &start.to_string()])
                .arg(&disk)
                .arg((size / 2).to_string()),
        );
        disk
    }

    /// An ed25519 key pair made by ssh-keygen: (private key path, public key line).
    pub(crate) fn key(&self, name: &str) -> (PathBuf, String) {
        let path = self.dir.join(name);
        testkit::run(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                .arg(&path),
        );
        let public = std::fs::read_to_string(path.with_extension("pub")).unwrap().trim().to_owned();
        (path, public)
    }

    /// Copies `files` (name, contents) into the partition `label` with mtools, as rpi-imager would.
    pub(crate) fn mcopy(&self, disk: &Path, label: &str, files: &[(&str, &str)]) {
        let (start, _) = partition(disk, label);
        for (name, text) in files {
            let src = self.dir.join("mcopy").join(name);
            std::fs::create_dir_all(src.parent().unwrap()).unwrap();
            std::fs::write(&src, text).unwrap();
            testkit::run(
                Command::new("mcopy")
                    .arg("-o")
                    .arg("-i")
                    .arg(format!("{}@@{}", disk.display(), start * 512))
                    .arg(&src)
                    .arg(format!("::{name}")),
            );
        }
    }
}

/// Start sector and size in sectors of the partition named `label` (`sgdisk -p`).
pub(crate) fn partition(disk: &Path, label: &str) -> (u64, u64) {
    let table = testkit::run(Command::new("sgdisk").arg("-p").arg(disk));
    let line = table
        .lines()
        .find(|l| l.split_whitespace().last() == Some(label))
        .unwrap_or_else(|| panic!("{table}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    let (start, end): (u64, u64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
    (start, end - start + 1)
}

pub(crate) fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A minimal SNTP server on the host's loopback (the guest reaches it as 10.0.2.2): answers every
/// request with [`SNTP_TIME`], echoing the client's transmit time as RFC 4330 requires.
fn sntp_server() -> u16 {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 128];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            if n < 48 {
                continue;
            }
            let mut reply = [0u8; 48];
            reply[0] = (4 << 3) | 4; // version 4, server
            reply[1] = 2; // stratum
            reply[24..32].copy_from_slice(&buf[40..48]);
            let ntp_secs = (SNTP_TIME + 2_208_988_800) << 32;
            reply[32..40].copy_from_slice(&ntp_secs.to_be_bytes());
            reply[40..48].copy_from_slice(&ntp_secs.to_be_bytes());
            let _ = sock.send_to(&reply, from);
        }
    });
    port
}

/// Boots `disk` with user networking; the human monitor listens on the Unix socket `monitor`.
fn boot(disk: &Path, ssh_port: u16, monitor: &Path) -> testkit::Qemu {
    let args = testkit::QemuArgs::virt()
        .bios(&testkit::uboot_qemu())
        .disk(disk)
        .user_net(&[(ssh_port, 22)])
        .monitor_socket(monitor);
    testkit::Qemu::start_with(&args, 1)
}

/// Waits until `text` appears `count` times on the console.
fn wait_count(q: &testkit::Qemu, text: &str, count: usize, limit: Duration) {
    let start = Instant::now();
    while q.output().matches(text).count() < count {
        assert!(start.elapsed() < limit, "{text:?} not seen {count} times:\n{}", q.output());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `ssh` with the test's key in batch mode (never a prompt), host keys not recorded.
pub(crate) fn ssh(
    port: u16,
    key: &Path,
    user: &str,
    extra: &[&str],
    command: &str,
) -> std::process::Output {
    Command::new("ssh")
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args(["-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR", "-o", "IdentitiesOnly=yes"])
        .arg("-i")
        .arg(key)
        .args(["-p", &port.to_string()])
        .args(extra)
        .arg(format!("{user}@127.0.0.1"))
        .arg(command)
        .output()
        .unwrap()
}

/// `pi` logs in with `key` only: the server offers no password method at all, and a key user-data did
/// not name is refused.
pub(crate) fn assert_keys_only(fx: &Fixture, ssh_port: u16, key: &Path) {
    let password_only = [
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        "PreferredAuthentications=password,keyboard-interactive",
    ];
    let pw = ssh(ssh_port, key, "pi", &password_only, "true");
    let err = String::from_utf8_lossy(&pw.stderr);
    assert!(!pw.status.success(), "a login without the key succeeded");
    assert!(err.contains("Permission denied (publickey)"), "only publickey is offered: {err}");
    let (other, _) = fx.key("stranger");
    assert!(!ssh(ssh_port, &other, "pi", &[], "true").status.success(), "an unknown key got in");
}

/// Logs in until it works (the server may start after the readiness line); the output, and when
/// the first login succeeded.
pub(crate) fn ssh_until_up(
    q: &testkit::Qemu,
    port: u16,
    key: &Path,
    user: &str,
    command: &str,
) -> (String, Instant) {
    let start = Instant::now();
    loop {
        let out = ssh(port, key, user, &[], command);
        if out.status.success() {
            return (String::from_utf8_lossy(&out.stdout).into_owned(), Instant::now());
        }
        let console = q.output();
        if let Some(f) = FAILURES.iter().find(|f| console.contains(**f)) {
            panic!("{f} on the console:\n{console}");
        }
        if start.elapsed() > Duration::from_secs(120) {
            panic!(
                "ssh {user}@ never got in: {}\nconsole:\n{console}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

pub(crate) fn dom0_part(out: &str) -> &str {
    &out[out.find("dom0-init: starting").unwrap_or(0)..]
}

/// The NoCloud trio as rpi-imager's `generateCloudInitUserData`/`NetworkConfig` write them.
pub(crate) fn imager_files(public_key: &str) -> [(&'static str, String); 3] {
    [
        ("meta-data", "instance-id: rpi-imager-1764151234567\n".to_owned()),
        (
            "user-data",
            format!(
                "#cloud-config\nhostname: fleet-dev-1\nmanage_etc_hosts: true\npackages:\n- avahi-daemon\napt:\n  conf: |\n    Acquire {{\n      Check-Date \"false\";\n    }};\ntimezone: Europe/London\nenable_ssh: true\nusers:\n- name: pi\n  groups: users,adm,dialout,audio,netdev,video,plugdev,cdrom,games,input,gpio,spi,i2c,render,sudo\n  shell: /bin/bash\n  lock_passwd: true\n  ssh_authorized_keys:\n    - {public_key}\n  sudo: ALL=(ALL) NOPASSWD:ALL\n"
            ),
        ),
        ("network-config", "network:\n  version: 2\n  ethernets:\n    eth0:\n      dhcp4: true\n      optional: true\n".to_owned()),
    ]
}

#[test]
fn nocloud_hostname_and_key_then_ssh_over_dhcp() {
    let fx = Fixture::new("nocloud");
    let (key, public) = fx.key("operator");
    let ntp_port = sntp_server();
    let disk = fx.live(ntp_port);
    let files = imager_files(&public);
    let refs: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    fx.mcopy(&disk, "BOOT", &refs);
    // The boot FAT stays valid for fsck.fat after mtools wrote to it.
    let (bstart, bsize) = partition(&disk, "BOOT");
    let fat = fx.dir.join("boot.fat");
    testkit::run(
        Command::new("dd")
            .arg(format!("if={}", disk.display()))
            .arg(format!("of={}", fat.display()))
            .args(["bs=512", &format!("skip={bstart}"), &format!("count={bsize}"), "status=none"]),
    );
    testkit::run(Command::new("fsck.fat").arg("-n").arg(&fat));

    let ssh_port = free_tcp_port();
    let _turn = one_boot();
    let started = Instant::now();
    let mut q = boot(&disk, ssh_port, &fx.dir.join("monitor"));
    let ready =
        q.wait_for("rpixen: dom0 ready", FAILURES, BOOT_LIMIT).unwrap_or_else(|e| panic!("{e}"));
    let (out, up_at) =
        ssh_until_up(&q, ssh_port, &key, "pi", "hostname; id -u; cat /etc/resolv.conf; date +%s");
    let accepting = up_at.duration_since(started);
    let console = q.output();
    let console = dom0_part(&console);
    eprintln!("{console}");
    eprintln!("QEMU start -> SSH login accepted: {} ms", accepting.as_millis());
    let readiness =
        ready.output.lines().find(|l| l.contains("rpixen: dom0 ready")).unwrap().to_owned();
    eprintln!("{readiness}");

    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("fleet-dev-1"), "hostname from user-data:\n{out}");
    assert_eq!(lines.next(), Some("1000"), "logged in as user-data's `pi`:\n{out}");
    assert!(out.contains("nameserver 10.0.2.3"), "DNS from QEMU's DHCP server:\n{out}");
    let now: u64 = out.lines().last().unwrap().trim().parse().unwrap();
    assert!((SNTP_TIME..SNTP_TIME + 600).contains(&now), "clock set by SNTP: {now}\n{console}");
    assert!(
        readiness.contains("network eth0 10.0.2.15/24 dhcp from 10.0.2.2 in "),
        "the lease came from QEMU's DHCP server: {readiness}"
    );
    assert!(console.contains("[network] eth0: lease 10.0.2.15/24 from 10.0.2.2"), "{console}");
    assert!(
        console.contains(&format!("[network] clock set by SNTP from 10.0.2.2:{ntp_port}")),
        "{console}"
    );
    assert!(
        console.contains("[nocloud] meta-data: instance-id rpi-imager-1764151234567"),
        "{console}"
    );
    assert!(
        console.contains("[nocloud] user-data: key `packages` not supported, skipped"),
        "{console}"
    );
    assert!(
        console
            .contains("[sshd] made host key /persist/ssh/dropbear_ed25519_host_key on first boot"),
        "{console}"
    );

    assert_keys_only(&fx, ssh_port, &key);
    // Root has no key from this configuration.
    let root = ssh(ssh_port, &key, "root", &[], "true");
    assert!(!root.status.success(), "root logged in with pi's key");

    // The cable pulled and put back (QEMU's link state): the address goes, then a new lease.
    let socket = fx.dir.join("monitor");
    testkit::monitor_command(&socket, "set_link n off");
    wait_count(&q, "[network] eth0: link down", 1, Duration::from_secs(60));
    testkit::monitor_command(&socket, "set_link n on");
    wait_count(&q, "[network] eth0: link up", 2, Duration::from_secs(60));
    wait_count(&q, "[network] eth0: lease 10.0.2.15/24 from 10.0.2.2", 2, Duration::from_secs(60));
    let (again, _) = ssh_until_up(&q, ssh_port, &key, "pi", "hostname");
    assert_eq!(again, "fleet-dev-1\n");
}

#[test]
fn without_nocloud_dhcp_and_config_keys_bad_input_reported() {
    let fx = Fixture::new("config-keys");
    let (key, public) = fx.key("ops");
    let disk = fx.live(sntp_server());
    fx.mcopy(
        &disk,
        "CONFIG",
        &[("authorized_keys", &format!("# EVE-style root keys\n{public}\n"))],
    );

    // First boot: no NoCloud files at all.
    let ssh_port = free_tcp_port();
    {
        let _turn = one_boot();
        let mut q = boot(&disk, ssh_port, &fx.dir.join("monitor"));
        let ready = q
            .wait_for("rpixen: dom0 ready", FAILURES, BOOT_LIMIT)
            .unwrap_or_else(|e| panic!("{e}"));
        let (out, _) = ssh_until_up(&q, ssh_port, &key, "root", "hostname; id -u");
        let console = q.output();
        let console = dom0_part(&console);
        eprintln!("{console}");
        assert_eq!(out, "rpixen\n0\n", "the image's host name, root with CONFIG's key");
        assert!(console.contains("[nocloud] boot FAT /dev/vda1: no NoCloud files (meta-data, user-data, network-config)"), "{console}");
        assert!(
            ready.output.contains("network eth0 10.0.2.15/24 dhcp from 10.0.2.2"),
            "{}",
            ready.output
        );
        // An orderly power-off over SSH (busybox `poweroff` signals PID 1), so PERSIST's FAT is
        // clean for the second boot.
        ssh(ssh_port, &key, "root", &[], "poweroff");
        let status = q.wait_exit(Duration::from_secs(120)).unwrap();
        assert!(status.success(), "QEMU exit status {status}");
    }

    // Second boot: a malformed user-data, a network-config with an unknown key, a malformed
    // network-config on CONFIG, no meta-data.
    fx.mcopy(
        &disk,
        "BOOT",
        &[
            ("user-data", "#cloud-config\nhostname: [not, closed\n"),
            ("network-config", "network:\n  version: 2\n  renderer: networkd\n  ethernets:\n    eth0: {dhcp4: true}\n"),
        ],
    );
    fx.mcopy(
        &disk,
        "CONFIG",
        &[(
            "network-config",
            "network:\n  version: 2\n  ethernets:\n    eth0: {addresses: [10.0.2.99]}\n",
        )],
    );
    let _turn = one_boot();
    let mut q = boot(&disk, ssh_port, &fx.dir.join("monitor"));
    q.wait_for("rpixen: dom0 ready", FAILURES, BOOT_LIMIT).unwrap_or_else(|e| panic!("{e}"));
    let (out, _) = ssh_until_up(&q, ssh_port, &key, "root", "hostname");
    let console = q.output();
    let console = dom0_part(&console);
    eprintln!("{console}");
    assert_eq!(out, "rpixen\n", "defaults after bad input");
    for line in [
        "[nocloud] boot FAT /dev/vda1: no meta-data (skipped)",
        "[nocloud] user-data: malformed, ignored: ",
        "[nocloud] CONFIG network-config: malformed, ignored: ethernets.eth0.addresses[0]: `10.0.2.99` has no /PREFIX",
        "[nocloud] network-config: unknown key `network.renderer` skipped",
        "[sshd] host key /persist/ssh/dropbear_ed25519_host_key: ",
    ] {
        assert!(console.contains(line), "missing {line:?}:\n{console}");
    }
    assert!(
        !console.contains("made host key"),
        "host keys kept on PERSIST from the first boot:\n{console}"
    );
}
