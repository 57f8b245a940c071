//! The typed plan: a manifest checked once and turned into what the later stages need. Sizes are
//! bytes, file references are a [`FileSource`] (host paths already resolved against the manifest's
//! folder), inline file contents are bytes with a numeric mode. Every check that needs only the
//! manifest happens here, so a bad field is reported before any work starts, naming the field.

use std::path::{Path, PathBuf};

use init_config::InitConfig;
use serde::Deserialize;

use super::domains::{self, BoardResources, Domain};
use super::schema::{self, FileRef, InlineFile, Manifest};

/// The board a manifest is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BoardKind {
    Rpi4,
    QemuVirt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HypervisorKind {
    /// Our own Rust hypervisor (`hypervisor/`).
    Rpixen,
    /// Xen, as an alternative; the same boot script drives both.
    Xen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RootfsFormat {
    /// A compressed newc cpio initramfs on the boot FAT; Dom0 runs from RAM.
    Cpio,
    /// A squashfs on IMGA (and IMGB); a small initramfs switches into it.
    Squashfs,
}

/// Where a file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSource {
    /// A file on the build host (relative paths in the manifest are resolved against its folder).
    Host(PathBuf),
    /// A file inside an OCI image: a package name, `oci:DIR[:TAG]` or a registry reference.
    InImage { image: String, path: String },
}

impl FileSource {
    pub(super) fn from_ref(r: &FileRef, base: &Path) -> FileSource {
        match r {
            FileRef::Host { file } => FileSource::Host(base.join(file)),
            FileRef::InImage { image, path } => {
                FileSource::InImage { image: image.clone(), path: path.clone() }
            }
        }
    }

    /// The last path component (the name a file keeps on the boot FAT).
    pub fn base_name(&self) -> String {
        let p = match self {
            FileSource::Host(file) => file.to_string_lossy().into_owned(),
            FileSource::InImage { path, .. } => path.clone(),
        };
        p.rsplit('/').next().unwrap_or(&p).to_owned()
    }
}

/// What a placed file contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileContent {
    Inline(Vec<u8>),
    From(FileSource),
}

/// A file placed in the rootfs or on CONFIG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedFile {
    /// The path as the manifest gives it (absolute in the rootfs; CONFIG takes it from its root).
    pub path: String,
    pub content: FileContent,
    /// Permission bits (default 0644).
    pub mode: u32,
}

/// A file copied to the boot FAT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFile {
    pub source: FileSource,
    /// Name on the boot FAT, without a leading `/` (may contain `/` for subfolders).
    pub dest: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Board {
    pub kind: BoardKind,
    /// The device tree put on the boot FAT; `None` only on `qemu-virt`, where QEMU provides it.
    pub dtb: Option<FileSource>,
    pub uboot: FileSource,
    pub console: String,
    /// Device-tree nodes set to `status = "disabled"` (only with `dtb`).
    pub dtb_disable: Vec<String>,
    /// CPUs and RAM the domains are checked against.
    pub resources: BoardResources,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hypervisor {
    pub kind: HypervisorKind,
    pub binary: FileSource,
    pub cmdline: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dom0 {
    pub kernel: FileSource,
    pub cmdline: String,
    /// Dom0 memory in bytes.
    pub memory: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rootfs {
    pub format: RootfsFormat,
    /// OCI images whose layers, in order, make the rootfs (at least one).
    pub images: Vec<String>,
    /// Files added on top of the layers; each path is absolute and free of `..`.
    pub files: Vec<PlacedFile>,
    /// The kernel modules Dom0's rootfs carries; `None`: none are added.
    pub modules: Option<ModuleSet>,
}

/// The board's kernel modules plus the manifest's additions, from a kernel image's module tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSet {
    /// The OCI image holding `lib/modules/<release>/`.
    pub image: String,
    /// Module names added to the board's default set (`pkg/kernel/modules.yml`).
    pub add: Vec<String>,
}

/// Partition sizes in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partitions {
    pub boot: u64,
    pub imga: u64,
    pub imgb: u64,
    pub config: u64,
    pub persist: u64,
}

/// A whole image, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub board: Board,
    pub firmware: Vec<BootFile>,
    /// Extra `config.txt` lines (Raspberry Pi only).
    pub config_txt: Vec<String>,
    pub hypervisor: Hypervisor,
    pub dom0: Dom0,
    pub rootfs: Rootfs,
    pub init: InitConfig,
    pub config_files: Vec<PlacedFile>,
    pub partitions: Partitions,
    /// Static DomUs, in manifest order (Xen numbers them d1, d2, ... in this order).
    pub domains: Vec<Domain>,
}

/// The smallest boot FAT: it is FAT32, which needs 65525 clusters.
pub const MIN_BOOT_SIZE: u64 = 33 << 20;

/// A field at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

pub(super) fn invalid(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError { field: field.into(), message: message.into() }
}

impl Plan {
    /// Checks a parsed manifest; host paths are resolved against `base` (the manifest's folder).
    pub fn from_manifest(m: &Manifest, base: &Path) -> Result<Plan, FieldError> {
        let src = |r: &FileRef| FileSource::from_ref(r, base);
        let board = &m.board;
        let dtb = board.dtb.as_ref().map(src);
        match (&dtb, board.kind) {
            (None, BoardKind::Rpi4) => {
                return Err(invalid(
                    "board.dtb",
                    "the Raspberry Pi 4 needs a device tree on the boot FAT",
                ))
            }
            (None, BoardKind::QemuVirt) if !board.dtb_disable.is_empty() => {
                return Err(invalid(
                    "board.dtb_disable",
                    "needs `board.dtb` (QEMU virt's own DTB is not on the disk)",
                ))
            }
            _ => {}
        }
        if board.kind != BoardKind::Rpi4 && !m.config_txt.is_empty() {
            return Err(invalid("config_txt", "only the Raspberry Pi reads config.txt"));
        }
        let memory = parse_size(&m.dom0.memory).map_err(|e| invalid("dom0.memory", e))?;
        m.init.validate().map_err(|e| match e {
            init_config::ConfigError::Invalid { field, message } => {
                invalid(format!("init.{field}"), message)
            }
            other => invalid("init", other.to_string()),
        })?;
        if m.rootfs.images.is_empty() {
            return Err(invalid("rootfs.images", "at least one OCI image is needed"));
        }
        let rootfs_files = placed_files(&m.rootfs.files, "rootfs.files", base)?;
        for (i, f) in rootfs_files.iter().enumerate() {
            if !f.path.starts_with('/')
                || f.path.split('/').any(|c| c == "..")
                || f.path.trim_matches('/').is_empty()
            {
                return Err(invalid(
                    format!("rootfs.files[{i}].path"),
                    format!("`{}` must be an absolute path of a file, without `..`", f.path),
                ));
            }
        }
        let modules = module_set(&m.rootfs.modules, &m.dom0.kernel)?;
        let partitions = partitions(&m.partitions)?;
        let mut resources = BoardResources::defaults(board.kind);
        if let Some(cpus) = board.cpus {
            if cpus == 0 {
                return Err(invalid("board.cpus", "a board has at least one CPU"));
            }
            resources.cpus = cpus;
        }
        if let Some(text) = &board.memory {
            resources.ram_size = parse_size(text).map_err(|e| invalid("board.memory", e))?;
        }
        let dom0_cpus = domains::dom0_cpus(&m.hypervisor.cmdline)
            .map_err(|e| invalid("hypervisor.cmdline", e))?;
        if !m.domains.is_empty() && dom0_cpus >= resources.cpus {
            return Err(invalid(
                "hypervisor.cmdline",
                format!(
                    "Dom0 takes all {} CPUs (dom0_max_vcpus={dom0_cpus}), so no DomU has one of its own: lower dom0_max_vcpus",
                    resources.cpus
                ),
            ));
        }
        let domains = domains::domains(&m.domains, resources, memory, dom0_cpus, base)?;
        Ok(Plan {
            board: Board {
                kind: board.kind,
                dtb,
                uboot: src(&board.uboot),
                console: board.console.clone(),
                dtb_disable: board.dtb_disable.clone(),
                resources,
            },
            firmware: m
                .firmware
                .iter()
                .map(|f| BootFile {
                    source: src(&f.source),
                    dest: f.dest.trim_start_matches('/').to_owned(),
                })
                .collect(),
            config_txt: m.config_txt.clone(),
            hypervisor: Hypervisor {
                kind: m.hypervisor.kind,
                binary: src(&m.hypervisor.binary),
                cmdline: m.hypervisor.cmdline.clone(),
            },
            dom0: Dom0 { kernel: src(&m.dom0.kernel), cmdline: m.dom0.cmdline.clone(), memory },
            rootfs: Rootfs {
                format: m.rootfs.format,
                images: m.rootfs.images.clone(),
                files: rootfs_files,
                modules,
            },
            init: m.init.clone(),
            config_files: placed_files(&m.config_files, "config_files", base)?,
            partitions,
            domains,
        })
    }
}

pub(super) fn placed_files(
    files: &[InlineFile],
    field: &str,
    base: &Path,
) -> Result<Vec<PlacedFile>, FieldError> {
    let mut out = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let content = match (&f.contents, &f.source) {
            (Some(text), None) => FileContent::Inline(text.clone().into_bytes()),
            (None, Some(r)) => FileContent::From(FileSource::from_ref(r, base)),
            _ => {
                return Err(invalid(
                    format!("{field}[{i}] ({})", f.path),
                    "give exactly one of `contents` and `source`",
                ))
            }
        };
        let mode = match &f.mode {
            Some(m) => {
                u32::from_str_radix(m, 8).map_err(|_| {
                    invalid(format!("{field}[{i}].mode"), format!("`{m}` is not an octal mode"))
                })? & 0o7777
            }
            None => 0o644,
        };
        out.push(PlacedFile { path: f.path.clone(), content, mode });
    }
    Ok(out)
}

/// `rootfs.modules` with its image resolved: given, or the image the Dom0 kernel comes from.
fn module_set(
    m: &Option<schema::Modules>,
    kernel: &FileRef,
) -> Result<Option<ModuleSet>, FieldError> {
    let Some(m) = m else { return Ok(None) };
    let image = match (&m.image, kernel) {
        (Some(image), _) => image.clone(),
        (None, FileRef::InImage { image, .. }) => image.clone(),
        (None, FileRef::Host { .. }) => {
            return Err(invalid(
                "rootfs.modules.image",
                "`dom0.kernel` is a host file, so name the OCI image that holds lib/modules/",
            ))
        }
    };
    for (i, name) in m.add.iter().enumerate() {
        if name.is_empty() || name.contains(['/', ' ']) || name.ends_with(".ko") {
            return Err(invalid(
                format!("rootfs.modules.add[{i}]"),
                format!("`{name}` is not a module name (as modinfo names it: `zram`, `wireguard`)"),
            ));
        }
    }
    Ok(Some(ModuleSet { image, add: m.add.clone() }))
}

fn partitions(p: &schema::Partitions) -> Result<Partitions, FieldError> {
    let size = |name: &str, text: &str| {
        parse_size(text).map_err(|e| invalid(format!("partitions.{name}"), e))
    };
    let sizes = Partitions {
        boot: size("boot", &p.boot)?,
        imga: size("imga", &p.imga)?,
        imgb: size("imgb", &p.imgb)?,
        config: size("config", &p.config)?,
        persist: size("persist", &p.persist)?,
    };
    if sizes.boot < MIN_BOOT_SIZE {
        return Err(invalid("partitions.boot", "the boot FAT is FAT32, which needs at least 33M"));
    }
    Ok(sizes)
}

/// Parses a size such as `512M`, `1G`, `64K` or a plain byte count.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let n: u64 =
        digits.parse().map_err(|_| format!("`{text}` is not a size (examples: 512M, 1G)"))?;
    let mult: u64 = match unit.trim_end_matches(['i', 'B']) {
        "" => 1,
        "K" | "k" => 1 << 10,
        "M" | "m" => 1 << 20,
        "G" | "g" => 1 << 30,
        _ => return Err(format!("`{text}` has an unknown unit (use K, M or G)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("`{text}` is too large"))
}

/// A byte count as Xen's `dom0_mem=` and Linux's `mem=` take it: the largest of G, M, K that
/// divides it exactly, else plain bytes.
pub fn size_text(bytes: u64) -> String {
    for (unit, shift) in [("G", 30), ("M", 20), ("K", 10)] {
        if bytes != 0 && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}
