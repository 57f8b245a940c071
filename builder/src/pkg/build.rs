//! Building one package: fetch and check its `.deb` files, map their paths into one layer, add the
//! symlinks and the artifact built from this repository, and write the OCI image layout.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::apt::Apt;
use super::cache::DebCache;
use super::def::{Build, CargoBuild, Deb, PkgDef};
use super::layer::LayerTar;
use super::map::{normalize, PathMap};
use super::{PkgError, PkgOptions};
use crate::error::{context, Cause};

/// The cached, checked `.deb` for one pin; downloads it through apt when it is not cached.
pub fn fetch_deb(
    def: &PkgDef,
    deb: &Deb,
    opts: &PkgOptions,
    apt: &mut Option<Apt>,
) -> Result<PathBuf, PkgError> {
    let cache = DebCache::new(&opts.cache_dir);
    if let Some(path) = cache.get(def, deb)? {
        return Ok(path);
    }
    if opts.offline {
        return Err(PkgError::Offline {
            package: def.name.clone(),
            deb: format!("{}={}", deb.package, deb.version),
            sha256: deb.sha256.clone(),
        });
    }
    let suite = def.suite.as_deref().unwrap_or_default();
    if apt.is_none() {
        *apt = Some(Apt::open(&opts.apt_dir, suite)?);
    }
    let apt = apt.as_mut().expect("just opened");
    let partial = opts.cache_dir.join("debs/partial");
    std::fs::create_dir_all(&partial)
        .map_err(|source| PkgError::Io { path: partial.clone(), source })?;
    let tmp = tempfile::tempdir_in(&partial)
        .map_err(|source| PkgError::Io { path: partial.clone(), source })?;
    let downloaded = apt.download(&deb.package, &deb.version, tmp.path()).map_err(|e| match e {
        PkgError::VersionGone(mut gone) => {
            gone.package = def.name.clone();
            gone.deb = deb.package.clone();
            gone.def = def.path.clone();
            PkgError::VersionGone(gone)
        }
        e => e,
    })?;
    cache.insert(def, deb, &downloaded)
}

/// Fetches and checks every `.deb` of a package; returns the cached files in definition order.
pub fn fetch(def: &PkgDef, opts: &PkgOptions) -> Result<Vec<PathBuf>, PkgError> {
    let mut apt = None;
    def.debs.iter().map(|deb| fetch_deb(def, deb, opts, &mut apt)).collect()
}

/// The repository a package folder belongs to (`<repo>/pkg/<name>`).
pub fn repo_root(pkg_dir: &Path) -> Result<PathBuf, PkgError> {
    let dir = pkg_dir
        .canonicalize()
        .map_err(|source| PkgError::Io { path: pkg_dir.to_owned(), source })?;
    dir.parent().and_then(Path::parent).map(Path::to_owned).ok_or_else(|| PkgError::Def {
        path: dir.clone(),
        source: "a package folder sits in <repo>/pkg/".into(),
    })
}

/// Writes the package's layer tar (uncompressed) to `out`.
pub fn write_layer(
    def: &PkgDef,
    repo: &Path,
    opts: &PkgOptions,
    out: impl Write,
) -> Result<(), PkgError> {
    let debs = fetch(def, opts)?;
    let mut layer = LayerTar::new(out);
    for (i, (deb, file)) in def.debs.iter().zip(&debs).enumerate() {
        crate::report::status(format_args!(
            "pkg {}: unpacking {}={}",
            def.name, deb.package, deb.version
        ));
        add_deb(def, i, deb, file, &mut layer)?;
    }
    for s in &def.symlinks {
        for name in &s.names {
            layer.symlink(&format!("{}/{name}", s.dir.trim_end_matches('/')), &s.target)?;
        }
    }
    if let Some(build) = &def.build {
        let tmp = tempfile::tempdir()
            .map_err(|source| PkgError::Io { path: std::env::temp_dir(), source })?;
        let artifact = run_build(def, build, repo, tmp.path())?;
        let size = std::fs::metadata(&artifact)
            .map_err(|source| PkgError::Io { path: artifact.clone(), source })?
            .len();
        let f = std::fs::File::open(&artifact)
            .map_err(|source| PkgError::Io { path: artifact.clone(), source })?;
        layer.file(&build.output, 0o755, size, f)?;
    }
    layer.finish()?.flush().map_err(|source| PkgError::Io { path: def.path.clone(), source })
}

fn add_deb(
    def: &PkgDef,
    index: usize,
    deb: &Deb,
    file: &Path,
    layer: &mut LayerTar<impl Write>,
) -> Result<(), PkgError> {
    let mut map = PathMap::new(&deb.files);
    let deb_err = |source: Cause| PkgError::Deb { path: file.to_owned(), source };
    super::deb::for_each_data_entry(file, |entry| {
        let path = entry.path().map_err(|e| deb_err(e.into()))?.to_string_lossy().into_owned();
        let Some(to) = map.map(&path) else { return Ok(()) };
        let header = entry.header();
        let mode = header.mode().map_err(|e| deb_err(context(path.clone())(e)))? & 0o7777;
        match header.entry_type() {
            tar::EntryType::Directory => layer.dir(&to, mode),
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                layer.file(&to, mode, size, entry)
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name().map_err(|e| deb_err(e.into()))?.unwrap_or_default();
                layer.symlink(&to, &target.to_string_lossy())
            }
            tar::EntryType::Link => {
                let target = entry.link_name().map_err(|e| deb_err(e.into()))?.unwrap_or_default();
                let target = target.to_string_lossy();
                // Map the target without counting it as a hit of its rule.
                let mapped =
                    PathMap::new(&deb.files).map(&target).ok_or_else(|| PkgError::Map {
                        package: def.name.clone(),
                        def: def.path.clone(),
                        field: format!("debs[{index}].files"),
                        message: format!(
                            "hard link {} points at {}, which is not mapped",
                            normalize(&path),
                            normalize(&target)
                        ),
                    })?;
                layer.hardlink(&to, &mapped)
            }
            other => Err(deb_err(format!("{path}: unsupported entry type {other:?}").into())),
        }
    })?;
    for (j, (rule, hits)) in deb.files.iter().zip(&map.hits).enumerate() {
        let field = format!("debs[{index}].files[{j}]");
        let bad = |message: String| PkgError::Map {
            package: def.name.clone(),
            def: def.path.clone(),
            field: field.clone(),
            message,
        };
        if *hits == 0 {
            return Err(bad(format!(
                "`{}` matches nothing in {}={}",
                rule.from, deb.package, deb.version
            )));
        }
        if !rule.from.ends_with('/') && *hits > 1 {
            return Err(bad(format!(
                "`{}` matches {hits} files; a file rule must match one",
                rule.from
            )));
        }
    }
    Ok(())
}

/// Runs the package's build and returns the artifact it produced.
fn run_build(def: &PkgDef, build: &Build, repo: &Path, tmp: &Path) -> Result<PathBuf, PkgError> {
    match (&build.script, &build.cargo) {
        (Some(script), _) => run_script(def, script, repo, tmp),
        (None, Some(cargo)) => run_cargo(def, cargo, repo),
        (None, None) => unreachable!("validated: a build has a script or cargo"),
    }
}

fn run_script(def: &PkgDef, script: &Path, repo: &Path, tmp: &Path) -> Result<PathBuf, PkgError> {
    let fail =
        |message: String| PkgError::Build { package: def.name.clone(), source: message.into() };
    let path = repo.join(script);
    if !path.is_file() {
        return Err(fail(format!(
            "its build script {} is missing, so this package cannot be built yet",
            path.display()
        )));
    }
    let out = tmp.join("artifact");
    crate::report::status(format_args!(
        "pkg {}: running {} {}",
        def.name,
        script.display(),
        out.display()
    ));
    // The script's stdout goes to our stderr: stdout may be carrying an image.
    let status = Command::new(&path)
        .arg(&out)
        .current_dir(repo)
        .stdout(std::process::Stdio::from(std::io::stderr()))
        .status()
        .map_err(|e| PkgError::Build {
            package: def.name.clone(),
            source: context(format!("cannot start {}", path.display()))(e),
        })?;
    if !status.success() {
        return Err(fail(format!("{} {} failed ({status})", script.display(), out.display())));
    }
    if !out.is_file() {
        return Err(fail(format!("{} succeeded but wrote no {}", script.display(), out.display())));
    }
    Ok(out)
}

fn run_cargo(def: &PkgDef, c: &CargoBuild, repo: &Path) -> Result<PathBuf, PkgError> {
    let fail =
        |message: String| PkgError::Build { package: def.name.clone(), source: message.into() };
    let CargoBuild { package, target, profile } = c;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    crate::report::status(format_args!(
        "pkg {}: cargo build -p {package} --target {target} --profile {profile}",
        def.name
    ));
    let out = Command::new(cargo)
        .args(["build", "--locked", "-p", package, "--target", target, "--profile", profile])
        .args(["--message-format", "json-render-diagnostics"])
        .current_dir(repo)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| PkgError::Build {
            package: def.name.clone(),
            source: context("cannot start cargo")(e),
        })?;
    if !out.status.success() {
        return Err(fail(format!("cargo build -p {package} failed ({})", out.status)));
    }
    cargo_executable(&String::from_utf8_lossy(&out.stdout), package)
        .ok_or_else(|| fail(format!("cargo built no executable for {package}")))
}

/// The executable path cargo reports for `package`'s binary of the same name.
fn cargo_executable(messages: &str, package: &str) -> Option<PathBuf> {
    messages.lines().rev().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        (v["reason"] == "compiler-artifact" && v["target"]["name"] == package)
            .then(|| v["executable"].as_str().map(PathBuf::from))
            .flatten()
    })
}

/// Builds the package in `pkg_dir` and writes its OCI image layout to `out_dir` (tag `latest`). The
/// layout is written next to `out_dir` and renamed into place, so a failed build leaves nothing behind.
pub fn build(pkg_dir: &Path, out_dir: &Path, opts: &PkgOptions) -> Result<(), PkgError> {
    let def = PkgDef::load(pkg_dir)?;
    let repo = repo_root(pkg_dir)?;
    let mut tar = Vec::new();
    write_layer(&def, &repo, opts, &mut tar)?;
    let parent = out_dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .map_err(|source| PkgError::Io { path: parent.to_owned(), source })?;
    let staging = tempfile::tempdir_in(parent)
        .map_err(|source| PkgError::Io { path: parent.to_owned(), source })?;
    write_layout(&def, &tar, staging.path())?;
    // Swap the new layout in with renames, so readers of the old one see a whole layout at every moment
    // but the one between the two renames.
    let old = tempfile::tempdir_in(parent)
        .map_err(|source| PkgError::Io { path: parent.to_owned(), source })?;
    if out_dir.exists() {
        std::fs::rename(out_dir, old.path().join("layout"))
            .map_err(|source| PkgError::Io { path: out_dir.to_owned(), source })?;
    }
    let staged = staging.keep();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755))
        .map_err(|source| PkgError::Io { path: staged.clone(), source })?;
    std::fs::rename(&staged, out_dir)
        .map_err(|source| PkgError::Io { path: out_dir.to_owned(), source })?;
    drop(old);
    crate::report::status(format_args!("pkg {}: wrote {}", def.name, out_dir.display()));
    Ok(())
}

/// Writes the one-layer image (linux/arm64) into the layout `dir`, tagged `latest`. The manifest's
/// description records what went in: the package name and each pinned `.deb`.
fn write_layout(def: &PkgDef, tar: &[u8], dir: &Path) -> Result<(), PkgError> {
    use crate::oci::layout::{Compression, ImageBuilder};
    let oci =
        |e: crate::oci::OciError| PkgError::Build { package: def.name.clone(), source: e.into() };
    let mut image = ImageBuilder::new()
        .layer(tar, Compression::Gzip)
        .map_err(|source| PkgError::Io { path: dir.to_owned(), source })?;
    // One annotation only: oci-spec keeps annotations in a HashMap, whose order (and so the manifest
    // digest) would change from run to run with more than one key.
    let debs: Vec<String> = def
        .debs
        .iter()
        .map(|d| format!("{}={} {} sha256:{}", d.package, d.version, d.arch, d.sha256))
        .collect();
    let mut description = format!("rpixen package {}: {}", def.name, def.description);
    if !debs.is_empty() {
        description.push_str(&format!(" (from {})", debs.join(", ")));
    }
    image.annotations.insert("org.opencontainers.image.description".into(), description);
    image.write(dir, "latest").map_err(oci)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cargo_executable() {
        let msgs = r#"{"reason":"compiler-artifact","target":{"name":"dom0-init"},"executable":"/t/dom0-init"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(cargo_executable(msgs, "dom0-init"), Some(PathBuf::from("/t/dom0-init")));
        assert_eq!(cargo_executable(msgs, "other"), None);
    }
}
