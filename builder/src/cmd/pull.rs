//! `rpixen pull`.

#[derive(Debug, clap::Args)]
pub struct PullArgs {}

pub fn run(_args: PullArgs) -> anyhow::Result<()> {
    anyhow::bail!("`rpixen pull` is not built yet")
}
