//! `rpixen pull REF`: fetch an image's manifest, config and layers into the blob cache.

use rpixen::oci::{self, OciOptions};

/// Options shared by every command that reads OCI images.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OciArgs {
    /// Use only the blob cache; fail if something is missing from it.
    #[arg(long)]
    pub offline: bool,
    /// Speak plain HTTP to this registry (`host` or `host:port`); loopback registries always are.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,
    /// Platform chosen from multi-arch images (os/arch[/variant]).
    #[arg(long, default_value = "linux/arm64/v8")]
    pub platform: oci::Platform,
}

impl OciArgs {
    pub fn options(&self) -> OciOptions {
        let mut o = OciOptions::from_env();
        o.offline = self.offline;
        o.insecure_registries = self.insecure_registries.clone();
        o.platform = self.platform.clone();
        o
    }
}

#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// Image: a registry reference (`host/repo:tag`, `...@sha256:...`), `oci:DIR[:TAG]` or a package name.
    pub reference: String,
    #[command(flatten)]
    pub oci: OciArgs,
}

pub fn run(args: PullArgs) -> anyhow::Result<()> {
    let opts = args.oci.options();
    let image = oci::resolve(&opts, &args.reference)?;
    let total: u64 = image.layers.iter().map(|l| l.descriptor.size()).sum();
    println!("{}@{}", args.reference, image.manifest_digest);
    for l in &image.layers {
        println!(
            "  {} {:>12} {}",
            l.descriptor.digest(),
            l.descriptor.size(),
            l.descriptor.media_type()
        );
    }
    rpixen::report::status(format_args!(
        "pull: {} layers, {total} bytes, in {}",
        image.layers.len(),
        opts.cache_dir.display()
    ));
    Ok(())
}
