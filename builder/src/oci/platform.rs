//! The platform (`os/arch[/variant]`) an image index is resolved for.

use std::fmt;

use oci_spec::image::Descriptor;

/// `linux/arm64/v8` unless told otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Default for Platform {
    fn default() -> Self {
        Platform { os: "linux".into(), architecture: "arm64".into(), variant: Some("v8".into()) }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Platform {
    type Err = String;

    /// Parses `os/arch[/variant]`, e.g. `linux/arm64/v8` or `linux/amd64`.
    fn from_str(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => {
                Ok(Platform { os: (*os).into(), architecture: (*arch).into(), variant: None })
            }
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
                Ok(Platform {
                    os: (*os).into(),
                    architecture: (*arch).into(),
                    variant: Some((*variant).into()),
                })
            }
            _ => Err(format!(
                "`{s}` is not a platform (expected os/arch[/variant], e.g. linux/arm64/v8)"
            )),
        }
    }
}

impl Platform {
    /// Whether an index entry's platform matches. arm64 images often omit the variant; a missing
    /// variant matches `v8` (the only arm64 variant in use), as in containerd's matcher.
    pub fn matches(&self, os: &str, arch: &str, variant: Option<&str>) -> bool {
        if self.os != os || self.architecture != arch {
            return false;
        }
        let norm = |v: Option<&str>| match (arch, v) {
            ("arm64", None) => Some("v8".to_owned()),
            (_, v) => v.map(str::to_owned),
        };
        match &self.variant {
            None => true,
            Some(_) => norm(self.variant.as_deref()) == norm(variant),
        }
    }

    /// Picks the manifest for this platform from an index's entries; `Err` lists what is there.
    pub fn select<'a>(&self, manifests: &'a [Descriptor]) -> Result<&'a Descriptor, String> {
        let mut available = Vec::new();
        for d in manifests {
            match d.platform() {
                Some(p) => {
                    let os = p.os().to_string();
                    let arch = p.architecture().to_string();
                    if self.matches(&os, &arch, p.variant().as_deref()) {
                        return Ok(d);
                    }
                    let v = p.variant().as_ref().map(|v| format!("/{v}")).unwrap_or_default();
                    available.push(format!("{os}/{arch}{v}"));
                }
                None => available.push("(no platform)".into()),
            }
        }
        Err(if available.is_empty() { "nothing".into() } else { available.join(", ") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_defaults() {
        let p = Platform::default();
        assert!(p.matches("linux", "arm64", None));
        assert!(p.matches("linux", "arm64", Some("v8")));
        assert!(!p.matches("linux", "arm64", Some("v9")));
        assert!(!p.matches("linux", "amd64", None));
        let any: Platform = "linux/amd64".parse().unwrap();
        assert!(any.matches("linux", "amd64", Some("v3")));
        assert!("linux".parse::<Platform>().is_err());
    }
}
