//! The board's kernel modules in Dom0's rootfs: the per-board set of `pkg/kernel/modules.yml`
//! (`common` plus `boards.<board>`, embedded at build time) and the manifest's `rootfs.modules.add`,
//! closed over their dependencies (kmod-index, from each module's `.modinfo`), copied from the kernel
//! image's `lib/modules/<release>/` with `modules.builtin` and the index files `modprobe` reads
//! (`modules.dep`, `modules.alias`, `modules.softdep`). dom0-init then loads what the hardware asks
//! for, so no image needs a list of modules to load.
//!
//! Only the modules the set reaches are decompressed (a distribution kernel has thousands).

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::tree::{Kind, Meta, Node, Tree};
use crate::manifest::BoardKind;

/// `pkg/kernel/modules.yml`, the per-board sets, as the kernel package documents them.
const MODULE_SETS: &str = include_str!("../../../pkg/kernel/modules.yml");

#[derive(Debug, thiserror::Error)]
pub enum ModulesError {
    #[error("rootfs.modules: image `{image}` has no lib/modules/<release>/ folder")]
    NoTree { image: String },
    #[error("rootfs.modules: image `{image}` has several module trees ({releases}); keep one")]
    SeveralTrees { image: String, releases: String },
    #[error("rootfs.modules: image `{image}`, lib/modules/{release}")]
    Index {
        image: String,
        release: String,
        #[source]
        source: kmod_index::Error,
    },
    #[error("pkg/kernel/modules.yml (built into rpixen)")]
    Sets(#[source] serde_norway::Error),
    #[error("pkg/kernel/modules.yml (built into rpixen): no `boards.{0}` entry")]
    NoBoardSet(&'static str),
    #[error("rootfs.modules: cannot place /{path}: {message}")]
    Place { path: String, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModuleSets {
    common: Vec<String>,
    boards: BTreeMap<String, Vec<String>>,
}

fn board_name(board: BoardKind) -> &'static str {
    match board {
        BoardKind::Rpi4 => "rpi4",
        BoardKind::QemuVirt => "qemu-virt",
    }
}

/// The default set of `board`: `common` plus `boards.<board>`.
pub fn board_set(board: BoardKind) -> Result<Vec<String>, ModulesError> {
    let sets: ModuleSets = serde_norway::from_str(MODULE_SETS).map_err(ModulesError::Sets)?;
    let name = board_name(board);
    let own = sets.boards.get(name).ok_or(ModulesError::NoBoardSet(name))?;
    Ok(sets.common.iter().chain(own).cloned().collect())
}

/// What [`install`] added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The kernel release (`6.12.117+deb13-arm64`).
    pub release: String,
    /// Module names in load order.
    pub modules: Vec<String>,
    /// Bytes added: module files, `modules.builtin` and the index files.
    pub bytes: u64,
}

/// A file of the kernel image's tree: its bytes.
fn file_data<'t>(kernel: &'t Tree, path: &str) -> Option<&'t [u8]> {
    let id = kernel.lookup(path.as_bytes(), true)?;
    match &kernel.node(id).kind {
        Kind::File(data) => Some(data),
        _ => None,
    }
}

/// Copies `wanted` and their dependencies from `kernel` (the unpacked kernel image named `image`)
/// into `rootfs` under `lib/modules/<release>/`, with `modules.builtin` and kmod's index files.
pub fn install(
    rootfs: &mut Tree,
    kernel: &Tree,
    image: &str,
    wanted: &[String],
) -> Result<Installed, ModulesError> {
    // Every regular file below lib/modules/, by release.
    let mut trees: BTreeMap<String, Vec<String>> = BTreeMap::new();
    kernel.walk_all(|path, id| {
        let Some(rest) = path.strip_prefix(b"lib/modules/") else { return };
        let Some((release, rel)) = split_release(rest) else { return };
        if matches!(kernel.node(id).kind, Kind::File(_)) {
            trees
                .entry(String::from_utf8_lossy(release).into_owned())
                .or_default()
                .push(String::from_utf8_lossy(rel).into_owned());
        }
    });
    let release = match trees.len() {
        0 => return Err(ModulesError::NoTree { image: image.to_owned() }),
        1 => trees.keys().next().expect("one entry").clone(),
        _ => {
            return Err(ModulesError::SeveralTrees {
                image: image.to_owned(),
                releases: trees.keys().cloned().collect::<Vec<_>>().join(", "),
            })
        }
    };
    let index_err =
        |source| ModulesError::Index { image: image.to_owned(), release: release.clone(), source };
    let base = format!("lib/modules/{release}");
    let paths: BTreeMap<String, String> = trees[&release]
        .iter()
        .filter(|p| p.ends_with(".ko") || p.ends_with(".ko.xz"))
        .filter_map(|p| Some((kmod_index::name_of(p)?, p.clone())))
        .collect();
    let builtin_text = file_data(kernel, &format!("{base}/modules.builtin")).unwrap_or_default();
    let builtin = kmod_index::parse_builtin(&String::from_utf8_lossy(builtin_text));

    // Reads only the modules the set reaches, as kmod_index::closure_in_tree does on a folder.
    let mut read = Vec::new();
    let mut seen = BTreeSet::new();
    let mut todo: Vec<(String, String)> =
        wanted.iter().map(|w| (kmod_index::normalize(w), "the module set".to_owned())).collect();
    while let Some((name, needed_by)) = todo.pop() {
        if builtin.contains(&name) || !seen.insert(name.clone()) {
            continue;
        }
        let Some(rel) = paths.get(&name) else {
            return Err(index_err(kmod_index::Error::Missing { name, needed_by }));
        };
        let raw = file_data(kernel, &format!("{base}/{rel}")).unwrap_or_default().to_vec();
        let m = kmod_index::module_info(rel, raw).map_err(index_err)?;
        for d in &m.depends {
            todo.push((d.clone(), m.name.clone()));
        }
        for d in m.softdep_pre.iter().chain(&m.softdep_post) {
            if paths.contains_key(d) {
                todo.push((d.clone(), m.name.clone()));
            }
        }
        read.push(m);
    }
    let wanted_refs: Vec<&str> = wanted.iter().map(String::as_str).collect();
    let order: Vec<kmod_index::Module> = kmod_index::closure(&read, &wanted_refs, &builtin)
        .map_err(index_err)?
        .into_iter()
        .cloned()
        .collect();

    let mut bytes = 0u64;
    let mut put = |rootfs: &mut Tree, rel: &str, data: Vec<u8>| -> Result<(), ModulesError> {
        bytes += data.len() as u64;
        let node = Node { kind: Kind::File(data), meta: Meta::with_mode(0o644) };
        rootfs
            .insert(format!("{base}/{rel}").as_bytes(), node)
            .map(|_| ())
            .map_err(|message| ModulesError::Place { path: format!("{base}/{rel}"), message })
    };
    for m in &order {
        let data = file_data(kernel, &format!("{base}/{}", m.path)).unwrap_or_default();
        put(rootfs, &m.path, data.to_vec())?;
    }
    // dom0-init skips built-in modules a device or the kernel asks for by name.
    put(rootfs, "modules.builtin", builtin_text.to_vec())?;
    for (name, text) in kmod_index::index_files(&order) {
        put(rootfs, name, text.into_bytes())?;
    }
    Ok(Installed { release, modules: order.into_iter().map(|m| m.name).collect(), bytes })
}

/// `RELEASE/REST` split at the first `/`.
fn split_release(path: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = path.iter().position(|b| *b == b'/')?;
    let (release, rest) = (&path[..at], &path[at + 1..]);
    (!release.is_empty() && !rest.is_empty()).then_some((release, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn board_sets_come_from_the_kernel_package() {
        let virt = board_set(BoardKind::QemuVirt).unwrap();
        for m in ["ext4", "vfat", "virtio_blk", "virtio_net", "virtio_mmio"] {
            assert!(virt.iter().any(|n| n == m), "{m} in {virt:?}");
        }
        let pi = board_set(BoardKind::Rpi4).unwrap();
        for m in ["ext4", "sdhci_iproc", "genet", "xhci_pci", "brcmfmac"] {
            assert!(pi.iter().any(|n| n == m), "{m} in {pi:?}");
        }
        assert!(!pi.iter().any(|n| n == "virtio_blk"));
    }

    #[test]
    fn a_kernel_image_without_modules_is_named() {
        let mut rootfs = Tree::new();
        let err = install(&mut rootfs, &Tree::new(), "kernel", &["ext4".into()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "rootfs.modules: image `kernel` has no lib/modules/<release>/ folder"
        );
    }
}
