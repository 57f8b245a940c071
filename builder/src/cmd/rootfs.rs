//! `rpixen rootfs`.

#[derive(Debug, clap::Args)]
pub struct RootfsArgs {}

pub fn run(_args: RootfsArgs) -> anyhow::Result<()> {
    anyhow::bail!("`rpixen rootfs` is not built yet")
}
