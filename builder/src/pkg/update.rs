//! `rpixen pkg update`: re-pins each `.deb` of a package to the version the archive serves now, as apt's
//! signature-checked index lists it (`apt-cache show`: Version, Architecture, SHA256). The definition
//! file is edited in place, line by line, so its comments and layout survive.

use std::path::Path;

use super::apt::{Apt, Stanza};
use super::def::PkgDef;
use super::{PkgError, PkgOptions};

/// One re-pinned `.deb`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repin {
    pub old_package: String,
    pub old_version: String,
    pub new: Stanza,
}

/// Re-pins the package in `pkg_dir`; returns what changed (empty when already current).
pub fn update(pkg_dir: &Path, opts: &PkgOptions) -> Result<Vec<Repin>, PkgError> {
    let def = PkgDef::load(pkg_dir)?;
    if def.debs.is_empty() {
        return Ok(Vec::new());
    }
    let mut apt = Apt::open(&opts.apt_dir, def.suite.as_deref().unwrap_or_default())?;
    apt.update()?;
    let mut repins = Vec::new();
    for deb in &def.debs {
        let name = match &deb.follows {
            Some(meta) => {
                apt.show(meta)?.depends.into_iter().next().ok_or_else(|| PkgError::Def {
                    path: def.path.clone(),
                    source: format!("`follows: {meta}`: {meta} has no dependency to follow").into(),
                })?
            }
            None => deb.package.clone(),
        };
        let current = apt.show(&name)?;
        if current.arch != deb.arch {
            return Err(PkgError::Def {
                path: def.path.clone(),
                source: format!(
                    "{name}: the archive serves {}, the pin says {}",
                    current.arch, deb.arch
                )
                .into(),
            });
        }
        if current.package != deb.package
            || current.version != deb.version
            || current.sha256 != deb.sha256
        {
            repins.push(Repin {
                old_package: deb.package.clone(),
                old_version: deb.version.clone(),
                new: current,
            });
        }
    }
    if !repins.is_empty() {
        let text = std::fs::read_to_string(&def.path)
            .map_err(|source| PkgError::Io { path: def.path.clone(), source })?;
        let new_text = repin_text(&text, &repins)
            .map_err(|message| PkgError::Def { path: def.path.clone(), source: message.into() })?;
        // Check the edit before replacing the file.
        PkgDef::parse(&new_text, &def.name, &def.path)?;
        let tmp = def.path.with_extension("yml.tmp");
        std::fs::write(&tmp, new_text)
            .map_err(|source| PkgError::Io { path: tmp.clone(), source })?;
        std::fs::rename(&tmp, &def.path)
            .map_err(|source| PkgError::Io { path: def.path.clone(), source })?;
    }
    Ok(repins)
}

/// Rewrites the `package:`, `version:` and `sha256:` lines of each re-pinned `.deb` entry (the lines
/// from its `- package: NAME` up to the next list item at the same indentation).
pub fn repin_text(text: &str, repins: &[Repin]) -> Result<String, String> {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for r in repins {
        let start = lines
            .iter()
            .position(|l| {
                let t = l.trim_start();
                t.strip_prefix("- package:").map(|v| unquote(v.trim()))
                    == Some(r.old_package.as_str())
            })
            .ok_or_else(|| format!("no `- package: {}` entry", r.old_package))?;
        let dash_indent = indent(&lines[start]);
        let mut i = start;
        while i < lines.len() {
            if i > start {
                let l = &lines[i];
                let t = l.trim_start();
                if !t.is_empty() && !t.starts_with('#') && indent(l) <= dash_indent {
                    break;
                }
            }
            let l = lines[i].clone();
            let (prefix, body) = l.split_at(indent(&l));
            let (dash, body) = match body.strip_prefix("- ") {
                Some(b) => ("- ", b),
                None => ("", body),
            };
            let replace = |key: &str, value: &str| -> Option<String> {
                body.strip_prefix(key).map(|_| format!("{prefix}{dash}{key} {value}"))
            };
            if let Some(new) = replace("package:", &r.new.package)
                .or_else(|| replace("version:", &quote(&r.new.version)))
                .or_else(|| replace("sha256:", &r.new.sha256))
            {
                lines[i] = new;
            }
            i += 1;
        }
    }
    let mut out = lines.join("\n");
    if text.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

fn indent(l: &str) -> usize {
    l.len() - l.trim_start().len()
}

fn unquote(v: &str) -> &str {
    v.trim_matches(|c| c == '"' || c == '\'')
}

/// Versions with an epoch (`1:1.37.0-6`) are quoted so YAML keeps them strings.
fn quote(v: &str) -> String {
    if v.contains(':') {
        format!("\"{v}\"")
    } else {
        v.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repins_only_the_named_entry() {
        let text = "# keep me\nsuite: trixie\ndebs:\n  - package: a\n    version: \"1:1-1\"\n    arch: arm64\n    sha256: aaaa\n    files:\n      - {from: x, to: y}\n  - package: b\n    version: 2-1\n    sha256: bbbb\n";
        let r = Repin {
            old_package: "a".into(),
            old_version: "1:1-1".into(),
            new: Stanza {
                package: "a".into(),
                version: "1:1-2".into(),
                arch: "arm64".into(),
                sha256: "cccc".into(),
                depends: vec![],
            },
        };
        let out = repin_text(text, &[r]).unwrap();
        assert!(out.starts_with("# keep me\n"));
        assert!(
            out.contains("    version: \"1:1-2\"\n    arch: arm64\n    sha256: cccc\n"),
            "{out}"
        );
        assert!(out.contains("  - package: b\n    version: 2-1\n    sha256: bbbb\n"), "{out}");
    }
}
