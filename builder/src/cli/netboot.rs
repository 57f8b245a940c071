//! `rpixen netboot`: a TFTP root plus the SD-card files (and a small card image) that fetch it.

use std::path::PathBuf;

use anyhow::Context;

use rpixen::disk::{ids, output};
use rpixen::live;

#[derive(Debug, clap::Args)]
pub struct NetbootArgs {
    /// A board name from images/ or a manifest file.
    #[arg(default_value = "qemu-virt")]
    pub target: String,
    /// The TFTP server's address.
    #[arg(long, value_name = "IP")]
    pub serverip: String,
    /// A fixed address for the board; without it U-Boot asks DHCP.
    #[arg(long, value_name = "IP")]
    pub ipaddr: Option<String>,
    /// Output folder: DIR/tftp (the TFTP root), DIR/sdcard (boot medium files), DIR/sdcard.raw.
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub output: PathBuf,
    #[arg(long)]
    pub seed: Option<String>,
    /// Use this initramfs for Dom0 instead of building one from the manifest's `rootfs:`.
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<PathBuf>,
}

pub fn run(args: NetbootArgs) -> anyhow::Result<()> {
    let epoch = ids::source_date_epoch().map_err(anyhow::Error::msg)?;
    let plan = super::live::load_target(&args.target)?;
    let inputs = live::Inputs {
        plan: &plan,
        seed: args.seed.as_deref(),
        initrd: args.initrd.as_deref(),
        epoch,
    };
    let card = live::netboot(&inputs, &args.serverip, args.ipaddr.as_deref(), &args.output)
        .with_context(|| format!("writing the netboot tree for {}", args.target))?;
    let disk = live::card_disk(&card, args.seed.as_deref(), epoch)?;
    output::to_file(&disk, &args.output.join("sdcard.raw"))?;
    rpixen::report::status(format_args!(
        "netboot: TFTP root in {}, SD card files in {} (image: {})",
        args.output.join("tftp").display(),
        args.output.join("sdcard").display(),
        args.output.join("sdcard.raw").display()
    ));
    Ok(())
}
