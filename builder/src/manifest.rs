//! The image manifest: one YAML file per board in `images/`, describing everything that goes into a
//! `live.raw`. Unknown keys are errors (`deny_unknown_fields`), so a typo never silently drops a setting.
//!
//! Files are named through [`FileRef`]: a path on the build host, or a path inside an OCI image (a
//! `pkg/` package by name, an `oci:DIR[:TAG]` layout or a registry reference).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The `init:` section is the file `dom0-init` reads (`/etc/rpixen/init.yml`); its types live in the
/// `init-config` crate so the builder and PID 1 agree on every field.
pub use init_config::{Backoff, InitConfig, Mount as InitMount, Restart, Service};

/// Errors from reading a manifest. Each names the file and, where known, the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read image manifest {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("image manifest {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("image manifest {path}: field `{field}`: {message}")]
    Invalid { path: PathBuf, field: String, message: String },
}

/// A whole image description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub board: Board,
    /// Files copied to the root of the boot FAT unchanged (Pi GPU firmware, overlays, ...).
    #[serde(default)]
    pub firmware: Vec<BootFile>,
    /// Extra lines appended to the generated `config.txt` (Pi only).
    #[serde(default)]
    pub config_txt: Vec<String>,
    pub hypervisor: Hypervisor,
    pub dom0: Dom0,
    pub rootfs: Rootfs,
    /// What `dom0-init` runs: written to `/etc/rpixen/init.yml` in the rootfs.
    #[serde(default)]
    pub init: InitConfig,
    /// Files placed on the CONFIG partition.
    #[serde(default)]
    pub config_files: Vec<InlineFile>,
    pub partitions: Partitions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BoardKind {
    Rpi4,
    QemuVirt,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    pub kind: BoardKind,
    /// The device tree put on the boot FAT. On `qemu-virt` QEMU provides it, so it may be absent.
    #[serde(default)]
    pub dtb: Option<FileRef>,
    /// U-Boot binary: started by the Pi firmware (`kernel=` in config.txt) or by QEMU's `-bios`.
    pub uboot: FileRef,
    /// The hypervisor's console, as in Xen's `dtuart=`: a DT alias (`serial1`) or path.
    pub console: String,
    /// Device-tree nodes set to `status = "disabled"` in the DTB written to the boot FAT (for QEMU's
    /// raspi4b, which lacks the HDMI blocks the upstream DTB describes).
    #[serde(default)]
    pub dtb_disable: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HypervisorKind {
    /// Our own Rust hypervisor (`hypervisor/`).
    Rpixen,
    /// Xen, as an alternative; the same boot script drives both.
    Xen,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hypervisor {
    pub kind: HypervisorKind,
    pub binary: FileRef,
    /// The hypervisor command line (`xen,xen-bootargs`).
    #[serde(default)]
    pub cmdline: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dom0 {
    pub kernel: FileRef,
    /// Dom0's command line (`xen,dom0-bootargs`).
    #[serde(default)]
    pub cmdline: String,
    /// Dom0 memory, as `dom0_mem=` takes it: `512M`, `1G`.
    pub memory: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RootfsFormat {
    /// A compressed newc cpio initramfs on the boot FAT; Dom0 runs from RAM.
    Cpio,
    /// A squashfs on IMGA (and IMGB); a small initramfs switches into it.
    Squashfs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rootfs {
    pub format: RootfsFormat,
    /// OCI images whose layers, in order, make the rootfs: package names (`busybox`),
    /// `oci:DIR[:TAG]` layouts or registry references (`host/repo:tag`, `...@sha256:...`).
    pub images: Vec<String>,
    /// Files added on top of the layers, as LinuxKit's `files:`.
    #[serde(default)]
    pub files: Vec<InlineFile>,
}

/// A file in the rootfs or on CONFIG: given inline, or copied from a [`FileRef`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InlineFile {
    /// Absolute path in the target filesystem.
    pub path: String,
    #[serde(default)]
    pub contents: Option<String>,
    #[serde(default)]
    pub source: Option<FileRef>,
    /// Octal mode, as a string (`"0755"`); default 0644.
    #[serde(default)]
    pub mode: Option<String>,
}

/// A file for the boot FAT: where it comes from and the name it gets there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootFile {
    pub source: FileRef,
    /// Name on the boot FAT (may contain `/` for subfolders, e.g. `overlays/x.dtbo`).
    pub dest: String,
}

/// Where a file comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum FileRef {
    /// A file inside an OCI image: `{image: kernel, path: boot/vmlinuz}`.
    InImage { image: String, path: String },
    /// A file on the build host, relative to the manifest's folder unless absolute.
    Host { file: PathBuf },
}

/// Partition sizes, as `64M`, `1G`. The boot FAT stays small: large FATs have broken Pi boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partitions {
    pub boot: String,
    pub imga: String,
    pub imgb: String,
    pub config: String,
    pub persist: String,
}

impl Manifest {
    /// Reads and checks a manifest file.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ManifestError::Read { path: path.to_owned(), source })?;
        Manifest::parse(&text, path)
    }

    /// Parses manifest text; `path` names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, ManifestError> {
        let manifest: Manifest = serde_norway::from_str(text)
            .map_err(|e| ManifestError::Parse { path: path.to_owned(), message: e.to_string() })?;
        manifest.validate(path)?;
        Ok(manifest)
    }

    fn validate(&self, path: &Path) -> Result<(), ManifestError> {
        let invalid = |field: &str, message: String| ManifestError::Invalid {
            path: path.to_owned(),
            field: field.to_owned(),
            message,
        };
        parse_size(&self.dom0.memory).map_err(|m| invalid("dom0.memory", m))?;
        let p = &self.partitions;
        for (field, value) in [
            ("partitions.boot", &p.boot),
            ("partitions.imga", &p.imga),
            ("partitions.imgb", &p.imgb),
            ("partitions.config", &p.config),
            ("partitions.persist", &p.persist),
        ] {
            parse_size(value).map_err(|m| invalid(field, m))?;
        }
        if self.board.kind == BoardKind::Rpi4 && self.board.dtb.is_none() {
            return Err(invalid("board.dtb", "the Raspberry Pi 4 needs a device tree on the boot FAT".into()));
        }
        self.init.validate().map_err(|e| match e {
            init_config::ConfigError::Invalid { field, message } => invalid(&format!("init.{field}"), message),
            other => invalid("init", other.to_string()),
        })?;
        if self.rootfs.images.is_empty() {
            return Err(invalid("rootfs.images", "at least one OCI image is needed".into()));
        }
        for (i, f) in self.rootfs.files.iter().chain(self.config_files.iter()).enumerate() {
            if f.contents.is_some() == f.source.is_some() {
                return Err(invalid(
                    &format!("files[{i}] ({})", f.path),
                    "give exactly one of `contents` and `source`".into(),
                ));
            }
            if let Some(mode) = &f.mode {
                u32::from_str_radix(mode, 8)
                    .map_err(|_| invalid(&format!("files[{i}].mode"), format!("`{mode}` is not an octal mode")))?;
            }
        }
        Ok(())
    }
}

/// Parses a size such as `512M`, `1G`, `64K` or a plain byte count.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let n: u64 = digits.parse().map_err(|_| format!("`{text}` is not a size (examples: 512M, 1G)"))?;
    let mult: u64 = match unit.trim_end_matches(['i', 'B']) {
        "" => 1,
        "K" | "k" => 1 << 10,
        "M" | "m" => 1 << 20,
        "G" | "g" => 1 << 30,
        _ => return Err(format!("`{text}` has an unknown unit (use K, M or G)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert!(parse_size("12X").is_err());
        assert!(parse_size("M").is_err());
    }

    #[test]
    fn board_manifests_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images");
        for name in ["rpi4.yml", "qemu-virt.yml"] {
            let m = Manifest::load(&dir.join(name)).unwrap();
            assert!(!m.rootfs.images.is_empty(), "{name}");
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/qemu-virt.yml");
        let text = std::fs::read_to_string(&dir).unwrap().replace("dom0:\n", "dom0:\n  colour: blue\n");
        let err = Manifest::parse(&text, Path::new("x.yml")).unwrap_err().to_string();
        assert!(err.contains("x.yml") && err.contains("colour"), "{err}");
    }

    #[test]
    fn init_section_uses_init_config() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/qemu-virt.yml");
        let text = std::fs::read_to_string(&dir).unwrap();
        let good = text.replace(
            "init:\n",
            "init:\n  services:\n    - {name: web, command: [httpd], restart: on-failure}\n",
        );
        let m = Manifest::parse(&good, Path::new("x.yml")).unwrap();
        assert_eq!(m.init.services[0].restart(), Restart::OnFailure);
        let bad = text.replace("init:\n", "init:\n  services:\n    - {name: web, command: []}\n");
        let err = Manifest::parse(&bad, Path::new("x.yml")).unwrap_err().to_string();
        assert!(err.contains("init.services[0].command"), "{err}");
    }

    #[test]
    fn bad_memory_names_field() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/qemu-virt.yml");
        let text = std::fs::read_to_string(&dir).unwrap();
        let text = text.replace("memory: 512M", "memory: lots");
        let err = Manifest::parse(&text, Path::new("x.yml")).unwrap_err().to_string();
        assert!(err.contains("dom0.memory"), "{err}");
    }
}
