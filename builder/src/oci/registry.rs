//! Registry pulls (and pushes, used by tests and tooling) through `oci-client` on tokio.
//!
//! HTTPS always, except for loopback registries and those named with `--insecure-registry`. Credentials
//! come from the Docker `config.json` `auths`. Blobs stream into `partial/` in the cache, resume from
//! where an interrupted pull stopped, and move into the cache only once digest and size check out.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

use futures_util::StreamExt;
use oci_client::client::{BlobResponse, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use sha2::Digest as _;

use super::cache::BlobCache;
use super::digest::sha256;
use super::layout::{is_index, Layout};
use super::{DigestMismatch, Image, LayerBlob, OciError, OciOptions};
use crate::error::{context, Cause};

const ACCEPT: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// The host part of `host[:port]` (IPv6 in brackets).
fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.rsplit_once(':').map(|(h, _)| h).unwrap_or(registry)
}

/// Plain HTTP only for loopback registries and the ones the user named insecure.
pub fn plain_http(registry: &str, insecure: &[String]) -> bool {
    let host = host_of(registry);
    host == "localhost"
        || host.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
        || insecure.iter().any(|i| i == registry || i == host)
}

/// Credentials for `registry` from a Docker `config.json` (`auths.<registry>.auth` = base64 `user:pass`,
/// or `username`/`password`). Anonymous when there are none.
pub fn auth_for(config: Option<&Path>, registry: &str) -> Result<RegistryAuth, OciError> {
    use base64::Engine as _;
    let Some(path) = config.filter(|p| p.is_file()) else { return Ok(RegistryAuth::Anonymous) };
    let text = std::fs::read(path).map_err(OciError::io(path))?;
    let bad = |source: Cause| OciError::Invalid {
        image: registry.into(),
        what: path.display().to_string(),
        source,
    };
    let json: serde_json::Value = serde_json::from_slice(&text).map_err(|e| bad(e.into()))?;
    let Some(auths) = json.get("auths").and_then(|a| a.as_object()) else {
        return Ok(RegistryAuth::Anonymous);
    };
    let key_host = |k: &str| -> String {
        let k = k.trim_start_matches("https://").trim_start_matches("http://");
        k.split('/').next().unwrap_or(k).to_owned()
    };
    let wanted = [registry, if registry == "index.docker.io" { "docker.io" } else { registry }];
    for (key, entry) in auths {
        if !wanted.contains(&key_host(key).as_str()) {
            continue;
        }
        if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth)
                .map_err(|e| bad(context(format!("auths.{key}.auth"))(e)))?;
            let decoded = String::from_utf8(decoded)
                .map_err(|e| bad(context(format!("auths.{key}.auth"))(e)))?;
            let (user, pass) = decoded
                .split_once(':')
                .ok_or_else(|| bad(format!("auths.{key}.auth is not user:password").into()))?;
            return Ok(RegistryAuth::Basic(user.into(), pass.into()));
        }
        if let (Some(u), Some(p)) = (
            entry.get("username").and_then(|v| v.as_str()),
            entry.get("password").and_then(|v| v.as_str()),
        ) {
            return Ok(RegistryAuth::Basic(u.into(), p.into()));
        }
    }
    Ok(RegistryAuth::Anonymous)
}

fn client_for(opts: &OciOptions, reference: &Reference) -> Client {
    let protocol = if plain_http(reference.resolve_registry(), &opts.insecure_registries) {
        ClientProtocol::Http
    } else {
        ClientProtocol::Https
    };
    Client::new(ClientConfig { protocol, ..Default::default() })
}

fn runtime() -> Result<tokio::runtime::Runtime, OciError> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(OciError::Runtime)
}

/// Pulls `reference` into the cache (what is cached already is only verified) and returns the image.
pub fn pull(opts: &OciOptions, image: &str, reference: &Reference) -> Result<Image, OciError> {
    runtime()?.block_on(Puller::new(opts, image, reference)?.pull())
}

struct Puller<'a> {
    opts: &'a OciOptions,
    image: &'a str,
    reference: &'a Reference,
    client: Client,
    auth: RegistryAuth,
    cache: BlobCache,
}

impl<'a> Puller<'a> {
    fn new(
        opts: &'a OciOptions,
        image: &'a str,
        reference: &'a Reference,
    ) -> Result<Self, OciError> {
        Ok(Puller {
            opts,
            image,
            reference,
            client: client_for(opts, reference),
            auth: auth_for(opts.docker_config.as_deref(), reference.resolve_registry())?,
            cache: BlobCache::new(&opts.cache_dir),
        })
    }

    fn reg_err(&self, what: &str, e: impl Into<Cause>) -> OciError {
        let source = e.into();
        let text = crate::error::one_line(source.as_ref());
        let mut hint = String::new();
        if text.to_ascii_lowercase().contains("authoriz") || text.contains("401") {
            let config = self.opts.docker_config.as_ref().map(|p| p.display().to_string());
            hint = format!(
                " (credentials are read from the `auths` of {})",
                config.unwrap_or_else(|| "Docker's config.json".into())
            );
        }
        OciError::Registry { image: self.image.into(), what: what.into(), hint, source }
    }

    async fn pull(self) -> Result<Image, OciError> {
        self.client.store_auth_if_needed(self.reference.resolve_registry(), &self.auth).await;
        let (mut bytes, mut digest) = self.top_manifest().await?;
        for _ in 0..4 {
            let media = media_type_of(&bytes);
            if !is_index(&media) {
                break;
            }
            let index: ImageIndex =
                serde_json::from_slice(&bytes).map_err(|e| self.invalid("image index", e))?;
            let desc = self
                .opts
                .platform
                .select(index.manifests())
                .map_err(|available| OciError::Platform {
                    image: self.image.into(),
                    wanted: self.opts.platform.to_string(),
                    available,
                })?
                .clone();
            bytes = self.small_blob("manifest", &desc, true).await?;
            digest = desc.digest().to_string();
        }
        let manifest: ImageManifest =
            serde_json::from_slice(&bytes).map_err(|e| self.invalid("manifest", e))?;
        let config_bytes = self.small_blob("config", manifest.config(), false).await?;
        let config: ImageConfiguration =
            serde_json::from_slice(&config_bytes).map_err(|e| self.invalid("config", e))?;
        // One download per distinct blob: an image may repeat a layer, and two writers of one partial
        // file would corrupt it.
        let mut unique: Vec<(usize, &Descriptor)> = Vec::new();
        for (i, l) in manifest.layers().iter().enumerate() {
            if !unique.iter().any(|(_, u)| u.digest() == l.digest()) {
                unique.push((i, l));
            }
        }
        let paths =
            futures_util::future::join_all(unique.iter().map(|(i, l)| self.layer(*i, l))).await;
        let mut fetched = std::collections::HashMap::new();
        for ((_, desc), path) in unique.iter().zip(paths) {
            fetched.insert(desc.digest().to_string(), path?);
        }
        let layers = manifest
            .layers()
            .iter()
            .enumerate()
            .map(|(i, d)| LayerBlob {
                descriptor: d.clone(),
                path: fetched[&d.digest().to_string()].clone(),
                diff_id: config.rootfs().diff_ids().get(i).cloned(),
            })
            .collect();
        Ok(Image { name: self.image.into(), manifest_digest: digest, manifest, config, layers })
    }

    fn invalid(&self, what: &str, e: impl Into<Cause>) -> OciError {
        OciError::Invalid { image: self.image.into(), what: what.into(), source: e.into() }
    }

    /// The manifest (or index) the reference names: by digest from the cache when possible; by tag from
    /// the registry, or from the cache's last resolution when offline.
    async fn top_manifest(&self) -> Result<(Vec<u8>, String), OciError> {
        let r = self.reference;
        let registry = r.resolve_registry();
        let tag = r.tag().unwrap_or("latest");
        let pinned = r.digest().map(str::to_owned);
        let known = pinned.clone().or_else(|| {
            self.opts.offline.then(|| self.cache.get_ref(registry, r.repository(), tag)).flatten()
        });
        if let Some(d) = &known {
            if let Some(bytes) = self.cache.read_small(d) {
                return Ok((bytes, d.clone()));
            }
        }
        if self.opts.offline {
            return Err(OciError::Offline {
                image: self.image.into(),
                what: "manifest".into(),
                digest: known.unwrap_or_else(|| format!("for tag `{tag}`")),
            });
        }
        let (bytes, _) = self
            .client
            .pull_manifest_raw(r, &self.auth, ACCEPT)
            .await
            .map_err(|e| self.reg_err(&format!("manifest for tag `{tag}`"), e))?;
        let bytes = bytes.to_vec();
        let actual = sha256(&bytes);
        if let Some(d) = &pinned {
            if &actual != d {
                return Err(OciError::DigestMismatch(Box::new(DigestMismatch {
                    image: self.image.into(),
                    what: "manifest".into(),
                    expected: d.clone(),
                    expected_size: bytes.len() as u64,
                    actual,
                    actual_size: bytes.len() as u64,
                    note: "; not cached".into(),
                })));
            }
        }
        let desc = Descriptor::new(
            media_type_of(&bytes),
            bytes.len() as u64,
            actual.parse::<oci_spec::image::Digest>().expect("sha256"),
        );
        self.cache.put_small(self.image, "manifest", &desc, &bytes)?;
        self.cache.set_ref(registry, r.repository(), tag, &actual)?;
        Ok((bytes, actual))
    }

    /// A manifest or config blob: from the cache, else fetched and verified.
    async fn small_blob(
        &self,
        what: &str,
        desc: &Descriptor,
        manifest: bool,
    ) -> Result<Vec<u8>, OciError> {
        if let Some(b) = self.cache.read_small(desc.digest().as_ref()) {
            if b.len() as u64 == desc.size() {
                return Ok(b);
            }
        }
        if self.opts.offline {
            return Err(OciError::Offline {
                image: self.image.into(),
                what: what.into(),
                digest: desc.digest().to_string(),
            });
        }
        let by_digest = self.reference.clone_with_digest(desc.digest().to_string());
        let bytes = if manifest {
            self.client
                .pull_manifest_raw(&by_digest, &self.auth, ACCEPT)
                .await
                .map_err(|e| self.reg_err(&format!("{what} {}", desc.digest()), e))?
                .0
                .to_vec()
        } else {
            let path = self.download(what, desc).await?;
            std::fs::read(&path).map_err(OciError::io(&path))?
        };
        self.cache.put_small(self.image, what, desc, &bytes)?;
        Ok(bytes)
    }

    async fn layer(&self, i: usize, desc: &Descriptor) -> Result<std::path::PathBuf, OciError> {
        let what = format!("layer {i}");
        if let Some(p) = self.cache.get_verified(desc) {
            return Ok(p);
        }
        if self.opts.offline {
            return Err(OciError::Offline {
                image: self.image.into(),
                what,
                digest: desc.digest().to_string(),
            });
        }
        self.download(&what, desc).await
    }

    /// Streams a blob into `partial/`, resuming a previous attempt, then verifies and commits it.
    async fn download(
        &self,
        what: &str,
        desc: &Descriptor,
    ) -> Result<std::path::PathBuf, OciError> {
        let digest = desc.digest().to_string();
        let partial = self.cache.partial_path(&digest)?.ok_or_else(|| OciError::Invalid {
            image: self.image.into(),
            what: what.into(),
            source: format!("unsupported digest `{digest}` (only sha256)").into(),
        })?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&partial)
            .map_err(OciError::io(&partial))?;
        // Another rpixen pulling the same blob holds the lock until it has committed (or given up).
        file.lock().map_err(OciError::io(&partial))?;
        if let Some(done) = self.cache.get_verified(desc) {
            let _ = std::fs::remove_file(&partial);
            return Ok(done);
        }
        let mut offset = file.metadata().map_err(OciError::io(&partial))?.len();
        if offset >= desc.size() {
            offset = 0;
        }
        let response = self
            .client
            .pull_blob_stream_partial(self.reference, digest.as_str(), offset, None)
            .await
            .map_err(|e| self.reg_err(&format!("{what} {digest}"), e))?;
        let (mut stream, append) = match response {
            BlobResponse::Full(s) => (s.stream, false),
            BlobResponse::Partial(s) => (s.stream, true),
        };
        let mut len = if append { offset } else { 0 };
        file.set_len(len).map_err(OciError::io(&partial))?;
        // Hash as the bytes arrive (after the kept prefix), so committing needs no second read.
        let mut hasher = sha2::Sha256::new();
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0))
            .map_err(OciError::io(&partial))?;
        let mut prefix = std::io::Read::take(&mut file, len);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = std::io::Read::read(&mut prefix, &mut buf).map_err(OciError::io(&partial))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(len))
            .map_err(OciError::io(&partial))?;
        let bar = self.opts.progress.then(|| {
            let b = crate::report::bar(desc.size(), format!("{what} {}", &digest[7..19]));
            b.set_position(len);
            b
        });
        let mut failure = None;
        let mut writer = std::io::BufWriter::with_capacity(1 << 20, &file);
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => {
                    writer.write_all(&bytes).map_err(OciError::io(&partial))?;
                    hasher.update(&bytes);
                    len += bytes.len() as u64;
                    if let Some(b) = &bar {
                        b.set_position(len);
                    }
                    // A registry that sends more than the descriptor says is not trusted further.
                    if len > desc.size() {
                        break;
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        writer.flush().map_err(OciError::io(&partial))?;
        drop(writer);
        if let Some(b) = bar {
            b.finish();
        }
        if let Some(e) = failure {
            if len < desc.size() {
                return Err(OciError::Interrupted {
                    image: self.image.into(),
                    what: what.into(),
                    digest,
                    got: len,
                    size: desc.size(),
                    source: e.into(),
                });
            }
        }
        // Committed while the lock is held, so a waiting puller finds the blob in the cache.
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        let committed = self.cache.commit_hashed(self.image, what, desc, &partial, actual, len);
        drop(file);
        committed
    }
}

/// The media type a manifest JSON declares (or implies: `manifests` means an index).
fn media_type_of(bytes: &[u8]) -> MediaType {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(bytes) {
        Ok(Probe { media_type: Some(m), .. }) => MediaType::from(m.as_str()),
        Ok(Probe { manifests: Some(_), .. }) => MediaType::ImageIndex,
        _ => MediaType::ImageManifest,
    }
}

/// Pushes the image tagged `tag` in an OCI layout (an index with its manifests, or one manifest) to a
/// registry reference. Returns the pushed manifest's digest.
pub fn push_layout(
    opts: &OciOptions,
    layout_dir: &Path,
    tag: &str,
    target: &str,
) -> Result<String, OciError> {
    let reference: Reference = target.parse().map_err(|e: oci_client::ParseError| {
        OciError::Reference { reference: target.into(), source: e.into() }
    })?;
    let layout = Layout::open(layout_dir)?;
    let desc = layout.find(target, tag)?;
    runtime()?.block_on(async {
        let client = client_for(opts, &reference);
        let auth = auth_for(opts.docker_config.as_deref(), reference.resolve_registry())?;
        client.auth(&reference, &auth, oci_client::RegistryOperation::Push).await.map_err(|e| {
            OciError::Registry {
                image: target.into(),
                what: "push authentication".into(),
                hint: String::new(),
                source: e.into(),
            }
        })?;
        push_manifest(&client, &layout, &reference, &desc, true).await?;
        Ok(desc.digest().to_string())
    })
}

fn push_manifest<'a>(
    client: &'a Client,
    layout: &'a Layout,
    reference: &'a Reference,
    desc: &'a Descriptor,
    tagged: bool,
) -> futures_util::future::BoxFuture<'a, Result<(), OciError>> {
    Box::pin(async move {
        let image = reference.whole();
        let err = |e: oci_client::errors::OciDistributionError| OciError::Registry {
            image: image.clone(),
            what: "push".into(),
            hint: String::new(),
            source: e.into(),
        };
        let bytes = layout.read_blob(&image, "manifest", desc)?;
        if is_index(desc.media_type()) {
            let index: ImageIndex =
                serde_json::from_slice(&bytes).map_err(|e| OciError::Invalid {
                    image: image.clone(),
                    what: "image index".into(),
                    source: e.into(),
                })?;
            for child in index.manifests() {
                push_manifest(client, layout, reference, child, false).await?;
            }
        } else {
            let manifest: ImageManifest =
                serde_json::from_slice(&bytes).map_err(|e| OciError::Invalid {
                    image: image.clone(),
                    what: "manifest".into(),
                    source: e.into(),
                })?;
            for blob in std::iter::once(manifest.config()).chain(manifest.layers()) {
                let digest = blob.digest().to_string();
                if client.blob_exists(reference, &digest).await.map_err(err)? {
                    continue;
                }
                let path = layout.blob_path(&digest).expect("layout reader checked the digest");
                let data = std::fs::read(&path).map_err(OciError::io(&path))?;
                client.push_blob(reference, data, &digest).await.map_err(err)?;
            }
        }
        let target = if tagged {
            reference.clone()
        } else {
            reference.clone_with_digest(desc.digest().to_string())
        };
        let content_type =
            http::HeaderValue::from_str(desc.media_type().as_ref()).expect("media types are ASCII");
        client.push_manifest_raw(&target, bytes, content_type).await.map_err(err)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_only_for_loopback_or_named() {
        assert!(plain_http("127.0.0.1:5000", &[]));
        assert!(plain_http("localhost:5000", &[]));
        assert!(plain_http("[::1]:5000", &[]));
        assert!(!plain_http("registry.example:5000", &[]));
        assert!(!plain_http("10.0.0.1:5000", &[]));
        assert!(plain_http("10.0.0.1:5000", &["10.0.0.1".into()]));
        assert!(plain_http("reg:5000", &["reg:5000".into()]));
    }

    #[test]
    fn docker_config_auths() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        std::fs::write(
            &p,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},"reg:5000":{"username":"a","password":"b"}}}"#,
        )
        .unwrap();
        assert!(
            matches!(auth_for(Some(&p), "index.docker.io").unwrap(), RegistryAuth::Basic(u, p) if u == "user" && p == "pass")
        );
        assert!(
            matches!(auth_for(Some(&p), "reg:5000").unwrap(), RegistryAuth::Basic(u, p) if u == "a" && p == "b")
        );
        assert!(matches!(auth_for(Some(&p), "other").unwrap(), RegistryAuth::Anonymous));
        assert!(matches!(auth_for(None, "other").unwrap(), RegistryAuth::Anonymous));
    }
}
