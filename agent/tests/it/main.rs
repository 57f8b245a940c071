//! rpixen-agent, the real binary, on the host against a real `docker-registry` on 127.0.0.1 and
//! artifacts signed by cosign 2.5. The device is files: a STATE partition image (read and written
//! with slot-state's StateDevice), slots A and B as partition files holding FAT slot images (made by
//! mkfs.vfat and mcopy, read with mtools' mtype and checked with fsck.fat -n, independently of the
//! agent), the service states dom0-init would publish, and a file standing in for /dev/watchdog.
//! Each version is a slot image cut into chunks by the update crate's layout writer (what `rpixen
//! update build` runs) and pushed blob by blob. The agent runs with `--reboot exit`; a "reboot" here
//! plays the boot script through slot-state's model (`boot_choice`, whose script the slot-state
//! QEMU tests run in real U-Boot) and starts the agent again on the chosen slot.

mod device;
mod powercut;
mod qemu;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rpixen_slot_state::device::{initial_copies, StateDevice};
use rpixen_slot_state::machine::boot_choice;
use rpixen_slot_state::record::{Slot, SlotState};
use rpixen_update::artifact::{write_slot_layout, Info};
use rpixen_update::oci::{self, Manifest};
use rpixen_update::registry::{Client, Credentials};
use testkit::{output_text, CosignKeys, Registry};

const REPO: &str = "fleet/virt";
/// A slot partition's size in KiB; a slot image is a FAT of [`IMAGE_KIB`] at its start.
const PARTITION_KIB: u64 = 5120;
const IMAGE_KIB: u64 = 4096;

/// One version of the slot: three files whose bytes name the version.
fn files(version: &str) -> Vec<(&'static str, Vec<u8>)> {
    let body = |what: &str, n: usize| {
        let line = format!("{what} {version}\n");
        line.repeat(n).into_bytes()
    };
    vec![
        ("rpixen.scr", body("script", 10)),
        ("rpixen-hv.bin", body("hypervisor", 3000)),
        ("Image", body("kernel", 20000)),
    ]
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", output_text(&out));
}

/// The slot image of `version` in `dir`: mkfs.vfat (fixed volume id, `--invariant`) and mcopy
/// with fixed times, so versions share the chunks their files do not change.
fn slot_image(dir: &Path, version: &str) -> PathBuf {
    let image = dir.join(format!("slot-{version}.img"));
    if image.exists() {
        return image;
    }
    let tmp = dir.join(format!("slot-{version}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    run(Command::new("mkfs.vfat")
        .args(["--invariant", "-i", "52505853", "-C", "-n", "SLOT"])
        .arg(&tmp)
        .arg(IMAGE_KIB.to_string()));
    for (name, bytes) in files(version) {
        let src = dir.join(format!("{version}-{name}"));
        std::fs::write(&src, bytes).unwrap();
        run(Command::new("touch").args(["-d", "2026-01-01T00:00:00Z"]).arg(&src));
        run(Command::new("mcopy").arg("-m").arg("-i").arg(&tmp).arg(&src).arg(format!("::{name}")));
    }
    std::fs::rename(&tmp, &image).unwrap();
    image
}

/// Builds `version`'s artifact (the update crate's layout writer, as `rpixen update build` runs
/// it) and pushes it under `tag`; returns the manifest's digest and the manifest.
fn push_manifest(reg: &Registry, version: &str, tag: &str) -> (String, Manifest) {
    let work = reg_dir(reg);
    let image = slot_image(&work, version);
    let layout = work.join(format!("layout-{version}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&layout);
    let info = Info {
        version: version.into(),
        epoch: 1_767_225_600,
        board: "qemu-virt".into(),
        revision: None,
        source: None,
    };
    let desc = write_slot_layout(&layout, &image, &info).unwrap();
    let blob = |digest: &str| {
        std::fs::read(layout.join("blobs/sha256").join(oci::sha256_hex(digest).unwrap())).unwrap()
    };
    let bytes = blob(&desc.digest);
    let manifest: Manifest = serde_json::from_slice(&bytes).unwrap();
    let client = Client::new(&reg.host(), Credentials::Anonymous, &[]);
    client.put_blob(REPO, &blob(&manifest.config.digest)).unwrap();
    for layer in &manifest.layers {
        client.put_blob(REPO, &blob(&layer.digest)).unwrap();
    }
    client.put_manifest(REPO, tag, &desc.media_type, &bytes).unwrap();
    std::fs::remove_dir_all(&layout).unwrap();
    (oci::sha256(&bytes), manifest)
}

fn push(reg: &Registry, version: &str, tag: &str) -> String {
    push_manifest(reg, version, tag).0
}

/// A folder for slot images beside the registry's storage (removed with it).
fn reg_dir(reg: &Registry) -> PathBuf {
    let d = reg.storage.parent().unwrap().join("slot-images");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A slot partition: a file holding a FAT slot image at its start.
struct Fat {
    image: PathBuf,
}

impl Fat {
    /// A partition holding `slot_image` (or zeros).
    fn new(image: PathBuf, slot_image: Option<&Path>) -> Fat {
        match slot_image {
            Some(src) => std::fs::copy(src, &image).map(|_| ()).unwrap(),
            None => std::fs::write(&image, b"").unwrap(),
        }
        let f = std::fs::OpenOptions::new().write(true).open(&image).unwrap();
        f.set_len(PARTITION_KIB << 10).unwrap();
        Fat { image }
    }

    /// A file of the FAT, read by mtools (not through the code the agent wrote with).
    fn read(&self, name: &str) -> Option<Vec<u8>> {
        let out = Command::new("mtype")
            .arg("-i")
            .arg(&self.image)
            .arg(format!("::{name}"))
            .output()
            .unwrap();
        out.status.success().then_some(out.stdout)
    }

    fn holds(&self, version: &str) -> bool {
        files(version).iter().all(|(name, bytes)| self.read(name).as_ref() == Some(bytes))
    }

    fn fsck(&self) {
        let out = Command::new("fsck.fat").arg("-n").arg(&self.image).output().unwrap();
        assert!(
            out.status.success(),
            "fsck.fat -n {}: {}",
            self.image.display(),
            output_text(&out)
        );
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.image).unwrap()
    }
}

struct Device {
    dir: tempfile::TempDir,
    a: Fat,
    b: Fat,
    state: PathBuf,
    keys: CosignKeys,
}

impl Device {
    /// Slot A holds v1 (copied in by mcopy), STATE is fresh (A active, B unused).
    fn new(reg: &Registry) -> Device {
        let dir = tempfile::tempdir().unwrap();
        let v1 = slot_image(&reg_dir(reg), "v1");
        let a = Fat::new(dir.path().join("imga.img"), Some(&v1));
        let b = Fat::new(dir.path().join("imgb.img"), None);
        let state = dir.path().join("state.img");
        let f = std::fs::File::create(&state).unwrap();
        f.set_len(rpixen_slot_state::PARTITION_BYTES).unwrap();
        for (off, sector) in initial_copies() {
            std::os::unix::fs::FileExt::write_all_at(&f, &sector, off).unwrap();
        }
        let keys = CosignKeys::generate("device-test");
        let config = format!(
            "reference: {}/{REPO}:stable\npublic_key: {}\npoll_interval_secs: 1\n\
             health_window_secs: 2\ntrial_timeout_secs: 6\n",
            reg.host(),
            keys.pub_path().display()
        );
        std::fs::write(dir.path().join("update.yml"), config).unwrap();
        let d = Device { dir, a, b, state, keys };
        d.set_services("network running 1\nsshd running 1\nagent running 1\n");
        d
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn set_services(&self, lines: &str) {
        std::fs::write(self.path("services"), format!("# name state starts\n{lines}")).unwrap();
    }

    /// The boot script's part of a reboot: spend a due trial, pick the slot.
    fn boot(&self) -> Slot {
        let dev = StateDevice::open(&self.state).unwrap();
        let copies = dev.read().unwrap();
        let choice = boot_choice(&copies);
        if let Some((index, rec)) = choice.write {
            // As the script does: over the copy `index`, the older one.
            assert_eq!(index, copies.next_write_index());
            dev.write(&copies, &rec).unwrap();
        }
        std::fs::write(
            self.path("cmdline"),
            format!("console=ttyAMA0 rpixen.slot={}\n", choice.slot),
        )
        .unwrap();
        choice.slot
    }

    fn record(&self) -> (SlotState, SlotState) {
        let copies = StateDevice::open(&self.state).unwrap().read().unwrap();
        let rec = copies.newest().unwrap().1;
        (rec.a, rec.b)
    }

    fn start(&self) -> Agent {
        std::fs::write(self.path("watchdog"), b"").unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_rpixen-agent"))
            .arg("run")
            .arg("--config")
            .arg(self.path("update.yml"))
            .arg("--status")
            .arg(self.path("persist/status.json"))
            .arg("--store")
            .arg(self.path("persist/store"))
            .arg("--state")
            .arg(&self.state)
            .arg("--slot-a")
            .arg(&self.a.image)
            .arg("--slot-b")
            .arg(&self.b.image)
            .arg("--services")
            .arg(self.path("services"))
            .arg("--cmdline")
            .arg(self.path("cmdline"))
            .arg("--watchdog")
            .arg(self.path("watchdog"))
            .args(["--reboot", "exit", "--tick-ms", "200"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    eprintln!("  | {line}");
                    let _ = tx.send(line);
                }
            });
        }
        Agent { child, lines, seen: Vec::new() }
    }

    fn status_json(&self) -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_rpixen-agent"))
            .args(["status", "--json", "--status"])
            .arg(self.path("persist/status.json"))
            .output()
            .unwrap();
        assert!(out.status.success(), "rpixen-agent status: {}", output_text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

struct Agent {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Agent {
    /// Waits for a line containing `text`; panics after `limit` or if the agent exits first.
    fn wait_for(&mut self, text: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!("no `{text}` from the agent within {limit:?}; it said:\n{}", self.seen.join("\n"));
    }

    /// Waits for the agent's "reboot" (exit code 75).
    fn wait_reboot(&mut self, limit: Duration) {
        self.wait_for("rpixen-agent: rebooting", limit);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert_eq!(st.code(), Some(75), "{st}");
                return;
            }
            assert!(Instant::now() < deadline, "the agent did not exit after `rebooting`");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Lines seen until now and for `quiet` more.
    fn drain(&mut self, quiet: Duration) -> Vec<String> {
        let deadline = Instant::now() + quiet;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let Ok(line) = self.lines.recv_timeout(left) {
                self.seen.push(line);
            }
        }
        self.seen.clone()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn updates_commit_fall_back_and_refuse_bad_artifacts() {
    let reg = Registry::start();
    let dev = Device::new(&reg);
    let v1 = push(&reg, "v1", "stable");
    dev.keys.sign(&format!("{}/{REPO}@{v1}", reg.host()));
    assert_eq!(dev.boot(), Slot::A);

    // A factory device on v1: the agent finds v1 in slot A and does nothing.
    let mut agent = dev.start();
    agent.wait_for("slot a holds v1", LIMIT);
    let v2 = push(&reg, "v2", "stable");
    dev.keys.sign(&format!("{}/{REPO}@{v2}", reg.host()));
    agent.wait_for("DOWNLOADING v2", LIMIT);
    agent.wait_for("UPDATING writing v2", LIMIT);
    agent.wait_reboot(LIMIT);
    assert!(dev.b.holds("v2") && dev.a.holds("v1"));
    dev.b.fsck();
    assert_eq!(dev.record(), (SlotState::Active, SlotState::Updating));

    // The trial boot of B: healthy for the window, committed.
    assert_eq!(dev.boot(), Slot::B);
    assert_eq!(dev.record(), (SlotState::Active, SlotState::InProgress));
    let mut agent = dev.start();
    agent.wait_for("TESTING v2", LIMIT);
    let line = agent.wait_for("UPDATED v2", LIMIT);
    assert!(line.contains("ms after the poll"), "{line}");
    assert_eq!(dev.record(), (SlotState::Unused, SlotState::Active));
    let s = dev.status_json();
    assert_eq!(s["step"], "UPDATED");
    assert_eq!(s["slots"]["b"]["digest"], v2.as_str());
    assert_eq!(s["slots"]["b"]["version"], "v2");
    eprintln!("poll to commit: {} ms (host, 2 s health window)", s["poll_to_commit_ms"]);
    let fed = std::fs::read(dev.path("watchdog")).unwrap();
    assert!(fed.len() > 2 && fed.ends_with(b"V"), "watchdog fed and disarmed: {fed:?}");
    drop(agent);

    // v3's services never come up: tried once, the device goes back to v2, v3 is not retried.
    let v3 = push(&reg, "v3", "stable");
    dev.keys.sign(&format!("{}/{REPO}@{v3}", reg.host()));
    let mut agent = dev.start();
    agent.wait_for("DOWNLOADING v3", LIMIT);
    agent.wait_reboot(LIMIT);
    assert!(dev.a.holds("v3") && dev.b.holds("v2"));
    dev.a.fsck();
    assert_eq!(dev.boot(), Slot::A);
    dev.set_services("network running 1\nbroken restarting 4\nagent running 1\n");
    let mut agent = dev.start();
    agent.wait_for("trial health: service broken is restarting", LIMIT);
    agent.wait_reboot(LIMIT);
    let fed = std::fs::read(dev.path("watchdog")).unwrap();
    assert!(!fed.is_empty() && !fed.contains(&b'V'), "fed, never disarmed: {fed:?}");
    dev.set_services("network running 1\nagent running 1\n");
    assert_eq!(dev.boot(), Slot::B);
    let mut agent = dev.start();
    agent.wait_for("FALLBACK v3", LIMIT);
    let seen = agent.drain(Duration::from_secs(4));
    assert_eq!(seen.iter().filter(|l| l.contains("DOWNLOADING")).count(), 0, "{seen:#?}");
    assert_eq!(dev.record(), (SlotState::Unused, SlotState::Active));
    let s = dev.status_json();
    assert_eq!(s["step"], "FALLBACK");
    assert_eq!(s["failed"][0], v3.as_str());
    drop(agent);

    // Refused before the inactive slot (A) or STATE is touched.
    let a_before = dev.a.bytes();
    let state_before = std::fs::read(&dev.state).unwrap();
    let unsigned = push(&reg, "v4", "stable");
    let mut agent = dev.start();
    let line = agent.wait_for("FAILED", LIMIT);
    assert!(line.contains(&unsigned) && line.contains("is not signed"), "{line}");
    drop(agent);
    let other = CosignKeys::generate("other");
    other.sign(&format!("{}/{REPO}@{unsigned}", reg.host()));
    let mut agent = dev.start();
    let line = agent.wait_for("FAILED", LIMIT);
    assert!(line.contains("no signature verifies with the public key"), "{line}");
    drop(agent);
    let (tampered, manifest) = push_manifest(&reg, "v5", "stable");
    dev.keys.sign(&format!("{}/{REPO}@{tampered}", reg.host()));
    // A chunk the device must download: one the active slot (B, v2) does not hold.
    let (_, v2_manifest) = push_manifest(&reg, "v2", "v2");
    let kernel = manifest
        .layers
        .iter()
        .map(|l| l.digest.clone())
        .find(|d| v2_manifest.layers.iter().all(|l| &l.digest != d))
        .unwrap();
    let blob = reg.blob_file(&kernel);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    let mut agent = dev.start();
    let line = agent.wait_for("FAILED", LIMIT);
    assert!(line.contains(&kernel) && line.contains("does not match its digest"), "{line}");
    drop(agent);
    assert!(dev.a.bytes() == a_before, "slot A changed by a refused artifact");
    assert!(
        std::fs::read(&dev.state).unwrap() == state_before,
        "STATE changed by a refused artifact"
    );
    assert_eq!(dev.status_json()["step"], "FAILED");

    // The reference moves on to a good v6: updated again, into slot A.
    let v6 = push(&reg, "v6", "stable");
    dev.keys.sign(&format!("{}/{REPO}@{v6}", reg.host()));
    let mut agent = dev.start();
    agent.wait_reboot(LIMIT);
    assert_eq!(dev.boot(), Slot::A);
    let mut agent = dev.start();
    agent.wait_for("UPDATED v6", LIMIT);
    drop(agent);
    assert!(dev.a.holds("v6") && dev.b.holds("v2"));
    assert_eq!(dev.record(), (SlotState::Active, SlotState::Unused));
    let human = Command::new(env!("CARGO_BIN_EXE_rpixen-agent"))
        .args(["status", "--status"])
        .arg(dev.path("persist/status.json"))
        .output()
        .unwrap();
    let text = String::from_utf8(human.stdout).unwrap();
    assert!(
        text.starts_with("step:      UPDATED\n") && text.contains(&format!("failed:    {v3}")),
        "{text}"
    );
}

/// A cheap xorshift, seeded from the clock and printed, so a failing run can be repeated
/// (`AGENT_CUT_SEED`).
fn rng() -> impl FnMut() -> u64 {
    let mut x: u64 =
        std::env::var("AGENT_CUT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
                as u64
                | 1
        });
    eprintln!("AGENT_CUT_SEED={x}");
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

impl Device {
    /// The host stand-in for a power cut: the agent is killed wherever it is.
    fn cut(&self, mut agent: Agent) {
        let _ = agent.child.kill();
        let _ = agent.child.wait();
    }

    /// The slot the boot script picks holds a whole version.
    fn whole(&self, slot: Slot) -> Option<&'static str> {
        let l = match slot {
            Slot::A => &self.a,
            Slot::B => &self.b,
        };
        ["v1", "v2"].into_iter().find(|v| l.holds(v))
    }
}

/// The agent killed at random moments of the v1 → v2 update (download, write, STATE changes, the
/// trial, the commit) and started again after the boot script's choice: every boot picks a slot
/// holding a whole version, and the device ends consistent: v2 committed, or v1 with FALLBACK.
/// A process kill, not a power cut (the host's page cache survives); the QEMU version needs the
/// slots work (see README).
#[test]
fn killed_at_random_moments_every_boot_finds_a_whole_slot_and_ends_consistent() {
    let cuts: usize = std::env::var("AGENT_CUTS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let reg = Registry::start();
    let mut next = rng();
    let v2 = push(&reg, "v2", "stable");
    let mut outcomes = Vec::new();
    for round in 0..cuts {
        let dev = Device::new(&reg);
        dev.keys.sign(&format!("{}/{REPO}@{v2}", reg.host()));
        let mut slot = dev.boot();
        let mut agent = dev.start();
        // On the host the flow reaches the trial within ~0.3 s (identify, download, write, reboot)
        // and commits after its 2 s window: every other cut falls in the first 0.4 s.
        let span = if round % 2 == 0 { 400 } else { 3000 };
        let cut_at = Duration::from_millis(next() % span);
        let t0 = Instant::now();
        let mut cut_in: Option<String> = None;
        let end = t0 + Duration::from_secs(90);
        let outcome = loop {
            assert!(Instant::now() < end, "round {round}: no end state; {:#?}", agent.seen);
            let step = std::fs::read(dev.path("persist/status.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .map(|s| s["step"].as_str().unwrap_or("").to_owned());
            if cut_in.is_none() && t0.elapsed() >= cut_at {
                dev.cut(agent);
                cut_in = Some(step.clone().unwrap_or_else(|| "(no status yet)".into()));
                slot = dev.boot();
                assert!(
                    dev.whole(slot).is_some(),
                    "round {round}: cut at {cut_at:?}: slot {slot} is not whole"
                );
                agent = dev.start();
                continue;
            }
            if let Ok(Some(code)) = agent.child.try_wait() {
                assert_eq!(
                    code.code(),
                    Some(75),
                    "round {round}: {:#?}",
                    agent.drain(Duration::ZERO)
                );
                slot = dev.boot();
                assert!(dev.whole(slot).is_some(), "round {round}: slot {slot} is not whole");
                agent = dev.start();
                continue;
            }
            match step.as_deref() {
                Some("UPDATED") | Some("FALLBACK") if cut_in.is_some() => break step.unwrap(),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        dev.cut(agent);
        let s = dev.status_json();
        match outcome.as_str() {
            "UPDATED" => {
                assert_eq!((slot, dev.record()), (Slot::B, (SlotState::Unused, SlotState::Active)));
                assert!(dev.b.holds("v2"));
                assert_eq!(s["slots"]["b"]["digest"], v2.as_str());
            }
            _ => {
                assert_eq!((slot, dev.record()), (Slot::A, (SlotState::Active, SlotState::Unused)));
                assert!(dev.a.holds("v1"));
                assert_eq!(s["failed"][0], v2.as_str());
            }
        }
        dev.b.fsck();
        dev.a.fsck();
        let during = cut_in.unwrap();
        outcomes.push(format!("cut at {} ms, during {during}: {outcome}", cut_at.as_millis()));
    }
    eprintln!("{} cuts: {outcomes:#?}", outcomes.len());
}
