//! OCI images: references, the content-addressed blob cache, registries and image layouts on disk.
//!
//! Everything here resolves an image reference to a verified [`Image`] (its config and its layer blobs,
//! each checked against digest and size before use). [`crate::rootfs`] turns the layers into a tree; nothing here
//! depends on it.
//!
//! - [`reference`](mod@reference): parsing `busybox`, `oci:DIR[:TAG]` and registry references.
//! - [`digest`]: sha256 digests and the verifying reader.
//! - [`gzip`]: parallel gzip (one member), for layer blobs and initramfs archives.
//! - [`layout`]: OCI image layouts on disk, reader and writer.
//! - [`cache`]: the blob cache under `$XDG_CACHE_HOME/rpixen`.
//! - [`registry`]: pulls through `oci-client`.
//! - [`platform`]: choosing a manifest from an index.

pub mod cache;
pub mod digest;
pub mod gzip;
pub mod layout;
pub mod platform;
pub mod reference;
pub mod registry;

use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest};

use crate::error::Cause;

pub use platform::Platform;
pub use reference::ImageRef;

/// Errors from resolving, fetching and verifying images. Each names the image and, where known, the
/// blob at fault.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("image reference `{reference}`")]
    Reference { reference: String, source: Cause },
    #[error("{path}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("image {image}: {what}")]
    Invalid { image: String, what: String, source: Cause },
    /// Boxed: it is the largest variant, and every `Result<_, OciError>` would carry its size.
    #[error(transparent)]
    DigestMismatch(Box<DigestMismatch>),
    #[error(
        "image {image}: {what} {digest} is not in the cache and --offline forbids the network"
    )]
    Offline { image: String, what: String, digest: String },
    #[error("image {image}: no manifest for platform {wanted} (the index has: {available})")]
    Platform { image: String, wanted: String, available: String },
    /// `what` is the request (`manifest`, `layer 0 sha256:...`); `hint` says where credentials come
    /// from when the registry refused them.
    #[error("image {image}: registry: {what}{hint}")]
    Registry { image: String, what: String, hint: String, source: Cause },
    #[error("image {image}: {what} {digest}: download interrupted after {got} of {size} bytes; pulling again resumes")]
    Interrupted { image: String, what: String, digest: String, got: u64, size: u64, source: Cause },
    #[error("image {image}: layer {layer}")]
    Layer { image: String, layer: String, source: Cause },
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("image {image}: no file `{path}`{detail}")]
    FileNotFound { image: String, path: String, detail: String },
}

/// Bytes whose sha256 or size differ from the descriptor that named them.
#[derive(Debug, thiserror::Error)]
#[error(
    "image {image}: {what} {expected}: content does not match: expected {expected} ({expected_size} bytes), got {actual} ({actual_size} bytes){note}"
)]
pub struct DigestMismatch {
    pub image: String,
    pub what: String,
    pub expected: String,
    pub expected_size: u64,
    pub actual: String,
    pub actual_size: u64,
    /// What became of the bad bytes (e.g. "; the download was deleted").
    pub note: String,
}

impl OciError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> OciError {
        let path = path.into();
        move |source| OciError::Io { path, source }
    }
}

/// How images are found and fetched. [`OciOptions::from_env`] gives the defaults.
#[derive(Debug, Clone)]
pub struct OciOptions {
    /// The blob cache (`$XDG_CACHE_HOME/rpixen`, else `~/.cache/rpixen`).
    pub cache_dir: PathBuf,
    /// Build from the cache alone; any missing blob is an error.
    pub offline: bool,
    /// Registries (`host` or `host:port`) spoken to over plain HTTP. Loopback addresses always are.
    pub insecure_registries: Vec<String>,
    /// The platform chosen from image indexes (default linux/arm64/v8).
    pub platform: Platform,
    /// Where package layouts live (`$RPIXEN_PKG_DIR`, default `<repo>/dist/pkg`).
    pub pkg_dir: PathBuf,
    /// Docker `config.json` consulted for registry credentials (`$DOCKER_CONFIG/config.json`, else
    /// `~/.docker/config.json`).
    pub docker_config: Option<PathBuf>,
    /// Allow progress bars; [`crate::report`] draws them only on a terminal and without `--quiet`.
    pub progress: bool,
}

impl OciOptions {
    /// The defaults, read from the environment.
    pub fn from_env() -> OciOptions {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let cache_dir = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".cache")))
            .unwrap_or_else(std::env::temp_dir)
            .join("rpixen");
        let docker_config = std::env::var_os("DOCKER_CONFIG")
            .map(|d| PathBuf::from(d).join("config.json"))
            .or_else(|| home.as_ref().map(|h| h.join(".docker/config.json")));
        OciOptions {
            cache_dir,
            offline: false,
            insecure_registries: Vec::new(),
            platform: Platform::default(),
            pkg_dir: default_pkg_dir(),
            docker_config,
            progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        }
    }
}

fn default_pkg_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RPIXEN_PKG_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    // In the container the packages are installed system-wide; in a checkout they sit in dist/pkg.
    let installed = Path::new("/usr/share/rpixen/pkg");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/pkg");
    if !repo.exists() && installed.exists() {
        return installed.to_owned();
    }
    repo
}

/// The OCI layout directory of a package by name: `$RPIXEN_PKG_DIR/<name>` (default `<repo>/dist/pkg/<name>`,
/// or `/usr/share/rpixen/pkg/<name>` in the container).
pub fn package_layout_dir(name: &str) -> PathBuf {
    default_pkg_dir().join(name)
}

/// One layer of a resolved image: its descriptor and the verified blob in the cache or layout.
#[derive(Debug, Clone)]
pub struct LayerBlob {
    pub descriptor: Descriptor,
    pub path: PathBuf,
    /// The config's `rootfs.diff_ids` entry: digest of the uncompressed tar, checked while unpacking.
    pub diff_id: Option<String>,
}

/// A resolved image: manifest, config and local, verified layer blobs in order.
#[derive(Debug, Clone)]
pub struct Image {
    /// The reference as the user wrote it (used in messages).
    pub name: String,
    /// Digest of the image manifest.
    pub manifest_digest: String,
    pub manifest: ImageManifest,
    pub config: ImageConfiguration,
    pub layers: Vec<LayerBlob>,
}

/// Resolves an image reference (package name, `oci:DIR[:TAG]` or registry reference) to local blobs,
/// pulling into the cache where needed.
pub fn resolve(opts: &OciOptions, image: &str) -> Result<Image, OciError> {
    match ImageRef::parse(image, opts)? {
        ImageRef::Layout { dir, tag } => {
            layout::Layout::open(&dir)?.image(image, &tag, &opts.platform)
        }
        ImageRef::Registry(reference) => registry::pull(opts, image, &reference),
    }
}
