//! Loading kernel modules as `modprobe` would: resolve dependencies (from `modules.dep`, or from
//! each module's own `.modinfo` `depends=` when depmod never ran, as in a rootfs unpacked from the
//! Debian package), decompress `.ko.xz` in user space (pure-Rust `lzma-rs`) and `init_module(2)`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::info;

/// modprobe treats `-` and `_` in module names alike.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a path such as `kernel/fs/squashfs/squashfs.ko.xz`.
pub fn name_of(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = file.split(".ko").next()?;
    (file.contains(".ko") && !stem.is_empty()).then(|| normalize(stem))
}

/// Where each module is and what it needs.
#[derive(Debug, Default)]
pub struct Index {
    /// name -> (path relative to the module folder, dependencies if known from modules.dep)
    pub modules: BTreeMap<String, (String, Option<Vec<String>>)>,
    pub builtin: BTreeSet<String>,
}

/// Parses `modules.dep`: `kernel/a/x.ko.xz: kernel/b/y.ko.xz kernel/c/z.ko.xz`.
pub fn parse_modules_dep(text: &str) -> BTreeMap<String, (String, Option<Vec<String>>)> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((path, deps)) = line.split_once(':') else {
            continue;
        };
        let Some(name) = name_of(path.trim()) else {
            continue;
        };
        let deps = deps.split_whitespace().filter_map(name_of).collect();
        out.insert(name, (path.trim().to_owned(), Some(deps)));
    }
    out
}

/// Reads `.modinfo` from a module's ELF image: the `key=value` strings the kernel build embeds.
/// Hand-written (a few lines of ELF64 section walking) to keep an ELF crate out of PID 1.
pub fn modinfo(elf: &[u8]) -> Vec<(String, String)> {
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])) as usize)
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as usize)
    };
    let section = || -> Option<&[u8]> {
        if !elf.starts_with(b"\x7fELF\x02\x01") {
            return None; // only little-endian ELF64, which is what arm64 and x86_64 modules are
        }
        let (shoff, shentsize, shnum, shstrndx) =
            (u64_at(0x28)?, u16_at(0x3A)?, u16_at(0x3C)?, u16_at(0x3E)?);
        let header = |i: usize| shoff.checked_add(i.checked_mul(shentsize)?);
        let strtab = u64_at(header(shstrndx)? + 0x18)?;
        for i in 0..shnum {
            let h = header(i)?;
            let name_off = strtab.checked_add(u32_at(h)?)?;
            let name = elf.get(name_off..)?.split(|b| *b == 0).next()?;
            if name == b".modinfo" {
                let (off, size) = (u64_at(h + 0x18)?, u64_at(h + 0x20)?);
                return elf.get(off..off.checked_add(size)?);
            }
        }
        None
    };
    section()
        .unwrap_or(&[])
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = std::str::from_utf8(kv).ok()?;
            let (k, v) = kv.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// The module image, decompressed.
pub fn read_module(path: &Path) -> Result<Vec<u8>, String> {
    let raw = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if path.extension().is_some_and(|e| e == "xz") {
        let mut out = Vec::with_capacity(raw.len() * 4);
        lzma_rs::xz_decompress(&mut &raw[..], &mut out)
            .map_err(|e| format!("cannot decompress {}: {e:?}", path.display()))?;
        Ok(out)
    } else if path.extension().is_some_and(|e| e == "ko") {
        Ok(raw)
    } else {
        Err(format!(
            "{}: only .ko and .ko.xz modules are supported",
            path.display()
        ))
    }
}

/// Builds the index of the module folder `dir` (`/lib/modules/<release>`).
pub fn index(dir: &Path) -> Index {
    let mut idx = Index::default();
    if let Ok(text) = std::fs::read_to_string(dir.join("modules.builtin")) {
        idx.builtin = text.lines().filter_map(name_of).collect();
    }
    if let Ok(text) = std::fs::read_to_string(dir.join("modules.dep")) {
        idx.modules = parse_modules_dep(&text);
        return idx;
    }
    // No depmod output: find the files; dependencies come from each module's modinfo.
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            } else if let (Some(name), Ok(rel)) =
                (name_of(&p.to_string_lossy()), p.strip_prefix(dir))
            {
                idx.modules
                    .entry(name)
                    .or_insert((rel.to_string_lossy().into_owned(), None));
            }
        }
    }
    idx
}

/// Names of the modules the kernel has loaded (from /proc/modules).
pub fn loaded() -> BTreeSet<String> {
    std::fs::read_to_string("/proc/modules")
        .map(|t| {
            t.lines()
                .filter_map(|l| l.split(' ').next())
                .map(normalize)
                .collect()
        })
        .unwrap_or_default()
}

pub struct Loader {
    dir: PathBuf,
    index: Index,
    loaded: BTreeSet<String>,
}

impl Loader {
    /// A loader for the module folder `dir` that assumes nothing is loaded yet.
    pub fn new(dir: PathBuf) -> Loader {
        let index = index(&dir);
        Loader {
            dir,
            index,
            loaded: BTreeSet::new(),
        }
    }

    /// The kernel's module folder: `/lib/modules/$(uname -r)`.
    pub fn for_running_kernel() -> Result<Loader, String> {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_err(|e| format!("cannot read the kernel release: {e}"))?;
        // A merged-/usr rootfs may lack the /lib symlink; Debian's package ships /usr/lib/modules.
        let candidates =
            ["/lib/modules", "/usr/lib/modules"].map(|d| Path::new(d).join(release.trim()));
        match candidates.iter().find(|d| d.is_dir()) {
            Some(dir) => {
                let mut loader = Loader::new(dir.clone());
                loader.loaded = loaded();
                Ok(loader)
            }
            None => Err(format!("{} does not exist", candidates[0].display())),
        }
    }

    /// Loads `name` after its dependencies; returns the images in load order without loading
    /// when `dry` (used by host tests, which must not touch the host kernel).
    pub fn load(&mut self, name: &str, dry: bool) -> Result<Vec<String>, String> {
        let mut order = Vec::new();
        self.visit(&normalize(name), dry, &mut order, &mut BTreeSet::new())?;
        Ok(order)
    }

    fn visit(
        &mut self,
        name: &str,
        dry: bool,
        order: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> Result<(), String> {
        if self.loaded.contains(name)
            || self.index.builtin.contains(name)
            || !seen.insert(name.to_owned())
        {
            return Ok(());
        }
        let Some((rel, deps)) = self.index.modules.get(name).cloned() else {
            return Err(format!("module {name} not found in {}", self.dir.display()));
        };
        let path = self.dir.join(&rel);
        // With modules.dep the kernel can decompress the file itself (finit_module); without it the
        // image must be decompressed here anyway, to read its dependencies.
        let (deps, image) = match deps {
            Some(deps) => (deps, None),
            None => {
                let t = std::time::Instant::now();
                let image = read_module(&path)?;
                crate::trace!(
                    "{rel}: read and decompressed in {} ms",
                    t.elapsed().as_millis()
                );
                (depends(&image), Some(image))
            }
        };
        for d in deps {
            self.visit(&d, dry, order, seen)?;
        }
        if !dry {
            let t = std::time::Instant::now();
            let result = match image {
                Some(image) => nix::kmod::init_module(&image, c""),
                None => load_file(&path),
            };
            match result {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(format!("loading {rel}: {e}")),
            }
            crate::trace!("{rel}: loaded in {} ms", t.elapsed().as_millis());
        }
        self.loaded.insert(name.to_owned());
        order.push(rel);
        Ok(())
    }
}

/// The `depends=` list of a module image's modinfo.
fn depends(image: &[u8]) -> Vec<String> {
    modinfo(image)
        .into_iter()
        .filter(|(k, _)| k == "depends")
        .flat_map(|(_, v)| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(normalize)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// finit_module(2) on the file; `.xz` files with MODULE_INIT_COMPRESSED_FILE, falling back to
/// decompressing here when the kernel cannot (no CONFIG_MODULE_DECOMPRESS, or another algorithm).
fn load_file(path: &Path) -> nix::Result<()> {
    use nix::kmod::{finit_module, ModuleInitFlags};
    const MODULE_INIT_COMPRESSED_FILE: libc::c_uint = 4;
    let file = std::fs::File::open(path)
        .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    if path.extension().is_some_and(|e| e == "xz") {
        match finit_module(
            &file,
            c"",
            ModuleInitFlags::from_bits_retain(MODULE_INIT_COMPRESSED_FILE),
        ) {
            Err(
                nix::errno::Errno::EINVAL
                | nix::errno::Errno::EOPNOTSUPP
                | nix::errno::Errno::ENOSYS,
            ) => {
                let image = read_module(path).map_err(|_| nix::errno::Errno::EINVAL)?;
                nix::kmod::init_module(&image, c"")
            }
            other => other,
        }
    } else {
        finit_module(&file, c"", ModuleInitFlags::empty())
    }
}

/// Loads the configured modules, logging each failure and going on.
pub fn load_all(names: &[String], dry: bool) {
    if names.is_empty() {
        return;
    }
    let mut loader = match Loader::for_running_kernel() {
        Ok(l) => l,
        Err(e) => {
            info!("cannot load modules {}: {e}", names.join(", "));
            return;
        }
    };
    for n in names {
        match loader.load(n, dry) {
            Ok(order) if order.is_empty() => {}
            Ok(order) => info!("module {n}: loaded {}", order.join(", ")),
            Err(e) => info!("module {n}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            name_of("kernel/fs/squashfs/squashfs.ko.xz").as_deref(),
            Some("squashfs")
        );
        assert_eq!(
            name_of("kernel/drivers/block/virtio-blk.ko").as_deref(),
            Some("virtio_blk")
        );
        assert_eq!(name_of("modules.dep"), None);
    }

    #[test]
    fn modules_dep_gives_the_order_without_reading_modules() {
        let dir = std::env::temp_dir().join(format!("dom0-init-moddep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("modules.dep"),
            "kernel/vfat.ko.xz: kernel/fat.ko.xz\nkernel/fat.ko.xz:\n",
        )
        .unwrap();
        std::fs::write(dir.join("modules.builtin"), "kernel/nls_base.ko\n").unwrap();
        let mut l = Loader::new(dir.clone());
        assert_eq!(
            l.load("vfat", true).unwrap(),
            ["kernel/fat.ko.xz", "kernel/vfat.ko.xz"]
        );
        assert!(l.load("nls-base", true).unwrap().is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn modules_dep_lines() {
        let m = parse_modules_dep(
            "kernel/fs/overlayfs/overlay.ko.xz:\nkernel/fs/vfat.ko.xz: kernel/fs/fat.ko.xz\n",
        );
        assert_eq!(
            m["vfat"],
            (
                "kernel/fs/vfat.ko.xz".to_owned(),
                Some(vec!["fat".to_owned()])
            )
        );
        assert_eq!(m["overlay"].1, Some(vec![]));
    }
}
