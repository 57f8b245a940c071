//! `rpixen rootfs MANIFEST -o FILE [--format cpio|squashfs]`.

use std::path::PathBuf;

use anyhow::Context;

use super::pull::OciArgs;
use rpixen::manifest::{self, RootfsFormat};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FormatArg {
    Cpio,
    Squashfs,
}

#[derive(Debug, clap::Args)]
pub struct RootfsArgs {
    /// The image manifest (YAML).
    pub manifest: PathBuf,
    /// Output file (written whole, then renamed into place).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Output format; default: the manifest's `rootfs.format`.
    #[arg(long)]
    pub format: Option<FormatArg>,
    #[command(flatten)]
    pub oci: OciArgs,
}

pub fn run(args: RootfsArgs) -> anyhow::Result<()> {
    let plan = manifest::load(&args.manifest)?;
    let format = match args.format {
        Some(FormatArg::Cpio) => RootfsFormat::Cpio,
        Some(FormatArg::Squashfs) => RootfsFormat::Squashfs,
        None => plan.rootfs.format,
    };
    let out_dir = match args.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    // A temporary file beside the output: on any error it is removed, so nothing half-written remains.
    let mut tmp = tempfile::NamedTempFile::new_in(&out_dir)
        .with_context(|| format!("cannot write in {}", out_dir.display()))?;
    let report = rpixen::rootfs::build(&args.oci.options(), &plan, format, tmp.as_file_mut())?;
    for w in &report.warnings {
        rpixen::report::warn(w);
    }
    // Temporary files are 0600; an image file is ordinary output.
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    tmp.persist(&args.output).with_context(|| format!("cannot write {}", args.output.display()))?;
    rpixen::report::status(format_args!(
        "rootfs: wrote {}: {} bytes ({:?}{})",
        args.output.display(),
        report.bytes,
        format,
        if report.cached { ", from the cache" } else { "" }
    ));
    Ok(())
}
