//! `rpixen installer_raw`: EVE's installer image. It boots like the live image into an installer
//! that writes the live image it carries onto the device's internal storage, then powers off.

use std::path::PathBuf;

use anyhow::Context;

use rpixen::disk::{ids, output};
use rpixen::installer::{self, InstallOptions};
use rpixen::live;

#[derive(Debug, clap::Args)]
pub struct InstallerArgs {
    /// A board name from images/ (qemu-virt, rpi4, ...) or a manifest file.
    #[arg(default_value = "qemu-virt")]
    pub target: String,
    /// Write the image to FILE (sparse, atomically) instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Mixed into the disk and partition GUIDs of both the installer and the image it carries.
    #[arg(long)]
    pub seed: Option<String>,
    /// Dom0's initramfs for the installed image (the installer always builds its own from `rootfs:`).
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<PathBuf>,
    /// The disk the installer writes (`nvme0n1`, `mmcblk0`, `vdb`); default: the first disk that is
    /// not the installer's own medium (NVMe, then eMMC, then SATA/USB, then virtio).
    #[arg(long = "install-target", value_name = "DISK")]
    pub install_target: Option<String>,
    /// Let the installer overwrite a disk that holds partitions or data (it refuses otherwise).
    #[arg(long)]
    pub wipe: bool,
}

pub fn run(mut args: InstallerArgs) -> anyhow::Result<()> {
    // In the container: /out receives the image as installer.raw.
    if args.output.is_none() {
        if let Some(out) = super::container::out_dir() {
            args.output = Some(out.join("installer.raw"));
        }
    }
    let epoch = ids::source_date_epoch().map_err(anyhow::Error::msg)?;
    if args.output.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(output::OutputError::Terminal.into());
    }
    if let Some(t) = &args.install_target {
        anyhow::ensure!(
            !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'/'),
            "--install-target `{t}`: expected a disk name such as nvme0n1, mmcblk0 or vdb"
        );
    }
    let mut plan = super::live::load_target(&args.target)?;
    // In the container: /in overrides CONFIG files, on the installer and on the image it carries.
    super::container::override_config_files(&mut plan)?;
    let inputs = live::Inputs {
        plan: &plan,
        seed: args.seed.as_deref(),
        initrd: args.initrd.as_deref(),
        epoch,
    };
    let options = InstallOptions { target: args.install_target.clone(), wipe: args.wipe };
    let disk = installer::installer(&inputs, &options)
        .with_context(|| format!("building the installer image for {}", args.target))?;
    super::live::write_image(&disk, args.output.as_deref(), "installer image")
}
