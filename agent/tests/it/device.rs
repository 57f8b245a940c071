//! What the QEMU tests of the agent share: the device's image manifest (`images/qemu-virt.yml` with
//! CONFIG's `update.yml` and key), the `rpixen` CLI with this checkout's packages, and readers of the
//! written disk that do not use the agent (sgdisk, mtools, slot-state's decoder).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rpixen_slot_state::machine::Copies;
use rpixen_slot_state::record::{Record, SlotState, RECORD_LEN};
use rpixen_slot_state::COPY_STRIDE_BYTES;
use testkit::{output_text, CosignKeys, Registry};

pub(crate) const EPOCH: &str = "1700000000";
pub(crate) const PACKAGES: [&str; 8] =
    ["agent", "busybox", "dom0-init", "dropbear", "e2fsprogs", "hypervisor", "kernel", "u-boot"];
/// TCG on a busy 2-core machine: generous.
pub(crate) const LIMIT: Duration = Duration::from_secs(1500);
pub(crate) const FAILURES: [&str; 4] =
    ["Kernel panic", "rpixen-agent: FAILED", "rpixen-agent: FALLBACK", "hv: PANIC"];

/// `images/qemu-virt.yml` with CONFIG's `update.yml` and key, and a rootfs file naming `version`.
pub(crate) fn manifest(dir: &Path, version: &str, port: u16, key: &Path) -> PathBuf {
    let base = std::fs::read_to_string(testkit::repo_root().join("images/qemu-virt.yml")).unwrap();
    let pem = std::fs::read_to_string(key).unwrap();
    let update = format!(
        "reference: 10.0.2.2:{port}/fleet/virt:stable\npublic_key: cosign.pub\n\
         poll_interval_secs: 5\nhealth_window_secs: 10\ntrial_timeout_secs: 300\n\
         insecure_registries: [\"10.0.2.2:{port}\"]\n"
    );
    let quote = |s: &str| serde_json::to_string(s).unwrap();
    let mut text = base.replace(
        "    - {path: /etc/hostname, contents: \"rpixen\\n\"}\n",
        &format!(
            "    - {{path: /etc/hostname, contents: \"rpixen\\n\"}}\n    - {{path: /etc/rpixen-version, contents: {}}}\n",
            quote(&format!("{version}\n"))
        ),
    );
    assert!(text.contains("/etc/rpixen-version"), "qemu-virt.yml's rootfs files moved");
    // PERSIST holds the downloaded blobs: Debian's uncompressed kernel alone is ~40 MB.
    text = text.replace("  persist: 32M", "  persist: 256M");
    assert!(text.contains("persist: 256M"), "qemu-virt.yml's partitions moved");
    text.push_str(&format!(
        "config_files:\n  - {{path: /update.yml, contents: {}}}\n  - {{path: /cosign.pub, contents: {}}}\n",
        quote(&update),
        quote(&pem)
    ));
    let path = dir.join(format!("{version}.yml"));
    std::fs::write(&path, text).unwrap();
    path
}

pub(crate) fn rpixen(rpixen: &Path, pkg: &Path, dir: &Path) -> Command {
    let mut c = Command::new(rpixen);
    c.current_dir(testkit::repo_root())
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .env("RPIXEN_PKG_DIR", pkg)
        .env("XDG_CACHE_HOME", dir.join("xdg"));
    c
}

/// `(start, size)` in bytes of the partition named `name`, as sgdisk reads the table.
pub(crate) fn partition(img: &Path, name: &str) -> (u64, u64) {
    let table = testkit::run(Command::new("sgdisk").arg("-p").arg(img));
    let row = table
        .lines()
        .find(|l| l.split_whitespace().last() == Some(name))
        .unwrap_or_else(|| panic!("no partition {name}:\n{table}"));
    let f: Vec<u64> = row.split_whitespace().take(3).map(|w| w.parse().unwrap()).collect();
    (f[1] * 512, (f[2] - f[1] + 1) * 512)
}

pub(crate) fn state(img: &Path) -> (SlotState, SlotState) {
    use std::os::unix::fs::FileExt;
    let (start, _) = partition(img, "STATE");
    let f = std::fs::File::open(img).unwrap();
    let copy = |i: u64| {
        let mut s = [0u8; RECORD_LEN];
        f.read_exact_at(&mut s, start + i * COPY_STRIDE_BYTES).unwrap();
        Record::decode(&s)
    };
    let rec = Copies([copy(0), copy(1)]).newest().expect("a valid STATE copy").1;
    (rec.a, rec.b)
}

/// A file of a slot's FAT, read by mtools at the partition's offset.
pub(crate) fn slot_file(img: &Path, slot: &str, name: &str) -> Vec<u8> {
    let (start, _) = partition(img, slot);
    let out = Command::new("mtype")
        .arg("-i")
        .arg(format!("{}@@{start}", img.display()))
        .arg(format!("::{name}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "mtype {slot} {name}: {}", output_text(&out));
    out.stdout
}

/// The agent's timings in a test device's `update.yml`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub poll_interval_secs: u64,
    pub health_window_secs: u64,
    pub trial_timeout_secs: u64,
}

/// What [`manifest`] writes.
pub(crate) const TIMING: Timing =
    Timing { poll_interval_secs: 5, health_window_secs: 10, trial_timeout_secs: 300 };

/// [`manifest`] with other agent timings, and `services` (init-config YAML flow mappings, such as
/// `{name: app, command: [/bin/app]}`) supervised besides the image's own.
pub(crate) fn manifest_with(
    dir: &Path,
    version: &str,
    port: u16,
    key: &Path,
    timing: Timing,
    services: &[&str],
) -> PathBuf {
    let path = manifest(dir, version, port, key);
    let mut text = std::fs::read_to_string(&path).unwrap();
    let from = format!(
        "poll_interval_secs: {}\\nhealth_window_secs: {}\\ntrial_timeout_secs: {}\\n",
        TIMING.poll_interval_secs, TIMING.health_window_secs, TIMING.trial_timeout_secs
    );
    let to = format!(
        "poll_interval_secs: {}\\nhealth_window_secs: {}\\ntrial_timeout_secs: {}\\n",
        timing.poll_interval_secs, timing.health_window_secs, timing.trial_timeout_secs
    );
    assert!(text.contains(&from), "update.yml's timings moved:\n{text}");
    text = text.replace(&from, &to);
    let agent = "    - {name: agent, command: [/sbin/rpixen-agent]}\n";
    assert!(text.contains(agent), "qemu-virt.yml's agent service moved");
    let extra: String = services.iter().map(|s| format!("    - {s}\n")).collect();
    text = text.replace(agent, &format!("{agent}{extra}"));
    std::fs::write(&path, text).unwrap();
    path
}

/// `rpixen update build MANIFEST --version VERSION -o DIR/VERSION.oci` (`--slot-image` when given:
/// that slot image packaged as it is); returns the layout.
pub(crate) fn update_build(
    bin: &Path,
    pkg: &Path,
    dir: &Path,
    manifest: &Path,
    version: &str,
    slot_image: Option<&Path>,
) -> PathBuf {
    let layout = dir.join(format!("{version}.oci"));
    let _ = std::fs::remove_dir_all(&layout);
    let mut cmd = rpixen(bin, pkg, dir);
    cmd.args(["update", "build"]).arg(manifest).arg("-o").arg(&layout);
    cmd.args(["--version", version]);
    if let Some(s) = slot_image {
        cmd.arg("--slot-image").arg(s);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "rpixen update build {version}: {}", output_text(&out));
    layout
}

/// `rpixen update push LAYOUT REFERENCE`, signed with `key` when given (`rpixen update push
/// --key`); returns the pushed manifest's digest.
pub(crate) fn update_push(
    bin: &Path,
    pkg: &Path,
    dir: &Path,
    layout: &Path,
    reference: &str,
    key: Option<&testkit::CosignKeys>,
) -> String {
    let mut cmd = rpixen(bin, pkg, dir);
    cmd.args(["update", "push"]).arg(layout).arg(reference);
    if let Some(k) = key {
        cmd.arg("--key").arg(k.key_path()).env("COSIGN_PASSWORD", &k.password);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "rpixen update push {reference}: {}", output_text(&out));
    layout_manifest(layout).0
}

/// A layout's one manifest: its digest and JSON.
pub(crate) fn layout_manifest(layout: &Path) -> (String, serde_json::Value) {
    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let digest = idx["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let man =
        serde_json::from_slice(&std::fs::read(layout_blob(layout, &digest)).unwrap()).unwrap();
    (digest, man)
}

pub(crate) fn layout_blob(layout: &Path, digest: &str) -> PathBuf {
    layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
}

/// The slot image an artifact layout holds (its chunks in order), written to `out`.
pub(crate) fn layout_slot_image(layout: &Path, out: &Path) {
    let (_, man) = layout_manifest(layout);
    let mut f = std::fs::File::create(out).unwrap();
    for l in man["layers"].as_array().unwrap() {
        let mut chunk =
            std::fs::File::open(layout_blob(layout, l["digest"].as_str().unwrap())).unwrap();
        std::io::copy(&mut chunk, &mut f).unwrap();
    }
}

/// A file of a FAT image file (a slot image), read by mtools.
pub(crate) fn fat_file(fat: &Path, name: &str) -> Vec<u8> {
    let out = Command::new("mtype").arg("-i").arg(fat).arg(format!("::{name}")).output().unwrap();
    assert!(out.status.success(), "mtype {} {name}: {}", fat.display(), output_text(&out));
    out.stdout
}

/// The bytes of the partition named `name`.
pub(crate) fn partition_bytes(img: &Path, name: &str) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let (start, size) = partition(img, name);
    let mut buf = vec![0u8; size as usize];
    std::fs::File::open(img).unwrap().read_exact_at(&mut buf, start).unwrap();
    buf
}

/// Points `repository:tag` of the registry at `host` at a layout's manifest (already pushed), as
/// `crane tag` or `oras tag` would: how a fleet moves a reference to a signed version at once.
pub(crate) fn retag(host: &str, repository: &str, tag: &str, layout: &Path) {
    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let media_type = idx["manifests"][0]["mediaType"].as_str().unwrap();
    let (digest, _) = layout_manifest(layout);
    let bytes = std::fs::read(layout_blob(layout, &digest)).unwrap();
    let client = rpixen_update::registry::Client::new(
        host,
        rpixen_update::registry::Credentials::Anonymous,
        &[],
    );
    client.put_manifest(repository, tag, media_type, &bytes).unwrap();
}

/// What every QEMU test of the agent starts from: an empty folder `name` in the test cache, the
/// `rpixen` binary, this checkout's packages built into the folder, a registry and a signing key.
pub(crate) struct Bench {
    pub dir: PathBuf,
    pub bin: PathBuf,
    pub pkg: PathBuf,
    pub reg: Registry,
    pub keys: CosignKeys,
}

impl Bench {
    pub(crate) fn start(name: &str) -> Bench {
        let dir = testkit::cache_dir().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let bin = testkit::rpixen_release_binary();
        let pkg = testkit::build_packages(&bin, &dir.join("pkg"), &PACKAGES);
        Bench { reg: Registry::start(), keys: CosignKeys::generate(name), dir, bin, pkg }
    }
}
