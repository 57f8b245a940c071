//! What the QEMU tests of the agent share: the device's image manifest (`images/qemu-virt.yml` with
//! CONFIG's `update.yml` and key), the `rpixen` CLI with this checkout's packages, and readers of the
//! written disk that do not use the agent (sgdisk, mtools, slot-state's decoder).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rpixen_slot_state::machine::Copies;
use rpixen_slot_state::record::{Record, SlotState, RECORD_LEN};
use rpixen_slot_state::COPY_STRIDE_BYTES;
use testkit::output_text;

pub(crate) const EPOCH: &str = "1700000000";
pub(crate) const PACKAGES: [&str; 8] =
    ["agent", "busybox", "dom0-init", "dropbear", "e2fsprogs", "hypervisor", "kernel", "u-boot"];
/// TCG on a busy 2-core machine: generous.
pub(crate) const LIMIT: Duration = Duration::from_secs(1500);
pub(crate) const FAILURES: [&str; 4] =
    ["Kernel panic", "rpixen-agent: FAILED", "rpixen-agent: FALLBACK", "hv: panic"];

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
