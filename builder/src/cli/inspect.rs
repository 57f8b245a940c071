//! `rpixen inspect`: list the partitions and boot files of a disk image.

use std::path::PathBuf;

use rpixen::disk::inspect;

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The disk image (for example live.raw).
    pub image: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    let report = inspect::inspect(&args.image)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", inspect::render(&report));
    }
    Ok(())
}
