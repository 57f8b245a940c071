//! `rpixen update build|push|sign|verify`: slot artifacts for fleet updates, as OCI image layouts,
//! pushed to any registry and signed as `cosign sign --key` signs.

use std::path::{Path, PathBuf};

use anyhow::Context;

use rpixen::disk::ids;
use rpixen::live;
use rpixen::manifest::BoardKind;
use rpixen::oci::{self, layout::Layout, registry};
use rpixen_update::artifact::{self, Info};
use rpixen_update::cosign::{PrivateKey, PublicKey};
use rpixen_update::registry::{Client, Credentials, Reference};
use rpixen_update::verify::{self, BlobStore};

#[derive(Debug, clap::Subcommand)]
pub enum UpdateCommand {
    /// Write a slot artifact (the slot partition's image: boot script, hypervisor, kernel, device
    /// tree, initrd; cut into content-defined chunks) as an OCI image layout.
    Build(BuildArgs),
    /// Push a slot artifact layout to a registry (and sign it with --key).
    Push(PushArgs),
    /// Sign an artifact in a registry with a cosign key (stored as cosign stores signatures).
    Sign(SignArgs),
    /// Check an artifact's cosign signature with a public key, as a device does (and fetch its files).
    Verify(VerifyArgs),
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// A board name from images/ or a manifest file.
    pub target: String,
    /// The layout folder to write (must not exist).
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub output: PathBuf,
    /// The artifact's version: its tag and `org.opencontainers.image.version`.
    #[arg(long)]
    pub version: String,
    /// `org.opencontainers.image.revision` (e.g. the git commit).
    #[arg(long)]
    pub revision: Option<String>,
    /// `org.opencontainers.image.source` (e.g. the repository URL).
    #[arg(long)]
    pub source: Option<String>,
    /// Use this initramfs for Dom0 instead of building one from the manifest's `rootfs:`.
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<PathBuf>,
    /// Package this slot partition image as it is instead of building one.
    #[arg(long, value_name = "FILE", conflicts_with = "initrd")]
    pub slot_image: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct RegistryArgs {
    /// Speak plain HTTP to this registry (`host` or `host:port`); loopback registries always are.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The layout `rpixen update build` wrote.
    pub layout: PathBuf,
    /// Where to push: `host/repository:tag`.
    pub reference: String,
    /// Sign after pushing with this cosign private key (password from COSIGN_PASSWORD).
    #[arg(long, value_name = "cosign.key")]
    pub key: Option<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// The cosign private key (`cosign generate-key-pair`); password from COSIGN_PASSWORD.
    #[arg(long, value_name = "cosign.key")]
    pub key: PathBuf,
    /// The artifact: `host/repository:tag` or `host/repository@sha256:...`.
    pub reference: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The cosign public key (`cosign.pub`).
    #[arg(long, value_name = "cosign.pub")]
    pub key: PathBuf,
    /// The artifact: `host/repository:tag` or `host/repository@sha256:...`.
    pub reference: String,
    /// Also fetch every chunk into this blob store, checking each digest.
    #[arg(long, value_name = "DIR")]
    pub fetch: Option<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub fn run(command: UpdateCommand) -> anyhow::Result<()> {
    match command {
        UpdateCommand::Build(a) => build(a),
        UpdateCommand::Push(a) => push(a),
        UpdateCommand::Sign(a) => sign(a),
        UpdateCommand::Verify(a) => verify(a),
    }
}

fn build(args: BuildArgs) -> anyhow::Result<()> {
    let epoch = ids::source_date_epoch().map_err(anyhow::Error::msg)?;
    let plan = super::live::load_target(&args.target)?;
    let image = match &args.slot_image {
        Some(path) => path.clone(),
        None => {
            let file =
                tempfile::NamedTempFile::new().context("a temporary file for the slot image")?;
            write_slot_fat(&plan, &args, epoch, file.path())?;
            file.into_temp_path().keep().context("keeping the slot image")?
        }
    };
    let board = match plan.board.kind {
        BoardKind::Rpi4 => "rpi4",
        BoardKind::QemuVirt => "qemu-virt",
    };
    let info = Info {
        version: args.version.clone(),
        epoch,
        board: board.into(),
        revision: args.revision.clone(),
        source: args.source.clone(),
    };
    let result = artifact::write_slot_layout(&args.output, &image, &info);
    if args.slot_image.is_none() {
        let _ = std::fs::remove_file(&image);
    }
    let desc = result?;
    println!("{} {} ({} bytes)", args.output.display(), desc.digest, desc.size);
    Ok(())
}

/// The slot image `rpixen live` writes into IMGA and IMGB for the same inputs, from the same code.
fn write_slot_fat(
    plan: &rpixen::manifest::Plan,
    args: &BuildArgs,
    epoch: u64,
    out: &Path,
) -> anyhow::Result<()> {
    let inputs = live::Inputs { plan, seed: None, initrd: args.initrd.as_deref(), epoch };
    live::slot::build_slot_image(&inputs, out)
        .with_context(|| format!("building the slot image {}", out.display()))?;
    Ok(())
}

fn credentials(registry: &str) -> anyhow::Result<Credentials> {
    let opts = oci::OciOptions::from_env();
    Ok(match registry::auth_for(opts.docker_config.as_deref(), registry)? {
        oci_client::secrets::RegistryAuth::Basic(user, password) => {
            Credentials::Basic { user, password }
        }
        _ => Credentials::Anonymous,
    })
}

fn client(reference: &Reference, args: &RegistryArgs) -> anyhow::Result<Client> {
    Ok(Client::new(
        &reference.registry,
        credentials(&reference.registry)?,
        &args.insecure_registries,
    ))
}

fn private_key(path: &Path) -> anyhow::Result<PrivateKey> {
    let pem =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    // cosign's convention: the password comes from COSIGN_PASSWORD (empty is a valid password).
    let password = std::env::var("COSIGN_PASSWORD").map_err(|_| {
        anyhow::anyhow!("{}: set COSIGN_PASSWORD to the key's password", path.display())
    })?;
    Ok(PrivateKey::from_encrypted_pem(&path.display().to_string(), &pem, password.as_bytes())?)
}

fn push(args: PushArgs) -> anyhow::Result<()> {
    let reference = Reference::parse(&args.reference)?;
    // The key is checked before anything is pushed, so a wrong password pushes nothing.
    let key = args.key.as_deref().map(private_key).transpose()?;
    let layout = Layout::open(&args.layout)?;
    let entries = layout.index.manifests();
    let [entry] = entries.as_slice() else {
        anyhow::bail!(
            "{}/index.json: holds {} manifests; a slot artifact layout holds one",
            args.layout.display(),
            entries.len()
        );
    };
    let mut opts = oci::OciOptions::from_env();
    opts.insecure_registries = args.registry.insecure_registries.clone();
    let digest =
        registry::push_layout(&opts, &args.layout, entry.digest().as_ref(), &args.reference)?;
    println!("{}@{digest}", reference.name());
    if let Some(key) = key {
        let signed = rpixen_update::sign::sign_in_registry(
            &client(&reference, &args.registry)?,
            &reference.at(&digest),
            &key,
        )?;
        println!("{}", signed.signature);
    }
    Ok(())
}

fn sign(args: SignArgs) -> anyhow::Result<()> {
    let reference = Reference::parse(&args.reference)?;
    let key = private_key(&args.key)?;
    let signed = rpixen_update::sign::sign_in_registry(
        &client(&reference, &args.registry)?,
        &reference,
        &key,
    )?;
    println!("{}", signed.signature);
    Ok(())
}

fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let reference = Reference::parse(&args.reference)?;
    let pem = std::fs::read_to_string(&args.key)
        .with_context(|| format!("reading {}", args.key.display()))?;
    let key = PublicKey::from_pem(&args.key.display().to_string(), &pem)?;
    let client = client(&reference, &args.registry)?;
    let verified = verify::verify_signed(&client, &reference, &key)?;
    let image = artifact::slot_image(&verified.digest, &verified.manifest)?;
    if let Some(dir) = &args.fetch {
        verify::fetch_layers(&client, &verified, &BlobStore::new(dir))?;
    }
    println!("{}: signature verified", verified.reference);
    let distinct: std::collections::HashSet<_> = image.chunks.iter().map(|c| &c.digest).collect();
    println!(
        "  slot image {} ({} bytes), {} chunks ({} distinct), {}",
        image.digest,
        image.size,
        image.chunks.len(),
        distinct.len(),
        image.chunking.annotation()
    );
    Ok(())
}
