//! The whole update flow on QEMU `virt`, as one device's life (one disk, one QEMU, booted once:
//! every boot after the first is the device's own reset), since each boot under TCG costs minutes.
//! `images/qemu-virt.yml` is built by `rpixen live` from this checkout's packages (the agent among
//! them) with CONFIG holding `update.yml` and `cosign.pub`; every later version is built by `rpixen
//! update build`, pushed to a real `docker-registry` on 127.0.0.1 and signed by `rpixen update push
//! --key`; Debian's U-Boot runs the image's `boot.scr`; Dom0 reaches the registry at 10.0.2.2
//! through QEMU's user networking. The device
//! 1. on v1 is told about v2: downloads, writes slot B, reboots into B's trial (the hypervisor's
//!    watchdog running) and commits after the health window (`UPDATED`);
//! 2. refuses v3 unsigned, v3 signed with another key and v3 with a tampered chunk, with slot A
//!    (inactive) and STATE byte for byte as they were;
//! 3. tries v3, whose init fails (a supervised service exits at once): the agent gives up at the
//!    trial timeout, the reset boots B again: `FALLBACK`, and polls later v3 is not fetched again;
//! 4. tries v4, whose kernel hangs before printing anything: nothing feeds Dom0's watchdog, the
//!    hypervisor resets the board after `dom0_watchdog=60`, the boot script boots B: `FALLBACK`,
//!    not retried.
//!
//! Then, with QEMU stopped, sgdisk finds the partitions, mtools reads the slots' files, slot-state
//! decodes STATE and debugfs reads the status file on PERSIST: independent of the agent.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rpixen_slot_state::record::SlotState;
use rpixen_update::oci::sha256;
use testkit::{output_text, CosignKeys, Qemu, QemuArgs};

use crate::device::{
    fat_file, layout_manifest, layout_slot_image, manifest, manifest_with, partition,
    partition_bytes, retag, rpixen, slot_file, state, update_build, update_push, Bench, Timing,
    FAILURES, LIMIT,
};

/// As short as the agent allows while a loaded 2-core machine still commits a good version: a
/// poll every 2 s, 5 s healthy to commit, and 60 s for a trial (from the agent's start in the
/// trial boot) to get there.
const TIMING: Timing =
    Timing { poll_interval_secs: 2, health_window_secs: 5, trial_timeout_secs: 60 };
/// One step of the flow (at most a boot, a download, a write and a trial) under TCG.
const STEP: Duration = LIMIT;
/// Never expected on the console.
const BROKEN: [&str; 3] = ["Kernel panic", "hv: PANIC", "hv: FATAL"];

/// QEMU's console, read phase by phase: the serial log grows across the device's reboots, so each
/// wait looks only at what came after the previous one.
struct Console {
    q: Qemu,
    seen: usize,
}

impl Console {
    /// The console's text from `self.seen` on (at a char boundary: the log is decoded lossily).
    fn new_text(&self) -> String {
        let out = self.q.output();
        let mut from = self.seen.min(out.len());
        while !out.is_char_boundary(from) {
            from -= 1;
        }
        out[from..].to_owned()
    }

    /// Waits for `marker` after the previous wait; fails when one of `failures` or [`BROKEN`]
    /// shows first, QEMU exits or `limit` passes. Returns the console's text from the previous
    /// wait to the end of the marker's line.
    fn wait(&mut self, marker: &str, failures: &[&str], limit: Duration) -> String {
        let start = Instant::now();
        loop {
            let text = self.new_text();
            let end = text.find(marker).map(|i| text[i..].find('\n').map_or(text.len(), |n| i + n));
            let upto = &text[..end.unwrap_or(text.len())];
            if let Some(f) = failures.iter().chain(&BROKEN).find(|f| upto.contains(**f)) {
                panic!("{f:?} on the console before {marker:?}:\n{}", tail(upto));
            }
            if let Some(end) = end {
                self.seen += end;
                return text[..end].to_owned();
            }
            if self.q.wait_exit(Duration::ZERO).is_ok() {
                panic!("QEMU exited before {marker:?}:\n{}", tail(&text));
            }
            assert!(start.elapsed() < limit, "no {marker:?} within {limit:?}:\n{}", tail(&text));
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// [`Console::wait`], returning only the marker's line.
    fn line(&mut self, marker: &str, failures: &[&str], limit: Duration) -> String {
        let text = self.wait(marker, failures, limit);
        line_of(&text, marker).to_owned()
    }

    /// What the console prints during the next `d`.
    fn during(&mut self, d: Duration) -> String {
        std::thread::sleep(d);
        let text = self.new_text();
        self.seen += text.len();
        text
    }
}

/// The (last) line of `text` holding `marker`.
fn line_of<'a>(text: &'a str, marker: &str) -> &'a str {
    text.lines().rev().find(|l| l.contains(marker)).unwrap_or_else(|| panic!("no {marker:?}"))
}

fn tail(text: &str) -> &str {
    let mut from = text.len().saturating_sub(6000);
    while !text.is_char_boundary(from) {
        from -= 1;
    }
    &text[from..]
}

/// `sha256:…` of slot A's partition and STATE's bytes on the disk image.
fn untouched(img: &Path) -> (String, String) {
    (sha256(&partition_bytes(img, "IMGA")), sha256(&partition_bytes(img, "STATE")))
}

/// A copy of the kernel `image` whose entry point branches to itself (`b .`): the header stays
/// intact, so U-Boot and the hypervisor load and start it as they would any Image, and the kernel
/// then spins before printing anything, with nothing to feed the watchdog. (Random garbage would
/// fault instead, into aborts the hypervisor injects back: a hang too, but a noisy one whose shape
/// depends on the bytes.)
fn hang_at_entry(image: &[u8]) -> Vec<u8> {
    const B_SELF: u32 = 0x1400_0000;
    assert_eq!(&image[56..60], b"ARM\x64", "not an arm64 Image");
    let insn = |o: usize| u32::from_le_bytes(image[o..o + 4].try_into().unwrap());
    // code0 is `b primary_entry`, or (an EFI stub's "MZ") code1 is.
    let (at, b) = [0usize, 4]
        .into_iter()
        .map(|o| (o, insn(o)))
        .find(|(_, i)| i & 0xfc00_0000 == B_SELF)
        .expect("code0 or code1 branches to the kernel's entry");
    let offset = (((b & 0x03ff_ffff) << 6) as i32 >> 6) as i64 * 4;
    let entry = usize::try_from(at as i64 + offset).unwrap();
    assert!(entry >= 64 && entry + 4096 <= image.len(), "entry {entry:#x}");
    let mut out = image.to_vec();
    for w in out[entry..entry + 4096].chunks_exact_mut(4) {
        w.copy_from_slice(&B_SELF.to_le_bytes());
    }
    out
}

/// mtools' `tool -i fat`.
fn mtools(tool: &str, fat: &Path) -> Command {
    let mut c = Command::new(tool);
    c.env("MTOOLS_SKIP_CHECK", "1").arg("-i").arg(fat);
    c
}

/// `slot` (a slot image) with `name` replaced by `bytes`, through mtools.
fn replace_file(slot: &Path, name: &str, bytes: &[u8]) {
    let src = slot.with_extension(format!("{name}.new"));
    std::fs::write(&src, bytes).unwrap();
    testkit::run(mtools("mdel", slot).arg(format!("::{name}")));
    testkit::run(mtools("mcopy", slot).arg(&src).arg(format!("::{name}")));
    std::fs::remove_file(src).unwrap();
}

/// The layer digests of a layout.
fn layers(layout: &Path) -> Vec<String> {
    let (_, man) = layout_manifest(layout);
    man["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().into()).collect()
}

/// `n` in "… n of m bytes downloaded …".
fn downloaded(line: &str) -> (u64, u64) {
    let words: Vec<&str> = line.split_whitespace().collect();
    let i = words.iter().position(|w| *w == "of").expect(line);
    let num = |w: &str| w.trim_start_matches('(').replace(',', "").parse::<u64>().expect(line);
    (num(words[i - 1]), num(words[i + 1]))
}

struct Clock {
    t0: Instant,
    last: Instant,
    phases: Vec<(String, Duration)>,
}

impl Clock {
    fn phase(&mut self, name: &str) {
        let now = Instant::now();
        eprintln!("phase {name}: {:.1} s", (now - self.last).as_secs_f64());
        self.phases.push((name.into(), now - self.last));
        self.last = now;
    }
}

#[test]
#[ignore = "not yet passing (its one run, on a loaded machine, fell back from v2's trial); about 15 minutes: make test-long"]
fn a_device_commits_v2_refuses_bad_artifacts_and_falls_back_from_a_failing_init_and_a_hung_kernel()
{
    let mut clock = Clock { t0: Instant::now(), last: Instant::now(), phases: Vec::new() };
    let Bench { dir, bin, pkg, reg, keys } = Bench::start("agent-qemu-chain");
    let other = CosignKeys::generate("other");
    let (bin, pkg, dir) = (bin.as_path(), pkg.as_path(), dir.as_path());
    // Pushed (and signed) under its own tag, then `stable`, which the device follows, moved to it
    // at once: the device never sees a pushed but not yet signed version.
    let push = |layout: &Path, version: &str, key: Option<&CosignKeys>| {
        let reference = format!("{}/fleet/virt:{version}", reg.host());
        update_push(bin, pkg, dir, layout, &reference, key)
    };
    let publish = |layout: &Path| retag(&reg.host(), "fleet/virt", "stable", layout);
    let manifest = |v: &str, services: &[&str]| {
        manifest_with(dir, v, reg.port, &keys.pub_path(), TIMING, services)
    };

    let v1 = manifest("v1", &[]);
    let img = dir.join("live.raw");
    let out = crate::device::rpixen(bin, pkg, dir)
        .arg("live")
        .arg(&v1)
        .arg("-o")
        .arg(&img)
        .output()
        .unwrap();
    assert!(out.status.success(), "rpixen live: {}", output_text(&out));
    let v2_yml = manifest("v2", &[]);
    let v2 = update_build(bin, pkg, dir, &v2_yml, "v2", None);
    let v2_digest = push(&v2, "v2", Some(&keys));
    publish(&v2);
    let slot_v2 = dir.join("v2-slot.img");
    layout_slot_image(&v2, &slot_v2);
    let initrd_v2 = fat_file(&slot_v2, "initrd.img");
    assert_ne!(slot_file(&img, "IMGA", "initrd.img"), initrd_v2, "v1 and v2 differ");
    // v3: a service of its Dom0 fails at once, for ever (dom0-init restarts it with back-off).
    let app = r#"{name: app, command: [/bin/sh, -c, "echo app: cannot start; exit 1"]}"#;
    let v3 = update_build(bin, pkg, dir, &manifest("v3", &[app]), "v3", None);
    let slot_v3 = dir.join("v3-slot.img");
    layout_slot_image(&v3, &slot_v3);
    // v4: v2 with a kernel that hangs.
    let slot_v4 = dir.join("v4-slot.img");
    std::fs::copy(&slot_v2, &slot_v4).unwrap();
    let hung = hang_at_entry(&fat_file(&slot_v2, "Image"));
    replace_file(&slot_v4, "Image", &hung);
    let v4 = update_build(bin, pkg, dir, &v2_yml, "v4", Some(&slot_v4));
    // The refused ones: v3's slot under other versions (so other digests); the tampered one also
    // holds a file of its own, so that the chunk spoilt in the registry is one no good version has.
    let unsigned = update_build(bin, pkg, dir, &v2_yml, "v3-unsigned", Some(&slot_v3));
    let other_key = update_build(bin, pkg, dir, &v2_yml, "v3-other-key", Some(&slot_v3));
    let slot_tampered = dir.join("tampered-slot.img");
    std::fs::copy(&slot_v3, &slot_tampered).unwrap();
    let note = dir.join("note.txt");
    std::fs::write(&note, "only in the tampered artifact\n".repeat(4000)).unwrap();
    testkit::run(mtools("mcopy", &slot_tampered).arg(&note).arg("::note.txt"));
    let tampered = update_build(bin, pkg, dir, &v2_yml, "v3-tampered", Some(&slot_tampered));
    clock.phase("build v1 image, v2, v3, v4 and the three bad artifacts");

    let uboot = testkit::debian_package("u-boot-qemu").join("usr/lib/u-boot/qemu_arm64/u-boot.bin");
    let args = QemuArgs::virt().bios(&uboot).disk(&img).user_net(&[]);
    let mut con = Console { q: Qemu::start_with(&args, 1), seen: 0 };

    // 1. v1 -> v2, committed.
    let not_v2 = FAILURES;
    con.wait("rpixen-agent: DOWNLOADING v2 (", &not_v2, STEP);
    let polled = Instant::now();
    let written = con.line("rpixen-agent: UPDATING slot b holds v2 (", &not_v2, STEP);
    con.wait("rpixen: trial of slot b recorded", &not_v2, STEP);
    let boot = con.wait("rpixen-agent: TESTING v2", &not_v2, STEP);
    assert!(boot.contains("running from boot (dom0_watchdog=)"), "{boot}");
    // A trial whose userspace never opens /dev/watchdog is not fed by Linux for ever.
    assert!(boot.contains("rpixen.slot=b watchdog.open_timeout=180"), "{boot}");
    let committed = con.line("rpixen-agent: UPDATED v2", &not_v2, STEP);
    let v2_commit = polled.elapsed();
    let (got, size) = downloaded(&written);
    eprintln!("{written}\n{committed}");
    clock.phase("v1 -> v2 committed (boot, download, write, trial boot, health window)");

    // 2. Refused before slot A (inactive now) or STATE is touched: nothing is written, so the
    // disk image's bytes (QEMU writes through to it) stay as they are.
    let before = untouched(&img);
    let no_write = ["rpixen-agent: UPDATING"];
    let d = push(&unsigned, "v3-unsigned", None);
    publish(&unsigned);
    let line = con.line("is not signed", &no_write, STEP);
    assert!(line.contains("rpixen-agent: FAILED") && line.contains(&d), "{line}");
    let d = push(&other_key, "v3-other-key", Some(&other));
    publish(&other_key);
    let line = con.line("no signature verifies with the public key", &no_write, STEP);
    assert!(line.contains("rpixen-agent: FAILED") && line.contains(&d), "{line}");
    // A chunk the device must fetch: in no good version, so not in slot B nor in the store.
    let good: Vec<String> = [&v2, &v3, &v4].iter().flat_map(|l| layers(l)).collect();
    let spoilt = layers(&tampered).into_iter().find(|l| !good.contains(l)).unwrap();
    let d = push(&tampered, "v3-tampered", Some(&keys));
    let blob = reg.blob_file(&spoilt);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    publish(&tampered);
    let line = con.line("does not match its digest: got", &no_write, STEP);
    assert!(line.contains("rpixen-agent: FAILED") && line.contains(&spoilt), "{line}");
    assert!(line.contains(&d), "{line}");
    assert!(untouched(&img) == before, "slot A or STATE changed by a refused artifact");
    clock.phase("three artifacts refused");

    // 3. v3's init fails: tried once, back on v2, not retried.
    let not_v3 = ["rpixen-agent: UPDATED", "rpixen-agent: FAILED"];
    let v3_digest = push(&v3, "v3", Some(&keys));
    let pushed = Instant::now();
    publish(&v3);
    // (The tampered artifact's FAILED lines may still come until the agent sees v3.)
    con.wait("rpixen-agent: DOWNLOADING v3 (", &no_write, STEP);
    let v3_written = con.line("rpixen-agent: UPDATING slot a holds v3 (", &not_v3, STEP);
    con.wait("rpixen: trial of slot a recorded", &not_v3, STEP);
    let trial = Instant::now();
    con.wait("rpixen-agent: TESTING v3", &not_v3, STEP);
    let trying = con.wait("not healthy for 5 s within 60 s", &not_v3, STEP);
    assert!(trying.contains("rpixen-agent: trial health: service app "), "{trying}");
    let gave_up = line_of(&trying, "not healthy for").to_owned();
    con.wait("rpixen-agent: rebooting: back to slot b", &not_v3, STEP);
    let line = con.line("rpixen-agent: FALLBACK v3", &not_v3, STEP);
    assert!(line.contains("back on slot b; not retried") && line.contains(&v3_digest), "{line}");
    let v3_fallback = (pushed.elapsed(), trial.elapsed());
    eprintln!("{v3_written}\n{gave_up}\n{line}");
    clock.phase("v3 (init fails) -> FALLBACK on v2");
    let polls = 5;
    let quiet = con.during(Duration::from_secs(TIMING.poll_interval_secs * polls));
    for busy in ["DOWNLOADING", "UPDATING", "TESTING", "rebooting", "FAILED"] {
        assert!(!quiet.contains(busy), "v3 retried ({busy}):\n{quiet}");
    }
    clock.phase("v3 not retried");

    // 4. v4's kernel hangs: the hypervisor's watchdog resets the board, back on v2.
    let not_v4 = ["rpixen-agent: UPDATED", "rpixen-agent: FAILED", "rpixen-agent: TESTING v4"];
    let v4_digest = push(&v4, "v4", Some(&keys));
    let pushed = Instant::now();
    publish(&v4);
    // Still polling after v3's fallback: the new digest is taken within a poll or two.
    con.wait("rpixen-agent: DOWNLOADING v4 (", &not_v4, STEP);
    let noticed = pushed.elapsed();
    assert!(noticed < Duration::from_secs(120), "v4 noticed only after {noticed:?}");
    let v4_written = con.line("rpixen-agent: UPDATING slot a holds v4 (", &not_v4, STEP);
    con.wait("rpixen: trial of slot a recorded", &not_v4, STEP);
    let trial = Instant::now();
    let hung_boot = con.wait("hv: watchdog: Dom0 did not feed it for", &not_v4, STEP);
    assert!(hung_boot.contains("running from boot (dom0_watchdog=)"), "{hung_boot}");
    // Hung before its first console line.
    assert!(!hung_boot.contains("Booting Linux"), "{hung_boot}");
    let reset = line_of(&hung_boot, "hv: watchdog:").to_owned();
    con.wait("rpixen: running rpixen.scr of slot b", &not_v4, STEP);
    let line = con.line("rpixen-agent: FALLBACK v4", &not_v4, STEP);
    assert!(line.contains("back on slot b; not retried") && line.contains(&v4_digest), "{line}");
    let v4_fallback = (pushed.elapsed(), trial.elapsed());
    eprintln!("{v4_written}\n{reset}\n{line}");
    clock.phase("v4 (kernel hangs) -> watchdog reset -> FALLBACK on v2");
    let quiet = con.during(Duration::from_secs(TIMING.poll_interval_secs * polls));
    for busy in ["DOWNLOADING", "UPDATING", "TESTING", "rebooting", "FAILED"] {
        assert!(!quiet.contains(busy), "v4 retried ({busy}):\n{quiet}");
    }
    clock.phase("v4 not retried");
    drop(con);

    // The disk, read without the agent.
    assert_eq!(state(&img), (SlotState::Unused, SlotState::Active));
    assert!(slot_file(&img, "IMGB", "initrd.img") == initrd_v2, "slot B holds v2's initrd");
    assert!(slot_file(&img, "IMGA", "Image") == hung, "slot A holds v4's hung kernel");
    let persist = dir.join("persist.ext4");
    for (slot, file) in [("IMGA", dir.join("imga.fat")), ("IMGB", dir.join("imgb.fat"))] {
        std::fs::write(&file, partition_bytes(&img, slot)).unwrap();
        let out = Command::new("fsck.fat").arg("-n").arg(&file).output().unwrap();
        assert!(out.status.success(), "fsck.fat -n {slot}: {}", output_text(&out));
    }
    std::fs::write(&persist, partition_bytes(&img, "PERSIST")).unwrap();
    let out = Command::new("debugfs")
        .arg("-R")
        .arg("cat /rpixen-agent/status.json")
        .arg(&persist)
        .output()
        .unwrap();
    assert!(out.status.success(), "debugfs: {}", output_text(&out));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status.json on PERSIST: {e}: {}", output_text(&out)));
    assert_eq!(s["step"], "FALLBACK", "{s}");
    assert_eq!(s["slots"]["b"]["digest"], v2_digest.as_str(), "{s}");
    let failed: Vec<&str> =
        s["failed"].as_array().unwrap().iter().filter_map(|d| d.as_str()).collect();
    assert_eq!(failed, [v3_digest.as_str(), v4_digest.as_str()], "{s}");
    clock.phase("disk checks");

    eprintln!(
        "v2: {got} of {size} bytes downloaded ({:.2} %), {:.1} s from the download's start to the \
         commit (agent: {})",
        got as f64 * 100.0 / size as f64,
        v2_commit.as_secs_f64(),
        committed.rsplit(", ").next().unwrap_or("")
    );
    eprintln!(
        "v3 (init fails): FALLBACK {:.1} s after `stable` moved to it, {:.1} s after the trial was recorded",
        v3_fallback.0.as_secs_f64(),
        v3_fallback.1.as_secs_f64()
    );
    eprintln!(
        "v4 (kernel hangs): DOWNLOADING {:.1} s and FALLBACK {:.1} s after `stable` moved to \
         it, {:.1} s after the trial was recorded",
        noticed.as_secs_f64(),
        v4_fallback.0.as_secs_f64(),
        v4_fallback.1.as_secs_f64()
    );
    for (name, d) in &clock.phases {
        eprintln!("  {:>7.1} s  {name}", d.as_secs_f64());
    }
    eprintln!("  {:>7.1} s  in all", clock.t0.elapsed().as_secs_f64());
}

/// What `make test` runs of the flow until the chain above passes: its first step alone (v1 told
/// about v2, downloads, trial boot, committed), with `device::manifest`'s timings.
#[test]
fn a_device_on_v1_is_told_about_v2_and_ends_on_v2_committed() {
    let Bench { dir, bin, pkg, reg, keys } = Bench::start("agent-qemu");

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
