//! `domains:` checked: names that make valid, unique `/chosen` node names, sizes in bytes, and a plan
//! that fits the board. Static partitioning is the rule for both hypervisors: every DomU vCPU gets a
//! physical CPU of its own, and every domain's RAM is its own, so a plan that oversubscribes either is
//! refused here rather than discovered at boot.

use std::path::Path;

use init_config::InitConfig;

use super::plan::{
    invalid, parse_size, placed_files, size_text, BoardKind, FieldError, FileSource,
};
use super::plan::{PlacedFile, RootfsFormat};
use super::schema;

/// The smallest DomU Linux boots in with an initramfs.
pub const MIN_DOMAIN_MEMORY: u64 = 32 << 20;
/// RAM kept for the hypervisor itself (Xen's heap and frame table, our stage-2 tables and copies of
/// the DomU modules) when checking that the domains fit.
pub const HYPERVISOR_RESERVE: u64 = 128 << 20;
/// Static ranges are mapped with 2 MiB stage-2 blocks (and Xen wants at least pages).
pub const STATIC_MEM_ALIGN: u64 = 2 << 20;

/// The physical board's resources, as the plan checks domains against them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoardResources {
    pub cpus: u32,
    /// First byte of RAM.
    pub ram_base: u64,
    /// RAM size in bytes.
    pub ram_size: u64,
}

impl BoardResources {
    pub fn defaults(kind: BoardKind) -> BoardResources {
        match kind {
            BoardKind::QemuVirt => {
                BoardResources { cpus: 4, ram_base: 0x4000_0000, ram_size: 2 << 30 }
            }
            BoardKind::Rpi4 => BoardResources { cpus: 4, ram_base: 0, ram_size: 1 << 30 },
        }
    }
}

/// A host RAM range owned by one DomU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticMem {
    pub base: u64,
    pub size: u64,
}

/// One static DomU, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    pub name: String,
    pub kernel: FileSource,
    pub cmdline: String,
    /// Guest RAM in bytes (a multiple of 1 KiB: the `memory` property counts KiB).
    pub memory: u64,
    pub cpus: u32,
    /// A vPL011 console.
    pub console: bool,
    pub static_mem: Option<StaticMem>,
    pub passthrough: Vec<String>,
    /// OCI images whose layers make the initramfs.
    pub images: Vec<String>,
    pub files: Vec<PlacedFile>,
    pub init: InitConfig,
}

impl Domain {
    /// The DomU's rootfs format: an initramfs, since a DomU has no disk of its own.
    pub const ROOTFS_FORMAT: RootfsFormat = RootfsFormat::Cpio;
}

/// Node names Dom0's modules already use under `/chosen`.
const RESERVED_NAMES: &[&str] = &["dom0", "dom0-ramdisk"];

/// Dom0's vCPUs: `dom0_max_vcpus=N` (or `MIN-MAX`) from the hypervisor command line, else 1 (the
/// least it keeps when the DomUs take the rest).
pub fn dom0_cpus(hypervisor_cmdline: &str) -> Result<u32, String> {
    let Some(value) =
        hypervisor_cmdline.split_whitespace().find_map(|w| w.strip_prefix("dom0_max_vcpus="))
    else {
        return Ok(1);
    };
    let max = value.rsplit('-').next().unwrap_or(value);
    max.parse::<u32>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`dom0_max_vcpus={value}` is not a vCPU count"))
}

/// A `/chosen` child name both U-Boot's `fdt mknod` and Xen take: device-tree node-name characters,
/// no unit address, at most 31 characters.
fn check_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, ',' | '.' | '_' | '+' | '-');
    if name.is_empty() || name.len() > 31 {
        return Err(format!("`{name}` must be 1 to 31 characters long"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) || !name.chars().all(ok_char) {
        return Err(format!(
            "`{name}` is not a device-tree node name (a letter, then letters, digits or , . _ + -)"
        ));
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(format!("`{name}` is the name of Dom0's own /chosen node"));
    }
    Ok(())
}

/// Checks `domains:` against the board; `dom0_memory` and `dom0_cpus` are what Dom0 keeps.
pub fn domains(
    list: &[schema::Domain],
    board: BoardResources,
    dom0_memory: u64,
    dom0_cpus: u32,
    base: &Path,
) -> Result<Vec<Domain>, FieldError> {
    let mut out: Vec<Domain> = Vec::new();
    let mut cpus_left = i64::from(board.cpus) - i64::from(dom0_cpus);
    let mut memory_left =
        board.ram_size as i128 - i128::from(dom0_memory) - i128::from(HYPERVISOR_RESERVE);
    for (i, d) in list.iter().enumerate() {
        let field = |f: &str| format!("domains[{i}].{f}");
        check_name(&d.name).map_err(|e| invalid(field("name"), e))?;
        if out.iter().any(|o| o.name == d.name) {
            return Err(invalid(field("name"), format!("`{}` is used twice", d.name)));
        }
        let memory = parse_size(&d.memory).map_err(|e| invalid(field("memory"), e))?;
        if memory < MIN_DOMAIN_MEMORY || !memory.is_multiple_of(1 << 10) {
            return Err(invalid(
                field("memory"),
                format!("`{}`: give at least 32M, in whole KiB", d.memory),
            ));
        }
        if d.cpus == 0 {
            return Err(invalid(field("cpus"), "a domain needs at least one vCPU"));
        }
        if i64::from(d.cpus) > cpus_left {
            return Err(invalid(
                field("cpus"),
                format!(
                    "{} vCPUs do not fit: the board has {} CPUs, Dom0 keeps {dom0_cpus} and the domains before this one take {}, so {} are free (each DomU vCPU gets a physical CPU of its own)",
                    d.cpus,
                    board.cpus,
                    i64::from(board.cpus) - i64::from(dom0_cpus) - cpus_left,
                    cpus_left.max(0),
                ),
            ));
        }
        cpus_left -= i64::from(d.cpus);
        if i128::from(memory) > memory_left {
            return Err(invalid(
                field("memory"),
                format!(
                    "{} does not fit: the board has {} of RAM, Dom0 takes {}, the hypervisor keeps {} and the domains before this one take the rest but {}",
                    size_text(memory),
                    size_text(board.ram_size),
                    size_text(dom0_memory),
                    size_text(HYPERVISOR_RESERVE),
                    size_text(memory_left.max(0) as u64),
                ),
            ));
        }
        memory_left -= i128::from(memory);
        let static_mem = match &d.static_mem {
            None => None,
            Some(s) => Some(static_mem(s, memory, board, &out).map_err(|e| {
                let mut e = e;
                e.field = field(&e.field);
                e
            })?),
        };
        for (j, p) in d.passthrough.iter().enumerate() {
            if !p.starts_with('/') || p.len() < 2 || p.contains(char::is_whitespace) {
                return Err(invalid(
                    field(&format!("passthrough[{j}]")),
                    format!("`{p}` is not an absolute device-tree path"),
                ));
            }
            if let Some(other) = out.iter().find(|o| o.passthrough.contains(p)) {
                return Err(invalid(
                    field(&format!("passthrough[{j}]")),
                    format!("`{p}` already belongs to domain `{}`", other.name),
                ));
            }
        }
        d.init.validate().map_err(|e| match e {
            init_config::ConfigError::Invalid { field: f, message } => {
                invalid(field(&format!("init.{f}")), message)
            }
            other => invalid(field("init"), other.to_string()),
        })?;
        if d.rootfs.images.is_empty() {
            return Err(invalid(field("rootfs.images"), "at least one OCI image is needed"));
        }
        let files = placed_files(&d.rootfs.files, &field("rootfs.files"), base)?;
        out.push(Domain {
            name: d.name.clone(),
            kernel: FileSource::from_ref(&d.kernel, base),
            cmdline: d.cmdline.clone(),
            memory,
            cpus: d.cpus,
            console: d.console,
            static_mem,
            passthrough: d.passthrough.clone(),
            images: d.rootfs.images.clone(),
            files,
            init: d.init.clone(),
        });
    }
    Ok(out)
}

fn static_mem(
    s: &schema::StaticMem,
    memory: u64,
    board: BoardResources,
    before: &[Domain],
) -> Result<StaticMem, FieldError> {
    let size = parse_size(&s.size).map_err(|e| invalid("static_mem.size", e))?;
    if size != memory {
        return Err(invalid(
            "static_mem.size",
            format!(
                "{} must equal `memory` ({}): the range is all of the domain's RAM",
                size_text(size),
                size_text(memory)
            ),
        ));
    }
    if !s.base.is_multiple_of(STATIC_MEM_ALIGN) || !size.is_multiple_of(STATIC_MEM_ALIGN) {
        return Err(invalid("static_mem", "base and size must be multiples of 2M"));
    }
    let ram_end = board.ram_base + board.ram_size;
    let end = s.base.saturating_add(size);
    if s.base < board.ram_base || end > ram_end {
        return Err(invalid(
            "static_mem.base",
            format!(
                "{:#x}..{end:#x} is not inside the board's RAM {:#x}..{ram_end:#x}",
                s.base, board.ram_base
            ),
        ));
    }
    for o in before {
        if let Some(m) = o.static_mem {
            if s.base < m.base + m.size && m.base < end {
                return Err(invalid(
                    "static_mem.base",
                    format!("{:#x}..{end:#x} overlaps domain `{}`'s static memory", s.base, o.name),
                ));
            }
        }
    }
    Ok(StaticMem { base: s.base, size })
}
