//! An SPDX 2.3 JSON document of what an image contains: its components (rpixen packages and rootfs
//! OCI images, with their digests), the pinned Debian packages inside them and the Rust crates built
//! into them. The same inputs give the same bytes: the document namespace is derived from the
//! content and `created` from `SOURCE_DATE_EPOCH`.
//!
//! Shape (SPDX 2.3 §6, §7, §11): DOCUMENT DESCRIBES the image; the image CONTAINS each component;
//! a component CONTAINS its .debs and crates. Identifiers follow the purl spec: `pkg:deb/debian/…`,
//! `pkg:cargo/…`, `pkg:oci/…@sha256%3A…`.

pub mod inputs;

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::date::{self, EpochError};
use crate::digest::Digest;

/// What the document describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SbomInput {
    /// The image's name (`rpixen-qemu-virt`).
    pub name: String,
    pub version: String,
    /// `SOURCE_DATE_EPOCH`.
    pub epoch: u64,
    /// The namespace URI prefix; the document's own part is derived from its content.
    pub namespace_base: String,
    /// The creating tool, `name-version` (`rpixen-0.1.0`).
    pub tool: String,
    /// The image file, when the SBOM is written next to it.
    pub image: Option<ImageFile>,
    pub components: Vec<Component>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    pub file_name: String,
    pub digest: Digest,
}

/// A part of the image: an rpixen package (`kernel`, `busybox`) or a rootfs OCI image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    pub name: String,
    pub description: String,
    pub oci: Option<OciImage>,
    pub debs: Vec<DebPackage>,
    pub crates: Vec<RustCrate>,
}

/// An OCI image by digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciImage {
    /// The image name (last path component of the repository, lowercase).
    pub name: String,
    /// `registry/repository` without scheme; `None` for an image layout on disk.
    pub repository_url: Option<String>,
    pub tag: Option<String>,
    /// The manifest digest, `sha256:<hex>`.
    pub digest: String,
}

/// A pinned Debian binary package.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DebPackage {
    pub name: String,
    /// With epoch (`1:1.37.0-6+b9`).
    pub version: String,
    pub arch: String,
    /// sha256 of the `.deb`.
    pub sha256: String,
    /// The Debian suite (`trixie`).
    pub distro: Option<String>,
}

/// A crate from `Cargo.lock`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RustCrate {
    pub name: String,
    pub version: String,
    /// `Cargo.lock`'s `checksum` (sha256 of the `.crate`); `None` for path and git crates.
    pub checksum: Option<String>,
    /// `Cargo.lock`'s `source` (`registry+https://github.com/rust-lang/crates.io-index`); `None` for
    /// crates of this workspace.
    pub source: Option<String>,
}

const CRATES_IO: &str = "registry+https://github.com/rust-lang/crates.io-index";
const NOASSERTION: &str = "NOASSERTION";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SbomError {
    #[error(transparent)]
    Epoch(#[from] EpochError),
    #[error("SBOM input: {what}: `{value}` is not a lowercase sha256")]
    Sha256 { what: String, value: String },
    #[error("SBOM input: OCI image {name}: digest `{digest}` is not `sha256:<64 hex>`")]
    OciDigest { name: String, digest: String },
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Percent-encodes a purl component: everything but the unreserved characters (and `:` in a
/// version, which the purl spec leaves as is); `+` must be `%2B`.
fn purl_encode(s: &str, keep_colon: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_colon && b == b':')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn deb_purl(d: &DebPackage) -> String {
    let mut p = format!(
        "pkg:deb/debian/{}@{}?arch={}",
        purl_encode(&d.name, false),
        purl_encode(&d.version, true),
        purl_encode(&d.arch, false)
    );
    if let Some(distro) = &d.distro {
        p.push_str(&format!("&distro={}", purl_encode(distro, false)));
    }
    p
}

pub fn cargo_purl(c: &RustCrate) -> String {
    format!("pkg:cargo/{}@{}", purl_encode(&c.name, false), purl_encode(&c.version, false))
}

pub fn oci_purl(o: &OciImage) -> String {
    let mut p = format!(
        "pkg:oci/{}@{}",
        purl_encode(&o.name.to_lowercase(), false),
        purl_encode(&o.digest, false)
    );
    let mut q = Vec::new();
    if let Some(r) = &o.repository_url {
        q.push(format!("repository_url={}", purl_encode(r, false).replace("%2F", "/")));
    }
    if let Some(t) = &o.tag {
        q.push(format!("tag={}", purl_encode(t, false)));
    }
    if !q.is_empty() {
        p.push('?');
        p.push_str(&q.join("&"));
    }
    p
}

/// SPDX identifiers allow letters, digits, `.` and `-`.
fn spdx_id(kind: &str, parts: &[&str], used: &mut BTreeSet<String>) -> String {
    let raw = format!("SPDXRef-{kind}-{}", parts.join("-"));
    let base: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' })
        .collect();
    let mut id = base.clone();
    let mut n = 2;
    while !used.insert(id.clone()) {
        id = format!("{base}-{n}");
        n += 1;
    }
    id
}

fn purl_ref(purl: String) -> Value {
    json!([{ "referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl }])
}

fn relationship(a: &str, kind: &str, b: &str) -> Value {
    json!({ "spdxElementId": a, "relationshipType": kind, "relatedSpdxElement": b })
}

fn check(input: &SbomInput) -> Result<(), SbomError> {
    let sha = |what: String, value: &str| {
        if is_sha256(value) {
            Ok(())
        } else {
            Err(SbomError::Sha256 { what, value: value.to_owned() })
        }
    };
    if let Some(img) = &input.image {
        sha(format!("image {}", img.file_name), &img.digest.sha256)?;
    }
    for c in &input.components {
        if let Some(o) = &c.oci {
            if !o.digest.strip_prefix("sha256:").is_some_and(is_sha256) {
                return Err(SbomError::OciDigest {
                    name: o.name.clone(),
                    digest: o.digest.clone(),
                });
            }
        }
        for d in &c.debs {
            sha(format!("component {}: .deb {} {}", c.name, d.name, d.version), &d.sha256)?;
        }
        for k in &c.crates {
            if let Some(sum) = &k.checksum {
                sha(format!("component {}: crate {} {}", c.name, k.name, k.version), sum)?;
            }
        }
    }
    Ok(())
}

/// The SPDX 2.3 document as JSON text (pretty, trailing newline).
pub fn document(input: &SbomInput) -> Result<String, SbomError> {
    check(input)?;
    let created = date::spdx_created(input.epoch)?;
    let mut used = BTreeSet::new();
    let mut packages = Vec::new();
    let mut relationships = Vec::new();

    let image_id = "SPDXRef-Image".to_owned();
    used.insert(image_id.clone());
    let mut image = json!({
        "name": input.name,
        "SPDXID": image_id,
        "versionInfo": input.version,
        "downloadLocation": NOASSERTION,
        "filesAnalyzed": false,
        "primaryPackagePurpose": "OPERATING-SYSTEM",
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": NOASSERTION,
        "copyrightText": NOASSERTION,
    });
    if let Some(f) = &input.image {
        image["packageFileName"] = json!(f.file_name);
        image["checksums"] = json!([{ "algorithm": "SHA256", "checksumValue": f.digest.sha256 }]);
    }
    packages.push(image);
    relationships.push(relationship("SPDXRef-DOCUMENT", "DESCRIBES", &image_id));

    // Debs and crates shared by several components appear once, contained by each.
    let mut deb_ids: std::collections::BTreeMap<DebPackage, String> = Default::default();
    let mut crate_ids: std::collections::BTreeMap<RustCrate, String> = Default::default();
    for c in &input.components {
        let cid = spdx_id("Component", &[&c.name], &mut used);
        let mut p = json!({
            "name": c.name,
            "SPDXID": cid,
            "downloadLocation": NOASSERTION,
            "filesAnalyzed": false,
            "description": c.description,
            "licenseConcluded": NOASSERTION,
            "licenseDeclared": NOASSERTION,
            "copyrightText": NOASSERTION,
        });
        if let Some(o) = &c.oci {
            // As syft does for images: the manifest digest is the version.
            p["versionInfo"] = json!(o.digest);
            p["primaryPackagePurpose"] = json!("CONTAINER");
            p["externalRefs"] = purl_ref(oci_purl(o));
        }
        packages.push(p);
        relationships.push(relationship(&image_id, "CONTAINS", &cid));
        for d in &c.debs {
            let id = match deb_ids.get(d) {
                Some(id) => id.clone(),
                None => {
                    let id = spdx_id("deb", &[&d.name, &d.version, &d.arch], &mut used);
                    packages.push(json!({
                        "name": d.name,
                        "SPDXID": id,
                        "versionInfo": d.version,
                        "supplier": "Organization: Debian",
                        "downloadLocation": NOASSERTION,
                        "filesAnalyzed": false,
                        "checksums": [{ "algorithm": "SHA256", "checksumValue": d.sha256 }],
                        "externalRefs": purl_ref(deb_purl(d)),
                        "licenseConcluded": NOASSERTION,
                        "licenseDeclared": NOASSERTION,
                        "copyrightText": NOASSERTION,
                    }));
                    deb_ids.insert(d.clone(), id.clone());
                    id
                }
            };
            relationships.push(relationship(&cid, "CONTAINS", &id));
        }
        for k in &c.crates {
            let id = match crate_ids.get(k) {
                Some(id) => id.clone(),
                None => {
                    let id = spdx_id("crate", &[&k.name, &k.version], &mut used);
                    let mut p = json!({
                        "name": k.name,
                        "SPDXID": id,
                        "versionInfo": k.version,
                        "downloadLocation": NOASSERTION,
                        "filesAnalyzed": false,
                        "primaryPackagePurpose": "LIBRARY",
                        "licenseConcluded": NOASSERTION,
                        "licenseDeclared": NOASSERTION,
                        "copyrightText": NOASSERTION,
                    });
                    if let Some(sum) = &k.checksum {
                        p["checksums"] = json!([{ "algorithm": "SHA256", "checksumValue": sum }]);
                    }
                    match k.source.as_deref() {
                        Some(CRATES_IO) => {
                            p["downloadLocation"] = json!(format!(
                                "https://crates.io/api/v1/crates/{}/{}/download",
                                k.name, k.version
                            ));
                            p["externalRefs"] = purl_ref(cargo_purl(k));
                        }
                        Some(other) => {
                            p["sourceInfo"] = json!(format!("Cargo.lock source: {other}"))
                        }
                        None => p["sourceInfo"] = json!("built from this repository"),
                    }
                    packages.push(p);
                    crate_ids.insert(k.clone(), id.clone());
                    id
                }
            };
            relationships.push(relationship(&cid, "CONTAINS", &id));
        }
    }

    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}-{}", input.name, input.version),
        "documentNamespace": "",
        "creationInfo": { "created": created, "creators": [format!("Tool: {}", input.tool)] },
        "packages": packages,
        "relationships": relationships,
    });
    // Unique per content and stable across runs: a hash of the document without its namespace.
    let content = serde_json::to_vec(&doc).expect("plain data serialises");
    let hash = crate::digest::sha256_hex(&content);
    doc["documentNamespace"] = json!(format!(
        "{}/{}-{}-{}",
        input.namespace_base.trim_end_matches('/'),
        purl_encode(&input.name, false),
        purl_encode(&input.version, false),
        &hash[..32]
    ));
    let mut text = serde_json::to_string_pretty(&doc).expect("plain data serialises");
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deb() -> DebPackage {
        DebPackage {
            name: "busybox-static".into(),
            version: "1:1.37.0-6+b9".into(),
            arch: "arm64".into(),
            sha256: "c833be48abfa16bc19c4966ec93e289ff1ce5d2f1476cad3a57bd105378cd15c".into(),
            distro: Some("trixie".into()),
        }
    }

    fn krate(name: &str) -> RustCrate {
        RustCrate {
            name: name.into(),
            version: "0.2.191".into(),
            checksum: Some("ab".repeat(32)),
            source: Some(CRATES_IO.into()),
        }
    }

    fn input() -> SbomInput {
        SbomInput {
            name: "rpixen-qemu-virt".into(),
            version: "0.1.0".into(),
            epoch: 1_700_000_000,
            namespace_base: "https://rpixen.invalid/spdx/".into(),
            tool: "rpixen-0.1.0".into(),
            image: Some(ImageFile {
                file_name: "live.raw".into(),
                digest: Digest { size: 1, sha256: "cd".repeat(32) },
            }),
            components: vec![
                Component {
                    name: "busybox".into(),
                    description: "bb".into(),
                    oci: Some(OciImage {
                        name: "busybox".into(),
                        repository_url: None,
                        tag: Some("latest".into()),
                        digest: format!("sha256:{}", "ef".repeat(32)),
                    }),
                    debs: vec![deb()],
                    crates: vec![],
                },
                Component {
                    name: "dom0-init".into(),
                    description: "init".into(),
                    oci: None,
                    debs: vec![],
                    crates: vec![krate("libc"), krate("nix")],
                },
                Component {
                    name: "other".into(),
                    description: "x".into(),
                    oci: None,
                    debs: vec![deb()],
                    crates: vec![krate("libc")],
                },
            ],
        }
    }

    #[test]
    fn purls_follow_the_spec() {
        assert_eq!(
            deb_purl(&deb()),
            "pkg:deb/debian/busybox-static@1:1.37.0-6%2Bb9?arch=arm64&distro=trixie"
        );
        assert_eq!(cargo_purl(&krate("libc")), "pkg:cargo/libc@0.2.191");
        let o = OciImage {
            name: "Tools".into(),
            repository_url: Some("127.0.0.1:5000/me/tools".into()),
            tag: Some("1.0".into()),
            digest: "sha256:00".into(),
        };
        assert_eq!(
            oci_purl(&o),
            "pkg:oci/tools@sha256%3A00?repository_url=127.0.0.1%3A5000/me/tools&tag=1.0"
        );
    }

    #[test]
    fn document_is_deterministic_and_linked() {
        let a = document(&input()).unwrap();
        assert_eq!(a, document(&input()).unwrap());
        let v: Value = serde_json::from_str(&a).unwrap();
        assert_eq!(v["spdxVersion"], "SPDX-2.3");
        assert_eq!(v["creationInfo"]["created"], "2023-11-14T22:13:20Z");
        let ns = v["documentNamespace"].as_str().unwrap();
        assert!(ns.starts_with("https://rpixen.invalid/spdx/rpixen-qemu-virt-0.1.0-"), "{ns}");
        // Shared deb and crate: one package each, contained twice.
        let names: Vec<&str> =
            v["packages"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(names.iter().filter(|n| **n == "busybox-static").count(), 1);
        assert_eq!(names.iter().filter(|n| **n == "libc").count(), 1);
        let rels = v["relationships"].as_array().unwrap();
        let contains = |target: &str| {
            rels.iter()
                .filter(|r| {
                    r["relationshipType"] == "CONTAINS"
                        && r["relatedSpdxElement"].as_str().unwrap().contains(target)
                })
                .count()
        };
        assert_eq!(contains("busybox-static"), 2);
        assert_eq!(contains("crate-libc"), 2);
        assert_eq!(rels[0]["relationshipType"], "DESCRIBES");
        // A different input gives a different namespace.
        let mut other = input();
        other.components.pop();
        let w: Value = serde_json::from_str(&document(&other).unwrap()).unwrap();
        assert_ne!(w["documentNamespace"], v["documentNamespace"]);
    }

    #[test]
    fn bad_digests_are_named() {
        let mut i = input();
        i.components[0].debs[0].sha256 = "XYZ".into();
        let e = document(&i).unwrap_err().to_string();
        assert!(e.contains("busybox-static") && e.contains("XYZ"), "{e}");
        let mut i = input();
        i.components[0].oci.as_mut().unwrap().digest = "md5:1".into();
        let e = document(&i).unwrap_err().to_string();
        assert!(e.contains("OCI image busybox") && e.contains("md5:1"), "{e}");
    }
}
