//! The `rpixen` command line.

mod cli;

use clap::{Parser, Subcommand};

use cli as cmd;

#[derive(Debug, Parser)]
#[command(
    name = "rpixen",
    version,
    about = "Builds flashable edge-OS images for the Raspberry Pi 4 and QEMU virt"
)]
struct Cli {
    /// Print only errors and warnings: no status lines, no progress bars.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a bootable GPT disk image (to stdout, or to a file with -o).
    Live(cmd::live::LiveArgs),
    /// List the partitions and boot files of a disk image.
    Inspect(cmd::inspect::InspectArgs),
    /// Write a TFTP root and the SD-card boot.scr that fetches it (developer loop).
    Netboot(cmd::netboot::NetbootArgs),
    /// Pull an OCI image into the blob cache.
    Pull(cmd::pull::PullArgs),
    /// Build a Dom0 root filesystem (cpio or squashfs) from an image manifest.
    Rootfs(cmd::rootfs::RootfsArgs),
    /// Write an SPDX 2.3 JSON SBOM of what the board's image contains (EVE's `sbom`).
    Sbom(cmd::sbom::SbomArgs),
    /// Build, fetch and re-pin the packages in pkg/.
    #[command(subcommand)]
    Pkg(cmd::pkg::PkgCommand),
    /// Slot artifacts for fleet updates: build, push, sign (cosign) and verify.
    #[command(subcommand)]
    Update(cmd::update::UpdateCommand),
    /// Write an installer image (EVE's `installer_raw`): it boots to an installer that writes the
    /// live image it carries onto the device's internal storage (eMMC, NVMe, a second disk).
    #[command(name = "installer_raw")]
    InstallerRaw(cmd::installer::InstallerArgs),
    /// Print the version.
    Version,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    rpixen::report::init(cli.quiet);
    let result = match cli.command {
        Command::Live(mut a) => {
            // In the container: /out receives the image.
            cmd::container::prepare_live(&mut a);
            cmd::live::run(a)
        }
        Command::Sbom(mut a) => {
            // In the container: /out receives the document.
            cmd::container::prepare_sbom(&mut a);
            cmd::sbom::run(a)
        }
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Netboot(a) => cmd::netboot::run(a),
        Command::Pull(a) => cmd::pull::run(a),
        Command::Rootfs(a) => cmd::rootfs::run(a),
        Command::Pkg(c) => cmd::pkg::run(c),
        Command::Update(c) => cmd::update::run(c),
        Command::InstallerRaw(a) => cmd::installer::run(a),
        Command::Version => {
            println!("rpixen {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Each layer says only its own part, so every cause is printed once, outermost first.
            eprintln!("rpixen: error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
