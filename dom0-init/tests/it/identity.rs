//! First-boot identity and module coldplug on QEMU `virt`, booted the way a device boots: Debian's
//! U-Boot (`-bios`) runs the image's `boot.scr` and `rpixen.scr`, which start Xen and Dom0 from the
//! boot FAT. The image is `rpixen live`'s, with Debian's kernel, the qemu-virt module set (index files
//! written by kmod-index, as the builder is to do), e2fsprogs and dom0-init; its init config lists no
//! modules.
//!
//! Two copies of one `live.raw`, each grown to 2 GiB, become two devices (ids, keys, disk and
//! partition GUIDs); a second boot keeps them; PERSIST ends at the disk's end and `sgdisk -v` is
//! clean. Copy A is powered off (QEMU killed) at named first-boot points (`rpixen.test.pause=` in
//! the Dom0 command line of the image's `rpixen.scr`) and at a random moment, and ends in the same
//! state as an uninterrupted first boot.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::modules::{install_module_set, module_set};
use crate::qemu::{indent, Fixture};

const FAILURES: &[&str] =
    &["Kernel panic", "dom0-init: BUG", "Attempted to kill init", "(XEN) Panic"];
const LIMIT: Duration = Duration::from_secs(300);
const GIB: u64 = 1 << 30;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The image every copy starts from.
fn build_image(fx: &Fixture) -> PathBuf {
    let mut module_bytes = 0;
    fx.layout("virt-modules", |root| {
        module_bytes = install_module_set(root, &module_set("qemu-virt")).1;
    });
    eprintln!("qemu-virt module set with indexes: {} KiB", module_bytes / 1024);
    fx.e2fsprogs();
    let init = r#"
hostname: rpixen-id
services:
  - name: report
    command: [/bin/sh, -c, "echo net: $(ls /sys/class/net | tr '\n' ' '); grep ' /persist ' /proc/mounts; sleep 1; poweroff"]
    restart: never
"#;
    let oci = |name: &str| format!("\"oci:{}\"", fx.dir.join(name).display());
    let text = format!(
        "board:\n  kind: qemu-virt\n  uboot: {{file: {uboot}}}\n  console: serial0\n\
         hypervisor:\n  kind: xen\n  binary: {{file: {xen}}}\n  cmdline: \"console=dtuart dtuart=serial0 dom0_max_vcpus=1\"\n\
         dom0:\n  kernel: {{file: {kernel}}}\n  cmdline: \"console=hvc0 rpixen.trace\"\n  memory: 512M\n\
         rootfs:\n  format: cpio\n  images: [{busybox}, {modules}, e2fsprogs]\n\
         init:\n{init}\n\
         partitions: {{boot: 64M, imga: 64M, imgb: 64M, config: 8M, persist: 16M}}\n",
        uboot = testkit::uboot_qemu()
            .display(),
        xen = testkit::debian_package("xen-hypervisor-4.20-arm64")
            .join("boot/xen-4.20-arm64")
            .display(),
        kernel = testkit::test_kernel_image().display(),
        busybox = oci("busybox"),
        modules = oci("virt-modules"),
        init = indent(init),
    );
    let manifest = fx.dir.join("identity.yml");
    std::fs::write(&manifest, text).unwrap();
    let image = fx.dir.join("live.raw");
    fx.rpixen(&["live", s(&manifest), "-o", s(&image)]);
    image
}

/// A copy of the image on a 2 GiB disk, as `dd` to a card would leave it.
fn copy_to_disk(image: &Path, disk: &Path) {
    std::fs::copy(image, disk).unwrap();
    std::fs::OpenOptions::new().write(true).open(disk).unwrap().set_len(2 * GIB).unwrap();
}

/// Sets the Dom0 command line's test pause (or none) in the disk's own `rpixen.scr`: the script is
/// taken off slot A's FAT, its `xen,dom0-bootargs` edited, and put back as a new script image.
pub(crate) fn set_pause(dir: &Path, disk: &Path, pause: Option<&str>) {
    // IMGA follows the 64 MiB boot partition at 1 MiB.
    let fat = format!("{}@@65M", disk.display());
    let scr = dir.join("rpixen.scr");
    testkit::run(Command::new("mcopy").args(["-o", "-i", &fat, "::rpixen.scr"]).arg(&scr));
    let image = std::fs::read(&scr).unwrap();
    // A script image: 64-byte header, the data-size table (one size, then 0), the text.
    let text = String::from_utf8(image[72..].to_vec()).unwrap();
    let text = text.trim_end_matches('\0');
    let key = "fdt set /chosen xen,dom0-bootargs \"";
    let start = text.find(key).unwrap() + key.len();
    let end = start + text[start..].find('"').unwrap();
    let args: Vec<&str> = text[start..end]
        .split_whitespace()
        .filter(|w| !w.starts_with("rpixen.test.pause="))
        .collect();
    let mut args = args.join(" ");
    if let Some(p) = pause {
        args.push_str(&format!(" rpixen.test.pause={p}"));
    }
    let edited = format!("{}{args}{}", &text[..start], &text[end..]);
    let txt = dir.join("rpixen.txt");
    std::fs::write(&txt, edited).unwrap();
    testkit::run(
        Command::new("mkimage")
            .args(["-A", "arm64", "-T", "script", "-C", "none", "-n", "rpixen second stage", "-d"])
            .arg(&txt)
            .arg(&scr),
    );
    testkit::run(Command::new("mcopy").args(["-o", "-i", &fat]).arg(&scr).arg("::rpixen.scr"));
}

fn start(disk: &Path) -> testkit::Qemu {
    let uboot = testkit::uboot_qemu();
    let args =
        testkit::QemuArgs::virt().memory("1G").bios(&uboot).disk(disk).user_net(&[]).no_reboot();
    testkit::Qemu::start_with(&args, 1)
}

/// A full boot: to the readiness line, then the report service's power-off. Returns the console.
fn boot(disk: &Path) -> String {
    let started = Instant::now();
    let mut q = start(disk);
    q.wait_for("rpixen: dom0 ready", FAILURES, LIMIT).unwrap_or_else(|e| panic!("{e}"));
    let ready = started.elapsed();
    let status = q.wait_exit(Duration::from_secs(120)).unwrap();
    let out = q.output();
    assert!(status.success(), "QEMU exit status {status}:\n{out}");
    assert!(out.contains("reboot: Power down"), "{out}");
    eprintln!("{}: ready {ready:?} after QEMU started", disk.display());
    out
}

/// A boot killed (power cut) once `marker` is on the console, or `after` it.
fn boot_and_cut(disk: &Path, marker: &str, after: Duration) -> String {
    let mut q = start(disk);
    let o = q.wait_for(marker, FAILURES, LIMIT).unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(after);
    let out = q.output();
    drop(q); // kills QEMU by its PID: the disk keeps what the guest had flushed to it
    first_boot_lines(&out);
    eprintln!(
        "{}: power cut {after:?} after {marker:?} ({:?} into the boot)",
        disk.display(),
        o.elapsed + after
    );
    out
}

/// Shows what first boot did in this boot (the test's record of each power-cut case).
fn first_boot_lines(out: &str) {
    for l in out.lines().filter(|l| l.contains("first boot:") || l.contains("device id")) {
        eprintln!("    {l}");
    }
}

/// The device as its console and disk tell it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Device {
    id: String,
    key: String,
    disk_guid: String,
    part_guids: Vec<String>,
}

fn line_after<'a>(out: &'a str, marker: &str) -> &'a str {
    let at = out.rfind(marker).unwrap_or_else(|| panic!("no {marker:?} in:\n{out}"));
    out[at + marker.len()..].lines().next().unwrap()
}

fn device(dir: &Path, disk: &Path, out: &str) -> Device {
    let ready = line_after(out, "rpixen: dom0 ready");
    let id = ready.rsplit(" id=").next().unwrap().split_whitespace().next().unwrap().to_owned();
    let console = line_after(out, "dom0-init: device id ");
    assert!(console.starts_with(&id), "console and readiness line agree: {console} / {ready}");
    let sg = |args: &[&str]| testkit::run(Command::new("sgdisk").args(args).arg(disk));
    let v = sg(&["-v"]);
    assert!(v.contains("No problems found."), "sgdisk -v:\n{v}");
    let p = sg(&["-p"]);
    let disk_guid = line_after(&p, "Disk identifier (GUID): ").trim().to_owned();
    let mut part_guids = Vec::new();
    let mut persist = (0u64, 0u64, String::new());
    for n in 1..=5 {
        let i = sg(&["-i", &n.to_string()]);
        part_guids.push(line_after(&i, "Partition unique GUID: ").trim().to_owned());
        if line_after(&i, "Partition name: ").trim() == "'PERSIST'" {
            let first = line_after(&i, "First sector: ")
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap();
            let last =
                line_after(&i, "Last sector: ").split_whitespace().next().unwrap().parse().unwrap();
            persist = (first, last, line_after(&i, "Attribute flags: ").trim().to_owned());
        }
    }
    let sectors = 2 * GIB / 512;
    assert_eq!(persist.1, sectors - 34, "PERSIST ends at the disk's last usable sector");
    assert_eq!(persist.2, "0300000000000000", "first-boot bits on PERSIST");
    // PERSIST's filesystem, read by e2fsprogs on the host: clean, and holding the identity.
    let fs = dir.join("persist.img");
    let _ = std::fs::remove_file(&fs);
    testkit::run(
        Command::new("dd")
            .arg(format!("if={}", disk.display()))
            .arg(format!("of={}", fs.display()))
            .args([
                "bs=512",
                &format!("skip={}", persist.0),
                &format!("count={}", persist.1 - persist.0 + 1),
                "conv=sparse",
                "status=none",
            ]),
    );
    let fsck = Command::new("e2fsck").args(["-fn"]).arg(&fs).output().unwrap();
    assert!(
        fsck.status.success(),
        "e2fsck -fn PERSIST:\n{}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    let blocks: u64 =
        line_after(&testkit::run(Command::new("dumpe2fs").arg("-h").arg(&fs)), "Block count:")
            .trim()
            .parse()
            .unwrap();
    assert_eq!(
        blocks * 4096,
        (persist.1 - persist.0 + 1) * 512 / 4096 * 4096,
        "ext4 fills PERSIST"
    );
    let cat = |f: &str| {
        testkit::run(Command::new("debugfs").args(["-R", &format!("cat /identity/{f}")]).arg(&fs))
    };
    assert_eq!(cat("device-id").trim(), id);
    let public = cat("device-key.pub");
    assert!(console.contains(public.trim()), "the console shows the stored key: {console}");
    // The private key is a standard PKCS#8 Ed25519 key whose public half is the one published.
    let pem = dir.join("device-key.pem");
    std::fs::write(&pem, cat("device-key.pem")).unwrap();
    let der = Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&pem)
        .output()
        .unwrap();
    assert!(
        der.status.success(),
        "openssl reads the key: {}",
        String::from_utf8_lossy(&der.stderr)
    );
    let ssh_blob = base64_decode(public.split_whitespace().nth(1).unwrap());
    assert_eq!(
        &der.stdout[der.stdout.len() - 32..],
        &ssh_blob[ssh_blob.len() - 32..],
        "key halves match"
    );
    Device { id, key: public.trim().to_owned(), disk_guid, part_guids }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let out = testkit::run(
        Command::new("sh").arg("-c").arg(format!("echo {s} | base64 -d | od -An -tx1 -v")),
    );
    out.split_whitespace().map(|h| u8::from_str_radix(h, 16).unwrap()).collect()
}

#[test]
fn copies_of_one_image_become_devices_of_their_own_across_power_cuts() {
    let fx = Fixture::new("identity");
    let image = build_image(&fx);
    let original_guid = line_after(
        &testkit::run(Command::new("sgdisk").arg("-p").arg(&image)),
        "Disk identifier (GUID): ",
    )
    .trim()
    .to_owned();

    // Copy B: an uninterrupted first boot, then a second boot.
    let b = fx.dir.join("b.raw");
    copy_to_disk(&image, &b);
    let first = boot(&b);
    assert!(!first.contains("init.modules"), "no module list");
    for line in [
        "modules for of:Nvirtio_mmioT(null)Cvirtio,mmio: loaded",
        "modules for virtio:d00000002v554D4551: loaded kernel/drivers/block/virtio_blk.ko.xz",
        "modules for virtio:d00000001v554D4551: loaded",
        "first boot: ext4 made on PERSIST",
        "first boot: device key pair and id created on PERSIST",
        "[report] net: eth0 lo",
        "/persist ext4",
    ] {
        assert!(first.contains(line), "{line:?} in:\n{first}");
    }
    let dev_b = device(&fx.dir, &b, &first);
    assert_ne!(dev_b.disk_guid, original_guid);
    let second = boot(&b);
    assert!(!second.contains("first boot:"), "nothing left to do:\n{second}");
    assert_eq!(device(&fx.dir, &b, &second), dev_b, "the second boot keeps the identity");

    // Copy A: power cuts at named points of its first boot and at a random moment.
    let a = fx.dir.join("a.raw");
    copy_to_disk(&image, &a);
    // Each boot completes what the cut before it left, then stops at its own point.
    for (point, completes) in [
        ("gpt-primary-entries", None),
        // The primary GPT is invalid (the kernel sees no partitions): copied from the backup.
        ("mkfs", Some("first boot: finish-primary done")),
        // The filesystem bit was never written: mkfs again.
        ("identity-key", Some("first boot: ext4 made on PERSIST")),
    ] {
        set_pause(&fx.dir, &a, Some(point));
        let out = boot_and_cut(&a, &format!("first boot: paused after {point}"), Duration::ZERO);
        assert!(!out.contains("rpixen: dom0 ready"), "{out}");
        if let Some(line) = completes {
            assert!(out.contains(line), "{line:?} before {point}:\n{out}");
        }
    }
    set_pause(&fx.dir, &a, None);
    // The cut lands anywhere from init's start to a little after first boot's usual end.
    let ms = 1
        + (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
            % 6000);
    boot_and_cut(&a, "dom0-init: starting (pid 1)", Duration::from_millis(ms as u64));
    let out = boot(&a);
    first_boot_lines(&out);
    let dev_a = device(&fx.dir, &a, &out);
    let second = boot(&a);
    assert!(!second.contains("first boot:"), "nothing left to do:\n{second}");
    assert_eq!(device(&fx.dir, &a, &second), dev_a, "the second boot keeps the identity");

    assert_ne!(dev_a.id, dev_b.id);
    assert_ne!(dev_a.key, dev_b.key);
    assert_ne!(dev_a.disk_guid, dev_b.disk_guid);
    for (x, y) in dev_a.part_guids.iter().zip(&dev_b.part_guids) {
        assert_ne!(x, y);
    }
}

/// A device that appears after boot gets its driver from the uevent thread: a virtio RNG
/// hot-plugged into a PCIe root port (QEMU monitor `device_add`) loads virtio_rng. Booted with
/// `-kernel` (no hypervisor) for PCIe hotplug; the initramfs has the qemu-virt module set.
#[test]
fn a_device_plugged_in_later_gets_its_driver() {
    let fx = Fixture::new("hotplug");
    fx.layout("virt-modules", |root| {
        install_module_set(root, &module_set("qemu-virt"));
    });
    let manifest = fx.manifest("m.yml", "cpio", &["busybox", "virt-modules"], "hostname: hotplug");
    let initrd = fx.dir.join("initrd.cpio.gz");
    fx.rpixen(&["rootfs", s(&manifest), "-o", s(&initrd), "--format", "cpio"]);
    let monitor = fx.dir.join("monitor.sock");
    let args = crate::qemu::kernel_args()
        .initrd(&initrd)
        .append("console=ttyAMA0 panic=-1")
        .args(&["-device", "pcie-root-port,id=rp1,chassis=1"])
        .monitor_socket(&monitor);
    let mut q = testkit::Qemu::start_with(&args, 1);
    q.wait_for("rpixen: dom0 ready", FAILURES, LIMIT).unwrap_or_else(|e| panic!("{e}"));
    let before = q.output();
    assert!(!before.contains("virtio-rng"), "no RNG yet:\n{before}");
    testkit::monitor_command(&monitor, "device_add virtio-rng-pci,bus=rp1,id=rng1");
    let loaded = "loaded kernel/drivers/char/hw_random/virtio-rng.ko.xz";
    let out = q
        .wait_for(loaded, FAILURES, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"))
        .output;
    let line = out.lines().find(|l| l.contains(loaded)).unwrap();
    assert!(line.contains("modules for virtio:d00000004v00001AF4"), "{line}");
}
