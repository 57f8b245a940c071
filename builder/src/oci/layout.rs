//! OCI image layouts on disk (`oci-layout`, `index.json`, `blobs/sha256/...`): a reader that resolves a
//! tag to a verified [`Image`], and a writer ([`ImageBuilder`], [`LayerTar`]) used by `rpixen pkg` and tests.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, ImageConfiguration,
    ImageConfigurationBuilder, ImageIndex, ImageIndexBuilder, ImageManifest, ImageManifestBuilder,
    MediaType, Os, PlatformBuilder, RootFsBuilder,
};

use super::digest::{file_digest, sha256, sha256_hex};
use super::{DigestMismatch, Image, LayerBlob, OciError, Platform};

/// The annotation that names a tag in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An image layout directory opened for reading.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
    pub index: ImageIndex,
}

fn json_err(image: &str, what: impl Into<String>) -> impl FnOnce(serde_json::Error) -> OciError {
    let (image, what) = (image.to_owned(), what.into());
    move |e| OciError::Invalid { image, what, source: e.into() }
}

impl Layout {
    pub fn open(dir: &Path) -> Result<Layout, OciError> {
        let name = dir.display().to_string();
        let marker = dir.join("oci-layout");
        if !marker.is_file() {
            return Err(OciError::Invalid {
                image: name,
                what: "oci-layout".into(),
                source: "missing: not an OCI image layout (for a package, run `make pkgs` first)"
                    .into(),
            });
        }
        let path = dir.join("index.json");
        let text = std::fs::read(&path).map_err(OciError::io(&path))?;
        let index = serde_json::from_slice(&text).map_err(json_err(&name, "index.json"))?;
        Ok(Layout { dir: dir.to_owned(), index })
    }

    /// Path of a blob by digest (the digest is checked to be a plain sha256, so it cannot name other files).
    pub fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        sha256_hex(digest).map(|hex| self.dir.join("blobs/sha256").join(hex))
    }

    /// A small blob (manifest, index, config), read whole and verified.
    pub fn read_blob(
        &self,
        image: &str,
        what: &str,
        desc: &Descriptor,
    ) -> Result<Vec<u8>, OciError> {
        let path = self.checked_blob_path(image, what, desc)?;
        let bytes = std::fs::read(&path).map_err(OciError::io(&path))?;
        let actual = sha256(&bytes);
        if actual != desc.digest().to_string() || bytes.len() as u64 != desc.size() {
            return Err(mismatch(image, what, desc, actual, bytes.len() as u64));
        }
        Ok(bytes)
    }

    fn checked_blob_path(
        &self,
        image: &str,
        what: &str,
        desc: &Descriptor,
    ) -> Result<PathBuf, OciError> {
        self.blob_path(desc.digest().as_ref()).ok_or_else(|| OciError::Invalid {
            image: image.to_owned(),
            what: what.to_owned(),
            source: format!("unsupported digest `{}` (only sha256)", desc.digest()).into(),
        })
    }

    /// The descriptor `index.json` gives for a tag (or a manifest digest).
    pub fn find(&self, image: &str, tag: &str) -> Result<Descriptor, OciError> {
        let entries = self.index.manifests();
        let by_digest = entries.iter().find(|d| d.digest().as_ref() == tag);
        let by_tag = entries.iter().find(|d| {
            d.annotations().as_ref().and_then(|a| a.get(REF_NAME)).map(String::as_str) == Some(tag)
        });
        // A layout holding one untagged image is that image for `latest`, as skopeo writes them.
        let lone = (tag == "latest" && entries.len() == 1).then(|| &entries[0]);
        by_digest.or(by_tag).or(lone).cloned().ok_or_else(|| {
            let tags: Vec<&str> = entries
                .iter()
                .filter_map(|d| {
                    d.annotations().as_ref().and_then(|a| a.get(REF_NAME)).map(String::as_str)
                })
                .collect();
            OciError::Invalid {
                image: image.to_owned(),
                what: format!("tag `{tag}`"),
                source: format!(
                    "not in {}/index.json (tags: {})",
                    self.dir.display(),
                    tags.join(", ")
                )
                .into(),
            }
        })
    }

    /// Resolves a tag to an image for `platform`, verifying manifest, config and every layer blob.
    pub fn image(&self, image: &str, tag: &str, platform: &Platform) -> Result<Image, OciError> {
        let mut desc = self.find(image, tag)?;
        // Nested indexes (multi-arch images) are followed to the platform's manifest.
        for _ in 0..4 {
            if !is_index(desc.media_type()) {
                break;
            }
            let bytes = self.read_blob(image, "image index", &desc)?;
            let index: ImageIndex =
                serde_json::from_slice(&bytes).map_err(json_err(image, "image index"))?;
            desc = platform
                .select(index.manifests())
                .map_err(|available| OciError::Platform {
                    image: image.to_owned(),
                    wanted: platform.to_string(),
                    available,
                })?
                .clone();
        }
        let bytes = self.read_blob(image, "manifest", &desc)?;
        let manifest: ImageManifest =
            serde_json::from_slice(&bytes).map_err(json_err(image, "manifest"))?;
        let config_bytes = self.read_blob(image, "config", manifest.config())?;
        let config: ImageConfiguration =
            serde_json::from_slice(&config_bytes).map_err(json_err(image, "config"))?;
        let mut layers = Vec::new();
        for (i, layer) in manifest.layers().iter().enumerate() {
            let what = format!("layer {i}");
            let path = self.checked_blob_path(image, &what, layer)?;
            let (actual, size) = file_digest(&path).map_err(OciError::io(&path))?;
            if actual != layer.digest().to_string() || size != layer.size() {
                return Err(mismatch(image, &what, layer, actual, size));
            }
            layers.push(LayerBlob {
                descriptor: layer.clone(),
                path,
                diff_id: config.rootfs().diff_ids().get(i).cloned(),
            });
        }
        Ok(Image {
            name: image.to_owned(),
            manifest_digest: desc.digest().to_string(),
            manifest,
            config,
            layers,
        })
    }
}

pub(crate) fn mismatch(
    image: &str,
    what: &str,
    desc: &Descriptor,
    actual: String,
    actual_size: u64,
) -> OciError {
    OciError::DigestMismatch(Box::new(DigestMismatch {
        image: image.to_owned(),
        what: what.to_owned(),
        expected: desc.digest().to_string(),
        expected_size: desc.size(),
        actual,
        actual_size,
        note: String::new(),
    }))
}

pub(crate) fn is_index(media_type: &MediaType) -> bool {
    matches!(media_type, MediaType::ImageIndex)
        || media_type.as_ref() == "application/vnd.docker.distribution.manifest.list.v2+json"
}

// ---------------------------------------------------------------------------------------------------------
// Writer

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn media_type(self) -> MediaType {
        match self {
            Compression::None => MediaType::ImageLayer,
            Compression::Gzip => MediaType::ImageLayerGzip,
            Compression::Zstd => MediaType::ImageLayerZstd,
        }
    }

    pub fn compress(self, tar: &[u8]) -> std::io::Result<Vec<u8>> {
        match self {
            Compression::None => Ok(tar.to_vec()),
            Compression::Gzip => {
                let mut out = Vec::with_capacity(tar.len() / 2);
                super::gzip::parallel_gzip(tar, 6, &mut out)?;
                Ok(out)
            }
            Compression::Zstd => zstd::encode_all(tar, 3),
        }
    }
}

/// A layer tar built in memory. Every entry gets mtime 0 unless set, so layers are reproducible.
/// Paths are written as given (through a PAX `path` record when they do not fit the header), which lets
/// tests write hostile names such as `../x` that `tar::Builder`'s own path setters refuse.
pub struct LayerTar {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for LayerTar {
    fn default() -> Self {
        Self::new()
    }
}

/// Metadata of one [`LayerTar`] entry.
#[derive(Debug, Clone, Default)]
pub struct EntryMeta {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// `(name, value)`, e.g. `("security.capability", ...)`; written as PAX `SCHILY.xattr.*` records.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl EntryMeta {
    pub fn mode(mode: u32) -> EntryMeta {
        EntryMeta { mode, ..Default::default() }
    }
}

impl LayerTar {
    pub fn new() -> LayerTar {
        LayerTar { builder: tar::Builder::new(Vec::new()) }
    }

    /// Appends one entry with full control over type, raw path, link target and metadata.
    pub fn entry(
        &mut self,
        kind: tar::EntryType,
        path: &[u8],
        link: Option<&[u8]>,
        data: &[u8],
        meta: &EntryMeta,
        device: Option<(u32, u32)>,
    ) -> &mut Self {
        let mut pax: Vec<(String, Vec<u8>)> =
            meta.xattrs.iter().map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.clone())).collect();
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_mode(meta.mode);
        header.set_uid(meta.uid);
        header.set_gid(meta.gid);
        header.set_mtime(meta.mtime);
        header.set_size(data.len() as u64);
        let short = path.len() < 100 && !path.is_empty();
        if short {
            header.as_old_mut().name[..path.len()].copy_from_slice(path);
        } else {
            pax.push(("path".into(), path.to_vec()));
            header.as_old_mut().name[..7].copy_from_slice(b"paxpath");
        }
        if let Some(link) = link {
            if link.len() < 100 {
                header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
            } else {
                pax.push(("linkpath".into(), link.to_vec()));
            }
        }
        if let Some((major, minor)) = device {
            header.set_device_major(major).expect("ustar header");
            header.set_device_minor(minor).expect("ustar header");
        }
        header.set_cksum();
        if !pax.is_empty() {
            self.builder
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .expect("writing to memory");
        }
        self.builder.append(&header, data).expect("writing to memory");
        self
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.entry(
            tar::EntryType::Directory,
            path.as_bytes(),
            None,
            b"",
            &EntryMeta::mode(mode),
            None,
        )
    }

    pub fn file(&mut self, path: &str, data: &[u8], mode: u32) -> &mut Self {
        self.entry(
            tar::EntryType::Regular,
            path.as_bytes(),
            None,
            data,
            &EntryMeta::mode(mode),
            None,
        )
    }

    pub fn file_with(&mut self, path: &str, data: &[u8], meta: &EntryMeta) -> &mut Self {
        self.entry(tar::EntryType::Regular, path.as_bytes(), None, data, meta, None)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let meta = EntryMeta::mode(0o777);
        self.entry(
            tar::EntryType::Symlink,
            path.as_bytes(),
            Some(target.as_bytes()),
            b"",
            &meta,
            None,
        )
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        let meta = EntryMeta::mode(0o644);
        self.entry(tar::EntryType::Link, path.as_bytes(), Some(target.as_bytes()), b"", &meta, None)
    }

    pub fn char_device(&mut self, path: &str, major: u32, minor: u32, mode: u32) -> &mut Self {
        let meta = EntryMeta::mode(mode);
        self.entry(tar::EntryType::Char, path.as_bytes(), None, b"", &meta, Some((major, minor)))
    }

    pub fn block_device(&mut self, path: &str, major: u32, minor: u32, mode: u32) -> &mut Self {
        let meta = EntryMeta::mode(mode);
        self.entry(tar::EntryType::Block, path.as_bytes(), None, b"", &meta, Some((major, minor)))
    }

    pub fn fifo(&mut self, path: &str, mode: u32) -> &mut Self {
        self.entry(tar::EntryType::Fifo, path.as_bytes(), None, b"", &EntryMeta::mode(mode), None)
    }

    /// A whiteout: deletes `path` from lower layers.
    pub fn whiteout(&mut self, path: &str) -> &mut Self {
        let (dir, name) = path
            .rsplit_once('/')
            .map(|(d, n)| (format!("{d}/"), n))
            .unwrap_or((String::new(), path));
        self.file(&format!("{dir}.wh.{name}"), b"", 0o644)
    }

    /// An opaque marker: hides everything lower layers put in `dir`.
    pub fn opaque(&mut self, dir: &str) -> &mut Self {
        self.file(&format!("{}/.wh..wh..opq", dir.trim_end_matches('/')), b"", 0o644)
    }

    /// Adds a host directory tree under `prefix` (`""` for the root), in sorted order, owned by root with
    /// mtime 0 and the host's permission bits. Symlinks are stored as symlinks.
    pub fn host_dir(&mut self, src: &Path, prefix: &str) -> std::io::Result<&mut Self> {
        let mut entries: Vec<_> = std::fs::read_dir(src)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name();
            let name = name.to_str().ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: not UTF-8", e.path().display()),
                )
            })?;
            let path = if prefix.is_empty() {
                name.to_owned()
            } else {
                format!("{}/{name}", prefix.trim_end_matches('/'))
            };
            let meta = std::fs::symlink_metadata(e.path())?;
            let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(e.path())?;
                let target = std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str()).to_vec();
                self.entry(
                    tar::EntryType::Symlink,
                    path.as_bytes(),
                    Some(&target),
                    b"",
                    &EntryMeta::mode(0o777),
                    None,
                );
            } else if meta.is_dir() {
                self.dir(&path, mode);
                self.host_dir(&e.path(), &path)?;
            } else if meta.is_file() {
                let data = std::fs::read(e.path())?;
                self.file(&path, &data, mode);
            } else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{}: only files, directories and symlinks can be packed",
                        e.path().display()
                    ),
                ));
            }
        }
        Ok(self)
    }

    pub fn finish(self) -> Vec<u8> {
        self.builder.into_inner().expect("writing to memory")
    }
}

/// One layer ready to be written: its blob and the digest of its uncompressed tar.
#[derive(Debug, Clone)]
pub struct LayerData {
    pub media_type: MediaType,
    pub blob: Vec<u8>,
    pub diff_id: String,
}

/// Builds an image (config with platform linux/arm64/v8 by default, manifest, layers) and writes it into
/// an OCI image layout.
///
/// ```no_run
/// use rpixen::oci::layout::{Compression, ImageBuilder, LayerTar};
/// let mut tar = LayerTar::new();
/// tar.dir("bin", 0o755).file("bin/hello", b"#!/bin/sh\necho hi\n", 0o755);
/// ImageBuilder::new().layer(&tar.finish(), Compression::Gzip).unwrap()
///     .write(std::path::Path::new("dist/pkg/hello"), "latest").unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    pub platform: Platform,
    pub layers: Vec<LayerData>,
    pub entrypoint: Option<Vec<String>>,
    pub env: Option<Vec<String>>,
    pub annotations: HashMap<String, String>,
}

impl Default for ImageBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// The blobs of a built image, by digest, plus the manifest's descriptor (with platform).
pub struct BuiltImage {
    pub manifest: Descriptor,
    pub blobs: Vec<(String, Vec<u8>)>,
}

impl ImageBuilder {
    pub fn new() -> ImageBuilder {
        ImageBuilder {
            platform: Platform::default(),
            layers: Vec::new(),
            entrypoint: None,
            env: None,
            annotations: HashMap::new(),
        }
    }

    pub fn platform(mut self, platform: Platform) -> Self {
        self.platform = platform;
        self
    }

    pub fn entrypoint(mut self, argv: Vec<String>) -> Self {
        self.entrypoint = Some(argv);
        self
    }

    /// Adds a layer from an uncompressed tar.
    pub fn layer(mut self, tar: &[u8], compression: Compression) -> std::io::Result<Self> {
        let blob = compression.compress(tar)?;
        self.layers.push(LayerData {
            media_type: compression.media_type(),
            blob,
            diff_id: sha256(tar),
        });
        Ok(self)
    }

    /// Adds a layer holding a host directory tree (see [`LayerTar::host_dir`]).
    pub fn layer_from_dir(self, dir: &Path, compression: Compression) -> std::io::Result<Self> {
        let mut tar = LayerTar::new();
        tar.host_dir(dir, "")?;
        self.layer(&tar.finish(), compression)
    }

    /// Adds a layer blob as is (tests use it for blobs whose content does not match what they claim).
    pub fn raw_layer(mut self, layer: LayerData) -> Self {
        self.layers.push(layer);
        self
    }

    /// The config, manifest and layer blobs.
    pub fn build(&self) -> BuiltImage {
        let mut cfg = ConfigBuilder::default();
        if let Some(e) = &self.entrypoint {
            cfg = cfg.entrypoint(e.clone());
        }
        if let Some(e) = &self.env {
            cfg = cfg.env(e.clone());
        }
        let mut config = ImageConfigurationBuilder::default()
            .architecture(Arch::from(self.platform.architecture.as_str()))
            .os(Os::from(self.platform.os.as_str()))
            .config(cfg.build().expect("all fields optional"))
            .rootfs(
                RootFsBuilder::default()
                    .typ("layers")
                    .diff_ids(self.layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>())
                    .build()
                    .expect("complete"),
            );
        if let Some(v) = &self.platform.variant {
            config = config.variant(v.clone());
        }
        let config = serde_json::to_vec(&config.build().expect("complete")).expect("serializable");
        let mut blobs = Vec::new();
        let config_desc =
            Descriptor::new(MediaType::ImageConfig, config.len() as u64, digest_of(&config));
        blobs.push((sha256(&config), config));
        let mut layer_descs = Vec::new();
        for l in &self.layers {
            let digest = sha256(&l.blob);
            layer_descs.push(Descriptor::new(
                l.media_type.clone(),
                l.blob.len() as u64,
                digest_of(&l.blob),
            ));
            blobs.push((digest, l.blob.clone()));
        }
        let mut manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config_desc)
            .layers(layer_descs);
        if !self.annotations.is_empty() {
            manifest = manifest.annotations(self.annotations.clone());
        }
        let manifest =
            serde_json::to_vec(&manifest.build().expect("complete")).expect("serializable");
        let mut platform = PlatformBuilder::default()
            .architecture(Arch::from(self.platform.architecture.as_str()))
            .os(Os::from(self.platform.os.as_str()));
        if let Some(v) = &self.platform.variant {
            platform = platform.variant(v.clone());
        }
        let desc = DescriptorBuilder::default()
            .media_type(MediaType::ImageManifest)
            .size(manifest.len() as u64)
            .digest(digest_of(&manifest))
            .platform(platform.build().expect("complete"))
            .build()
            .expect("complete");
        blobs.push((sha256(&manifest), manifest));
        BuiltImage { manifest: desc, blobs }
    }

    /// Writes the blobs into `layout` (created if needed) and tags the manifest as `tag` in `index.json`.
    /// Returns the manifest's descriptor.
    pub fn write(&self, layout: &Path, tag: &str) -> Result<Descriptor, OciError> {
        let desc = self.write_blobs(layout)?;
        tag_manifest(layout, tag, &desc)?;
        Ok(desc)
    }

    /// Writes the blobs only (for images that an index written by [`write_index`] will name).
    pub fn write_blobs(&self, layout: &Path) -> Result<Descriptor, OciError> {
        let built = self.build();
        init_layout(layout)?;
        for (digest, bytes) in &built.blobs {
            write_blob(layout, digest, bytes)?;
        }
        Ok(built.manifest)
    }
}

fn digest_of(bytes: &[u8]) -> oci_spec::image::Digest {
    sha256(bytes).parse().expect("sha256 digests parse")
}

/// Creates `oci-layout` and `blobs/sha256` if missing.
pub fn init_layout(layout: &Path) -> Result<(), OciError> {
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(OciError::io(&blobs))?;
    let marker = layout.join("oci-layout");
    if !marker.exists() {
        write_atomic(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    }
    Ok(())
}

/// Writes a blob unless a file of that name and size is already there.
pub fn write_blob(layout: &Path, digest: &str, bytes: &[u8]) -> Result<PathBuf, OciError> {
    let hex = sha256_hex(digest).expect("the writer only makes sha256 digests");
    let path = layout.join("blobs/sha256").join(hex);
    if std::fs::metadata(&path).map(|m| m.len() == bytes.len() as u64).unwrap_or(false) {
        return Ok(path);
    }
    write_atomic(&path, bytes)?;
    Ok(path)
}

/// Writes through a temporary file and a rename, so a reader never sees half a file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), OciError> {
    let dir = path.parent().expect("a file in a folder");
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(OciError::io(dir))?;
    tmp.write_all(bytes).map_err(OciError::io(path))?;
    // Temporary files are created 0600; blobs and indexes are meant to be shared (dist/pkg, the cache).
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(OciError::io(path))?;
    tmp.persist(path).map_err(|e| OciError::Io { path: path.to_owned(), source: e.error })?;
    Ok(())
}

/// Points `tag` in `layout`'s `index.json` at `desc` (replacing an older entry of that tag).
pub fn tag_manifest(layout: &Path, tag: &str, desc: &Descriptor) -> Result<(), OciError> {
    init_layout(layout)?;
    let path = layout.join("index.json");
    let mut manifests: Vec<Descriptor> = if path.exists() {
        let bytes = std::fs::read(&path).map_err(OciError::io(&path))?;
        let index: ImageIndex = serde_json::from_slice(&bytes)
            .map_err(json_err(&layout.display().to_string(), "index.json"))?;
        index.manifests().clone()
    } else {
        Vec::new()
    };
    manifests.retain(|d| {
        d.annotations().as_ref().and_then(|a| a.get(REF_NAME)).map(String::as_str) != Some(tag)
    });
    let mut desc = desc.clone();
    let mut ann = desc.annotations().clone().unwrap_or_default();
    ann.insert(REF_NAME.into(), tag.into());
    desc.set_annotations(Some(ann));
    manifests.push(desc);
    let index = image_index(manifests);
    write_atomic(&path, &serde_json::to_vec_pretty(&index).expect("serializable"))
}

/// An OCI image index listing `manifests`.
fn image_index(manifests: Vec<Descriptor>) -> ImageIndex {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .expect("every required field is set")
}

/// Writes an image index (multi-arch image) naming `manifests` (descriptors with platforms, from
/// [`ImageBuilder::write_blobs`]) and tags it. Returns the index's descriptor.
pub fn write_index(
    layout: &Path,
    tag: &str,
    manifests: Vec<Descriptor>,
) -> Result<Descriptor, OciError> {
    let index = image_index(manifests);
    let bytes = serde_json::to_vec(&index).expect("serializable");
    init_layout(layout)?;
    write_blob(layout, &sha256(&bytes), &bytes)?;
    let desc = Descriptor::new(MediaType::ImageIndex, bytes.len() as u64, digest_of(&bytes));
    tag_manifest(layout, tag, &desc)?;
    Ok(desc)
}
