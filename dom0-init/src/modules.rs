//! Loading kernel modules as `modprobe` would: resolve dependencies (from `modules.dep`, or from
//! each module's own `.modinfo` `depends=` when depmod never ran, as in a rootfs unpacked from the
//! Debian package), decompress `.ko.xz` in user space (pure-Rust `lzma-rs`) and `init_module(2)`.
//! Names may be aliases (`fs-ext4`, a device's `modalias`): `modules.alias` resolves them.
//!
//! dom0-init is also the kernel's `modprobe` ([`install_kernel_helper`], [`modprobe_main`]): when the
//! kernel needs a module itself (a filesystem type at mount(2), a crypto algorithm, a network
//! protocol) it runs `/proc/sys/kernel/modprobe -q -- NAME`, so nothing has to list those either.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::info;

pub use kmod_index::{modinfo, name_of, normalize};

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

/// The module image, decompressed.
pub fn read_module(path: &Path) -> Result<Vec<u8>, String> {
    kmod_index::read_module(path).map_err(|e| e.to_string())
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
                idx.modules.entry(name).or_insert((rel.to_string_lossy().into_owned(), None));
            }
        }
    }
    idx
}

/// Names of the modules the kernel has loaded (from /proc/modules).
pub fn loaded() -> BTreeSet<String> {
    std::fs::read_to_string("/proc/modules")
        .map(|t| t.lines().filter_map(|l| l.split(' ').next()).map(normalize).collect())
        .unwrap_or_default()
}

pub struct Loader {
    dir: PathBuf,
    index: Index,
    loaded: BTreeSet<String>,
    aliases: kmod_index::AliasIndex,
}

impl Loader {
    /// A loader for the module folder `dir` that assumes nothing is loaded yet.
    pub fn new(dir: PathBuf) -> Loader {
        let index = index(&dir);
        let aliases = std::fs::read_to_string(dir.join("modules.alias"))
            .map(|t| kmod_index::AliasIndex::parse(&t))
            .unwrap_or_default();
        Loader { dir, index, loaded: BTreeSet::new(), aliases }
    }

    /// The module folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The aliases of `modules.alias` (empty when the folder has none).
    pub fn aliases(&self) -> &kmod_index::AliasIndex {
        &self.aliases
    }

    /// Whether `name` is a module of this folder (or built in), rather than an alias.
    pub fn knows(&self, name: &str) -> bool {
        let n = normalize(name);
        self.index.modules.contains_key(&n) || self.index.builtin.contains(&n)
    }

    /// Loads a module name, or every module an alias (`fs-ext4`, a device's modalias) matches,
    /// as `modprobe NAME` does. Returns the modules loaded, in order.
    pub fn load_name_or_alias(&mut self, name: &str, dry: bool) -> Result<Vec<String>, String> {
        if self.knows(name) {
            return self.load(name, dry);
        }
        let matches: Vec<String> =
            self.aliases.lookup(name).into_iter().map(str::to_owned).collect();
        if matches.is_empty() {
            return Err(format!(
                "module {name} not found in {} (no module or alias of that name)",
                self.dir.display()
            ));
        }
        let mut order = Vec::new();
        let mut errors = Vec::new();
        for m in matches {
            match self.load(&m, dry) {
                Ok(o) => order.extend(o),
                Err(e) => errors.push(e),
            }
        }
        if order.is_empty() && !errors.is_empty() {
            return Err(errors.join("; "));
        }
        Ok(order)
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
                crate::trace!("{rel}: read and decompressed in {} ms", t.elapsed().as_millis());
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
            v.split(',').filter(|s| !s.is_empty()).map(normalize).collect::<Vec<_>>()
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

/// Where the kernel finds its module helper (`/proc/sys/kernel/modprobe` names it).
const HELPER_LINK: &str = "/run/rpixen/modprobe";

/// Makes dom0-init the kernel's `modprobe`: a link named `modprobe` to this executable, and its path
/// in `/proc/sys/kernel/modprobe`. Debian's kernel has ext4, vfat, squashfs and most crypto and
/// network protocols as modules, which the kernel requests by alias (`fs-ext4`, `crypto-crc32c`).
pub fn install_kernel_helper() {
    let result = (|| -> std::io::Result<()> {
        let exe = std::fs::read_link("/proc/self/exe")?;
        std::fs::create_dir_all("/run/rpixen")?;
        let _ = std::fs::remove_file(HELPER_LINK);
        std::os::unix::fs::symlink(&exe, HELPER_LINK)?;
        std::fs::write("/proc/sys/kernel/modprobe", HELPER_LINK)
    })();
    if let Err(e) = result {
        info!("cannot install the kernel's module helper: {e}");
    }
}

/// Run as `modprobe` (by the kernel: `modprobe -q -- NAME`, or by a user: `modprobe NAME...`):
/// loads each name or alias and returns the exit code; None when this process is not `modprobe`.
pub fn modprobe_main() -> Option<i32> {
    let mut args = std::env::args();
    let argv0 = args.next()?;
    if Path::new(&argv0).file_name()? != "modprobe" {
        return None;
    }
    let mut quiet = false;
    let mut names = Vec::new();
    for a in args {
        match a.as_str() {
            "-q" | "--quiet" => quiet = true,
            "--" => {}
            "-b" | "--use-blacklist" => {}
            _ => names.push(a),
        }
    }
    let mut loader = match Loader::for_running_kernel() {
        Ok(l) => l,
        Err(e) => {
            if !quiet {
                eprintln!("modprobe: {e}");
            }
            return Some(1);
        }
    };
    let mut code = 0;
    for n in names {
        match loader.load_name_or_alias(&n, false) {
            Ok(order) if !order.is_empty() => {
                // The kernel runs its helper without stdio: its log is where this line can go.
                // Worth seeing on the console, as these loads explain boot time.
                let line = format!("<6>modprobe: {n}: loaded {}\n", order.join(", "));
                let _ = std::fs::OpenOptions::new()
                    .write(true)
                    .open("/dev/kmsg")
                    .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
            }
            Ok(_) => {}
            Err(e) => {
                if !quiet {
                    eprintln!("modprobe: {e}");
                }
                code = 1;
            }
        }
    }
    Some(code)
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
        match loader.load_name_or_alias(n, dry) {
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
        assert_eq!(name_of("kernel/fs/squashfs/squashfs.ko.xz").as_deref(), Some("squashfs"));
        assert_eq!(name_of("kernel/drivers/block/virtio-blk.ko").as_deref(), Some("virtio_blk"));
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
        assert_eq!(l.load("vfat", true).unwrap(), ["kernel/fat.ko.xz", "kernel/vfat.ko.xz"]);
        assert!(l.load("nls-base", true).unwrap().is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn modules_dep_lines() {
        let m = parse_modules_dep(
            "kernel/fs/overlayfs/overlay.ko.xz:\nkernel/fs/vfat.ko.xz: kernel/fs/fat.ko.xz\n",
        );
        assert_eq!(m["vfat"], ("kernel/fs/vfat.ko.xz".to_owned(), Some(vec!["fat".to_owned()])));
        assert_eq!(m["overlay"].1, Some(vec![]));
    }
}
