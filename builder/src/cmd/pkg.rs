//! `rpixen pkg`.

#[derive(Debug, clap::Subcommand)]
pub enum PkgCommand {
    /// Build a package's OCI image layout.
    Build {
        /// The package folder, e.g. pkg/kernel.
        dir: std::path::PathBuf,
    },
}

pub fn run(_cmd: PkgCommand) -> anyhow::Result<()> {
    anyhow::bail!("`rpixen pkg` is not built yet")
}
