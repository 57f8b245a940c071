//! `rpixen netboot`.

#[derive(Debug, clap::Args)]
pub struct NetbootArgs {}

pub fn run(_args: NetbootArgs) -> anyhow::Result<()> {
    anyhow::bail!("`rpixen netboot` is not built yet")
}
