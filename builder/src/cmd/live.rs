//! `rpixen live`.

#[derive(Debug, clap::Args)]
pub struct LiveArgs {}

pub fn run(_args: LiveArgs) -> anyhow::Result<()> {
    anyhow::bail!("`rpixen live` is not built yet")
}
