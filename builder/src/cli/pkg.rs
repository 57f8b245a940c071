//! `rpixen pkg`: build, fetch and re-pin the packages in `pkg/`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rpixen_pkg::{PkgDef, PkgOptions};

use rpixen::pkg as rpixen_pkg;

#[derive(Debug, clap::Args)]
pub struct CacheArgs {
    /// Download cache (default $XDG_CACHE_HOME/rpixen, else ~/.cache/rpixen).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Use the download cache only; a missing .deb is an error.
    #[arg(long)]
    pub offline: bool,
}

impl CacheArgs {
    fn options(&self) -> PkgOptions {
        let mut o = match &self.cache {
            Some(dir) => PkgOptions::with_cache(dir.clone()),
            None => PkgOptions::from_env(),
        };
        o.offline = self.offline;
        o
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum PkgCommand {
    /// Build packages' OCI image layouts (default: every package, into <repo>/dist/pkg/<name>).
    Build {
        /// Package folders, e.g. pkg/kernel (default: every folder of ./pkg).
        dirs: Vec<PathBuf>,
        /// Output layout folder (one package only).
        #[arg(short, long, value_name = "DIR")]
        output: Option<PathBuf>,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Download and check the pinned .deb files into the cache.
    Fetch {
        /// Package folders (default: every folder of ./pkg).
        dirs: Vec<PathBuf>,
        /// Only the .deb with this Debian package name.
        #[arg(long, value_name = "NAME")]
        deb: Option<String>,
        /// Also unpack each .deb whole into DIR/<debian-package>/ (for tests and exploration).
        #[arg(long, value_name = "DIR")]
        unpack: Option<PathBuf>,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Write one file of a package image (or any image reference) to stdout or FILE, e.g.
    /// `rpixen pkg cat u-boot u-boot/qemu_arm64/u-boot.bin -o u-boot.bin`.
    Cat {
        /// A package name (`u-boot`), `oci:DIR[:TAG]` or a registry reference.
        image: String,
        /// The path inside the image.
        path: String,
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Re-pin every .deb to the version the Debian archive serves now (edits pkg.yml).
    Update {
        /// Package folders (default: every folder of ./pkg).
        dirs: Vec<PathBuf>,
        #[command(flatten)]
        cache: CacheArgs,
    },
}

fn package_dirs(dirs: Vec<PathBuf>) -> anyhow::Result<Vec<PathBuf>> {
    if !dirs.is_empty() {
        return Ok(dirs);
    }
    let found = rpixen_pkg::def::discover(Path::new("pkg")).context(
        "no package folders named and no ./pkg folder here: run from the repository root",
    )?;
    anyhow::ensure!(!found.is_empty(), "no package folders with a pkg.yml under ./pkg");
    Ok(found)
}

pub fn run(cmd: PkgCommand) -> anyhow::Result<()> {
    match cmd {
        PkgCommand::Build { dirs, output, cache } => {
            let dirs = package_dirs(dirs)?;
            anyhow::ensure!(output.is_none() || dirs.len() == 1, "-o takes one package folder");
            let opts = cache.options();
            for dir in dirs {
                let out = match &output {
                    Some(o) => o.clone(),
                    None => {
                        let def = PkgDef::load(&dir)?;
                        rpixen_pkg::build::repo_root(&dir)?.join("dist/pkg").join(&def.name)
                    }
                };
                rpixen_pkg::build(&dir, &out, &opts)
                    .with_context(|| format!("building {}", dir.display()))?;
            }
            Ok(())
        }
        PkgCommand::Fetch { dirs, deb, unpack, cache } => {
            let opts = cache.options();
            let mut found = false;
            for dir in package_dirs(dirs)? {
                let def = PkgDef::load(&dir)?;
                let mut apt = None;
                for d in def.debs.iter().filter(|d| deb.as_deref().is_none_or(|n| n == d.package)) {
                    found = true;
                    let file = rpixen_pkg::fetch_deb(&def, d, &opts, &mut apt)?;
                    rpixen::report::status(format_args!(
                        "pkg {}: {}={} ok ({})",
                        def.name,
                        d.package,
                        d.version,
                        file.display()
                    ));
                    if let Some(root) = &unpack {
                        unpack_once(&file, &root.join(&d.package))?;
                    }
                }
            }
            anyhow::ensure!(
                found || deb.is_none(),
                "no package pins a .deb named {}",
                deb.unwrap_or_default()
            );
            Ok(())
        }
        PkgCommand::Cat { image, path, output } => {
            let bytes =
                rpixen::rootfs::read_file(&rpixen::oci::OciOptions::from_env(), &image, &path)?;
            match output {
                Some(file) => {
                    std::fs::write(&file, bytes).with_context(|| file.display().to_string())
                }
                None => std::io::Write::write_all(&mut std::io::stdout().lock(), &bytes)
                    .context("stdout"),
            }
        }
        PkgCommand::Update { dirs, cache } => {
            let opts = cache.options();
            for dir in package_dirs(dirs)? {
                let repins = rpixen_pkg::update::update(&dir, &opts)?;
                for r in &repins {
                    rpixen::report::status(format_args!(
                        "pkg {}: {}={} -> {}={}",
                        dir.display(),
                        r.old_package,
                        r.old_version,
                        r.new.package,
                        r.new.version
                    ));
                }
                if repins.is_empty() {
                    rpixen::report::status(format_args!("pkg {}: current", dir.display()));
                }
            }
            Ok(())
        }
    }
}

/// Unpacks a checked `.deb` into `dest` unless a previous run finished it (`dest/.done`); unpacks
/// beside it and renames, so an interrupted run leaves no half tree under the final name.
fn unpack_once(deb: &Path, dest: &Path) -> anyhow::Result<()> {
    if dest.join(".done").exists() {
        return Ok(());
    }
    let parent = dest.parent().context("unpack folder has no parent")?;
    std::fs::create_dir_all(parent).with_context(|| parent.display().to_string())?;
    let tmp = tempfile::tempdir_in(parent)?;
    rpixen_pkg::deb::unpack_all(deb, tmp.path())?;
    std::fs::write(tmp.path().join(".done"), b"")?;
    if dest.exists() {
        std::fs::remove_dir_all(dest).with_context(|| dest.display().to_string())?;
    }
    std::fs::rename(tmp.keep(), dest).with_context(|| dest.display().to_string())?;
    Ok(())
}
