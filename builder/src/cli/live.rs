//! `rpixen live`: write a flashable GPT disk image.

use std::path::{Path, PathBuf};

use anyhow::Context;

use rpixen::disk::{ids, output};
use rpixen::live;
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
    if args.output.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        // Checked before the work, so a user who forgot `>` learns it at once.
        return Err(output::OutputError::Terminal.into());
    }
    let mut plan = load_target(&args.target)?;
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
    // Hashed on a second thread while the image is written: the same bytes, zeros included.
    let digest = std::thread::scope(|scope| -> anyhow::Result<String> {
        let digest = scope.spawn(|| content_digest(&disk));
        match &args.output {
            Some(p) => output::to_file(&disk, p)?,
            None => output::to_stdout(&disk)?,
        }
        digest.join().expect("the digest thread does not panic").context("hashing the image")
    })?;
    eprintln!(
        "rpixen: image {digest} ({} bytes: sha256 of the whole disk image as written, holes as zeros; `sha256sum` of the file prints the same)",
        disk.len
    );
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
