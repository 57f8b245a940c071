//! The slot artifact: one OCI manifest holding the exact bytes of a slot partition (IMGA/IMGB: a FAT
//! with the slot's boot script, hypervisor, Dom0 kernel, device tree and initrd), cut into
//! content-defined chunks ([`crate::chunking`]), one raw layer per chunk, in order. A device rebuilds
//! the image from chunks its active slot already holds and downloads the rest, so an update that
//! changes one file moves a few chunks. Written as an OCI image layout (`rpixen update build`), pushed
//! as is, signed by cosign as any manifest.
//!
//! Shape (OCI 1.1 artifact guidance):
//! - manifest `artifactType` [`ARTIFACT_TYPE`], config the empty descriptor (`{}`), annotations
//!   `org.opencontainers.image.{version,created,revision,source}`, [`BOARD`], and the image's
//!   [`IMAGE_SIZE`], [`IMAGE_DIGEST`] (sha256 of the whole image) and [`CHUNKING`];
//! - each layer [`CHUNK_MEDIA_TYPE`], the chunk's bytes; equal chunks (runs of zeros) name one blob.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::chunking::Chunking;
use crate::oci::{self, Descriptor, Manifest};

pub const ARTIFACT_TYPE: &str = "application/vnd.rpixen.slot.image.v1";
pub const CHUNK_MEDIA_TYPE: &str = "application/vnd.rpixen.slot.image.chunk.v1";
pub const IMAGE_SIZE: &str = "dev.rpixen.slot.image.size";
pub const IMAGE_DIGEST: &str = "dev.rpixen.slot.image.digest";
pub const CHUNKING: &str = "dev.rpixen.slot.image.chunking";
pub const BOARD: &str = "dev.rpixen.board";
pub const VERSION: &str = "org.opencontainers.image.version";
pub const CREATED: &str = "org.opencontainers.image.created";
pub const REVISION: &str = "org.opencontainers.image.revision";
pub const SOURCE: &str = "org.opencontainers.image.source";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io { path: path.to_owned(), source }
}

/// The manifest annotations of a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub version: String,
    /// `SOURCE_DATE_EPOCH`, written as RFC 3339 UTC.
    pub epoch: u64,
    pub board: String,
    pub revision: Option<String>,
    pub source: Option<String>,
}

/// A slot image as a device reads it from a manifest, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotImage {
    /// Bytes of the image (the partition may be larger).
    pub size: u64,
    /// `sha256:` of the whole image: what the written slot must read back as.
    pub digest: String,
    pub chunking: Chunking,
    /// The image's chunks in order (a blob may appear more than once).
    pub chunks: Vec<Descriptor>,
}

/// The slot image a manifest describes, checked: the artifact type, the annotations, every layer's
/// media type and digest, and that the chunk sizes add up to the image size.
pub fn slot_image(digest: &str, manifest: &Manifest) -> Result<SlotImage, ArtifactError> {
    let invalid = |message: String| ArtifactError::Invalid {
        what: format!("slot artifact {digest}"),
        message,
    };
    if manifest.artifact_type.as_deref() != Some(ARTIFACT_TYPE) {
        return Err(invalid(format!(
            "artifactType {:?} is not {ARTIFACT_TYPE}",
            manifest.artifact_type
        )));
    }
    let annotation = |key: &str| {
        manifest.annotations.get(key).ok_or_else(|| invalid(format!("no `{key}` annotation")))
    };
    let size: u64 = annotation(IMAGE_SIZE)?
        .parse()
        .map_err(|_| invalid(format!("`{IMAGE_SIZE}` is not a byte count")))?;
    let image_digest = annotation(IMAGE_DIGEST)?;
    if oci::sha256_hex(image_digest).is_none() {
        return Err(invalid(format!("`{IMAGE_DIGEST}` is not sha256:<64 lowercase hex>")));
    }
    let text = annotation(CHUNKING)?;
    let chunking = Chunking::parse(text).ok_or_else(|| {
        invalid(format!("`{CHUNKING}` `{text}` is not a chunking this device knows"))
    })?;
    let mut total = 0u64;
    for (i, layer) in manifest.layers.iter().enumerate() {
        let at = |m: String| invalid(format!("layer {i} ({}): {m}", layer.digest));
        if layer.media_type != CHUNK_MEDIA_TYPE {
            return Err(at(format!("media type `{}` is not {CHUNK_MEDIA_TYPE}", layer.media_type)));
        }
        if oci::sha256_hex(&layer.digest).is_none() {
            return Err(at("the digest is not sha256:<64 lowercase hex>".into()));
        }
        if layer.size == 0 || layer.size > u64::from(chunking.max) {
            return Err(at(format!("size {} is outside 1..={}", layer.size, chunking.max)));
        }
        total += layer.size;
    }
    if size == 0 || total != size {
        return Err(invalid(format!("the chunks hold {total} bytes, `{IMAGE_SIZE}` says {size}")));
    }
    Ok(SlotImage { size, digest: image_digest.clone(), chunking, chunks: manifest.layers.clone() })
}

/// Writes the slot image `image` (a file: the partition's bytes) as an OCI image layout at `dir`
/// (which must not exist), tagged `info.version`, with [`Chunking::DEFAULT`]. Built beside it and
/// renamed into place, so `dir` is whole or absent. Returns the manifest's descriptor. Equal inputs
/// give byte-identical layouts.
pub fn write_slot_layout(
    dir: &Path,
    image: &Path,
    info: &Info,
) -> Result<Descriptor, ArtifactError> {
    write_slot_layout_with(dir, image, info, Chunking::DEFAULT)
}

/// [`write_slot_layout`] with other chunk sizes (the benchmark compares them).
pub fn write_slot_layout_with(
    dir: &Path,
    image: &Path,
    info: &Info,
    chunking: Chunking,
) -> Result<Descriptor, ArtifactError> {
    if dir.exists() {
        return Err(ArtifactError::Invalid {
            what: dir.display().to_string(),
            message: "exists already (a build writes a new layout, it does not change one)".into(),
        });
    }
    let name = dir.file_name().ok_or_else(|| ArtifactError::Invalid {
        what: dir.display().to_string(),
        message: "not a folder name".into(),
    })?;
    let tmp =
        dir.with_file_name(format!(".{}.partial-{}", name.to_string_lossy(), std::process::id()));
    match write_into(&tmp, image, info, chunking) {
        Ok(desc) => {
            fs::rename(&tmp, dir).map_err(io_err(dir))?;
            Ok(desc)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

fn check_version(version: &str) -> Result<(), ArtifactError> {
    let tag_ok = !version.is_empty()
        && version.len() <= 128
        && version.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if tag_ok {
        return Ok(());
    }
    Err(ArtifactError::Invalid {
        what: "version".into(),
        message: format!(
            "`{version}` is not a registry tag (1-128 letters, digits, `.`, `_`, `-`)"
        ),
    })
}

fn write_into(
    tmp: &Path,
    image: &Path,
    info: &Info,
    chunking: Chunking,
) -> Result<Descriptor, ArtifactError> {
    check_version(&info.version)?;
    let blobs = tmp.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;
    let file = File::open(image).map_err(io_err(image))?;
    let mut whole = Sha256::new();
    let mut size = 0u64;
    let mut written = HashSet::new();
    let mut layers = Vec::new();
    for chunk in chunking.chunks(io::BufReader::with_capacity(1 << 20, file)) {
        let chunk = chunk.map_err(io_err(image))?;
        whole.update(&chunk.data);
        size += chunk.data.len() as u64;
        if written.insert(chunk.digest.clone()) {
            let hex = oci::sha256_hex(&chunk.digest).expect("computed sha256");
            write_file(&blobs.join(hex), &chunk.data)?;
        }
        layers.push(Descriptor {
            media_type: CHUNK_MEDIA_TYPE.into(),
            size: chunk.data.len() as u64,
            digest: chunk.digest,
            annotations: BTreeMap::new(),
        });
    }
    if size == 0 {
        return Err(ArtifactError::Invalid {
            what: image.display().to_string(),
            message: "is empty (a slot image holds the partition's bytes)".into(),
        });
    }
    let config = b"{}";
    write_blob(&blobs, config)?;
    let mut annotations = BTreeMap::new();
    annotations.insert(VERSION.to_owned(), info.version.clone());
    annotations.insert(CREATED.to_owned(), rfc3339_utc(info.epoch));
    annotations.insert(BOARD.to_owned(), info.board.clone());
    if let Some(r) = &info.revision {
        annotations.insert(REVISION.to_owned(), r.clone());
    }
    if let Some(s) = &info.source {
        annotations.insert(SOURCE.to_owned(), s.clone());
    }
    annotations.insert(IMAGE_SIZE.to_owned(), size.to_string());
    annotations
        .insert(IMAGE_DIGEST.to_owned(), format!("sha256:{}", hex::encode(whole.finalize())));
    annotations.insert(CHUNKING.to_owned(), chunking.annotation());
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MANIFEST_V1.into()),
        artifact_type: Some(ARTIFACT_TYPE.into()),
        config: Descriptor::of(oci::EMPTY_V1, config),
        layers,
        annotations,
    };
    // The layout must be readable by the device too: check it the way the device will.
    let bytes = manifest.to_bytes();
    slot_image(&oci::sha256(&bytes), &manifest)?;
    write_blob(&blobs, &bytes)?;
    let mut desc = Descriptor::of(oci::MANIFEST_V1, &bytes);
    desc.annotations.insert(REF_NAME.into(), info.version.clone());

    #[derive(Serialize)]
    struct Index<'a> {
        #[serde(rename = "schemaVersion")]
        schema_version: u32,
        #[serde(rename = "mediaType")]
        media_type: &'static str,
        manifests: [&'a Descriptor; 1],
    }
    let index = Index {
        schema_version: 2,
        media_type: "application/vnd.oci.image.index.v1+json",
        manifests: [&desc],
    };
    write_file(&tmp.join("index.json"), &serde_json::to_vec(&index).expect("json"))?;
    write_file(&tmp.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    desc.annotations.clear();
    Ok(desc)
}

fn write_blob(blobs: &Path, bytes: &[u8]) -> Result<(), ArtifactError> {
    let digest = oci::sha256(bytes);
    write_file(&blobs.join(oci::sha256_hex(&digest).expect("computed sha256")), bytes)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ArtifactError> {
    let mut f = File::create(path).map_err(io_err(path))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(io_err(path))
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since 1970 (Howard Hinnant's civil-from-days). Written here
/// because it is the only date the crate formats; a date crate would be a dependency for one line.
pub fn rfc3339_utc(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> Info {
        Info {
            version: "1.2.0".into(),
            epoch: 1_700_000_000,
            board: "qemu-virt".into(),
            revision: Some("abc123".into()),
            source: Some("https://example.invalid/fleet".into()),
        }
    }

    fn read_manifest(dir: &Path) -> (String, Manifest) {
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
        let digest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
        let hex = oci::sha256_hex(&digest).unwrap();
        let bytes = fs::read(dir.join("blobs/sha256").join(hex)).unwrap();
        assert_eq!(oci::sha256(&bytes), digest);
        (digest, serde_json::from_slice(&bytes).unwrap())
    }

    /// 3 MiB of varied bytes, 4 MiB of zeros, 1 MiB varied.
    fn image(seed: u64) -> Vec<u8> {
        let varied = |n: u32, seed: u64| -> Vec<u8> {
            let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                })
                .collect()
        };
        let mut v = varied(3 << 20, 7);
        v.extend(vec![0u8; 4 << 20]);
        v.extend(varied(1 << 20, seed));
        v
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn layout_is_reproducible_chunks_rebuild_the_image_and_zeros_share_a_blob() {
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("slot.img");
        fs::write(&img, image(1)).unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        let da = write_slot_layout(&a, &img, &info()).unwrap();
        let db = write_slot_layout(&b, &img, &info()).unwrap();
        assert_eq!(da, db);
        for f in ["index.json", "oci-layout"] {
            assert_eq!(fs::read(a.join(f)).unwrap(), fs::read(b.join(f)).unwrap());
        }
        let (digest, m) = read_manifest(&a);
        let s = slot_image(&digest, &m).unwrap();
        let mut rebuilt = Vec::new();
        for c in &s.chunks {
            rebuilt.extend(
                fs::read(a.join("blobs/sha256").join(oci::sha256_hex(&c.digest).unwrap())).unwrap(),
            );
        }
        assert_eq!(rebuilt, image(1));
        assert_eq!(
            (s.size, s.digest.as_str()),
            (rebuilt.len() as u64, oci::sha256(&rebuilt).as_str())
        );
        let unique: HashSet<_> = s.chunks.iter().map(|c| &c.digest).collect();
        assert!(unique.len() < s.chunks.len(), "the zero run did not share a blob");
        // config, manifest and one file per distinct chunk
        assert_eq!(fs::read_dir(a.join("blobs/sha256")).unwrap().count(), unique.len() + 2);
        assert_eq!(m.annotations[CREATED], "2023-11-14T22:13:20Z");
        assert_eq!(m.annotations[VERSION], "1.2.0");
        assert_eq!(m.annotations[CHUNKING], Chunking::DEFAULT.annotation());
    }

    #[test]
    fn bad_input_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("layout");
        let img = tmp.path().join("slot.img");
        fs::write(&img, b"").unwrap();
        let e = write_slot_layout(&out, &img, &info()).unwrap_err().to_string();
        assert!(e.contains("slot.img") && e.contains("is empty"), "{e}");
        fs::write(&img, b"x").unwrap();
        let e = write_slot_layout(&out, &img, &Info { version: "1 2".into(), ..info() });
        assert!(e.unwrap_err().to_string().starts_with("version: "));
        let e = write_slot_layout(&out, &tmp.path().join("nope"), &info()).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
        fs::create_dir(&out).unwrap();
        let e = write_slot_layout(&out, &img, &info()).unwrap_err().to_string();
        assert!(e.contains("exists already"), "{e}");
    }

    #[test]
    fn the_device_refuses_foreign_or_inconsistent_manifests() {
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("slot.img");
        fs::write(&img, image(2)).unwrap();
        write_slot_layout(&tmp.path().join("l"), &img, &info()).unwrap();
        let (digest, good) = read_manifest(&tmp.path().join("l"));
        let refused = |m: &Manifest| slot_image(&digest, m).unwrap_err().to_string();
        let mut m = good.clone();
        m.artifact_type = None;
        assert!(refused(&m).contains("artifactType"));
        let mut m = good.clone();
        m.layers.pop();
        let e = refused(&m);
        assert!(e.contains(&digest) && e.contains("the chunks hold"), "{e}");
        let mut m = good.clone();
        m.layers[1].digest = "sha256:../../x".into();
        assert!(refused(&m).contains("layer 1"));
        let mut m = good.clone();
        m.annotations.insert(CHUNKING.into(), "fastcdc-v2020 min=1 avg=2 max=3".into());
        assert!(refused(&m).contains(CHUNKING));
        let mut m = good;
        m.annotations.remove(IMAGE_DIGEST);
        assert!(refused(&m).contains(IMAGE_DIGEST));
    }
}
