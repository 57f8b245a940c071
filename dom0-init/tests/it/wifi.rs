//! The rpi4 image's Wi-Fi, checked without a Pi: QEMU's raspi4b has no Wi-Fi chip, so nothing here
//! boots. `rpixen rootfs images/rpi4.yml` is built from the real packages (`pkg/firmware-brcm`,
//! `pkg/wireless-regdb`, `pkg/wpasupplicant` next to busybox, dom0-init, dropbear, e2fsprogs and the
//! kernel's module set), then
//! independent tools read it:
//! - `cpio` lists the archive: the firmware files brcmfmac asks for (names from the driver's own
//!   `.modinfo` and the board name from the Pi 4's device tree, read with `fdtget`) are regular files
//!   with the bytes Debian ships, and wpa_supplicant with its interpreter and every library its ELF
//!   `NEEDED` entries name, transitively (`aarch64-linux-gnu-readelf`), is there;
//! - cfg80211's regulatory database: `openssl cms` verifies its signature over its bytes, and the
//!   signer is one of the keys built into Debian's cfg80211;
//! - `qemu-aarch64` runs the packaged wpa_supplicant with the rootfs's own loader and libraries, and
//!   the driver dom0-init passes (`-D nl80211`, `src/net/wpa.rs`) is built in. The same run with one
//!   library taken away must fail, so the check cannot pass on libraries found elsewhere.
//!
//! The Pi's SD, Ethernet, USB and Wi-Fi drivers are `tests/it/modules.rs`'s (the rpi4 module set).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use rpixen::oci::layout::{Compression, ImageBuilder};

/// The supplicant's driver interface; dom0-init's `net::wpa::command` passes `-D nl80211`.
const DRIVER: &str = "nl80211";

/// One entry of `cpio -tv`: its type letter (`-`, `d`, `l`, …) and size.
#[derive(Debug)]
struct Entry {
    kind: char,
    size: u64,
    /// A symbolic link's target.
    target: Option<String>,
}

/// The rpi4 initramfs built from `images/rpi4.yml` and the real packages, its `cpio -tv` listing, and
/// the libraries and wpa_supplicant unpacked from it by `cpio`.
struct Rootfs {
    dir: PathBuf,
    entries: BTreeMap<String, Entry>,
    root: PathBuf,
}

fn build_rootfs() -> Rootfs {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dom0-init-wifi");
    let _ = std::fs::remove_dir_all(&dir);
    let pkgs = dir.join("pkg");
    std::fs::create_dir_all(&pkgs).unwrap();
    // Every package images/rpi4.yml names for its rootfs (the kernel for the module set).
    for name in [
        "busybox",
        "dropbear",
        "e2fsprogs",
        "firmware-brcm",
        "kernel",
        "wireless-regdb",
        "wpasupplicant",
    ] {
        testkit::run(
            testkit::rpixen_command()
                .args(["pkg", "build"])
                .arg(testkit::repo_root().join("pkg").join(name))
                .arg("-o")
                .arg(pkgs.join(name))
                .arg("--cache")
                .arg(testkit::pkg_cache()),
        );
    }
    // dom0-init as `make pkgs` lays it out (sbin/dom0-init), from the same cargo build.
    let staging = dir.join("staging/dom0-init");
    std::fs::create_dir_all(staging.join("sbin")).unwrap();
    std::fs::copy(testkit::aarch64_dom0_init(), staging.join("sbin/dom0-init")).unwrap();
    ImageBuilder::new()
        .layer_from_dir(&staging, Compression::Gzip)
        .unwrap()
        .write(&pkgs.join("dom0-init"), "latest")
        .unwrap();

    let archive = dir.join("rpi4.cpio");
    testkit::run(
        testkit::rpixen_command()
            .arg("rootfs")
            .arg(testkit::repo_root().join("images/rpi4.yml"))
            .arg("-o")
            .arg(&archive)
            .env("RPIXEN_PKG_DIR", &pkgs)
            .env("XDG_CACHE_HOME", dir.join("cache")),
    );
    let listing = testkit::run(
        Command::new("sh")
            .arg("-c")
            .arg(r#"gzip -dc "$1" | cpio -itv --quiet"#)
            .arg("sh")
            .arg(&archive),
    );
    let entries = parse_listing(&listing);
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    testkit::run(
        Command::new("sh")
            .current_dir(&root)
            .arg("-c")
            .arg(r#"gzip -dc "$1" | cpio -idm --quiet 'lib/*' 'usr/sbin/wpa_supplicant'"#)
            .arg("sh")
            .arg(&archive),
    );
    Rootfs { dir, entries, root }
}

/// `cpio -tv` lines: `MODE LINKS OWNER GROUP SIZE MONTH DAY YEAR PATH[ -> TARGET]`.
fn parse_listing(listing: &str) -> BTreeMap<String, Entry> {
    listing
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 {
                return None;
            }
            let name = fields[8..].join(" ");
            let mut parts = name.splitn(2, " -> ");
            let path = parts.next().unwrap().trim_start_matches("./").to_owned();
            let target = parts.next().map(str::to_owned);
            let kind = fields[0].chars().next().unwrap();
            Some((path, Entry { kind, size: fields[4].parse().unwrap_or(0), target }))
        })
        .collect()
}

impl Rootfs {
    /// The regular file at `path`, following symbolic links inside the rootfs (several packages
    /// ship glibc's loader, one of them as a link to the same bytes under `aarch64-linux-gnu/`).
    fn regular_file(&self, path: &str) -> &Entry {
        let mut path = path.to_owned();
        for _ in 0..8 {
            match self.entries.get(&path) {
                Some(Entry { kind: 'l', target: Some(t), .. }) => path = resolve(&path, t),
                _ => break,
            }
        }
        match self.entries.get(&path) {
            Some(e) if e.kind == '-' => e,
            Some(e) => {
                panic!("{path} in the rpi4 rootfs is of type `{}`, not a regular file", e.kind)
            }
            None => panic!("{path} is not in the rpi4 rootfs"),
        }
    }
}

/// Where a link at `link` (a rootfs path without a leading `/`) to `target` points.
fn resolve(link: &str, target: &str) -> String {
    if let Some(abs) = target.strip_prefix('/') {
        return abs.to_owned();
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for p in target.split('/') {
        match p {
            "." | "" => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// `readelf` on an aarch64 ELF: its `NEEDED` sonames and its program interpreter, if any.
fn elf_needs(file: &Path) -> (Vec<String>, Option<String>) {
    let dynamic = testkit::run(Command::new("aarch64-linux-gnu-readelf").arg("-dW").arg(file));
    let needed = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .map(|l| l.rsplit_once('[').unwrap().1.trim_end_matches(']').to_owned())
        .collect();
    let headers = testkit::run(Command::new("aarch64-linux-gnu-readelf").arg("-lW").arg(file));
    let interp = headers.lines().find_map(|l| {
        let rest = l.split_once("Requesting program interpreter: ")?.1;
        Some(rest.trim_end_matches(']').to_owned())
    });
    (needed, interp)
}

/// A module of Debian's kernel package, decompressed (`rel` below `kernel/`, without `.ko.xz`).
fn kernel_module(rel: &str) -> Vec<u8> {
    let ko = testkit::test_kernel_modules().join(format!("kernel/{rel}.ko.xz"));
    let out = Command::new("xz").arg("-dc").arg(&ko).output().unwrap();
    assert!(out.status.success(), "xz -dc {}", ko.display());
    out.stdout
}

/// A module's `firmware=` entries from its `.modinfo`.
fn module_firmware(module: &[u8]) -> Vec<String> {
    module
        .split(|&b| b == 0)
        .filter_map(|s| s.strip_prefix(b"firmware="))
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// The board name brcmfmac puts in firmware file names: the DTB's first root `compatible`.
fn pi4_board_name() -> String {
    let dtb = testkit::test_kernel_rpi4_dtb();
    let compatible = testkit::run(Command::new("fdtget").arg(&dtb).args(["/", "compatible"]));
    compatible.split_whitespace().next().expect("a root compatible").to_owned()
}

fn run_supplicant(root: &Path, arg: &str) -> std::process::Output {
    Command::new("qemu-aarch64")
        .arg("-L")
        .arg(root)
        .arg(root.join("usr/sbin/wpa_supplicant"))
        .arg(arg)
        .output()
        .expect("qemu-aarch64 (qemu-user) runs")
}

#[test]
fn rpi4_rootfs_has_wifi_firmware_and_a_runnable_wpa_supplicant() {
    let fs = build_rootfs();

    // Firmware: the 43455's names as the driver declares them, the nvram under the Pi 4's board name.
    let declared = module_firmware(&kernel_module(
        "drivers/net/wireless/broadcom/brcm80211/brcmfmac/brcmfmac",
    ));
    let board = pi4_board_name();
    assert_eq!(board, "raspberrypi,4-model-b", "bcm2711-rpi-4-b.dtb's first root compatible");
    let chip = "brcm/brcmfmac43455-sdio";
    for suffix in [".bin", ".clm_blob"] {
        let name = format!("{chip}{suffix}");
        assert!(
            declared.contains(&name),
            "brcmfmac's modinfo declares firmware={name}: {declared:?}"
        );
    }
    assert!(
        declared.iter().any(|f| f == "brcm/brcmfmac*-sdio.*.txt"),
        "brcmfmac looks up per-board nvram"
    );
    let debian = testkit::debian_package("firmware-brcm80211").join("usr/lib/firmware");
    let mut firmware_bytes = 0;
    for name in [format!("{chip}.bin"), format!("{chip}.clm_blob"), format!("{chip}.{board}.txt")] {
        let path = format!("lib/firmware/{name}");
        let entry = fs.regular_file(&path);
        // Debian's brcm/ names are symlinks into cypress/: the image must hold the real bytes.
        let shipped =
            std::fs::read(debian.join(&name)).unwrap_or_else(|e| panic!("Debian's {name}: {e}"));
        let unpacked =
            std::fs::read(fs.root.join(&path)).unwrap_or_else(|e| panic!("{path} from cpio: {e}"));
        assert!(unpacked == shipped, "{path}: not the bytes of Debian's {name}");
        firmware_bytes += entry.size;
    }

    fs.regular_file("usr/share/doc/firmware-brcm80211/copyright");

    // The regulatory database, under the names cfg80211 asks for, signed by a key it has built in
    // (cfg80211 carries its regdb certificates, `net/wireless/certs/*.hex`, as DER: the signer's
    // common name is there as an X.509 CN attribute).
    let cfg80211 = kernel_module("net/wireless/cfg80211");
    let asked = module_firmware(&cfg80211);
    for name in ["regulatory.db", "regulatory.db.p7s"] {
        assert!(
            asked.iter().any(|f| f == name),
            "cfg80211's modinfo declares firmware={name}: {asked:?}"
        );
        fs.regular_file(&format!("lib/firmware/{name}"));
    }
    let verify = Command::new("openssl")
        .args(["cms", "-verify", "-binary", "-noverify", "-inform", "DER", "-in"])
        .arg(fs.root.join("lib/firmware/regulatory.db.p7s"))
        .arg("-content")
        .arg(fs.root.join("lib/firmware/regulatory.db"))
        .args(["-out", "/dev/null"])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "openssl cms -verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let signer = testkit::run(
        Command::new("openssl")
            .args(["pkcs7", "-inform", "DER", "-print_certs", "-noout", "-in"])
            .arg(fs.root.join("lib/firmware/regulatory.db.p7s")),
    );
    let cn = signer
        .lines()
        .find_map(|l| {
            l.strip_prefix("subject=")?.rsplit_once("CN = ").map(|(_, cn)| cn.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no signer CN in regulatory.db.p7s: {signer}"));
    let carried = [0x0c, 0x13].iter().any(|&tag| {
        // OID 2.5.4.3 (commonName), then a UTF8String or PrintableString holding the name.
        let mut attr = vec![0x06, 0x03, 0x55, 0x04, 0x03, tag, cn.len() as u8];
        attr.extend_from_slice(cn.as_bytes());
        cfg80211.windows(attr.len()).any(|w| w == attr)
    });
    assert!(
        carried,
        "regulatory.db is signed by {cn}, a certificate Debian's cfg80211 does not carry"
    );

    // wpa_supplicant: on PATH for dom0-init, with its interpreter and the NEEDED closure in /lib.
    fs.regular_file("usr/sbin/wpa_supplicant");
    let mut todo = vec![fs.root.join("usr/sbin/wpa_supplicant")];
    let mut seen = BTreeSet::new();
    while let Some(file) = todo.pop() {
        let (needed, interp) = elf_needs(&file);
        if let Some(interp) = interp {
            fs.regular_file(interp.trim_start_matches('/'));
        }
        for soname in needed {
            if seen.insert(soname.clone()) {
                let path = format!("lib/{soname}");
                fs.regular_file(&path);
                todo.push(fs.root.join(path));
            }
        }
    }
    for lib in ["libnl-genl-3.so.200", "libssl.so.3", "libdbus-1.so.3", "libc.so.6"] {
        assert!(seen.contains(lib), "wpa_supplicant's closure names {lib}: {seen:?}");
    }
    let library_bytes: u64 = seen.iter().map(|s| fs.entries[&format!("lib/{s}")].size).sum();

    // Run it with the rootfs's own loader and libraries.
    let version = run_supplicant(&fs.root, "-v");
    let stdout = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.status.success() && stdout.starts_with("wpa_supplicant v"),
        "wpa_supplicant -v under qemu-aarch64: {}\n{stdout}{}",
        version.status,
        String::from_utf8_lossy(&version.stderr)
    );
    let help = run_supplicant(&fs.root, "-h");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains(&format!("  {DRIVER} = ")),
        "wpa_supplicant has the {DRIVER} driver:\n{help}"
    );

    // The same run without one of its libraries fails: the libraries above came from the rootfs.
    let broken = fs.dir.join("root-without-libnl-route");
    testkit::run(Command::new("cp").arg("-a").arg(&fs.root).arg(&broken));
    std::fs::remove_file(broken.join("lib/libnl-route-3.so.200")).unwrap();
    let out = run_supplicant(&broken, "-v");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("libnl-route-3.so.200"),
        "wpa_supplicant ran without libnl-route-3.so.200 ({}): {stderr}",
        out.status
    );

    let binary = fs.entries["usr/sbin/wpa_supplicant"].size;
    eprintln!(
        "rpi4 Wi-Fi: firmware {firmware_bytes} B, wpa_supplicant {binary} B, its {} libraries {library_bytes} B ({:?})",
        seen.len(),
        seen
    );
}
