//! A package definition: `pkg/<name>/pkg.yml`.
//!
//! A package is made of pinned Debian `.deb` files (each with its version, architecture and sha256, and
//! the mapping of its paths to paths in the package image), symlinks, and at most one artifact built from
//! this repository (a script or a cargo build). Unknown keys are errors, as in image manifests.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::PkgError;
use crate::error::context;

/// The file name of a package definition inside its folder.
pub const DEF_FILE: &str = "pkg.yml";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PkgDef {
    /// The package name; the folder name, and the name image manifests refer to it by.
    #[serde(skip)]
    pub name: String,
    /// The definition file, for error messages.
    #[serde(skip)]
    pub path: PathBuf,
    /// What the package holds, one line.
    pub description: String,
    /// The Debian suite the pinned versions come from (`trixie`).
    #[serde(default)]
    pub suite: Option<String>,
    /// Debian archive components searched (`main`, `non-free-firmware`).
    #[serde(default = "default_components")]
    pub components: Vec<String>,
    #[serde(default)]
    pub debs: Vec<Deb>,
    /// Symlinks added to the image.
    #[serde(default)]
    pub symlinks: Vec<Symlinks>,
    /// An artifact built from this repository.
    #[serde(default)]
    pub build: Option<Build>,
}

fn default_components() -> Vec<String> {
    vec!["main".into()]
}

/// One pinned `.deb`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deb {
    /// The Debian binary package name.
    pub package: String,
    /// The exact Debian version (with epoch, as `apt-cache show` prints it).
    pub version: String,
    pub arch: String,
    /// sha256 of the `.deb` file, lowercase hex.
    pub sha256: String,
    /// A metapackage whose first dependency names the package to re-pin to (`linux-image-arm64`):
    /// the kernel's package name carries its ABI version, so `rpixen pkg update` follows the metapackage.
    #[serde(default)]
    pub follows: Option<String>,
    /// Which paths of the `.deb` go where in the image.
    pub files: Vec<FileMap>,
}

/// `from` is a path in the `.deb` (`*` matches within one path component); a trailing `/` means the
/// whole tree below it. `to` is the path in the image (a folder when `from` is a tree).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMap {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
/// Symlinks `DIR/NAME -> TARGET` for each name (busybox's applets: `bin/sh -> busybox`).
pub struct Symlinks {
    pub dir: String,
    pub target: String,
    pub names: Vec<String>,
}

/// How an artifact is built from this repository (exactly one of `script` and `cargo`); the artifact
/// lands at `output` in the image.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Build {
    /// `SCRIPT OUT`, run from the repository root; the script writes the file OUT.
    #[serde(default)]
    pub script: Option<PathBuf>,
    /// `cargo build -p PACKAGE --target TARGET --profile PROFILE`; the binary named after the package.
    #[serde(default)]
    pub cargo: Option<CargoBuild>,
    pub output: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CargoBuild {
    pub package: String,
    pub target: String,
    pub profile: String,
}

impl PkgDef {
    /// Reads `DIR/pkg.yml`; the package is named after DIR.
    pub fn load(dir: &Path) -> Result<PkgDef, PkgError> {
        let path = dir.join(DEF_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|source| PkgError::Io { path: path.clone(), source })?;
        let name = dir
            .canonicalize()
            .map_err(|source| PkgError::Io { path: dir.to_owned(), source })?
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        PkgDef::parse(&text, &name, &path)
    }

    /// Parses definition text; `path` names the file in errors.
    pub fn parse(text: &str, name: &str, path: &Path) -> Result<PkgDef, PkgError> {
        let mut def: PkgDef = serde_norway::from_str(text)
            .map_err(|e| PkgError::Def { path: path.to_owned(), source: e.into() })?;
        def.name = name.to_owned();
        def.path = path.to_owned();
        def.validate()?;
        Ok(def)
    }

    fn validate(&self) -> Result<(), PkgError> {
        let bad = |field: String, message: String| PkgError::Def {
            path: self.path.clone(),
            source: format!("field `{field}`: {message}").into(),
        };
        if self.name.is_empty() || self.name.contains(['/', ':']) {
            return Err(bad("name".into(), format!("`{}` is not a package name", self.name)));
        }
        if !self.debs.is_empty() && self.suite.is_none() {
            return Err(bad(
                "suite".into(),
                "pinned .debs need the Debian suite they come from".into(),
            ));
        }
        if self.debs.is_empty() && self.build.is_none() {
            return Err(bad("debs".into(), "a package needs .debs or a build".into()));
        }
        for (i, d) in self.debs.iter().enumerate() {
            if d.sha256.len() != 64
                || !d.sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            {
                return Err(bad(
                    format!("debs[{i}].sha256"),
                    format!("`{}` is not a lowercase sha256", d.sha256),
                ));
            }
            if d.files.is_empty() {
                return Err(bad(
                    format!("debs[{i}].files"),
                    "map at least one path of the .deb".into(),
                ));
            }
            for (j, f) in d.files.iter().enumerate() {
                check_image_path(&f.to).map_err(|m| bad(format!("debs[{i}].files[{j}].to"), m))?;
                glob::Pattern::new(f.from.trim_end_matches('/')).map_err(|e| PkgError::Def {
                    path: self.path.clone(),
                    source: context(format!("field `debs[{i}].files[{j}].from`"))(e),
                })?;
            }
        }
        for (i, s) in self.symlinks.iter().enumerate() {
            check_image_path(&s.dir).map_err(|m| bad(format!("symlinks[{i}].dir"), m))?;
            if let Some(n) = s.names.iter().find(|n| n.is_empty() || n.contains('/') || *n == "..")
            {
                return Err(bad(
                    format!("symlinks[{i}].names"),
                    format!("`{n}` is not a file name"),
                ));
            }
        }
        if let Some(b) = &self.build {
            check_image_path(&b.output).map_err(|m| bad("build.output".into(), m))?;
            if b.script.is_some() == b.cargo.is_some() {
                return Err(bad("build".into(), "give exactly one of `script` and `cargo`".into()));
            }
        }
        Ok(())
    }
}

/// Image paths are relative and stay inside the image.
fn check_image_path(p: &str) -> Result<(), String> {
    if p.is_empty() || p.starts_with('/') || p.split('/').any(|c| c == "..") {
        return Err(format!("`{p}` must be a relative path inside the image"));
    }
    Ok(())
}

/// The package folders under `pkg_root` (each folder with a `pkg.yml`), sorted by name.
pub fn discover(pkg_root: &Path) -> Result<Vec<PathBuf>, PkgError> {
    let entries = std::fs::read_dir(pkg_root)
        .map_err(|source| PkgError::Io { path: pkg_root.to_owned(), source })?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(DEF_FILE).is_file())
        .collect();
    dirs.sort();
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::one_line;

    const KERNEL: &str = "description: k\nsuite: trixie\ndebs:\n  - package: linux-image-x\n    version: 1-1\n    arch: arm64\n    sha256: 73805585385c78e048e63fdfba66da36bab724c2cdebd96a3055a8a4f1ae287a\n    files:\n      - {from: boot/vmlinuz-*, to: boot/Image}\n";

    #[test]
    fn parses_a_deb_package() {
        let d = PkgDef::parse(KERNEL, "kernel", Path::new("pkg/kernel/pkg.yml")).unwrap();
        assert_eq!(d.debs[0].files[0].to, "boot/Image");
        assert_eq!(d.components, ["main"]);
    }

    #[test]
    fn bad_sha256_names_field() {
        let t = KERNEL.replace("73805585", "7380558Z");
        let e =
            one_line(&PkgDef::parse(&t, "kernel", Path::new("pkg/kernel/pkg.yml")).unwrap_err());
        assert!(e.contains("pkg/kernel/pkg.yml") && e.contains("debs[0].sha256"), "{e}");
    }

    #[test]
    fn unknown_key_and_escaping_path_are_refused() {
        let e =
            PkgDef::parse(&format!("{KERNEL}colour: blue\n"), "k", Path::new("p.yml")).unwrap_err();
        assert!(one_line(&e).contains("colour"), "{e}");
        let e =
            PkgDef::parse(&KERNEL.replace("to: boot/Image", "to: ../x"), "k", Path::new("p.yml"))
                .unwrap_err();
        assert!(one_line(&e).contains("debs[0].files[0].to"), "{e}");
    }

    #[test]
    fn build_package() {
        let t = "description: hv\nbuild:\n  script: hypervisor/build.sh\n  output: boot/rpixen-hv.bin\n";
        let d = PkgDef::parse(t, "hypervisor", Path::new("p.yml")).unwrap();
        assert_eq!(d.build.unwrap().output, "boot/rpixen-hv.bin");
        let both = format!("{t}  cargo: {{package: x, target: y, profile: z}}\n");
        let e = one_line(&PkgDef::parse(&both, "hypervisor", Path::new("p.yml")).unwrap_err());
        assert!(e.contains("`build`"), "{e}");
    }
}
