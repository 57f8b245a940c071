//! The container's conventions, in EVE's spirit (see the Dockerfile, which sets the variables):
//! - a folder mounted at `$RPIXEN_IN_DIR` (`/in`) overrides files on the CONFIG partition: each file
//!   `/in/REL` becomes CONFIG's `/REL`, replacing the manifest's file of that name;
//! - a folder mounted at `$RPIXEN_OUT_DIR` (`/out`) receives the image (`/out/live.raw`) instead of stdout.
//!
//! Outside the container the variables are unset and nothing changes.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::cli::live::LiveArgs;
use rpixen::manifest::{FileRef, InlineFile};

fn mounted(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).map(PathBuf::from).filter(|d| d.is_dir())
}

/// Applies `/in` and `/out` to `rpixen live`'s arguments. The returned file is the manifest with the
/// `/in` files added, written beside the original (so its relative paths still resolve); keep it until
/// the image is written.
pub fn prepare_live(args: &mut LiveArgs) -> anyhow::Result<Option<tempfile::NamedTempFile>> {
    if args.output.is_none() {
        if let Some(out) = mounted("RPIXEN_OUT_DIR") {
            args.output = Some(out.join("live.raw"));
        }
    }
    let Some(in_dir) = mounted("RPIXEN_IN_DIR") else { return Ok(None) };
    let files = files_under(&in_dir)?;
    if files.is_empty() {
        return Ok(None);
    }
    let (mut manifest, dir) = crate::cli::live::load_target(&args.target)?;
    for rel in files {
        let path = format!("/{rel}");
        eprintln!("rpixen: CONFIG{path} from {}", in_dir.join(&rel).display());
        manifest.config_files.retain(|f| f.path.trim_start_matches('/') != rel);
        manifest.config_files.push(InlineFile {
            path,
            contents: None,
            source: Some(FileRef::Host { file: in_dir.join(&rel) }),
            mode: None,
        });
    }
    let text = serde_norway::to_string(&manifest).context("serializing the manifest with /in files")?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".rpixen-in-")
        .suffix(".yml")
        .tempfile_in(&dir)
        .with_context(|| format!("writing a manifest beside {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())?;
    args.target = tmp.path().display().to_string();
    Ok(Some(tmp))
}

/// Regular files below `dir`, as sorted `/`-separated relative paths.
fn files_under(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| d.display().to_string())? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.is_file() {
                let rel = p.strip_prefix(dir).expect("below dir");
                out.push(rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `rpixen installer_raw`: EVE's installer image. Not built yet; says so and fails.
pub fn installer_raw() -> anyhow::Result<()> {
    anyhow::bail!(
        "installer_raw is not yet available in rpixen: write the image with `live` and flash it directly \
         (see README, Flashing)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_nested_files_sorted() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("b/c")).unwrap();
        std::fs::write(d.path().join("b/c/x"), b"1").unwrap();
        std::fs::write(d.path().join("a"), b"2").unwrap();
        assert_eq!(files_under(d.path()).unwrap(), ["a", "b/c/x"]);
    }
}
