//! dom0-init booted by Debian's arm64 kernel on QEMU `virt` (no virtualization: the kernel is given
//! with `-kernel`), from root filesystems that `rpixen` builds out of OCI layouts:
//! - an initramfs (`rpixen rootfs --format cpio`): readiness line, modules, onboot order, services, and
//!   a service's busybox `poweroff` ends QEMU through init's orderly shutdown (PSCI SYSTEM_OFF);
//! - a squashfs rootfs in slot A of `rpixen live`'s disk (`rootfs.squashfs` on IMGA's FAT): the
//!   initramfs stage loads the block and filesystem modules, finds the slot `rpixen.slot=` names by
//!   GPT label, attaches the file to a loop device and switches into it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rpixen::oci::layout::{Compression, ImageBuilder};

use crate::modules::install_module_set;

const FAILURES: &[&str] = &["Kernel panic", "dom0-init: BUG", "Attempted to kill init"];

/// OCI layouts made with rpixen's layout writer, and the package folder holding `dom0-init`.
pub(crate) struct Fixture {
    pub(crate) dir: PathBuf,
}

impl Fixture {
    pub(crate) fn new(name: &str) -> Fixture {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dom0-init-qemu").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fx = Fixture { dir };
        // The `dom0-init` package, as `make pkgs` lays it out: sbin/dom0-init.
        fx.layout("pkg/dom0-init", |root| {
            std::fs::create_dir_all(root.join("sbin")).unwrap();
            std::fs::copy(testkit::aarch64_dom0_init(), root.join("sbin/dom0-init")).unwrap();
        });
        // busybox-static and the applets the configs use.
        fx.layout("busybox", |root| {
            std::fs::create_dir_all(root.join("bin")).unwrap();
            let busybox = testkit::debian_package("busybox-static").join("usr/bin/busybox");
            std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
            for applet in
                ["sh", "poweroff", "reboot", "cat", "echo", "sleep", "hostname", "grep", "ls"]
            {
                std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
            }
        });
        // A few real modules as the kernel package lays them out (vfat needs fat; no modules.dep).
        fx.layout("modules", |root| {
            let release = testkit::test_kernel_modules();
            let dest = root.join("lib/modules").join(release.file_name().unwrap());
            for m in [
                "modules.builtin",
                "kernel/fs/fat/fat.ko.xz",
                "kernel/fs/fat/vfat.ko.xz",
                "kernel/fs/nls/nls_cp437.ko.xz",
                "kernel/fs/nls/nls_ascii.ko.xz",
                "kernel/fs/overlayfs/overlay.ko.xz",
                "kernel/fs/squashfs/squashfs.ko.xz",
                "kernel/drivers/block/virtio_blk.ko.xz",
            ] {
                std::fs::create_dir_all(dest.join(m).parent().unwrap()).unwrap();
                std::fs::copy(release.join(m), dest.join(m)).unwrap();
            }
        });
        fx
    }

    /// Debian's e2fsprogs package (`pkg/e2fsprogs`), built into this fixture's package folder.
    pub(crate) fn e2fsprogs(&self) {
        testkit::run(
            testkit::rpixen_command()
                .args(["pkg", "build", "pkg/e2fsprogs", "--cache"])
                .arg(testkit::pkg_cache())
                .arg("-o")
                .arg(self.dir.join("pkg/e2fsprogs")),
        );
    }

    /// Writes an OCI layout at `name` whose single layer is the folder `fill` populates.
    pub(crate) fn layout(&self, name: &str, fill: impl FnOnce(&Path)) {
        let staging = self.dir.join("staging").join(name);
        std::fs::create_dir_all(&staging).unwrap();
        fill(&staging);
        ImageBuilder::new()
            .layer_from_dir(&staging, Compression::Gzip)
            .unwrap()
            .write(&self.dir.join(name), "latest")
            .unwrap();
    }

    /// An image manifest with host-file boot parts, `rootfs:` from our layouts and `init:` as given.
    pub(crate) fn manifest(
        &self,
        name: &str,
        format: &str,
        images: &[&str],
        init: &str,
    ) -> PathBuf {
        let images: Vec<String> =
            images.iter().map(|i| format!("\"oci:{}\"", self.dir.join(i).display())).collect();
        let text = format!(
            "board:\n  kind: qemu-virt\n  uboot: {{file: {uboot}}}\n  console: serial0\n\
             hypervisor:\n  kind: xen\n  binary: {{file: {xen}}}\n  cmdline: \"console=dtuart dtuart=serial0\"\n\
             dom0:\n  kernel: {{file: {kernel}}}\n  cmdline: \"console=hvc0\"\n  memory: 512M\n\
             rootfs:\n  format: {format}\n  images: [{images}]\n\
             init:\n{init}\n\
             partitions: {{boot: 64M, imga: 64M, imgb: 64M, config: 8M, persist: 16M}}\n",
            uboot = testkit::uboot_qemu().display(),
            xen = testkit::debian_package("xen-hypervisor-4.20-arm64").join("boot/xen-4.20-arm64").display(),
            kernel = testkit::test_kernel_image().display(),
            images = images.join(", "),
            init = indent(init),
        );
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `rpixen ARGS` with this fixture's package folder and a private cache.
    pub(crate) fn rpixen(&self, args: &[&str]) -> String {
        let mut cmd = testkit::rpixen_command();
        cmd.args(args)
            .env("RPIXEN_PKG_DIR", self.dir.join("pkg"))
            .env("XDG_CACHE_HOME", self.dir.join("cache"));
        testkit::run(&mut cmd)
    }
}

pub(crate) fn indent(text: &str) -> String {
    text.trim_matches('\n').lines().map(|l| format!("  {l}\n")).collect()
}

/// QEMU `virt` at EL1 (no hypervisor), one CPU, 1 GiB, booting the test kernel directly.
pub(crate) fn kernel_args() -> testkit::QemuArgs {
    testkit::QemuArgs::virt_el1()
        .smp(1)
        .memory("1G")
        .no_reboot()
        .kernel(&testkit::test_kernel_image())
}

/// (ms since exec, ms since kernel start) from the readiness line.
fn readiness(output: &str) -> (u64, u64) {
    let line = output.lines().find(|l| l.contains("rpixen: dom0 ready")).unwrap();
    let after = |marker: &str| -> u64 {
        let rest = &line[line.find(marker).unwrap() + marker.len()..];
        rest.split_whitespace().next().unwrap().parse().unwrap()
    };
    let kernel_ms =
        line.split(", ").nth(1).and_then(|s| s.split_whitespace().next()).unwrap().parse().unwrap();
    (after("ready in "), kernel_ms)
}

fn print_from_init(output: &str) {
    let from = output.find("Run /init").unwrap_or(0);
    eprintln!("{}", &output[from..]);
}

/// Which files an archive holds, as the system `cpio` lists them (an independent reader).
fn cpio_list(archive: &Path) -> String {
    testkit::run(
        Command::new("sh")
            .arg("-c")
            .arg(format!("gzip -dc {} | cpio -it --quiet", archive.display())),
    )
}

#[test]
fn initramfs_from_oci_layers_runs_services_and_powers_off() {
    let fx = Fixture::new("cpio");
    let manifest = fx.manifest(
        "m.yml",
        "cpio",
        &["busybox", "modules"],
        r#"
hostname: rpixen-qemu
modules: [vfat, overlay]
onboot:
  - name: mods
    command: [/bin/cat, /proc/modules]
  - name: check
    command: [/bin/sh, -c, "echo onboot host=$(hostname) lo=$(cat /sys/class/net/lo/flags) pid1=$(cat /proc/1/comm)"]
services:
  - name: worker
    command: [/bin/sh, -c, "echo worker up; sleep 2; echo worker asks for poweroff; poweroff"]
    restart: never
  - name: idler
    command: [/bin/sh, -c, "trap 'echo idler stopping; exit 0' TERM; while :; do sleep 1; done"]
"#,
    );
    let initrd = fx.dir.join("initrd.cpio.gz");
    fx.rpixen(&[
        "rootfs",
        manifest.to_str().unwrap(),
        "-o",
        initrd.to_str().unwrap(),
        "--format",
        "cpio",
    ]);
    let listing = cpio_list(&initrd);
    for f in ["init", "etc/rpixen/init.yml", "bin/busybox"] {
        assert!(listing.lines().any(|l| l == f), "{f} in the initramfs:\n{listing}");
    }

    let args = kernel_args().initrd(&initrd).append("console=ttyAMA0 panic=-1 rpixen.trace");
    let mut qemu = testkit::Qemu::start_with(&args, 1);
    let ready = qemu.wait_for("rpixen: dom0 ready", FAILURES, Duration::from_secs(240)).unwrap();
    let (exec_ms, kernel_ms) = readiness(&ready.output);
    eprintln!("readiness: {exec_ms} ms after exec, {kernel_ms} ms after kernel start");
    qemu.wait_for("power-off now", FAILURES, Duration::from_secs(60)).unwrap();
    let status = qemu.wait_exit(Duration::from_secs(60)).unwrap();
    let out = qemu.output();
    print_from_init(&out);
    assert!(status.success(), "QEMU exit status {status}");
    for m in ["vfat", "fat", "overlay"] {
        assert!(out.contains(&format!("[mods] {m} ")), "module {m} loaded:\n{out}");
    }
    assert!(
        out.find("[mods]").unwrap() < out.find("[check]").unwrap(),
        "onboot steps run in order"
    );
    assert!(out.contains("[check] onboot host=rpixen-qemu lo=0x9 pid1=init"), "{out}");
    assert!(out.contains("[worker] worker up"), "{out}");
    assert!(out.contains("SIGUSR2 received: power-off"), "busybox poweroff signals PID 1:\n{out}");
    assert!(
        out.contains("[idler] idler stopping"),
        "services are stopped before power-off:\n{out}"
    );
    assert!(out.contains("reboot: Power down"), "{out}");
    assert_eq!(out.matches("rpixen: dom0 ready").count(), 1, "{out}");
}

/// Start sector and size in sectors of the partition named `label`, as `sgdisk -p` prints them.
fn partition(disk: &Path, label: &str) -> (u64, u64) {
    let table = testkit::run(Command::new("sgdisk").arg("-p").arg(disk));
    let line = table
        .lines()
        .find(|l| l.split_whitespace().last() == Some(label))
        .unwrap_or_else(|| panic!("{table}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    let (start, end): (u64, u64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
    (start, end - start + 1)
}

#[test]
fn initramfs_switches_into_the_squashfs_on_imga() {
    let fx = Fixture::new("squashfs");
    // Stage 1's modules with the index files kmod-index writes: with modules.dep the kernel
    // decompresses each module itself (finit_module); virtio_blk comes by coldplug, squashfs and
    // overlay at the kernel's request (init is its modprobe helper).
    fx.layout("stage1-modules", |root| {
        let set = [
            "virtio_blk",
            "squashfs",
            "overlay",
            "loop",
            "vfat",
            "nls_cp437",
            "nls_ascii",
            "ext4",
            "crc32c_generic",
        ];
        install_module_set(root, &set.map(String::from));
    });
    fx.e2fsprogs();
    // Stage 1, the initramfs: dom0-init (from the package), the modules and mkfs.ext4 for PERSIST's
    // first boot. It loads the filesystems stage 2 mounts, whose squashfs carries no modules.
    let stage1 = fx.manifest(
        "stage1.yml",
        "cpio",
        &["stage1-modules", "pkg/e2fsprogs"],
        "modules: [ext4, crc32c_generic, vfat, nls_cp437, nls_ascii]",
    );
    let initrd = fx.dir.join("stage1.cpio.gz");
    fx.rpixen(&[
        "rootfs",
        stage1.to_str().unwrap(),
        "-o",
        initrd.to_str().unwrap(),
        "--format",
        "cpio",
    ]);
    // Stage 2, the squashfs in slot A: busybox, dom0-init as /sbin/init and the services.
    let stage2 = fx.manifest(
        "stage2.yml",
        "squashfs",
        &["busybox"],
        r#"
hostname: rpixen-sq
onboot:
  - name: check
    command: [/bin/sh, -c, "grep -E ' / |/persist|/config' /proc/mounts; echo onboot on $(hostname)"]
services:
  - name: worker
    command: [/bin/sh, -c, "echo worker up; sleep 1; cat /persist/log/check.log; poweroff"]
    restart: never
"#,
    );
    let disk = fx.dir.join("live.raw");
    fx.rpixen(&[
        "live",
        stage2.to_str().unwrap(),
        "-o",
        disk.to_str().unwrap(),
        "--initrd",
        initrd.to_str().unwrap(),
    ]);
    let (start, size) = partition(&disk, "IMGA");
    let slot = testkit::run(Command::new("mdir").args([
        "-b",
        "-i",
        &format!("{}@@{}", disk.display(), start * 512),
        "::",
    ]));
    assert!(slot.contains("rootfs.squashfs"), "IMGA holds no rootfs.squashfs:\n{slot}");
    assert!(size > 0);
    // PERSIST is left unformatted by `rpixen live`: the first boot makes it ext4.

    let args = kernel_args()
        .initrd(&initrd)
        .append("console=ttyAMA0 panic=-1 rpixen.slot=a rpixen.trace")
        .pci_disk(&disk);
    let mut qemu = testkit::Qemu::start_with(&args, 1);
    let ready = qemu.wait_for("rpixen: dom0 ready", FAILURES, Duration::from_secs(240)).unwrap();
    let (exec_ms, kernel_ms) = readiness(&ready.output);
    eprintln!("stage-2 readiness: {exec_ms} ms after its exec, {kernel_ms} ms after kernel start");
    let status = qemu.wait_exit(Duration::from_secs(90)).unwrap();
    let out = qemu.output();
    print_from_init(&out);
    assert!(status.success(), "QEMU exit status {status}");
    assert!(
        out.contains("root switch: /dev/loop0 (squashfs) + tmpfs overlay is /; exec /sbin/init"),
        "{out}"
    );
    assert_eq!(out.matches("dom0-init: starting (pid 1)").count(), 2, "two stages:\n{out}");
    assert!(out.contains("[check] overlay / overlay"), "/ is the overlay:\n{out}");
    assert!(out.contains("first boot: ext4 made on PERSIST"), "{out}");
    assert!(out.contains("/persist ext4"), "PERSIST mounted by label:\n{out}");
    assert!(out.contains("/config vfat"), "CONFIG mounted by label:\n{out}");
    assert!(out.contains("[check] onboot on rpixen-sq"), "{out}");
    // The worker printed check's log file from PERSIST: each line starts with init's ms timestamp.
    let from_log =
        out.lines().filter_map(|l| l.split_once("[worker] ")).map(|(_, rest)| rest.trim_start());
    assert!(
        from_log.clone().any(|l| l
            .split_once(' ')
            .is_some_and(|(ms, text)| ms.parse::<u64>().is_ok() && text == "onboot on rpixen-sq")),
        "{out}"
    );
    assert!(out.contains("reboot: Power down"), "{out}");
    assert_eq!(out.matches("rpixen: dom0 ready").count(), 1, "{out}");

    // After the orderly shutdown PERSIST is clean (e2fsck: no journal to replay, no errors) and
    // holds the logs.
    let (pstart, psize) = partition(&disk, "PERSIST");
    let persist = fx.dir.join("persist.img");
    testkit::run(
        Command::new("dd")
            .arg(format!("if={}", disk.display()))
            .arg(format!("of={}", persist.display()))
            .args(["bs=512", &format!("skip={pstart}"), &format!("count={psize}"), "status=none"]),
    );
    let fsck = Command::new("e2fsck").arg("-fn").arg(&persist).output().unwrap();
    let fsck_out =
        String::from_utf8_lossy(&fsck.stdout).into_owned() + &String::from_utf8_lossy(&fsck.stderr);
    assert!(
        fsck.status.success() && !fsck_out.contains("recover"),
        "PERSIST not cleanly unmounted:\n{fsck_out}"
    );
    let log =
        testkit::run(Command::new("debugfs").args(["-R", "cat /log/worker.log"]).arg(&persist));
    assert!(log.contains("worker up") && log.contains("dom0-init: stopping"), "{log}");

    // A/B fallback without `rpixen.slot=` (a kernel booted by other means): IMGA broken (its boot
    // sector wiped), IMGB holding the live image's copy: the initramfs says why IMGA is unusable and
    // switches into IMGB.
    let (_, bsize) = partition(&disk, "IMGB");
    assert!(bsize >= size);
    let dd = |args: &[String]| {
        testkit::run(Command::new("dd").args(args).args(["conv=notrunc", "status=none"]))
    };
    let d = disk.display();
    dd(&[
        "if=/dev/zero".into(),
        format!("of={d}"),
        "bs=512".into(),
        format!("seek={start}"),
        "count=8".into(),
    ]);
    let args = kernel_args()
        .initrd(&initrd)
        .append("console=ttyAMA0 panic=-1 rpixen.root=IMGA")
        .pci_disk(&disk);
    let mut qemu = testkit::Qemu::start_with(&args, 1);
    qemu.wait_for("rpixen: dom0 ready", FAILURES, Duration::from_secs(240)).unwrap();
    let status = qemu.wait_exit(Duration::from_secs(90)).unwrap();
    let out = qemu.output();
    assert!(status.success(), "QEMU exit status {status}");
    assert!(out.contains("root switch: /dev/vda2 (IMGA): holds no squashfs; trying IMGB"), "{out}");
    assert!(out.contains("root switch: /dev/loop0 (squashfs) + tmpfs overlay is /"), "{out}");
    assert!(out.contains("[check] onboot on rpixen-sq"), "{out}");
}
