//! `rpixen sbom BOARD` (EVE's verb): an SPDX 2.3 JSON document of what the board's image contains.
//! Each OCI image the manifest names (boot files, kernel, hypervisor, the rootfs layers) is one
//! component, with its manifest digest; an rpixen package adds its pinned `.deb`s (`pkg/NAME/pkg.yml`)
//! and the Rust crates it builds (the `Cargo.lock` closure of its crate's normal dependencies).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use rpixen::disk::ids;
use rpixen::manifest::{FileContent, FileSource, Plan};
use rpixen::oci::{self, reference::ImageRef, OciOptions};
use rpixen_release::digest::Digest;
use rpixen_release::sbom::{self, inputs, Component, ImageFile, OciImage, SbomInput};

#[derive(Debug, clap::Args)]
pub struct SbomArgs {
    /// A board name from images/ or a manifest file.
    #[arg(default_value = "qemu-virt")]
    pub target: String,
    /// Write the document to FILE (atomically) instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Record this image file (its name, size and sha256) as what the document describes.
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    /// The URI prefix of the document's namespace.
    #[arg(long, value_name = "URI", default_value = "https://spdx.org/spdxdocs/rpixen")]
    pub namespace: String,
}

/// Where `pkg/*/pkg.yml` and `Cargo.lock` are: `$RPIXEN_SOURCE_DIR`, the source tree this binary was
/// built from, or the copy the container carries.
fn source_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RPIXEN_SOURCE_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(d);
    }
    let tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if tree.join("Cargo.lock").is_file() {
        return tree;
    }
    PathBuf::from("/usr/share/rpixen/src")
}

/// Every OCI image the plan reads from, in manifest order, each once.
fn image_refs(plan: &Plan) -> Vec<String> {
    let mut sources = vec![&plan.board.uboot];
    sources.extend(&plan.board.dtb);
    sources.push(&plan.hypervisor.binary);
    sources.push(&plan.dom0.kernel);
    sources.extend(plan.firmware.iter().map(|f| &f.source));
    for f in &plan.config_files {
        if let FileContent::From(s) = &f.content {
            sources.push(s);
        }
    }
    let mut out: Vec<String> = Vec::new();
    let named = sources.into_iter().filter_map(|s| match s {
        FileSource::InImage { image, .. } => Some(image.clone()),
        FileSource::Host(_) => None,
    });
    for name in named.chain(plan.rootfs.images.iter().cloned()) {
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// One image as a component: its digest, and for an rpixen package its debs and crates.
fn component(opts: &OciOptions, src: &Path, name: &str) -> anyhow::Result<Component> {
    let image = oci::resolve(opts, name).with_context(|| format!("SBOM: image `{name}`"))?;
    let (repository_url, tag, short) = match oci::reference::ImageRef::parse(name, opts)? {
        ImageRef::Layout { dir, tag } => {
            let short = dir.file_name().map(|n| n.to_string_lossy().into_owned());
            (None, Some(tag), short.unwrap_or_else(|| name.to_owned()))
        }
        ImageRef::Registry(r) => {
            let repo = r.repository().to_owned();
            let short = repo.rsplit('/').next().unwrap_or(&repo).to_owned();
            (Some(format!("{}/{repo}", r.registry())), r.tag().map(str::to_owned), short)
        }
    };
    let oci = OciImage {
        name: short.to_ascii_lowercase(),
        repository_url,
        tag,
        digest: image.manifest_digest.clone(),
    };
    let is_package = !name.contains(['/', ':', '@']);
    if is_package && src.join("pkg").join(name).join("pkg.yml").is_file() {
        let info = inputs::pkg_info(src, name)?;
        let crates = match &info.root_crate {
            Some(root) => inputs::crates(src, &[root])?,
            None => Vec::new(),
        };
        return Ok(Component {
            name: info.name,
            description: info.description,
            oci: Some(oci),
            debs: info.debs,
            crates,
        });
    }
    Ok(Component {
        name: name.to_owned(),
        description: format!("OCI image {name}"),
        oci: Some(oci),
        debs: Vec::new(),
        crates: Vec::new(),
    })
}

fn image_file(path: &Path) -> anyhow::Result<ImageFile> {
    let (file, size) = rpixen_release::open_image(path)?;
    let mut hashing = rpixen_release::digest::HashingWriter::new(std::io::sink());
    std::io::copy(&mut std::io::BufReader::with_capacity(1 << 20, file), &mut hashing)
        .with_context(|| format!("reading {}", path.display()))?;
    let (_, d): (_, Digest) = hashing.finish();
    anyhow::ensure!(d.size == size, "{}: changed while it was read", path.display());
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .with_context(|| format!("{}: not a file name", path.display()))?;
    Ok(ImageFile { file_name, digest: d })
}

pub fn run(args: SbomArgs) -> anyhow::Result<()> {
    let epoch = ids::source_date_epoch().map_err(anyhow::Error::msg)?;
    let plan = super::live::load_target(&args.target)?;
    let opts = OciOptions::from_env();
    let src = source_dir();
    let components = image_refs(&plan)
        .iter()
        .map(|name| component(&opts, &src, name))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let board = Path::new(&args.target)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| args.target.clone());
    let version = env!("CARGO_PKG_VERSION");
    let doc = sbom::document(&SbomInput {
        name: format!("rpixen-{board}"),
        version: version.to_owned(),
        epoch,
        namespace_base: args.namespace.clone(),
        tool: format!("rpixen-{version}"),
        image: args.image.as_deref().map(image_file).transpose()?,
        components,
    })?;
    match &args.output {
        Some(p) => {
            let dir = match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            // Published next to the image: readable by all (tempfile's default is 0600).
            let mut tmp = tempfile::Builder::new()
                .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .tempfile_in(dir)
                .with_context(|| format!("cannot write {}", p.display()))?;
            tmp.write_all(doc.as_bytes())
                .and_then(|_| tmp.as_file().sync_all())
                .with_context(|| format!("cannot write {}", p.display()))?;
            tmp.persist(p).with_context(|| format!("cannot write {}", p.display()))?;
        }
        None => std::io::stdout()
            .lock()
            .write_all(doc.as_bytes())
            .context("cannot write the SBOM to stdout")?,
    }
    Ok(())
}
