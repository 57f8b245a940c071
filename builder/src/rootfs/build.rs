//! `rootfs::build`: the manifest's `rootfs:` images unpacked in order, the board's kernel modules
//! with their index files (`rootfs.modules`, see [`super::modules`]), its `files:` on top, the init
//! configuration at `/etc/rpixen/init.yml` and `dom0-init` as `/init` (cpio) or `/sbin/init` (squashfs),
//! written as a gzip newc cpio or a squashfs.
//!
//! `/etc/rpixen/init.yml` carries `SOURCE_DATE_EPOCH` as its mtime: the image's build time, which
//! dom0-init takes as the floor of a board's clock before SNTP answers (the Pi has no RTC). Every
//! other entry keeps the time its layer gives it, so equal inputs still give equal bytes.
//!
//! Finished outputs are cached under the blob cache's `rootfs/`, keyed by a digest of every input (image
//! manifests and layer digests, the files' bytes, the init configuration, the format), so a rebuild of
//! an unchanged manifest is a verified copy.

use std::io::Write;
use std::path::PathBuf;

use super::cpio::{write_compressed, CpioCompression};
use super::modules::{self, ModulesError};
use super::squashfs::{write_squashfs, SquashfsError};
use super::tree::{Kind, Meta, Node, Tree};
use super::unpack::{unpack_image, unpack_layers, Limits};
use crate::manifest::{FileContent, FileSource, Plan, RootfsFormat};
use crate::oci::cache::BlobCache;
use crate::oci::digest::sha256;
use crate::oci::{self, OciError, OciOptions};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error("rootfs.files[{index}] ({path})")]
    File {
        index: usize,
        path: String,
        #[source]
        source: crate::error::Cause,
    },
    #[error("cannot write `init:` as /etc/rpixen/init.yml")]
    InitYml(#[source] serde_norway::Error),
    /// The tree refused a file (a path through a file, a name too long); the tree says why in a
    /// sentence, there is no error beneath.
    #[error("cannot place /{path} in the rootfs: {message}")]
    Place { path: String, message: String },
    #[error(transparent)]
    Squashfs(#[from] SquashfsError),
    #[error("{path}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Modules(#[from] ModulesError),
    #[error("{0}")]
    Epoch(String),
}

/// What a build did.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub bytes: u64,
    /// Served from the rootfs cache.
    pub cached: bool,
    /// What was contained or dropped (absolute names, ignored markers, xattrs squashfs cannot hold).
    pub warnings: Vec<String>,
}

/// Where `dom0-init` goes for each format.
pub fn init_path(format: RootfsFormat) -> &'static str {
    match format {
        RootfsFormat::Cpio => "init",
        RootfsFormat::Squashfs => "sbin/init",
    }
}

/// Bumped when the output for the same inputs changes (writer or layout changes).
const OUTPUT_VERSION: &str = "rpixen-rootfs-2";

/// A file from `files:`, resolved to bytes and mode.
struct ExtraFile {
    path: String,
    data: Vec<u8>,
    mode: u32,
}

/// Builds the root filesystem of `plan` into `out`.
pub fn build(
    opts: &OciOptions,
    plan: &Plan,
    format: RootfsFormat,
    out: &mut std::fs::File,
) -> Result<BuildReport, RootfsError> {
    let images: Vec<oci::Image> =
        plan.rootfs.images.iter().map(|r| oci::resolve(opts, r)).collect::<Result<_, _>>()?;
    let files = extra_files(opts, plan)?;
    let init_yml = serde_norway::to_string(&plan.init).map_err(RootfsError::InitYml)?;
    let epoch = crate::disk::ids::source_date_epoch().map_err(RootfsError::Epoch)?;
    // The module tree's image and the names wanted from it (board set, then the manifest's).
    let module_source = match &plan.rootfs.modules {
        Some(m) => {
            let mut wanted = modules::board_set(plan.board.kind)?;
            wanted.extend(m.add.iter().cloned());
            Some((oci::resolve(opts, &m.image)?, wanted))
        }
        None => None,
    };

    let inputs = KeyInputs {
        images: &images,
        files: &files,
        init_yml: &init_yml,
        epoch,
        modules: module_source.as_ref().map(|(image, wanted)| (image, wanted.as_slice())),
    };
    let key = cache_key(&inputs, format, opts);
    let cache = BlobCache::new(&opts.cache_dir);
    let cached = cache.rootfs_dir()?.join(&key);
    if let Ok(bytes) = std::fs::read(&cached) {
        write_out(out, &bytes)?;
        return Ok(BuildReport { bytes: bytes.len() as u64, cached: true, warnings: Vec::new() });
    }

    let mut tree = Tree::new();
    for image in &images {
        unpack_layers(&mut tree, &image.name, &image.layers, &Limits::default())?;
    }
    if let Some((image, wanted)) = &module_source {
        let kernel = unpack_image(image, &Limits::default())?;
        let name = plan.rootfs.modules.as_ref().map_or("", |m| m.image.as_str());
        modules::install(&mut tree, &kernel, name, wanted)?;
    }
    for f in &files {
        let node = Node { kind: Kind::File(f.data.clone()), meta: Meta::with_mode(f.mode) };
        tree.insert(f.path.as_bytes(), node).map_err(place(&f.path))?;
    }
    tree.insert(
        b"etc/rpixen/init.yml",
        Node {
            kind: Kind::File(init_yml.into_bytes()),
            meta: Meta { mtime: epoch, ..Meta::with_mode(0o644) },
        },
    )
    .map_err(place("etc/rpixen/init.yml"))?;
    place_init(opts, &mut tree, format)?;

    let (bytes, writer_warnings) = write_tree(&tree, format)?;
    let mut warnings = std::mem::take(&mut tree.warnings);
    warnings.extend(writer_warnings);
    // The cache copy is best effort: a read-only cache must not fail the build.
    let _ = crate::oci::layout::write_atomic(&cached, &bytes);
    write_out(out, &bytes)?;
    Ok(BuildReport { bytes: bytes.len() as u64, cached: false, warnings })
}

/// Serialises the tree in `format`; returns the bytes and the writer's warnings.
pub fn write_tree(
    tree: &Tree,
    format: RootfsFormat,
) -> Result<(Vec<u8>, Vec<String>), RootfsError> {
    let io = |source| RootfsError::Io { path: PathBuf::from("(rootfs)"), source };
    match format {
        RootfsFormat::Cpio => {
            let mut buf = Vec::new();
            write_compressed(tree, CpioCompression::Gzip, &mut buf).map_err(io)?;
            let mut warnings = Vec::new();
            tree.walk_all(|path, id| {
                if !tree.node(id).meta.xattrs.is_empty() {
                    warnings.push(format!(
                        "cpio: xattrs of `/{}` dropped (newc cannot hold them)",
                        String::from_utf8_lossy(path)
                    ));
                }
            });
            Ok((buf, warnings))
        }
        RootfsFormat::Squashfs => {
            let mut cursor = std::io::Cursor::new(Vec::new());
            let warnings = write_squashfs(tree, &mut cursor)?;
            Ok((cursor.into_inner(), warnings))
        }
    }
}

fn write_out(out: &mut std::fs::File, bytes: &[u8]) -> Result<(), RootfsError> {
    out.write_all(bytes)
        .and_then(|_| out.flush())
        .map_err(|source| RootfsError::Io { path: "(output)".into(), source })
}

/// `dom0-init` from the layers when an image put it at `sbin/dom0-init`, else from the `dom0-init`
/// package; linked (cpio) or copied to the format's init path.
fn place_init(opts: &OciOptions, tree: &mut Tree, format: RootfsFormat) -> Result<(), RootfsError> {
    let target = init_path(format);
    if let Some(id) = tree.lookup(b"sbin/dom0-init", true) {
        if matches!(tree.node(id).kind, Kind::File(_)) {
            if target == "sbin/init" {
                let node = tree.node(id).clone();
                tree.insert(target.as_bytes(), node).map_err(place(target))?;
            } else {
                tree.link(target.as_bytes(), b"sbin/dom0-init").map_err(place(target))?;
            }
            return Ok(());
        }
    }
    let data = super::read_file(opts, "dom0-init", "sbin/dom0-init")?;
    tree.insert(target.as_bytes(), Node { kind: Kind::File(data), meta: Meta::with_mode(0o755) })
        .map_err(place(target))?;
    Ok(())
}

/// For `map_err` on the tree's refusals: which path the refusal was about.
fn place(path: &str) -> impl FnOnce(String) -> RootfsError + '_ {
    move |message| RootfsError::Place { path: path.trim_start_matches('/').to_owned(), message }
}

fn extra_files(opts: &OciOptions, plan: &Plan) -> Result<Vec<ExtraFile>, RootfsError> {
    let mut out = Vec::new();
    for (index, f) in plan.rootfs.files.iter().enumerate() {
        let err = |source| RootfsError::File { index, path: f.path.clone(), source };
        let data = match &f.content {
            FileContent::Inline(bytes) => bytes.clone(),
            FileContent::From(FileSource::Host(p)) => std::fs::read(p)
                .map_err(crate::error::context(format!("cannot read {}", p.display())))
                .map_err(err)?,
            // The OCI error names the image and the path.
            FileContent::From(FileSource::InImage { image, path }) => {
                super::read_file(opts, image, path).map_err(|e| err(e.into()))?
            }
        };
        out.push(ExtraFile { path: f.path.trim_start_matches('/').to_owned(), data, mode: f.mode });
    }
    Ok(out)
}

/// What the rootfs is made of, for its cache key.
struct KeyInputs<'a> {
    images: &'a [oci::Image],
    files: &'a [ExtraFile],
    init_yml: &'a str,
    epoch: u64,
    /// The module tree's image and the module names wanted from it.
    modules: Option<(&'a oci::Image, &'a [String])>,
}

/// Digest of everything the output depends on.
fn cache_key(inputs: &KeyInputs<'_>, format: RootfsFormat, opts: &OciOptions) -> String {
    let KeyInputs { images, files, init_yml, epoch, modules } = inputs;
    let mut text = format!("{OUTPUT_VERSION}\nformat {format:?}\nepoch {epoch}\n");
    if let Some((image, wanted)) = modules {
        text.push_str(&format!("modules {} {}\n", image.manifest_digest, wanted.join(",")));
    }
    for image in images.iter() {
        text.push_str(&format!("image {}\n", image.manifest_digest));
        for l in &image.layers {
            text.push_str(&format!(
                "layer {} {}\n",
                l.descriptor.media_type(),
                l.descriptor.digest()
            ));
        }
    }
    for f in files.iter() {
        text.push_str(&format!("file {} {:o} {}\n", f.path, f.mode, sha256(&f.data)));
    }
    text.push_str(&format!("init {}\n", sha256(init_yml.as_bytes())));
    // dom0-init may come from the package: its manifest digest counts when it is not in the images.
    if let Ok(crate::oci::ImageRef::Layout { dir, tag }) =
        crate::oci::ImageRef::parse("dom0-init", opts)
    {
        if let Ok(l) = crate::oci::layout::Layout::open(&dir) {
            if let Ok(d) = l.find("dom0-init", &tag) {
                text.push_str(&format!("dom0-init {}\n", d.digest()));
            }
        }
    }
    sha256(text.as_bytes())[7..].to_owned()
}
