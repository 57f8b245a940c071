//! `rpixen live`: write a flashable GPT disk image.

use std::path::{Path, PathBuf};

use anyhow::Context;

use rpixen::disk::{ids, output};
use rpixen::live;
use rpixen::live::release::{self, ImagerOptions, ReleaseOptions};
use rpixen::manifest::{self, Plan};

#[derive(Debug, clap::Args)]
pub struct LiveArgs {
    /// A board name from images/ (qemu-virt, qemu-virt-xen, rpi4, rpi4-qemu) or a manifest file.
    #[arg(default_value = "qemu-virt")]
    pub target: String,
    /// Write the image to FILE (sparse, atomically) instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Mixed into the disk and partition GUIDs: distinct seeds give distinct GUIDs for the same content.
    #[arg(long)]
    pub seed: Option<String>,
    /// Use this initramfs for Dom0 instead of building one from the manifest's `rootfs:`.
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<PathBuf>,
    /// Write only the slot image to FILE: the exact bytes of the IMGA partition (second stage,
    /// hypervisor, kernel, initrd, DTB, rootfs), what an update writes into the inactive slot.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["output", "xz", "bmap", "sha256", "release", "imager_url"])]
    pub slot_image: Option<PathBuf>,
    /// Also write FILE.xz: multi-block xz, which `xz -T0` and rpi-imager decode on several threads.
    #[arg(long, help_heading = "Release files (next to -o FILE)")]
    pub xz: bool,
    /// Also write FILE.bmap, for `bmaptool copy FILE.xz /dev/sdX` (writes only the mapped blocks).
    #[arg(long, help_heading = "Release files (next to -o FILE)")]
    pub bmap: bool,
    /// Also write FILE.sha256 (written with every other release file too).
    #[arg(long, help_heading = "Release files (next to -o FILE)")]
    pub sha256: bool,
    /// All of --xz --bmap --sha256.
    #[arg(long, help_heading = "Release files (next to -o FILE)")]
    pub release: bool,
    /// Also write an rpi-imager repository, STEM.rpi-imager-manifest (`rpi-imager --repo`), whose
    /// download is URL: where you will publish FILE.xz.
    #[arg(long, value_name = "URL", help_heading = "Release files (next to -o FILE)")]
    pub imager_url: Option<String>,
    /// The entry's icon URL (40x40 PNG or SVG) [default: icon.png beside the download URL].
    #[arg(long, value_name = "URL", help_heading = "Release files (next to -o FILE)")]
    pub imager_icon: Option<String>,
    /// The entry's name in "CHOOSE OS" [default: rpixen (BOARD)].
    #[arg(long, value_name = "TEXT", help_heading = "Release files (next to -o FILE)")]
    pub imager_name: Option<String>,
    /// The entry's description.
    #[arg(long, value_name = "TEXT", help_heading = "Release files (next to -o FILE)")]
    pub imager_description: Option<String>,
    /// The entry's website link.
    #[arg(long, value_name = "URL", help_heading = "Release files (next to -o FILE)")]
    pub imager_website: Option<String>,
    /// An rpi-imager device tag (repeatable) [default: the board's, pi4-64bit for rpi4].
    #[arg(
        long = "imager-device",
        value_name = "TAG",
        help_heading = "Release files (next to -o FILE)"
    )]
    pub imager_devices: Vec<String>,
}

impl LiveArgs {
    fn release_options(&self) -> ReleaseOptions {
        ReleaseOptions {
            xz: self.xz || self.release,
            bmap: self.bmap || self.release,
            sha256: self.sha256 || self.release,
            imager: self.imager_url.as_ref().map(|url| ImagerOptions {
                url: url.clone(),
                icon: self.imager_icon.clone(),
                name: self.imager_name.clone(),
                description: self.imager_description.clone(),
                website: self.imager_website.clone(),
                devices: self.imager_devices.clone(),
            }),
        }
    }
}

/// Where board manifests live: $RPIXEN_IMAGES_DIR, the source tree, or the container's share folder.
pub fn images_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RPIXEN_IMAGES_DIR") {
        return PathBuf::from(d);
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images");
    if src.is_dir() {
        return src;
    }
    PathBuf::from("/usr/share/rpixen/images")
}

/// Resolves a board name or a manifest path and loads it into a checked plan.
pub fn load_target(target: &str) -> anyhow::Result<Plan> {
    let path = if target.ends_with(".yml") || target.ends_with(".yaml") || target.contains('/') {
        PathBuf::from(target)
    } else {
        let dir = images_dir();
        let p = dir.join(format!("{target}.yml"));
        if !p.is_file() {
            let mut known: Vec<String> = std::fs::read_dir(&dir)
                .map(|r| {
                    r.filter_map(|e| e.ok())
                        .filter_map(|e| {
                            e.file_name()
                                .to_str()
                                .and_then(|n| n.strip_suffix(".yml"))
                                .map(str::to_owned)
                        })
                        .collect()
                })
                .unwrap_or_default();
            known.sort();
            anyhow::bail!(
                "unknown board `{target}` (known in {}: {})",
                dir.display(),
                known.join(", ")
            );
        }
        p
    };
    Ok(manifest::load(&path)?)
}

pub fn run(args: LiveArgs) -> anyhow::Result<()> {
    let epoch = ids::source_date_epoch().map_err(anyhow::Error::msg)?;
    if let Some(path) = &args.slot_image {
        return slot_image(&args, path, epoch);
    }
    if args.output.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        // Checked before the work, so a user who forgot `>` learns it at once.
        return Err(output::OutputError::Terminal.into());
    }
    let release_opts = args.release_options();
    if release_opts.any() && args.output.is_none() {
        anyhow::bail!(
            "release files (--xz, --bmap, --sha256, --release, --imager-url) go next to the image: \
             name it with -o FILE (in the container, mount a folder at /out)"
        );
    }
    let mut plan = load_target(&args.target)?;
    // Checked before the build, so a bad URL or a board without a device tag fails at once.
    let imager = match &release_opts.imager {
        Some(o) => Some(release::imager_meta(o, &args.target, plan.board.kind, epoch)?),
        None => None,
    };
    // In the container: /in overrides CONFIG files.
    super::container::override_config_files(&mut plan)?;
    let inputs = live::Inputs {
        plan: &plan,
        seed: args.seed.as_deref(),
        initrd: args.initrd.as_deref(),
        epoch,
    };
    let disk =
        live::live(&inputs).with_context(|| format!("building the image for {}", args.target))?;
    write_image(&disk, args.output.as_deref(), "image")?;
    if let Some(p) = args.output.as_ref().filter(|_| release_opts.any()) {
        let r = release::write(&disk, p, &release_opts, imager.as_ref())?;
        for f in &r.files {
            rpixen::report::status(format_args!("wrote {}", f.display()));
        }
    }
    Ok(())
}

fn slot_image(args: &LiveArgs, path: &Path, epoch: u64) -> anyhow::Result<()> {
    let mut plan = load_target(&args.target)?;
    super::container::override_config_files(&mut plan)?;
    let inputs = live::Inputs {
        plan: &plan,
        seed: args.seed.as_deref(),
        initrd: args.initrd.as_deref(),
        epoch,
    };
    let image = live::slot::slot_image(&inputs)
        .with_context(|| format!("building the slot image for {}", args.target))?;
    output::to_file(&image, path)?;
    rpixen::report::status(format_args!(
        "slot image {} ({} bytes: the IMGA partition)",
        content_digest(&image).context("hashing the slot image")?,
        image.len
    ));
    Ok(())
}

/// Writes `disk` to `output` (or stdout) and reports its digest (`rpixen: image sha256:...`, which
/// scripts and tests read); `what` names the kind of image.
pub(crate) fn write_image(
    disk: &rpixen::disk::Disk,
    output: Option<&Path>,
    what: &str,
) -> anyhow::Result<()> {
    // Hashed on a second thread while the image is written: the same bytes, zeros included.
    let digest = std::thread::scope(|scope| -> anyhow::Result<String> {
        let digest = scope.spawn(|| content_digest(disk));
        match output {
            Some(p) => output::to_file(disk, p)?,
            None => output::to_stdout(disk)?,
        }
        digest.join().expect("the digest thread does not panic").context("hashing the image")
    })?;
    rpixen::report::status(format_args!(
        "{what} {digest} ({} bytes: sha256 of the whole disk image as written, holes as zeros; `sha256sum` of the file prints the same)",
        disk.len
    ));
    Ok(())
}

/// `sha256:<hex>` of every byte of the image in order, as [`output::stream`] writes them.
fn content_digest(disk: &rpixen::disk::Disk) -> std::io::Result<String> {
    use sha2::Digest;
    struct Hasher(sha2::Sha256);
    impl std::io::Write for Hasher {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = Hasher(sha2::Sha256::new());
    output::stream(disk, &mut h)?;
    Ok(format!("sha256:{}", hex::encode(h.0.finalize())))
}
