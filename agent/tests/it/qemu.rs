//! The whole update on QEMU `virt`: `images/qemu-virt.yml` built by `rpixen live` from this
//! checkout's packages (the agent among them) with CONFIG holding `update.yml` and `cosign.pub`;
//! v2 built by `rpixen update build`, pushed to a real `docker-registry` on 127.0.0.1 and signed by
//! `rpixen update push --key`; Debian's U-Boot runs the image's `boot.scr`; Dom0 reaches the
//! registry at 10.0.2.2 through QEMU's user networking. The device polls, downloads, writes slot B,
//! reboots (QEMU resets itself), boots B on trial with the hypervisor's watchdog running, and
//! commits after the health window. Then, with QEMU stopped, sgdisk finds the partitions, mtools
//! reads slot B's files and slot-state decodes STATE: independent of the agent.

use std::process::Command;

use rpixen_slot_state::record::SlotState;
use testkit::{output_text, CosignKeys, Qemu, QemuArgs, Registry};

use crate::device::{manifest, partition, rpixen, slot_file, state, FAILURES, LIMIT, PACKAGES};

#[test]
fn a_device_on_v1_is_told_about_v2_and_ends_on_v2_committed() {
    let dir = testkit::cache_dir().join("agent-qemu");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bin = testkit::rpixen_release_binary();
    let pkg = testkit::build_packages(&bin, &dir.join("pkg"), &PACKAGES);
    let reg = Registry::start();
    let keys = CosignKeys::generate("agent-qemu");

    let v1 = manifest(&dir, "v1", reg.port, &keys.pub_path());
    let img = dir.join("live.raw");
    let out = rpixen(&bin, &pkg, &dir).arg("live").arg(&v1).arg("-o").arg(&img).output().unwrap();
    assert!(out.status.success(), "rpixen live: {}", output_text(&out));
    let v2 = manifest(&dir, "v2", reg.port, &keys.pub_path());
    let layout = dir.join("v2.oci");
    let out = rpixen(&bin, &pkg, &dir)
        .args(["update", "build"])
        .arg(&v2)
        .arg("-o")
        .arg(&layout)
        .args(["--version", "v2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "rpixen update build: {}", output_text(&out));
    let out = rpixen(&bin, &pkg, &dir)
        .args(["update", "push"])
        .arg(&layout)
        .arg(format!("{}/fleet/virt:stable", reg.host()))
        .arg("--key")
        .arg(keys.key_path())
        .env("COSIGN_PASSWORD", &keys.password)
        .output()
        .unwrap();
    assert!(out.status.success(), "rpixen update push: {}", output_text(&out));
    // v2's slot image: the layout's chunks in order; its initrd read by mtools.
    let initrd_v2 = {
        let idx: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let m = idx["manifests"][0]["digest"].as_str().unwrap().to_owned();
        let blob = |d: &str| layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
        let man: serde_json::Value =
            serde_json::from_slice(&std::fs::read(blob(&m)).unwrap()).unwrap();
        let mut image = Vec::new();
        for l in man["layers"].as_array().unwrap() {
            image.extend(std::fs::read(blob(l["digest"].as_str().unwrap())).unwrap());
        }
        let slot_v2 = dir.join("v2-slot.img");
        std::fs::write(&slot_v2, image).unwrap();
        let out =
            Command::new("mtype").arg("-i").arg(&slot_v2).arg("::initrd.img").output().unwrap();
        assert!(out.status.success(), "mtype v2 initrd.img: {}", output_text(&out));
        out.stdout
    };
    assert_ne!(slot_file(&img, "IMGA", "initrd.img"), initrd_v2, "v1 and v2 differ");

    let uboot = testkit::debian_package("u-boot-qemu").join("usr/lib/u-boot/qemu_arm64/u-boot.bin");
    let args = QemuArgs::virt().bios(&uboot).disk(&img).user_net(&[]);
    let mut q = Qemu::start_with(&args, 1);
    let first =
        q.wait_for("rpixen-agent: UPDATING", &FAILURES, LIMIT).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("downloading and verifying took until {:?} after start", first.elapsed);
    let done =
        q.wait_for("rpixen-agent: UPDATED", &FAILURES, LIMIT).unwrap_or_else(|e| panic!("{e}"));
    let out = done.output;
    assert!(out.contains("rpixen: trial of slot b recorded"), "{out}");
    assert!(out.contains("running from boot (dom0_watchdog=)"), "{out}");
    // A trial whose userspace never opens /dev/watchdog is not fed by Linux for ever.
    assert!(out.contains("rpixen.slot=b watchdog.open_timeout=180"), "{out}");
    assert!(out.contains("rpixen-agent: TESTING v2"), "{out}");
    for what in ["bytes downloaded", "rpixen-agent: UPDATED"] {
        let line = out.lines().find(|l| l.contains(what)).unwrap().to_owned();
        eprintln!("{line}");
    }
    drop(q);

    assert_eq!(state(&img), (SlotState::Unused, SlotState::Active));
    assert!(slot_file(&img, "IMGB", "initrd.img") == initrd_v2, "slot B holds v2's initrd");
    let (b, size) = partition(&img, "IMGB");
    let slot_b = dir.join("imgb.fat");
    testkit::run(
        Command::new("dd")
            .arg(format!("if={}", img.display()))
            .arg(format!("of={}", slot_b.display()))
            .args(["bs=1M", "iflag=skip_bytes,count_bytes"])
            .arg(format!("skip={b}"))
            .arg(format!("count={size}")),
    );
    let out = Command::new("fsck.fat").arg("-n").arg(&slot_b).output().unwrap();
    assert!(out.status.success(), "fsck.fat -n slot B: {}", output_text(&out));
}
