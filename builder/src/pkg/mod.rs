//! Packages: `pkg/<name>/pkg.yml` turned into an OCI image layout at `dist/pkg/<name>` (tag `latest`).
//!
//! - [`def`]: the definition file.
//! - [`apt`]: apt's client with a private configuration (signed indexes, downloads, `apt-cache show`).
//! - [`cache`]: `.deb` files stored by sha256 and checked against their pins.
//! - [`deb`]: reading a `.deb` without dpkg.
//! - [`map`]: `.deb` paths to image paths.
//! - [`layer`]: the reproducible layer tar.
//! - [`build`]: putting it together; [`update`]: re-pinning to the archive's current versions.

pub mod apt;
pub mod build;
pub mod cache;
pub mod deb;
pub mod def;
pub mod layer;
pub mod map;
pub mod update;

use std::path::PathBuf;

use crate::error::Cause;

pub use build::{build, fetch, fetch_deb};
pub use def::PkgDef;

/// Errors from defining, fetching and building packages. Each names the package, file or digest at fault.
#[derive(Debug, thiserror::Error)]
pub enum PkgError {
    #[error("{path}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("package definition {path}")]
    Def { path: PathBuf, source: Cause },
    #[error("{path}: not a valid .deb")]
    Deb { path: PathBuf, source: Cause },
    /// Boxed (as [`PkgError::VersionGone`]): the largest variants would size every result.
    #[error(transparent)]
    Digest(Box<DebDigestMismatch>),
    #[error(transparent)]
    VersionGone(Box<VersionGone>),
    #[error("package {package}: {deb} (sha256 {sha256}) is not in the download cache and --offline forbids the network")]
    Offline { package: String, deb: String, sha256: String },
    #[error("{tool} failed:\n{stderr}")]
    Tool { tool: String, stderr: String },
    #[error("cannot start {tool}")]
    Start { tool: String, source: std::io::Error },
    #[error("package layer")]
    Layer(#[source] Cause),
    #[error("package {package}: {def}: {field}: {message}")]
    Map { package: String, def: PathBuf, field: String, message: String },
    #[error("package {package}")]
    Build { package: String, source: Cause },
}

/// A downloaded `.deb` whose sha256 differs from its pin.
#[derive(Debug, thiserror::Error)]
#[error(
    "package {package}: {deb}: file {file} has sha256 {actual}, but {def} pins sha256 {expected}; \
     the file was deleted"
)]
pub struct DebDigestMismatch {
    pub package: String,
    pub deb: String,
    pub def: PathBuf,
    pub file: PathBuf,
    pub expected: String,
    pub actual: String,
}

/// A pinned `.deb` version the Debian archive no longer serves.
#[derive(Debug, thiserror::Error)]
#[error(
    "package {package}: {deb} version {version} is no longer served by the Debian archive ({suite}); \
     run `rpixen pkg update` to re-pin {def} to the version the archive serves now\n{detail}"
)]
pub struct VersionGone {
    pub package: String,
    pub deb: String,
    pub version: String,
    pub suite: String,
    pub def: PathBuf,
    pub detail: String,
}

/// Where downloads are cached and whether the network may be used.
#[derive(Debug, Clone)]
pub struct PkgOptions {
    /// `$XDG_CACHE_HOME/rpixen`, else `~/.cache/rpixen`; `.deb` files go to `debs/sha256/<hex>`.
    pub cache_dir: PathBuf,
    /// apt's private state (indexes); default `<cache_dir>/apt`.
    pub apt_dir: PathBuf,
    /// Use the cache alone.
    pub offline: bool,
}

impl PkgOptions {
    pub fn from_env() -> PkgOptions {
        let cache_dir = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir)
            .join("rpixen");
        PkgOptions::with_cache(cache_dir)
    }

    pub fn with_cache(cache_dir: PathBuf) -> PkgOptions {
        PkgOptions { apt_dir: cache_dir.join("apt"), cache_dir, offline: false }
    }
}
