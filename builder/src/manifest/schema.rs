//! The image manifest as it is written: one YAML file per board in `images/`. Unknown keys are errors
//! (`deny_unknown_fields`), so a typo never silently drops a setting. These types say only what the
//! YAML may contain; [`super::plan`] checks them and turns them into the typed [`super::Plan`] that
//! every later stage takes.

use std::path::PathBuf;

use init_config::InitConfig;
use serde::Deserialize;

pub use super::plan::{BoardKind, HypervisorKind, RootfsFormat};

/// A whole image description.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
    /// Static DomUs (Xen's dom0less `xen,domain` nodes), started by the hypervisor beside Dom0.
    #[serde(default)]
    pub domains: Vec<Domain>,
}

/// One static DomU: its kernel, a root filesystem built like Dom0's (an initramfs: a DomU has no disk),
/// and its share of the board.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Domain {
    /// The `/chosen/<name>` node name; also the folder of its files on the boot FAT.
    pub name: String,
    pub kernel: FileRef,
    /// The DomU kernel's command line (the kernel module's `bootargs`).
    #[serde(default)]
    pub cmdline: String,
    /// Guest RAM, as `256M`.
    pub memory: String,
    /// vCPUs, each pinned to a physical CPU of its own.
    #[serde(default = "one")]
    pub cpus: u32,
    /// A virtual PL011 (`vpl011`): the DomU's console, on the hypervisor's serial line.
    #[serde(default)]
    pub console: bool,
    /// Exactly this host RAM range (`xen,static-mem`), instead of memory the hypervisor picks.
    #[serde(default)]
    pub static_mem: Option<StaticMem>,
    /// Host device-tree paths of the devices this DomU owns.
    #[serde(default)]
    pub passthrough: Vec<String>,
    pub rootfs: DomainRootfs,
    /// What the DomU's `dom0-init` runs (`/etc/rpixen/init.yml` in its initramfs).
    #[serde(default)]
    pub init: InitConfig,
}

fn one() -> u32 {
    1
}

/// A host RAM range: `{base: 0x60000000, size: 256M}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticMem {
    pub base: u64,
    pub size: String,
}

/// A DomU's root filesystem: always an initramfs (cpio), from OCI layers and files as Dom0's.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainRootfs {
    pub images: Vec<String>,
    #[serde(default)]
    pub files: Vec<InlineFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
    /// Physical CPUs (default: 4, the Pi 4's and the `-smp 4` our QEMU `virt` runs use).
    #[serde(default)]
    pub cpus: Option<u32>,
    /// RAM the board has (default: 2G on QEMU `virt`, the `-m 2G` our runs use; 1G on the Pi 4, the
    /// smallest model).
    #[serde(default)]
    pub memory: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hypervisor {
    pub kind: HypervisorKind,
    pub binary: FileRef,
    /// The hypervisor command line (`xen,xen-bootargs`).
    #[serde(default)]
    pub cmdline: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dom0 {
    pub kernel: FileRef,
    /// Dom0's command line (`xen,dom0-bootargs`).
    #[serde(default)]
    pub cmdline: String,
    /// Dom0 memory, as `dom0_mem=` takes it: `512M`, `1G`.
    pub memory: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rootfs {
    pub format: RootfsFormat,
    /// OCI images whose layers, in order, make the rootfs: package names (`busybox`),
    /// `oci:DIR[:TAG]` layouts or registry references (`host/repo:tag`, `...@sha256:...`).
    pub images: Vec<String>,
    /// Files added on top of the layers, as LinuxKit's `files:`.
    #[serde(default)]
    pub files: Vec<InlineFile>,
    /// The board's kernel modules (`pkg/kernel/modules.yml`), with their dependencies and index
    /// files, from a kernel image's `lib/modules/<release>/`. Absent: no modules are added.
    #[serde(default)]
    pub modules: Option<Modules>,
}

/// `rootfs.modules`: where the module tree comes from and what the manifest adds to the board's set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Modules {
    /// The OCI image holding `lib/modules/<release>/`; default: the image `dom0.kernel` is read from.
    #[serde(default)]
    pub image: Option<String>,
    /// Module names added to the board's default set.
    #[serde(default)]
    pub add: Vec<String>,
}

/// A file in the rootfs or on CONFIG: given inline, or copied from a [`FileRef`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootFile {
    pub source: FileRef,
    /// Name on the boot FAT (may contain `/` for subfolders, e.g. `overlays/x.dtbo`).
    pub dest: String,
}

/// Where a file comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum FileRef {
    /// A file inside an OCI image: `{image: kernel, path: boot/vmlinuz}`.
    InImage { image: String, path: String },
    /// A file on the build host, relative to the manifest's folder unless absolute.
    Host { file: PathBuf },
}

/// Partition sizes, as `64M`, `1G`. The boot FAT stays small: large FATs have broken Pi boots.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partitions {
    pub boot: String,
    pub imga: String,
    pub imgb: String,
    pub config: String,
    pub persist: String,
}
