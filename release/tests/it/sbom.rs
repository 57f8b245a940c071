//! The SPDX document of the real image, validated by spdx-tools (`pyspdxtools`, PyPI) and checked
//! against the repository's pins and cargo's own dependency graph.

use std::collections::BTreeSet;
use std::process::Command;

use rpixen_release::digest::Digest;
use rpixen_release::sbom::{self, inputs, ImageFile, SbomInput};
use sha2::{Digest as _, Sha256};

use crate::image::{self, fixture, s, tool};

fn input() -> SbomInput {
    let f = fixture();
    let components =
        inputs::package_components(&testkit::repo_root(), &f.pkg_dir, &image::PACKAGES).unwrap();
    let raw = std::fs::read(&f.raw).unwrap();
    SbomInput {
        name: "rpixen-qemu-virt".into(),
        version: "0.1.0".into(),
        epoch: image::EPOCH.parse().unwrap(),
        namespace_base: "https://example.invalid/rpixen/spdx".into(),
        tool: "rpixen-0.1.0".into(),
        image: Some(ImageFile {
            file_name: "live.raw".into(),
            digest: Digest { size: raw.len() as u64, sha256: hex::encode(Sha256::digest(&raw)) },
        }),
        components,
    }
}

/// `name version` of every crate `cargo tree` says `package` links for `target`.
fn cargo_tree(package: &str, target: &str) -> BTreeSet<String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = testkit::run(Command::new(cargo).current_dir(testkit::repo_root()).args([
        "tree",
        "--offline",
        "-e",
        "normal",
        "--target",
        target,
        "-p",
        package,
        "--prefix",
        "none",
        "--format",
        "{p}",
    ]));
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut it = l.split_whitespace();
            let name = it.next().unwrap();
            let version = it.next().unwrap().trim_start_matches('v');
            format!("{name} {version}")
        })
        .collect()
}

#[test]
fn sbom_validates_and_lists_what_the_image_contains() {
    let input = input();
    let text = sbom::document(&input).unwrap();
    assert_eq!(text, sbom::document(&input).unwrap(), "the document must be reproducible");
    let dir = tempfile::tempdir_in(&fixture().dir).unwrap();
    let file = dir.path().join("sbom.spdx.json");
    std::fs::write(&file, &text).unwrap();
    let o = tool(Command::new("pyspdxtools").args(["-i", s(&file)]));
    let report =
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(
        o.status.success() && !report.contains("ERROR"),
        "pyspdxtools rejected the SBOM:\n{report}"
    );

    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let packages = v["packages"].as_array().unwrap();
    let purls: BTreeSet<&str> =
        packages.iter().filter_map(|p| p["externalRefs"][0]["referenceLocator"].as_str()).collect();
    // Every pinned .deb of the packages, with the pin's digest.
    for c in &input.components {
        for d in &c.debs {
            // By name and purl type: the `e2fsprogs` package (pkg:oci) holds the `e2fsprogs` .deb.
            let p = packages
                .iter()
                .find(|p| {
                    p["name"] == d.name.as_str()
                        && p["externalRefs"][0]["referenceLocator"]
                            .as_str()
                            .is_some_and(|r| r.starts_with("pkg:deb/"))
                })
                .unwrap_or_else(|| panic!("{} missing", d.name));
            assert_eq!(p["checksums"][0]["checksumValue"], d.sha256.as_str());
            assert_eq!(p["versionInfo"], d.version.as_str());
            assert!(purls.contains(sbom::deb_purl(d).as_str()));
        }
        let oci = c.oci.as_ref().unwrap();
        assert!(purls.contains(sbom::oci_purl(oci).as_str()), "{} has no pkg:oci purl", c.name);
    }
    assert!(purls.iter().any(|p| p.starts_with("pkg:deb/debian/linux-image-")), "{purls:?}");

    // Crates: at least what cargo links into dom0-init and the hypervisor for their targets, and
    // none of their dev-dependencies.
    let listed: BTreeSet<String> = input
        .components
        .iter()
        .flat_map(|c| c.crates.iter().map(|k| format!("{} {}", k.name, k.version)))
        .collect();
    for (package, target) in
        [("dom0-init", "aarch64-unknown-linux-musl"), ("rpixen-hypervisor", "aarch64-unknown-none")]
    {
        let linked = cargo_tree(package, target);
        let missing: Vec<&String> = linked.difference(&listed).collect();
        assert!(
            missing.is_empty(),
            "{package}: crates cargo links but the SBOM lacks: {missing:?}"
        );
    }
    for dev_only in ["testkit", "rpixen", "tempfile"] {
        assert!(
            !listed.iter().any(|k| k.split(' ').next() == Some(dev_only)),
            "dev-dependency {dev_only} listed"
        );
    }
    for k in packages.iter().filter(|p| p["SPDXID"].as_str().unwrap().starts_with("SPDXRef-crate-"))
    {
        if let Some(purl) = k["externalRefs"][0]["referenceLocator"].as_str() {
            assert!(purl.starts_with("pkg:cargo/"), "{purl}");
            assert_eq!(
                k["checksums"][0]["algorithm"], "SHA256",
                "{purl} lacks Cargo.lock's checksum"
            );
        }
    }

    // The image is described, and contains each component.
    let rels = v["relationships"].as_array().unwrap();
    assert!(rels.iter().any(|r| r["spdxElementId"] == "SPDXRef-DOCUMENT"
        && r["relationshipType"] == "DESCRIBES"
        && r["relatedSpdxElement"] == "SPDXRef-Image"));
    let contained = rels
        .iter()
        .filter(|r| r["spdxElementId"] == "SPDXRef-Image" && r["relationshipType"] == "CONTAINS")
        .count();
    assert_eq!(contained, image::PACKAGES.len());
    eprintln!(
        "sbom: {} packages, {} relationships, {} crates",
        packages.len(),
        rels.len(),
        listed.len()
    );
}

#[test]
fn spdx_tools_rejects_a_broken_document() {
    // The independent validator must catch what it is there to catch, or its pass above says nothing.
    let text = sbom::document(&input()).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["relationships"][0]["relatedSpdxElement"] = "SPDXRef-Nowhere".into();
    let dir = tempfile::tempdir_in(&fixture().dir).unwrap();
    let file = dir.path().join("broken.spdx.json");
    std::fs::write(&file, serde_json::to_string(&v).unwrap()).unwrap();
    let o = tool(Command::new("pyspdxtools").args(["-i", s(&file)]));
    let report =
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(
        !o.status.success() || report.contains("SPDXRef-Nowhere"),
        "pyspdxtools accepted a dangling relationship:\n{report}"
    );
}
