//! Static DomUs under Xen 4.20 (dom0less), from the image `rpixen live` writes: QEMU `virt` with
//! `-smp 4`, Debian's U-Boot running our boot script, which loads Dom0 and two DomUs and writes their
//! `/chosen/<name>` `xen,domain` nodes. Dom0 and both DomUs are initramfs root filesystems built from
//! OCI layouts (busybox, and the real aarch64 `dom0-init` as PID 1). The console is a socket, so the
//! test types: CTRL-a three times moves Xen's serial input to a DomU, whose console shell answers.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rpixen::oci::layout::{Compression, ImageBuilder};

use crate::image_support::run_rpixen;
use testkit::uboot_qemu;

pub(crate) const READY: &str = "rpixen: dom0 ready";
pub(crate) const FAILURES: &[&str] = &[
    "Kernel panic",
    "(XEN) Panic",
    "rpixen: cannot load",
    "Unknown command",
    "dom0-init: BUG",
    "Attempted to kill init",
];
/// TCG runs three kernels on four vCPUs here; the machine is shared, so the limit is generous.
pub(crate) const BOOT_LIMIT: Duration = Duration::from_secs(900);

/// A QEMU whose serial line is a Unix socket (for typing) and a log file (for reading).
pub(crate) struct Console {
    _qemu: testkit::Qemu,
    log: PathBuf,
    socket: UnixStream,
    pub(crate) started: Instant,
    _dir: tempfile::TempDir,
}

impl Console {
    pub(crate) fn start(args: testkit::QemuArgs) -> Console {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("console.sock");
        let log = dir.path().join("console.log");
        let chardev = format!(
            "socket,id=con,path={},server=on,wait=off,logfile={},logappend=off",
            sock.display(),
            log.display()
        );
        let args = args.args(&["-chardev", &chardev, "-serial", "chardev:con"]);
        let started = Instant::now();
        let qemu = testkit::Qemu::start_with(&args, 0);
        let socket = loop {
            match UnixStream::connect(&sock) {
                Ok(s) => break s,
                Err(_) if started.elapsed() < Duration::from_secs(30) => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => panic!("QEMU's console socket {}: {e}", sock.display()),
            }
        };
        // QEMU holds guest output back while the socket's buffer is full, and the log only gets what
        // was sent: drain the socket so the guest never stalls.
        let mut reader = socket.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
        });
        Console { _qemu: qemu, log, socket, started, _dir: dir }
    }

    pub(crate) fn output(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Waits until `done` holds for the output after byte `from`; fails on a failure pattern.
    pub(crate) fn wait(
        &self,
        from: usize,
        what: &str,
        limit: Duration,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let start = Instant::now();
        loop {
            let out = self.output();
            let tail = out.get(from..).unwrap_or("");
            if done(tail) {
                return out;
            }
            if let Some(f) = FAILURES.iter().find(|f| tail.contains(**f)) {
                panic!("failure pattern {f:?} while waiting for {what}:\n{}", last(&out));
            }
            if start.elapsed() > limit {
                panic!("no {what} within {limit:?}:\n{}", last(&out));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn send(&mut self, bytes: &[u8]) {
        // One byte at a time with a pause: the emulated UART's FIFO is small.
        for b in bytes {
            self.socket.write_all(&[*b]).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub(crate) fn last(s: &str) -> &str {
    let start = s.len().saturating_sub(8000);
    let start = (start..s.len()).find(|i| s.is_char_boundary(*i)).unwrap_or(s.len());
    &s[start..]
}

/// Whether a console line is DomU `n`'s: Xen 4.20 prefixes each whole vpl011 line with
/// `(XEN) DOMn: ` (later Xen versions with `(dn) `).
pub(crate) fn from_domu(line: &str, n: u32) -> bool {
    line.contains(&format!("DOM{n}: ")) || line.contains(&format!("(d{n}) "))
}

/// The readiness lines, by domain: DomU-prefixed lines are the DomUs', the rest Dom0's.
pub(crate) fn ready_domains(out: &str) -> (bool, bool, bool) {
    let mut seen = (false, false, false);
    for line in out.lines().filter(|l| l.contains(READY)) {
        if from_domu(line, 1) {
            seen.1 = true;
        } else if from_domu(line, 2) {
            seen.2 = true;
        } else {
            seen.0 = true;
        }
    }
    seen
}

/// An OCI layout at `dir/name` whose one layer is the folder `fill` populates.
fn layout(dir: &Path, name: &str, fill: impl FnOnce(&Path)) -> PathBuf {
    let staging = dir.join("staging").join(name);
    std::fs::create_dir_all(&staging).unwrap();
    fill(&staging);
    let out = dir.join(name);
    ImageBuilder::new()
        .layer_from_dir(&staging, Compression::Gzip)
        .unwrap()
        .write(&out, "latest")
        .unwrap();
    out
}

fn domain_yaml(name: &str, busybox: &Path) -> String {
    format!(
        r#"  - name: {name}
    kernel: {{file: {kernel}}}
    cmdline: "console=ttyAMA0 rdinit=/init"
    memory: 256M
    cpus: 1
    console: true
    rootfs:
      images: ["oci:{busybox}"]
      files:
        - {{path: /etc/hostname, contents: "{name}\n"}}
    init:
      hostname: {name}
      console_shell: [/bin/sh]
"#,
        kernel = testkit::test_kernel_image().display(),
        busybox = busybox.display(),
    )
}

/// `rpixen live` of the two-DomU image (Dom0 and DomUs `edge1`, `edge2` from OCI layouts of busybox
/// and the real aarch64 `dom0-init`) with hypervisor `(kind, binary)`, in `d`; returns the image.
pub(crate) fn domus_image(d: &Path, hypervisor: (&str, &Path)) -> PathBuf {
    let (hv_kind, hv_binary) = hypervisor;
    // The `dom0-init` package as `make pkgs` lays it out, and busybox with the applets the shells use.
    layout(d, "pkg/dom0-init", |root| {
        std::fs::create_dir_all(root.join("sbin")).unwrap();
        std::fs::copy(testkit::aarch64_dom0_init(), root.join("sbin/dom0-init")).unwrap();
    });
    let busybox = layout(d, "busybox", |root| {
        std::fs::create_dir_all(root.join("bin")).unwrap();
        let bb = testkit::debian_package("busybox-static").join("usr/bin/busybox");
        std::fs::copy(bb, root.join("bin/busybox")).unwrap();
        for applet in ["sh", "echo", "cat", "hostname", "reboot", "poweroff", "sleep", "uptime"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
    });
    let manifest = d.join("domus.yml");
    std::fs::write(
        &manifest,
        format!(
            r#"board:
  kind: qemu-virt
  uboot: {{file: {uboot}}}
  console: serial0
  cpus: 4
  memory: 2G
hypervisor:
  kind: {hv_kind}
  binary: {{file: {hv_binary}}}
  cmdline: "console=dtuart dtuart=serial0 sync_console dom0_mem=512M dom0_max_vcpus=2"
dom0:
  kernel: {{file: {kernel}}}
  cmdline: "console=hvc0 console=ttyAMA0 rdinit=/init"
  memory: 512M
rootfs:
  format: cpio
  images: ["oci:{busybox}"]
init:
  hostname: rpixen
  console_shell: [/bin/sh]
domains:
{edge1}{edge2}partitions: {{boot: 64M, imga: 128M, imgb: 128M, config: 8M, persist: 16M}}
"#,
            uboot = uboot_qemu().display(),
            hv_binary = hv_binary.display(),
            kernel = testkit::test_kernel_image().display(),
            busybox = busybox.display(),
            edge1 = domain_yaml("edge1", &busybox),
            edge2 = domain_yaml("edge2", &busybox),
        ),
    )
    .unwrap();
    let img = d.join("live.raw");
    let pkg_dir = d.join("pkg");
    let cache = d.join("cache");
    let o = run_rpixen(
        &["live", manifest.to_str().unwrap(), "-o", img.to_str().unwrap()],
        &[
            ("RPIXEN_PKG_DIR", pkg_dir.to_str().unwrap()),
            ("XDG_CACHE_HOME", cache.to_str().unwrap()),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    img
}

#[test]
fn xen_boots_dom0_and_two_domus_from_the_live_image() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let xen = testkit::debian_package("xen-hypervisor-4.20-arm64").join("boot/xen-4.20-arm64");
    let img = domus_image(d, ("xen", &xen));

    let args = testkit::QemuArgs::virt().smp(4).bios(&uboot_qemu()).disk(&img);
    let _turn = crate::image_qemu::one_boot();
    let mut con = Console::start(args);
    let out = con
        .wait(0, "three readiness lines", BOOT_LIMIT, |o| ready_domains(o) == (true, true, true));
    let all_ready = con.started.elapsed();
    for line in [
        "rpixen: loading edge1 kernel Image",
        "rpixen: loading edge1 initrd domains/edge1/initrd.img",
        "rpixen: loading edge2 initrd domains/edge2/initrd.img",
        "(XEN) Xen version 4.20",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{}", last(&out));
    }
    // Xen read both nodes: its dom0less loader names each DomU's vCPUs and memory (256M = 0x40000 KiB).
    let loading: Vec<&str> = out.lines().filter(|l| l.contains("LOADING DOMU")).collect();
    assert_eq!(loading.len(), 2, "{}", last(&out));
    assert!(
        loading.iter().all(|l| l.contains("cpus=1") && l.contains("memory=0x40000KB")),
        "{loading:?}"
    );
    eprintln!("Xen 4.20: QEMU start to Dom0 + 2 DomUs ready: {all_ready:?}");
    for line in out.lines().filter(|l| l.contains(READY)) {
        eprintln!("  {line}");
    }

    // CTRL-a three times moves Xen's serial input on (Dom0, then the DomUs, then Xen itself).
    let switch_to = |con: &mut Console, target: &str| {
        for _ in 0..5 {
            let from = con.output().len();
            con.send(b"\x01\x01\x01");
            let out = con.wait(from, "Xen's input switch", Duration::from_secs(60), |o| {
                o.contains("*** Serial input to")
            });
            if out[from..].contains(&format!("*** Serial input to {target}")) {
                return;
            }
        }
        panic!("CTRL-a never reached {target}:\n{}", last(&con.output()));
    };
    // Xen prints the focused DomU's output as it arrives, prefixed `(XEN) ` only; the answer names
    // the domain (its hostname), and d1 is the manifest's first domain.
    switch_to(&mut con, "DOM1");
    let from = con.output().len();
    con.send(b"echo typed-into-$(hostname)\n");
    con.wait(from, "the DomU shell's answer", Duration::from_secs(120), |o| {
        o.lines().any(|l| l.contains("typed-into-edge1") && !l.contains("$("))
    });

    // A DomU's reboot: Xen's dom0less cannot restart a boot-time domain. Record what it does.
    let reboot_at = con.output().len();
    con.send(b"reboot\n");
    std::thread::sleep(Duration::from_secs(20));
    let out = con.output();
    let after: Vec<&str> = out[reboot_at..].lines().filter(|l| !l.trim().is_empty()).collect();
    eprintln!("after `reboot` in d1, Xen's console:\n{}", after.join("\n"));
    // The other DomU still answers.
    switch_to(&mut con, "DOM2");
    let from = con.output().len();
    con.send(b"echo still-here-$(hostname)\n");
    con.wait(from, "the other DomU's answer", Duration::from_secs(120), |o| {
        o.lines().any(|l| l.contains("still-here-edge2") && !l.contains("$("))
    });
    let out = con.output();
    assert!(
        !out[reboot_at..].lines().any(|l| from_domu(l, 1) && l.contains(READY)),
        "Xen restarted d1 (dom0less is not expected to):\n{}",
        last(&out)
    );
}

/// The builder side alone, for our hypervisor's image kind: `rpixen live` with two domains writes
/// their files to the boot FAT (the kernel Dom0 also runs stored once), the second stage has their
/// nodes, `rpixen inspect` lists them, and the FAT passes `fsck.fat -n`.
#[test]
fn live_image_carries_the_domains() {
    use rpixen::oci::layout::LayerTar;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pkg_dir = d.join("pkg");
    crate::common::fake_dom0_init(&pkg_dir, "#!/bin/sh\necho fake init\n");
    let mut layer = LayerTar::new();
    layer.dir("bin", 0o755).file("bin/sh", b"not a shell", 0o755);
    let app = d.join("app");
    ImageBuilder::new()
        .layer(&layer.finish(), Compression::Gzip)
        .unwrap()
        .write(&app, "latest")
        .unwrap();
    std::fs::write(d.join("Other"), crate::image_support::fake_arm64_image(3_000_000, 9)).unwrap();
    let domains = format!(
        "domains:\n\
         \x20 - {{name: web, kernel: {{file: Image}}, cmdline: \"console=ttyAMA0\", memory: 128M, console: true, rootfs: {{images: [\"oci:{app}\"]}}}}\n\
         \x20 - {{name: db, kernel: {{file: Other}}, memory: 256M, cpus: 2, static_mem: {{base: 0x90000000, size: 256M}}, rootfs: {{images: [\"oci:{app}\"]}}, init: {{hostname: db}}}}\n",
        app = app.display()
    );
    let s = crate::image_support::synthetic(d, &domains);
    let img = d.join("live.raw");
    let o = run_rpixen(
        &[
            "live",
            s.manifest.to_str().unwrap(),
            "--initrd",
            s.initrd.to_str().unwrap(),
            "-o",
            img.to_str().unwrap(),
        ],
        &[
            ("RPIXEN_PKG_DIR", pkg_dir.to_str().unwrap()),
            ("XDG_CACHE_HOME", d.join("cache").to_str().unwrap()),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let o = run_rpixen(&["inspect", "--json", img.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let doms = j["domains"].as_array().unwrap();
    assert_eq!(doms.len(), 2, "{j}");
    assert_eq!(doms[0]["name"], "web");
    assert_eq!(doms[0]["memory_kib"], 128 << 10);
    assert_eq!(doms[0]["vpl011"], true);
    assert_eq!(doms[0]["files"], serde_json::json!(["Image", "domains/web/initrd.img"]));
    assert_eq!(doms[1]["cpus"], 2);
    assert_eq!(doms[1]["static_mem"], serde_json::json!([0x9000_0000u64, 256u64 << 20]));
    assert_eq!(doms[1]["files"], serde_json::json!(["domains/db/Other", "domains/db/initrd.img"]));
    // Slot A (IMGA), the second FAT: the Image both Dom0 and web load is stored once.
    let files: Vec<&str> = j["filesystems"][1]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(files.iter().filter(|f| f.ends_with("Image")).count(), 1, "{files:?}");
    let table =
        String::from_utf8_lossy(&run_rpixen(&["inspect", img.to_str().unwrap()], &[]).stdout)
            .into_owned();
    assert!(
        table.contains(
            "  web: memory 128 MiB, 1 vCPU, vpl011 console, files Image domains/web/initrd.img"
        ),
        "{table}"
    );

    // The DomU initramfs is the same pipeline's: init.yml and dom0-init as /init, read by GNU cpio.
    // The DomU files sit in the slot, IMGA (after the 64 MiB boot partition at 1 MiB).
    let drive_at = format!("{}@@65M", img.display());
    let initrd = d.join("db-initrd.img");
    testkit::run(
        std::process::Command::new("mcopy")
            .args(["-i", &drive_at, "::domains/db/initrd.img"])
            .arg(&initrd),
    );
    let listing = crate::common::cpio_list(&initrd);
    assert!(
        crate::common::has(&listing, "init") && crate::common::has(&listing, "bin/sh"),
        "{listing}"
    );
    assert!(crate::common::cpio_cat(&initrd, "etc/rpixen/init.yml").contains("hostname: db"));
    let fat = d.join("slot.fat");
    crate::image_support::extract(&img, 65 << 20, 16 << 20, &fat);
    let fsck = std::process::Command::new("fsck.fat").arg("-n").arg(&fat).output().unwrap();
    assert!(fsck.status.success(), "{}", String::from_utf8_lossy(&fsck.stdout));
}
