//! What a user gets: `images/qemu-virt.yml` (our hypervisor) built by `rpixen live` from this
//! checkout's packages (`rpixen pkg build`, as `make live` does), booted with the QEMU arguments of
//! `make run` (`scripts/run-qemu.sh --args`: U-Boot as `-bios`, virtio disk, virtio-net with port 22
//! forwarded to 127.0.0.1). One image is built per test run and copied for each boot.
//!
//! - NoCloud files written onto the boot FAT with `mcopy` under rpi-imager's names: the real `ssh`
//!   logs in with user-data's key as its user, a password is refused, the host name is user-data's,
//!   the lease is QEMU's DHCP server's, and virtio block and net came from coldplug (the image lists
//!   no modules).
//! - Without NoCloud files, on a reused card (PERSIST still holding the previous device's ext4): first
//!   boot makes PERSIST anew, a restart in the middle of first boot keeps what that first boot made,
//!   then DHCP and root's key from CONFIG's `authorized_keys`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use crate::identity::set_pause;
use crate::net::{
    assert_keys_only, dom0_part, free_tcp_port, imager_files, one_boot, partition, ssh,
    ssh_until_up, Fixture, BOOT_LIMIT, FAILURES,
};

/// The build time the image is made with (also its clock floor).
const EPOCH: &str = "1700000000";
/// The packages `images/qemu-virt.yml` names.
const PACKAGES: [&str; 8] =
    ["agent", "busybox", "dom0-init", "dropbear", "e2fsprogs", "hypervisor", "kernel", "u-boot"];

struct UserImage {
    dir: PathBuf,
    pkg_dir: PathBuf,
    raw: PathBuf,
    rpixen: PathBuf,
}

/// `RPIXEN_PKG_DIR=... rpixen live qemu-virt -o live.raw`, once per test run.
fn user_image() -> &'static UserImage {
    static IMAGE: OnceLock<UserImage> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = testkit::cache_dir().join("dom0-init-user-image");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let rpixen = testkit::rpixen_release_binary();
        let pkg_dir = testkit::build_packages(&rpixen, &dir.join("pkg"), &PACKAGES);
        let raw = dir.join("live.raw");
        let out = Command::new(&rpixen)
            .args(["live", "qemu-virt", "-o"])
            .arg(&raw)
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .env("RPIXEN_PKG_DIR", &pkg_dir)
            .env("XDG_CACHE_HOME", dir.join("xdg"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        UserImage { dir, pkg_dir, raw, rpixen }
    })
}

/// A fresh copy of the user image in its own folder.
fn copy(name: &str) -> (Fixture, PathBuf) {
    let image = user_image();
    let dir = image.dir.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let disk = dir.join("disk.raw");
    testkit::run(Command::new("cp").arg("--sparse=always").arg(&image.raw).arg(&disk));
    (Fixture { dir }, disk)
}

/// `make run`'s QEMU, with the SSH forward on `ssh_port`.
fn boot(fx: &Fixture, disk: &Path, ssh_port: u16) -> testkit::Qemu {
    let image = user_image();
    let out = testkit::run(
        Command::new("bash")
            .arg(testkit::repo_root().join("scripts/run-qemu.sh"))
            .args(["--args", "qemu-virt"])
            .arg(disk)
            .env("RPIXEN", &image.rpixen)
            .env("RPIXEN_PKG_DIR", &image.pkg_dir)
            .env("RPIXEN_RUN_DIR", fx.dir.join("run"))
            .env("RPIXEN_SSH_PORT", ssh_port.to_string()),
    );
    let args: Vec<&str> = out.lines().collect();
    assert!(args.iter().any(|a| a.contains(&format!("hostfwd=tcp:127.0.0.1:{ssh_port}-:22"))));
    testkit::Qemu::start(&args, 1)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_owned()
}

/// The modules loaded in Dom0 (`/proc/modules`), read over SSH.
fn assert_virtio_from_coldplug(modules: &str, console: &str) {
    for m in ["virtio_mmio", "virtio_blk", "virtio_net"] {
        assert!(modules.split_whitespace().any(|l| l == m), "{m} not loaded: {modules}");
    }
    assert!(
        console.contains("loaded kernel/drivers/block/virtio_blk.ko.xz"),
        "virtio_blk by coldplug:\n{console}"
    );
}

#[test]
fn user_image_nocloud_key_and_hostname_then_ssh_over_dhcp() {
    let (fx, disk) = copy("nocloud");
    // The image's init config lists no modules: coldplug must bring the disk and the network up.
    let init = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "mcopy -n -i '{}@@{}' ::initrd.img - | gzip -dc | cpio -i --to-stdout --quiet etc/rpixen/init.yml",
            disk.display(),
            partition(&disk, "IMGA").0 * 512
        ))
        .output()
        .unwrap();
    let init = String::from_utf8_lossy(&init.stdout).into_owned();
    assert!(init.contains("name: sshd") && !init.contains("modules:"), "{init}");

    let (key, public) = fx.key("operator");
    let files = imager_files(&public);
    let refs: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    fx.mcopy(&disk, "BOOT", &refs);
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
    let load_before = load_average();
    let started = Instant::now();
    let mut q = boot(&fx, &disk, ssh_port);
    let ready =
        q.wait_for("rpixen: dom0 ready", FAILURES, BOOT_LIMIT).unwrap_or_else(|e| panic!("{e}"));
    let (out, up_at) = ssh_until_up(
        &q,
        ssh_port,
        &key,
        "pi",
        "hostname; id -u; cat /etc/resolv.conf; cut -d' ' -f1 /proc/modules | tr '\\n' ' '",
    );
    let accepting = up_at.duration_since(started);
    let console = q.output();
    let readiness =
        ready.output.lines().find(|l| l.contains("rpixen: dom0 ready")).unwrap().to_owned();
    eprintln!("{}", dom0_part(&console));
    eprintln!(
        "user image (qemu-virt, our hypervisor): QEMU start -> SSH login accepted in {} ms (load average before: {load_before}; after: {})",
        accepting.as_millis(),
        load_average()
    );
    eprintln!("{readiness}");

    assert!(console.contains("hv: rpixen hypervisor, EL2 entry"), "our hypervisor booted Dom0");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("fleet-dev-1"), "hostname from user-data:\n{out}");
    assert_eq!(lines.next(), Some("1000"), "logged in as user-data's `pi`:\n{out}");
    assert!(out.contains("nameserver 10.0.2.3"), "DNS from QEMU's DHCP server:\n{out}");
    assert_virtio_from_coldplug(out.lines().last().unwrap_or(""), &console);
    assert!(
        readiness.contains("network eth0 10.0.2.15/24 dhcp from 10.0.2.2 in "),
        "the lease came from QEMU's DHCP server: {readiness}"
    );
    assert!(
        console.contains("[nocloud] meta-data: instance-id rpi-imager-1764151234567"),
        "{console}"
    );

    assert_keys_only(&fx, ssh_port, &key);
}

/// PERSIST's ext4 as the host sees it: (UUID, names in its root folder).
fn persist_fs(fx: &Fixture, disk: &Path) -> (String, String) {
    let (start, size) = partition(disk, "PERSIST");
    let img = fx.dir.join("persist.img");
    testkit::run(
        Command::new("dd")
            .arg(format!("if={}", disk.display()))
            .arg(format!("of={}", img.display()))
            .args(["bs=512", &format!("skip={start}"), &format!("count={size}"), "status=none"]),
    );
    let header = testkit::run(Command::new("dumpe2fs").arg("-h").arg(&img));
    let uuid = header
        .lines()
        .find_map(|l| l.strip_prefix("Filesystem UUID:"))
        .unwrap_or_else(|| panic!("{header}"))
        .trim()
        .to_owned();
    let ls = testkit::run(Command::new("debugfs").args(["-R", "ls -l /"]).arg(&img));
    (uuid, ls)
}

#[test]
fn user_image_reused_card_first_boot_remakes_persist_then_config_keys_over_dhcp() {
    let (fx, disk) = copy("reused-card");
    // A card that held another device: PERSIST (left unmapped by bmaptool) still has its ext4.
    let old = fx.dir.join("old");
    std::fs::create_dir_all(old.join("identity")).unwrap();
    std::fs::write(old.join("identity/device-id"), "0ld-device\n").unwrap();
    let (start, size) = partition(&disk, "PERSIST");
    testkit::run(
        Command::new("mkfs.ext4")
            .args(["-F", "-q", "-L", "PERSIST", "-E", &format!("offset={}", start * 512), "-d"])
            .arg(&old)
            .arg(&disk)
            .arg(format!("{}k", size / 2)),
    );
    let (old_uuid, old_ls) = persist_fs(&fx, &disk);
    assert!(old_ls.contains("identity"), "{old_ls}");
    let (key, public) = fx.key("ops");
    fx.mcopy(
        &disk,
        "CONFIG",
        &[("authorized_keys", &format!("# EVE-style root keys\n{public}\n"))],
    );

    let ssh_port = free_tcp_port();
    let _turn = one_boot();
    // Power cut in the middle of first boot: after the new filesystem and the device key.
    set_pause(&fx.dir, &disk, Some("identity-key"));
    let cut = {
        let mut q = boot(&fx, &disk, ssh_port);
        q.wait_for("first boot: paused after identity-key", FAILURES, BOOT_LIMIT)
            .unwrap_or_else(|e| panic!("{e}"));
        q.output()
    }; // QEMU killed by its PID here
    assert!(
        cut.contains("first boot: PERSIST holds an earlier ext4 (a reused card): made anew"),
        "{}",
        dom0_part(&cut)
    );
    // (Only the superblock is read here: what this boot wrote since may still be in the journal.)
    let (new_uuid, _) = persist_fs(&fx, &disk);
    assert_ne!(new_uuid, old_uuid, "PERSIST made anew");

    set_pause(&fx.dir, &disk, None);
    let mut q = boot(&fx, &disk, ssh_port);
    let ready =
        q.wait_for("rpixen: dom0 ready", FAILURES, BOOT_LIMIT).unwrap_or_else(|e| panic!("{e}"));
    let (out, _) = ssh_until_up(
        &q,
        ssh_port,
        &key,
        "root",
        "hostname; id -u; cat /persist/identity/device-id; cut -d' ' -f1 /proc/modules | tr '\\n' ' '",
    );
    let console = q.output();
    let console = dom0_part(&console).to_owned();
    eprintln!("{console}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["rpixen", "0"], "the image's host name, root with CONFIG's key");
    assert_ne!(lines[2], "0ld-device", "the old device's identity is gone");
    assert_virtio_from_coldplug(lines[3], &console);
    assert!(
        console.contains(
            "[nocloud] boot FAT /dev/vda1: no NoCloud files (meta-data, user-data, network-config)"
        ),
        "{console}"
    );
    assert!(
        ready.output.contains("network eth0 10.0.2.15/24 dhcp from 10.0.2.2"),
        "{}",
        ready.output
    );
    assert!(!console.contains("made anew"), "the restart kept this first boot's filesystem");
    ssh(ssh_port, &key, "root", &[], "poweroff");
    let status = q.wait_exit(std::time::Duration::from_secs(120)).unwrap();
    assert!(status.success(), "QEMU exit status {status}");
    let (after_uuid, after_ls) = persist_fs(&fx, &disk);
    assert_eq!(after_uuid, new_uuid, "the restart did not make PERSIST again");
    assert!(after_ls.contains("identity"), "{after_ls}");
    let v = testkit::run(Command::new("sgdisk").arg("-v").arg(&disk));
    assert!(v.contains("No problems found."), "{v}");
}
