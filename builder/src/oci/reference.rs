//! Image references, per the package-name rule: a bare name (`busybox`) is the layout of that package,
//! `oci:DIR[:TAG]` (or `oci:DIR@sha256:...`) a layout on disk, anything else a registry reference.

use std::path::PathBuf;

use super::{OciError, OciOptions};
use crate::error::Cause;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// An OCI image layout on disk; `tag` is a `org.opencontainers.image.ref.name` or a digest.
    Layout {
        dir: PathBuf,
        tag: String,
    },
    Registry(oci_client::Reference),
}

impl ImageRef {
    pub fn parse(text: &str, opts: &OciOptions) -> Result<ImageRef, OciError> {
        let bad = |source: Cause| OciError::Reference { reference: text.to_owned(), source };
        if text.is_empty() {
            return Err(bad("empty".into()));
        }
        if let Some(rest) = text.strip_prefix("oci:") {
            let (dir, tag) = split_layout(rest);
            if dir.is_empty() {
                return Err(bad("no directory after `oci:`".into()));
            }
            return Ok(ImageRef::Layout { dir: PathBuf::from(dir), tag: tag.to_owned() });
        }
        if !text.contains(['/', ':', '@']) {
            return Ok(ImageRef::Layout { dir: opts.pkg_dir.join(text), tag: "latest".into() });
        }
        text.parse::<oci_client::Reference>().map(ImageRef::Registry).map_err(|e| bad(e.into()))
    }
}

/// Splits `DIR[:TAG]` / `DIR@DIGEST`; a `:` before the last `/` belongs to the directory.
fn split_layout(s: &str) -> (&str, &str) {
    if let Some((dir, digest)) = s.rsplit_once('@') {
        return (dir, digest);
    }
    match s.rsplit_once(':') {
        Some((dir, tag)) if !tag.contains('/') && !tag.is_empty() => (dir, tag),
        _ => (s, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> OciOptions {
        OciOptions { pkg_dir: "/pkgs".into(), ..OciOptions::from_env() }
    }

    #[test]
    fn forms() {
        let o = opts();
        assert_eq!(
            ImageRef::parse("busybox", &o).unwrap(),
            ImageRef::Layout { dir: "/pkgs/busybox".into(), tag: "latest".into() }
        );
        assert_eq!(
            ImageRef::parse("oci:/a/b:v1", &o).unwrap(),
            ImageRef::Layout { dir: "/a/b".into(), tag: "v1".into() }
        );
        assert_eq!(
            ImageRef::parse("oci:rel/dir", &o).unwrap(),
            ImageRef::Layout { dir: "rel/dir".into(), tag: "latest".into() }
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            ImageRef::parse(&format!("oci:x@{d}"), &o).unwrap(),
            ImageRef::Layout { dir: "x".into(), tag: d.clone() }
        );
        match ImageRef::parse("127.0.0.1:5000/test/img:v2", &o).unwrap() {
            ImageRef::Registry(r) => {
                assert_eq!(r.registry(), "127.0.0.1:5000");
                assert_eq!(r.repository(), "test/img");
                assert_eq!(r.tag(), Some("v2"));
            }
            other => panic!("{other:?}"),
        }
        assert!(ImageRef::parse("oci:", &o).is_err());
        assert!(ImageRef::parse("Bad Name:x/", &o).is_err());
    }
}
