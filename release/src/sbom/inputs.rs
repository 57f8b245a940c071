//! Gathers SBOM inputs from the repository, for callers that do not have them typed already:
//! the pinned `.deb`s of `pkg/<name>/pkg.yml`, the digest of a package's OCI image layout, and the
//! crates `Cargo.lock` resolves for the crates built into the image.
//!
//! Crates: the roots' normal `[dependencies]` (from their `Cargo.toml`, so dev-dependencies such as
//! test kits stay out), then everything `Cargo.lock` lists below them. `Cargo.lock` does not say
//! which dependencies are build-only or for another target, so below the roots the list is a
//! superset of what is linked: it may name a build script's helper, never miss a linked crate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{DebPackage, OciImage, RustCrate};

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Missing { path: PathBuf, message: String },
}

fn read(path: &Path) -> Result<String, InputError> {
    std::fs::read_to_string(path).map_err(|source| InputError::Io { path: path.to_owned(), source })
}

fn parse_err(path: &Path, e: impl std::fmt::Display) -> InputError {
    InputError::Parse { path: path.to_owned(), message: e.to_string() }
}

/// The parts of `pkg.yml` (builder/src/pkg/def.rs) an SBOM needs; other keys are the builder's.
#[derive(Debug, Deserialize)]
struct PkgYml {
    description: String,
    #[serde(default)]
    suite: Option<String>,
    #[serde(default)]
    debs: Vec<PkgYmlDeb>,
    #[serde(default)]
    build: Option<PkgYmlBuild>,
}

#[derive(Debug, Deserialize)]
struct PkgYmlDeb {
    package: String,
    version: String,
    arch: String,
    sha256: String,
}

#[derive(Debug, Deserialize)]
struct PkgYmlBuild {
    #[serde(default)]
    script: Option<PathBuf>,
    #[serde(default)]
    cargo: Option<PkgYmlCargo>,
}

#[derive(Debug, Deserialize)]
struct PkgYmlCargo {
    package: String,
}

/// A package definition as far as the SBOM cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkgInfo {
    pub name: String,
    pub description: String,
    pub debs: Vec<DebPackage>,
    /// The crate a cargo build names, or the crate whose folder holds a build script (the
    /// hypervisor's `hypervisor/build.sh` builds `hypervisor/Cargo.toml`).
    pub root_crate: Option<String>,
}

/// Reads `REPO/pkg/NAME/pkg.yml`.
pub fn pkg_info(repo: &Path, name: &str) -> Result<PkgInfo, InputError> {
    let path = repo.join("pkg").join(name).join("pkg.yml");
    let def: PkgYml = serde_norway::from_str(&read(&path)?).map_err(|e| parse_err(&path, e))?;
    let debs = def
        .debs
        .into_iter()
        .map(|d| DebPackage {
            name: d.package,
            version: d.version,
            arch: d.arch,
            sha256: d.sha256,
            distro: def.suite.clone(),
        })
        .collect();
    let root_crate = match def.build {
        Some(PkgYmlBuild { cargo: Some(c), .. }) => Some(c.package),
        Some(PkgYmlBuild { script: Some(s), .. }) => {
            let manifest = s.parent().map(|d| repo.join(d).join("Cargo.toml"));
            match manifest.filter(|m| m.is_file()) {
                Some(m) => Some(package_name(&m)?),
                None => None,
            }
        }
        _ => None,
    };
    Ok(PkgInfo { name: name.to_owned(), description: def.description, debs, root_crate })
}

#[derive(Debug, Deserialize)]
struct Index {
    manifests: Vec<IndexEntry>,
}

#[derive(Debug, Deserialize)]
struct IndexEntry {
    digest: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// The image tagged `tag` in an OCI image layout (`index.json`, `org.opencontainers.image.ref.name`).
pub fn oci_layout_image(layout: &Path, name: &str, tag: &str) -> Result<OciImage, InputError> {
    let path = layout.join("index.json");
    let index: Index = serde_json::from_str(&read(&path)?).map_err(|e| parse_err(&path, e))?;
    let entry = index
        .manifests
        .iter()
        .find(|m| {
            m.annotations.get("org.opencontainers.image.ref.name").map(String::as_str) == Some(tag)
        })
        .ok_or_else(|| InputError::Missing {
            path: path.clone(),
            message: format!("no manifest tagged `{tag}`"),
        })?;
    Ok(OciImage {
        name: name.to_owned(),
        repository_url: None,
        tag: Some(tag.to_owned()),
        digest: entry.digest.clone(),
    })
}

#[derive(Debug, Deserialize)]
struct Lock {
    #[serde(default)]
    package: Vec<LockPackage>,
}

#[derive(Debug, Deserialize)]
struct LockPackage {
    name: String,
    version: String,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    checksum: Option<String>,
    #[serde(default)]
    dependencies: Vec<String>,
}

fn package_name(manifest: &Path) -> Result<String, InputError> {
    let v: toml::Table = toml::from_str(&read(manifest)?).map_err(|e| parse_err(manifest, e))?;
    v.get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_owned)
        .ok_or_else(|| InputError::Missing {
            path: manifest.to_owned(),
            message: "no `package.name`".into(),
        })
}

/// Package names of a manifest's normal dependencies (`[dependencies]` and
/// `[target.*.dependencies]`, renames resolved).
fn normal_dependencies(manifest: &Path) -> Result<BTreeSet<String>, InputError> {
    let v: toml::Table = toml::from_str(&read(manifest)?).map_err(|e| parse_err(manifest, e))?;
    let mut tables = vec![v.get("dependencies")];
    if let Some(targets) = v.get("target").and_then(|t| t.as_table()) {
        tables.extend(targets.values().map(|t| t.get("dependencies")));
    }
    let mut names = BTreeSet::new();
    for table in tables.into_iter().flatten().filter_map(|t| t.as_table()) {
        for (key, spec) in table {
            let real = spec.get("package").and_then(|p| p.as_str()).unwrap_or(key);
            names.insert(real.to_owned());
        }
    }
    Ok(names)
}

/// Workspace members by package name: their manifest paths.
fn members(workspace: &Path) -> Result<BTreeMap<String, PathBuf>, InputError> {
    let root = workspace.join("Cargo.toml");
    let v: toml::Table = toml::from_str(&read(&root)?).map_err(|e| parse_err(&root, e))?;
    let list =
        v.get("workspace").and_then(|w| w.get("members")).and_then(|m| m.as_array()).ok_or_else(
            || InputError::Missing { path: root.clone(), message: "no `workspace.members`".into() },
        )?;
    let mut out = BTreeMap::new();
    for m in list.iter().filter_map(|m| m.as_str()) {
        let manifest = workspace.join(m).join("Cargo.toml");
        out.insert(package_name(&manifest)?, manifest);
    }
    Ok(out)
}

/// The crates built into `roots` (workspace package names), from `WORKSPACE/Cargo.lock`, sorted by
/// name and version. Roots are included (as crates of this workspace, without checksum).
pub fn crates(workspace: &Path, roots: &[&str]) -> Result<Vec<RustCrate>, InputError> {
    let lock_path = workspace.join("Cargo.lock");
    let lock: Lock = toml::from_str(&read(&lock_path)?).map_err(|e| parse_err(&lock_path, e))?;
    let members = members(workspace)?;
    let find = |spec: &str| -> Result<usize, InputError> {
        // `name`, `name version` or `name version (source)`.
        let mut it = spec.split(' ');
        let name = it.next().unwrap_or_default();
        let version = it.next();
        let hits: Vec<usize> = lock
            .package
            .iter()
            .enumerate()
            .filter(|(_, p)| p.name == name && version.is_none_or(|v| p.version == v))
            .map(|(i, _)| i)
            .collect();
        match hits[..] {
            [i] => Ok(i),
            _ => Err(InputError::Missing {
                path: lock_path.clone(),
                message: format!("`{spec}` names {} packages, not one", hits.len()),
            }),
        }
    };
    let mut seen = BTreeSet::new();
    let mut todo = Vec::new();
    for r in roots {
        todo.push(find(r)?);
    }
    while let Some(i) = todo.pop() {
        if !seen.insert(i) {
            continue;
        }
        let p = &lock.package[i];
        // A workspace crate's lock entry also lists its dev-dependencies; keep its normal ones.
        let keep = match (&p.source, members.get(&p.name)) {
            (None, Some(manifest)) => Some(normal_dependencies(manifest)?),
            _ => None,
        };
        for dep in &p.dependencies {
            let name = dep.split(' ').next().unwrap_or_default();
            if keep.as_ref().is_none_or(|k| k.contains(name)) {
                todo.push(find(dep)?);
            }
        }
    }
    let mut out: Vec<RustCrate> = seen
        .into_iter()
        .map(|i| {
            let p = &lock.package[i];
            RustCrate {
                name: p.name.clone(),
                version: p.version.clone(),
                checksum: p.checksum.clone(),
                source: p.source.clone(),
            }
        })
        .collect();
    out.sort();
    Ok(out)
}

/// One component per rpixen package `names`: its `.deb` pins, the crates it builds, and the digest
/// of its OCI layout `PKG_DIR/NAME` (tag `latest`, as `rpixen pkg build` writes it).
pub fn package_components(
    repo: &Path,
    pkg_dir: &Path,
    names: &[&str],
) -> Result<Vec<super::Component>, InputError> {
    names
        .iter()
        .map(|name| {
            let info = pkg_info(repo, name)?;
            let crates = match &info.root_crate {
                Some(root) => crates(repo, &[root])?,
                None => Vec::new(),
            };
            Ok(super::Component {
                oci: Some(oci_layout_image(&pkg_dir.join(name), name, "latest")?),
                name: info.name,
                description: info.description,
                debs: info.debs,
                crates,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn closure_skips_dev_dependencies_of_workspace_crates() {
        let d = tempfile::tempdir().unwrap();
        let w = d.path();
        write(w, "Cargo.toml", "[workspace]\nmembers = [\"app\", \"kit\"]\n");
        write(w, "app/Cargo.toml", "[package]\nname = \"app\"\n[dependencies]\nlibc = \"0.2\"\n[target.'cfg(unix)'.dependencies]\nmynix = { package = \"nix\", version = \"1\" }\n[dev-dependencies]\nkit = { path = \"../kit\" }\n");
        write(w, "kit/Cargo.toml", "[package]\nname = \"kit\"\n[dependencies]\nserde = \"1\"\n");
        let sum = "ab".repeat(32);
        write(w, "Cargo.lock", &format!(
            "version = 4\n\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\ndependencies = [\"kit\", \"libc 0.2.1\", \"nix\"]\n\n\
             [[package]]\nname = \"kit\"\nversion = \"0.1.0\"\ndependencies = [\"serde\"]\n\n\
             [[package]]\nname = \"libc\"\nversion = \"0.2.1\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"{sum}\"\n\n\
             [[package]]\nname = \"libc\"\nversion = \"0.1.0\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"{sum}\"\n\n\
             [[package]]\nname = \"nix\"\nversion = \"1.0.0\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"{sum}\"\ndependencies = [\"libc 0.1.0\"]\n\n\
             [[package]]\nname = \"serde\"\nversion = \"1.0.0\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"{sum}\"\n"
        ));
        let got: Vec<String> = crates(w, &["app"])
            .unwrap()
            .into_iter()
            .map(|c| format!("{} {}", c.name, c.version))
            .collect();
        assert_eq!(got, ["app 0.1.0", "libc 0.1.0", "libc 0.2.1", "nix 1.0.0"]);
        let e = crates(w, &["nope"]).unwrap_err().to_string();
        assert!(e.contains("Cargo.lock") && e.contains("`nope`"), "{e}");
    }

    #[test]
    fn pkg_yml_debs_and_build_root() {
        let d = tempfile::tempdir().unwrap();
        let w = d.path();
        write(w, "pkg/k/pkg.yml", "description: k\nsuite: trixie\ndebs:\n  - package: linux-image-x\n    version: 1-1\n    arch: arm64\n    sha256: 73805585385c78e048e63fdfba66da36bab724c2cdebd96a3055a8a4f1ae287a\n    files:\n      - {from: a, to: b}\n");
        write(
            w,
            "pkg/hv/pkg.yml",
            "description: hv\nbuild:\n  script: hv/build.sh\n  output: boot/x\n",
        );
        write(w, "hv/Cargo.toml", "[package]\nname = \"my-hv\"\n");
        let k = pkg_info(w, "k").unwrap();
        assert_eq!(k.debs[0].distro.as_deref(), Some("trixie"));
        assert_eq!(k.debs[0].name, "linux-image-x");
        assert_eq!(k.root_crate, None);
        assert_eq!(pkg_info(w, "hv").unwrap().root_crate.as_deref(), Some("my-hv"));
        let e = pkg_info(w, "none").unwrap_err().to_string();
        assert!(e.contains("pkg/none/pkg.yml"), "{e}");
    }

    #[test]
    fn layout_digest_by_tag() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "index.json",
            r#"{"schemaVersion":2,"manifests":[{"mediaType":"m","digest":"sha256:aa","size":1,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}"#,
        );
        assert_eq!(oci_layout_image(d.path(), "bb", "latest").unwrap().digest, "sha256:aa");
        let e = oci_layout_image(d.path(), "bb", "v2").unwrap_err().to_string();
        assert!(e.contains("index.json") && e.contains("`v2`"), "{e}");
    }
}
