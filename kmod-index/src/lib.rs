//! Kernel module indexes without `depmod`: what `modprobe` needs to load a module with its
//! dependencies and to find the module a device asks for.
//!
//! - [`modinfo`]: a module's `.modinfo` (`name=`, `depends=`, `alias=`, `softdep=`) from its ELF image,
//!   [`read_module`] decompressing `.ko.xz` first;
//! - [`Module`] and [`scan_tree`]: what each module of a `/lib/modules/<release>` tree declares;
//! - [`closure`]: a set of module names plus everything they depend on (the builder's per-board sets);
//! - [`write_dep`], [`write_alias`], [`write_softdep`]: `modules.dep`, `modules.alias` and
//!   `modules.softdep` in kmod's text formats, which busybox `modprobe`, kmod and `dom0-init` read;
//! - [`AliasIndex`]: matching a device's `modalias` against the alias globs, as `modprobe` does.
//!
//! Used by `dom0-init` at boot (coldplug) and by the builder when it assembles a rootfs. Pure code
//! except for the two file readers.

mod glob;
mod modinfo;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub use glob::glob_match;
pub use modinfo::modinfo;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot decompress {path}: {reason}")]
    Decompress { path: PathBuf, reason: String },
    #[error("{path}: not a kernel module (only .ko and .ko.xz are supported)")]
    NotAModule { path: PathBuf },
    #[error("{path}: no .modinfo section with a name= (not a kernel module ELF image)")]
    NoModinfo { path: PathBuf },
    #[error("module {name} (needed by {needed_by}) is not in the module tree")]
    Missing { name: String, needed_by: String },
}

/// modprobe treats `-` and `_` in module names alike; indexes use `_`.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a path such as `kernel/fs/squashfs/squashfs.ko.xz`.
pub fn name_of(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let (stem, ext) = file.split_once(".ko")?;
    (!stem.is_empty() && matches!(ext, "" | ".xz" | ".gz" | ".zst")).then(|| normalize(stem))
}

/// What one module declares, with its path relative to the module tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    /// `kernel/drivers/block/virtio_blk.ko.xz`
    pub path: String,
    pub depends: Vec<String>,
    pub aliases: Vec<String>,
    /// `softdep=pre: a b post: c`: modules modprobe loads before / after this one when present.
    pub softdep_pre: Vec<String>,
    pub softdep_post: Vec<String>,
}

impl Module {
    /// From a module's modinfo pairs; `path` is where it lies in the tree.
    pub fn from_modinfo(path: &str, info: &[(String, String)]) -> Option<Module> {
        let get_all =
            |key: &'static str| info.iter().filter(move |(k, _)| k == key).map(|(_, v)| v);
        let name = match get_all("name").next() {
            Some(n) => normalize(n),
            None => name_of(path)?,
        };
        let depends = get_all("depends")
            .flat_map(|v| v.split(','))
            .filter(|s| !s.is_empty())
            .map(normalize)
            .collect();
        let aliases = get_all("alias").cloned().collect();
        let (mut pre, mut post) = (Vec::new(), Vec::new());
        for v in get_all("softdep") {
            let mut into = &mut pre;
            for word in v.split_whitespace() {
                match word {
                    "pre:" => into = &mut pre,
                    "post:" => into = &mut post,
                    m => into.push(normalize(m)),
                }
            }
        }
        Some(Module {
            name,
            path: path.to_owned(),
            depends,
            aliases,
            softdep_pre: pre,
            softdep_post: post,
        })
    }
}

/// A module file's ELF image, decompressed.
pub fn read_module(path: &Path) -> Result<Vec<u8>, Error> {
    let raw =
        std::fs::read(path).map_err(|source| Error::Read { path: path.to_owned(), source })?;
    module_image(path, raw)
}

/// The ELF image of a module file's bytes `raw` (read from `path`, which names it in errors and
/// says by its extension whether it is compressed). For module trees that are not on a filesystem,
/// such as an OCI image's layers in the builder.
pub fn module_image(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>, Error> {
    let name = path.to_string_lossy();
    if name.ends_with(".ko.xz") {
        let mut out = Vec::with_capacity(raw.len() * 4);
        lzma_rs::xz_decompress(&mut &raw[..], &mut out)
            .map_err(|e| Error::Decompress { path: path.to_owned(), reason: format!("{e:?}") })?;
        Ok(out)
    } else if name.ends_with(".ko") {
        Ok(raw)
    } else {
        Err(Error::NotAModule { path: path.to_owned() })
    }
}

/// What the module at `rel` declares, from its file's bytes `raw`.
pub fn module_info(rel: &str, raw: Vec<u8>) -> Result<Module, Error> {
    let path = PathBuf::from(rel);
    let image = module_image(&path, raw)?;
    let info = modinfo(&image);
    if !info.iter().any(|(k, _)| k == "name") {
        return Err(Error::NoModinfo { path });
    }
    Module::from_modinfo(rel, &info).ok_or(Error::NoModinfo { path })
}

/// Reads one module of the tree at `root`: `rel` is its path inside the tree.
pub fn read_info(root: &Path, rel: &str) -> Result<Module, Error> {
    let path = root.join(rel);
    let image = read_module(&path)?;
    let info = modinfo(&image);
    if !info.iter().any(|(k, _)| k == "name") {
        return Err(Error::NoModinfo { path });
    }
    Module::from_modinfo(rel, &info).ok_or(Error::NoModinfo { path })
}

/// The paths (relative to `root`) of every `.ko`/`.ko.xz` below it, sorted.
pub fn module_paths(root: &Path) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(|source| Error::Read { path: dir.clone(), source })?;
        for e in entries {
            let e = e.map_err(|source| Error::Read { path: dir.clone(), source })?;
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            } else if let (Some(_), Ok(rel)) = (name_of(&p.to_string_lossy()), p.strip_prefix(root))
            {
                let rel = rel.to_string_lossy();
                if rel.ends_with(".ko") || rel.ends_with(".ko.xz") {
                    out.push(rel.into_owned());
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Every module of the tree at `root` (decompressing each: slow for a whole distribution kernel;
/// [`closure_in_tree`] reads only what a set needs).
pub fn scan_tree(root: &Path) -> Result<Vec<Module>, Error> {
    module_paths(root)?.iter().map(|rel| read_info(root, rel)).collect()
}

/// `wanted` and everything they depend on (hard dependencies; soft ones only when `available` has
/// them, as modprobe ignores absent softdeps), in load order: each module after its dependencies.
/// `builtin` names are satisfied without a file.
pub fn closure<'a>(
    available: &'a [Module],
    wanted: &[&str],
    builtin: &BTreeSet<String>,
) -> Result<Vec<&'a Module>, Error> {
    let by_name: BTreeMap<&str, &Module> = available.iter().map(|m| (m.name.as_str(), m)).collect();
    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    for w in wanted {
        visit(&normalize(w), "the module set", &by_name, builtin, &mut done, &mut order)?;
    }
    Ok(order)
}

fn visit<'a>(
    name: &str,
    needed_by: &str,
    by_name: &BTreeMap<&str, &'a Module>,
    builtin: &BTreeSet<String>,
    done: &mut BTreeSet<String>,
    order: &mut Vec<&'a Module>,
) -> Result<(), Error> {
    if builtin.contains(name) || !done.insert(name.to_owned()) {
        return Ok(());
    }
    let Some(m) = by_name.get(name).copied() else {
        return Err(Error::Missing { name: name.to_owned(), needed_by: needed_by.to_owned() });
    };
    for d in &m.depends {
        visit(d, &m.name, by_name, builtin, done, order)?;
    }
    for d in m.softdep_pre.iter().chain(&m.softdep_post) {
        if by_name.contains_key(d.as_str()) {
            visit(d, &m.name, by_name, builtin, done, order)?;
        }
    }
    order.push(m);
    Ok(())
}

/// Like [`closure`] on the tree at `root`, reading only the modules the set reaches (a distribution
/// kernel has thousands; a board needs dozens). Returns the modules in load order.
pub fn closure_in_tree(root: &Path, wanted: &[&str]) -> Result<Vec<Module>, Error> {
    let paths: BTreeMap<String, String> =
        module_paths(root)?.into_iter().filter_map(|p| Some((name_of(&p)?, p))).collect();
    let builtin = builtin_names(root);
    let mut read = Vec::new();
    let mut seen = BTreeSet::new();
    let mut todo: Vec<(String, String)> =
        wanted.iter().map(|w| (normalize(w), "the module set".to_owned())).collect();
    while let Some((name, needed_by)) = todo.pop() {
        if builtin.contains(&name) || !seen.insert(name.clone()) {
            continue;
        }
        let Some(rel) = paths.get(&name) else {
            return Err(Error::Missing { name, needed_by });
        };
        let m = read_info(root, rel)?;
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
    Ok(closure(&read, wanted, &builtin)?.into_iter().cloned().collect())
}

/// Names from the tree's `modules.builtin` (modules compiled into the kernel); empty when absent.
pub fn builtin_names(root: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(root.join("modules.builtin"))
        .map(|t| parse_builtin(&t))
        .unwrap_or_default()
}

/// Names from the text of a `modules.builtin`.
pub fn parse_builtin(text: &str) -> BTreeSet<String> {
    text.lines().filter_map(name_of).collect()
}

/// All dependencies of `m`, direct and indirect, in depmod's order: a module comes before the
/// modules it needs, so loading from the end of the list towards its start loads each module after
/// its dependencies (what busybox modprobe and module-init-tools do).
fn all_dependencies<'a>(m: &'a Module, by_name: &BTreeMap<&str, &'a Module>) -> Vec<&'a str> {
    // Load order by depth-first search, then reversed.
    fn walk<'a>(
        m: &'a Module,
        by_name: &BTreeMap<&str, &'a Module>,
        seen: &mut BTreeSet<&'a str>,
        out: &mut Vec<&'a str>,
    ) {
        for d in &m.depends {
            if let Some(dm) = by_name.get(d.as_str()).copied() {
                if seen.insert(dm.name.as_str()) {
                    walk(dm, by_name, seen, out);
                    out.push(dm.path.as_str());
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut seen = BTreeSet::from([m.name.as_str()]);
    walk(m, by_name, &mut seen, &mut out);
    out.reverse();
    out
}

/// `modules.dep`: one line per module, `path: dep-path dep-path ...` (all dependencies, depmod's
/// order), sorted by path so equal inputs give equal bytes. Dependencies not among `modules` are
/// left out (they are built in; [`closure`] reports truly missing ones).
pub fn write_dep(modules: &[Module]) -> String {
    let by_name: BTreeMap<&str, &Module> = modules.iter().map(|m| (m.name.as_str(), m)).collect();
    let mut sorted: Vec<&Module> = modules.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut out = String::new();
    for m in sorted {
        out.push_str(&m.path);
        out.push(':');
        for d in all_dependencies(m, &by_name) {
            out.push(' ');
            out.push_str(d);
        }
        out.push('\n');
    }
    out
}

/// `modules.alias`: `alias PATTERN MODULE` lines, as depmod writes them.
pub fn write_alias(modules: &[Module]) -> String {
    let mut sorted: Vec<&Module> = modules.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = String::from("# Aliases extracted from modules themselves.\n");
    for m in sorted {
        for a in &m.aliases {
            out.push_str(&format!("alias {a} {}\n", m.name));
        }
    }
    out
}

/// `modules.softdep`: `softdep MODULE pre: a b post: c` lines, as depmod writes them.
pub fn write_softdep(modules: &[Module]) -> String {
    let mut sorted: Vec<&Module> = modules.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = String::from("# Soft dependencies extracted from modules themselves.\n");
    for m in sorted {
        if m.softdep_pre.is_empty() && m.softdep_post.is_empty() {
            continue;
        }
        out.push_str(&format!("softdep {}", m.name));
        if !m.softdep_pre.is_empty() {
            out.push_str(&format!(" pre: {}", m.softdep_pre.join(" ")));
        }
        if !m.softdep_post.is_empty() {
            out.push_str(&format!(" post: {}", m.softdep_post.join(" ")));
        }
        out.push('\n');
    }
    out
}

/// The index files of a module set, by file name, ready to be written into `lib/modules/<release>/`.
pub fn index_files(modules: &[Module]) -> Vec<(&'static str, String)> {
    vec![
        ("modules.dep", write_dep(modules)),
        ("modules.alias", write_alias(modules)),
        ("modules.softdep", write_softdep(modules)),
    ]
}

/// Alias globs and the modules they name, from `modules.alias`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AliasIndex {
    /// (normalized pattern, module)
    entries: Vec<(String, String)>,
}

impl AliasIndex {
    /// Parses `modules.alias`; lines that are not `alias PATTERN MODULE` are skipped, as kmod does.
    pub fn parse(text: &str) -> AliasIndex {
        let entries = text
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                (w.next()? == "alias").then_some(())?;
                let (pattern, module) = (w.next()?, w.next()?);
                Some((normalize_alias(pattern), normalize(module)))
            })
            .collect();
        AliasIndex { entries }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The modules whose aliases match a device's `modalias`, each once, in index order (modprobe
    /// loads every match).
    pub fn lookup(&self, modalias: &str) -> Vec<&str> {
        let modalias = normalize_alias(modalias.trim());
        let mut out: Vec<&str> = Vec::new();
        for (pattern, module) in &self.entries {
            if glob_match(pattern, &modalias) && !out.contains(&module.as_str()) {
                out.push(module);
            }
        }
        out
    }
}

/// kmod's `alias_normalize`: `-` becomes `_` except inside `[...]` (a range like `[0-9]` stays).
pub fn normalize_alias(alias: &str) -> String {
    let mut out = String::with_capacity(alias.len());
    let mut in_brackets = false;
    for c in alias.chars() {
        match c {
            '[' => in_brackets = true,
            ']' => in_brackets = false,
            _ => {}
        }
        out.push(if c == '-' && !in_brackets { '_' } else { c });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(name: &str, depends: &[&str], aliases: &[&str]) -> Module {
        Module {
            name: name.into(),
            path: format!("kernel/{name}.ko.xz"),
            depends: depends.iter().map(|s| s.to_string()).collect(),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            softdep_pre: vec![],
            softdep_post: vec![],
        }
    }

    #[test]
    fn names_from_paths() {
        assert_eq!(name_of("kernel/fs/squashfs/squashfs.ko.xz").as_deref(), Some("squashfs"));
        assert_eq!(name_of("a/virtio-blk.ko").as_deref(), Some("virtio_blk"));
        assert_eq!(name_of("modules.dep"), None);
        assert_eq!(name_of("a/x.kobject"), None);
    }

    #[test]
    fn modinfo_pairs_make_a_module() {
        let kv = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let info = [
            kv("alias", "virtio:d00000002v*"),
            kv("depends", "virtio,virtio-ring"),
            kv("softdep", "pre: crc32c post: foo-bar"),
            kv("name", "virtio_blk"),
            kv("vermagic", "6.12"),
        ];
        let m = Module::from_modinfo("kernel/drivers/block/virtio_blk.ko.xz", &info).unwrap();
        assert_eq!(m.name, "virtio_blk");
        assert_eq!(m.depends, ["virtio", "virtio_ring"]);
        assert_eq!(m.aliases, ["virtio:d00000002v*"]);
        assert_eq!(m.softdep_pre, ["crc32c"]);
        assert_eq!(m.softdep_post, ["foo_bar"]);
        let empty = Module::from_modinfo("kernel/x/empty.ko", &[kv("depends", "")]).unwrap();
        assert_eq!(empty.name, "empty");
        assert!(empty.depends.is_empty());
    }

    #[test]
    fn closure_orders_dependencies_first_and_names_the_missing() {
        let mods = [
            module("vfat", &["fat"], &[]),
            module("fat", &["nls_base"], &[]),
            module("nls_base", &[], &[]),
            module("broken", &["nowhere"], &[]),
        ];
        let builtin = BTreeSet::new();
        let order: Vec<&str> =
            closure(&mods, &["vfat"], &builtin).unwrap().iter().map(|m| m.name.as_str()).collect();
        assert_eq!(order, ["nls_base", "fat", "vfat"]);
        let with_builtin = BTreeSet::from(["nls_base".to_owned()]);
        let order: Vec<&str> = closure(&mods, &["vfat"], &with_builtin)
            .unwrap()
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(order, ["fat", "vfat"]);
        let err = closure(&mods, &["broken"], &builtin).unwrap_err().to_string();
        assert_eq!(err, "module nowhere (needed by broken) is not in the module tree");
        let err = closure(&mods, &["nope"], &builtin).unwrap_err().to_string();
        assert!(err.contains("nope (needed by the module set)"), "{err}");
    }

    #[test]
    fn softdeps_join_the_closure_only_when_available() {
        let mut ext4 = module("ext4", &[], &[]);
        ext4.softdep_pre = vec!["crc32c".into(), "absent".into()];
        let mods = [ext4, module("crc32c", &[], &[])];
        let order: Vec<&str> = closure(&mods, &["ext4"], &BTreeSet::new())
            .unwrap()
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(order, ["crc32c", "ext4"]);
        assert_eq!(
            write_softdep(&mods),
            "# Soft dependencies extracted from modules themselves.\nsoftdep ext4 pre: crc32c absent\n"
        );
    }

    #[test]
    fn modules_dep_lists_all_dependencies_loadable_from_the_end() {
        let mods = [
            module("vfat", &["fat"], &[]),
            module("fat", &["nls_base"], &[]),
            module("nls_base", &[], &[]),
        ];
        assert_eq!(
            write_dep(&mods),
            "kernel/fat.ko.xz: kernel/nls_base.ko.xz\n\
             kernel/nls_base.ko.xz:\n\
             kernel/vfat.ko.xz: kernel/fat.ko.xz kernel/nls_base.ko.xz\n"
        );
        // A diamond: each dependency once, every module's own needs after it in the list.
        let mods = [
            module("a", &["b", "c"], &[]),
            module("b", &["d"], &[]),
            module("c", &["d"], &[]),
            module("d", &[], &[]),
        ];
        let dep = write_dep(&mods);
        let line = dep.lines().next().unwrap();
        assert_eq!(line, "kernel/a.ko.xz: kernel/c.ko.xz kernel/b.ko.xz kernel/d.ko.xz");
    }

    #[test]
    fn modules_alias_round_trips_through_the_matcher() {
        let mods = [
            module("virtio_blk", &[], &["virtio:d00000002v*"]),
            module("virtio_mmio", &[], &["of:N*T*Cvirtio,mmio", "acpi*:LNRO0005:*"]),
            module("sdhci_iproc", &[], &["of:N*T*Cbrcm,bcm2711-emmc2"]),
        ];
        let text = write_alias(&mods);
        assert!(text.starts_with("# Aliases extracted from modules themselves.\n"));
        assert!(text.contains("alias virtio:d00000002v* virtio_blk\n"), "{text}");
        let idx = AliasIndex::parse(&text);
        assert_eq!(idx.len(), 4);
        assert_eq!(idx.lookup("virtio:d00000002v00554D4D"), ["virtio_blk"]);
        assert!(idx.lookup("virtio:d00000001v00554D4D").is_empty());
        assert_eq!(idx.lookup("of:NvirtioT(null)Cvirtio,mmio\n"), ["virtio_mmio"]);
        assert_eq!(idx.lookup("acpi:LNRO0005:"), ["virtio_mmio"]);
        // `-` and `_` are alike in device aliases too.
        assert_eq!(idx.lookup("of:NmmcT(null)Cbrcm,bcm2711-emmc2"), ["sdhci_iproc"]);
        assert_eq!(idx.lookup("of:NmmcT(null)Cbrcm,bcm2711_emmc2"), ["sdhci_iproc"]);
    }

    #[test]
    fn alias_normalization_keeps_ranges() {
        assert_eq!(normalize_alias("usb:v*p*d*dc[0-9]*-x"), "usb:v*p*d*dc[0-9]*_x");
        assert_eq!(
            normalize_alias("of:N*T*Cbrcm,bcm2711-genet-v5"),
            "of:N*T*Cbrcm,bcm2711_genet_v5"
        );
    }

    #[test]
    fn alias_file_lines_that_are_not_aliases_are_skipped() {
        let idx = AliasIndex::parse("# comment\n\nalias a b\nalias broken\noptions x y=1\n");
        assert_eq!(idx.len(), 1);
        assert_eq!(idx.lookup("a"), ["b"]);
    }
}
