//! `rpixen inspect`.

#[derive(Debug, clap::Args)]
pub struct InspectArgs {}

pub fn run(_args: InspectArgs) -> anyhow::Result<()> {
    anyhow::bail!("`rpixen inspect` is not built yet")
}
