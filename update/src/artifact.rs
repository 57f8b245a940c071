//! The slot artifact: one OCI manifest holding everything a slot boots (boot script, hypervisor, Dom0
//! kernel, device tree, initrd, root filesystem), one raw layer per file so an update that changes one
//! file moves one blob. Written as an OCI image layout (`rpixen update build`), pushed as is.
//!
//! Shape (OCI 1.1 artifact guidance, with ECI's layer roles where they exist):
//! - manifest `artifactType` [`ARTIFACT_TYPE`], config the empty descriptor (`{}`), annotations
//!   `org.opencontainers.image.{version,created,revision,source}` and [`BOARD`];
//! - each layer [`FILE_MEDIA_TYPE`] (the file's bytes, uncompressed, so its digest is the digest of
//!   what lands in the slot), annotated with `org.opencontainers.image.title` (the file name in the
//!   slot), [`ROLE`] and, for kernel, initrd and root filesystem, `org.lfedge.eci.role`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::oci::{self, Descriptor, Manifest};

pub const ARTIFACT_TYPE: &str = "application/vnd.rpixen.slot.v1";
pub const FILE_MEDIA_TYPE: &str = "application/vnd.rpixen.slot.file.v1";
pub const ROLE: &str = "dev.rpixen.slot.role";
pub const BOARD: &str = "dev.rpixen.board";
pub const ECI_ROLE: &str = "org.lfedge.eci.role";
pub const TITLE: &str = "org.opencontainers.image.title";
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

/// What a file is to the slot (U-Boot and the agent find files by role, not by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// The second-stage boot script (`rpixen.scr`): load addresses and command lines of this slot.
    BootScript,
    Hypervisor,
    Kernel,
    DeviceTree,
    Initrd,
    Rootfs,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::BootScript,
        Role::Hypervisor,
        Role::Kernel,
        Role::DeviceTree,
        Role::Initrd,
        Role::Rootfs,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::BootScript => "boot-script",
            Role::Hypervisor => "hypervisor",
            Role::Kernel => "kernel",
            Role::DeviceTree => "device-tree",
            Role::Initrd => "initrd",
            Role::Rootfs => "rootfs",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// EVE's edge-container role, for the roles it has.
    fn eci(self) -> Option<&'static str> {
        match self {
            Role::Kernel => Some("kernel"),
            Role::Initrd => Some("initrd"),
            Role::Rootfs => Some("disk-root"),
            _ => None,
        }
    }
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

/// One file of the slot, to be read once while it is written into the layout.
pub struct Part<'a> {
    pub role: Role,
    pub name: String,
    pub data: Box<dyn Read + 'a>,
}

/// One file of a slot artifact, as the device reads it from a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotFile {
    pub role: Role,
    pub name: String,
    pub layer: Descriptor,
}

/// A file name safe to create in a slot folder: one path component, no control characters.
fn check_name(name: &str) -> Result<(), String> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.len() > 255
        || name.contains(['/', '\\'])
        || name.chars().any(char::is_control);
    if bad {
        return Err(format!("`{name}` is not a plain file name"));
    }
    Ok(())
}

/// The slot files a manifest describes, checked: the artifact type, each layer's media type, role and
/// name, one file per role, and the roles every slot needs (hypervisor, kernel, boot script).
pub fn slot_files(digest: &str, manifest: &Manifest) -> Result<Vec<SlotFile>, ArtifactError> {
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
    let mut files: Vec<SlotFile> = Vec::new();
    for layer in &manifest.layers {
        let at = |m: String| invalid(format!("layer {}: {m}", layer.digest));
        if layer.media_type != FILE_MEDIA_TYPE {
            return Err(at(format!("media type `{}` is not {FILE_MEDIA_TYPE}", layer.media_type)));
        }
        let role = layer.annotations.get(ROLE).ok_or_else(|| at(format!("no `{ROLE}`")))?;
        let role = Role::parse(role).ok_or_else(|| at(format!("unknown {ROLE} `{role}`")))?;
        let name = layer.annotations.get(TITLE).ok_or_else(|| at(format!("no `{TITLE}`")))?;
        check_name(name).map_err(at)?;
        if let Some(f) = files.iter().find(|f| f.role == role || &f.name == name) {
            return Err(at(format!("a second {} / `{}`", f.role.as_str(), f.name)));
        }
        files.push(SlotFile { role, name: name.clone(), layer: layer.clone() });
    }
    for needed in [Role::BootScript, Role::Hypervisor, Role::Kernel] {
        if !files.iter().any(|f| f.role == needed) {
            return Err(invalid(format!("no {} layer", needed.as_str())));
        }
    }
    Ok(files)
}

/// Writes a slot artifact as an OCI image layout at `dir` (which must not exist), tagged
/// `info.version`. Built beside it and renamed into place, so `dir` is whole or absent. Returns the
/// manifest's descriptor. Equal inputs give byte-identical layouts.
pub fn write_layout(
    dir: &Path,
    info: &Info,
    parts: Vec<Part<'_>>,
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
    let result = write_into(&tmp, info, parts);
    match result {
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

fn write_into(tmp: &Path, info: &Info, parts: Vec<Part<'_>>) -> Result<Descriptor, ArtifactError> {
    let blobs = tmp.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;
    let tag_ok = !info.version.is_empty()
        && info.version.len() <= 128
        && info.version.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !tag_ok {
        return Err(ArtifactError::Invalid {
            what: "version".into(),
            message: format!(
                "`{}` is not a registry tag (1-128 letters, digits, `.`, `_`, `-`)",
                info.version
            ),
        });
    }
    let mut layers = Vec::new();
    let mut seen: Vec<(Role, String)> = Vec::new();
    for mut part in parts {
        check_name(&part.name).map_err(|message| ArtifactError::Invalid {
            what: format!("{} file", part.role.as_str()),
            message,
        })?;
        if seen.iter().any(|(r, n)| *r == part.role || *n == part.name) {
            return Err(ArtifactError::Invalid {
                what: format!("{} file `{}`", part.role.as_str(), part.name),
                message: "given twice".into(),
            });
        }
        seen.push((part.role, part.name.clone()));
        let staging = tmp.join("blob.partial");
        let mut out = File::create(&staging).map_err(io_err(&staging))?;
        let (digest, size) =
            oci::copy_hashed(&mut part.data, &mut out).map_err(io_err(&staging))?;
        out.sync_all().map_err(io_err(&staging))?;
        let hex = oci::sha256_hex(&digest).expect("computed sha256");
        let path = blobs.join(hex);
        fs::rename(&staging, &path).map_err(io_err(&path))?;
        let mut annotations = BTreeMap::new();
        annotations.insert(TITLE.to_owned(), part.name.clone());
        annotations.insert(ROLE.to_owned(), part.role.as_str().to_owned());
        if let Some(eci) = part.role.eci() {
            annotations.insert(ECI_ROLE.to_owned(), eci.to_owned());
        }
        layers.push(Descriptor { media_type: FILE_MEDIA_TYPE.into(), size, digest, annotations });
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
    slot_files(&oci::sha256(&bytes), &manifest)?;
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

    fn parts(kernel: &'static [u8]) -> Vec<Part<'static>> {
        vec![
            Part {
                role: Role::BootScript,
                name: "rpixen.scr".into(),
                data: Box::new(&b"script"[..]),
            },
            Part {
                role: Role::Hypervisor,
                name: "rpixen-hv.bin".into(),
                data: Box::new(&b"hv"[..]),
            },
            Part { role: Role::Kernel, name: "Image".into(), data: Box::new(kernel) },
            Part { role: Role::Initrd, name: "initrd.img".into(), data: Box::new(&b"cpio"[..]) },
        ]
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

    #[test]
    fn dates() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn layout_is_reproducible_and_one_changed_file_changes_one_layer() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b, c) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("c"));
        let da = write_layout(&a, &info(), parts(b"kernel v1")).unwrap();
        let db = write_layout(&b, &info(), parts(b"kernel v1")).unwrap();
        assert_eq!(da, db);
        for f in ["index.json", "oci-layout"] {
            assert_eq!(fs::read(a.join(f)).unwrap(), fs::read(b.join(f)).unwrap());
        }
        write_layout(&c, &info(), parts(b"kernel v2")).unwrap();
        let (digest, ma) = read_manifest(&a);
        let (_, mc) = read_manifest(&c);
        let changed: Vec<_> =
            ma.layers.iter().zip(&mc.layers).filter(|(x, y)| x != y).map(|(x, _)| x).collect();
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].annotations[TITLE], "Image");
        assert_eq!(ma.annotations[CREATED], "2023-11-14T22:13:20Z");
        assert_eq!(ma.annotations[VERSION], "1.2.0");
        assert_eq!(ma.layers[2].annotations[ECI_ROLE], "kernel");
        let files = slot_files(&digest, &ma).unwrap();
        assert_eq!(
            files.iter().map(|f| f.role).collect::<Vec<_>>(),
            [Role::BootScript, Role::Hypervisor, Role::Kernel, Role::Initrd]
        );
    }

    #[test]
    fn bad_input_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("layout");
        let mut p = parts(b"k");
        p[3].name = "../initrd".into();
        let e = write_layout(&out, &info(), p).unwrap_err().to_string();
        assert!(e.contains("initrd file") && e.contains("not a plain file name"), "{e}");
        let e = write_layout(&out, &Info { version: "1 2".into(), ..info() }, parts(b"k"));
        assert!(e.unwrap_err().to_string().starts_with("version: "));
        let mut p = parts(b"k");
        p.remove(1);
        let e = write_layout(&out, &info(), p).unwrap_err().to_string();
        assert!(e.contains("no hypervisor layer"), "{e}");
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
        fs::create_dir(&out).unwrap();
        let e = write_layout(&out, &info(), parts(b"k")).unwrap_err().to_string();
        assert!(e.contains("exists already"), "{e}");
    }

    #[test]
    fn the_device_refuses_foreign_or_ambiguous_manifests() {
        let tmp = tempfile::tempdir().unwrap();
        write_layout(&tmp.path().join("l"), &info(), parts(b"k")).unwrap();
        let (digest, good) = read_manifest(&tmp.path().join("l"));
        let mut m = good.clone();
        m.artifact_type = None;
        assert!(slot_files(&digest, &m).unwrap_err().to_string().contains("artifactType"));
        let mut m = good.clone();
        m.layers[3].annotations.insert(ROLE.into(), "kernel".into());
        let e = slot_files(&digest, &m).unwrap_err().to_string();
        assert!(e.contains("a second kernel") && e.contains(&digest), "{e}");
        let mut m = good;
        m.layers[0].annotations.insert(TITLE.into(), "/boot/x".into());
        assert!(slot_files(&digest, &m).unwrap_err().to_string().contains("not a plain file name"));
    }
}
