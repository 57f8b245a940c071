//! The container's conventions, in EVE's spirit (see the Dockerfile, which sets the variables):
//! - a folder mounted at `$RPIXEN_IN_DIR` (`/in`) overrides files on the CONFIG partition: each file
//!   `/in/REL` becomes CONFIG's `/REL`, replacing the manifest's file of that name;
//! - a folder mounted at `$RPIXEN_OUT_DIR` (`/out`) receives the image (`/out/live.raw` with the
//!   release files `live --xz --bmap --imager-url` add, or `/out/installer.raw`) and the SBOM
//!   (`/out/live.spdx.json`) instead of stdout.
//!
//! Outside the container the variables are unset and nothing changes.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::cli::live::LiveArgs;
use crate::cli::sbom::SbomArgs;
use rpixen::manifest::{FileContent, FileSource, PlacedFile, Plan};

fn mounted(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).map(PathBuf::from).filter(|d| d.is_dir())
}

/// The `/out` folder, when one is mounted.
pub fn out_dir() -> Option<PathBuf> {
    mounted("RPIXEN_OUT_DIR")
}

/// Applies `/out` to `rpixen live`'s arguments: the image goes to `/out/live.raw` unless `-o` says
/// otherwise.
pub fn prepare_live(args: &mut LiveArgs) {
    if args.output.is_none() {
        if let Some(out) = mounted("RPIXEN_OUT_DIR") {
            args.output = Some(out.join("live.raw"));
        }
    }
}

/// Applies `/out` to `rpixen sbom`'s arguments: the document goes to `/out/live.spdx.json` unless
/// `-o` says otherwise.
pub fn prepare_sbom(args: &mut SbomArgs) {
    if args.output.is_none() {
        if let Some(out) = mounted("RPIXEN_OUT_DIR") {
            args.output = Some(out.join("live.spdx.json"));
        }
    }
}

/// Applies `/in` to a plan: each file below it replaces (or adds) the CONFIG file of that path.
pub fn override_config_files(plan: &mut Plan) -> anyhow::Result<()> {
    let Some(in_dir) = mounted("RPIXEN_IN_DIR") else { return Ok(()) };
    for rel in files_under(&in_dir)? {
        let path = format!("/{rel}");
        rpixen::report::status(format_args!("CONFIG{path} from {}", in_dir.join(&rel).display()));
        plan.config_files.retain(|f| f.path.trim_start_matches('/') != rel);
        plan.config_files.push(PlacedFile {
            path,
            content: FileContent::From(FileSource::Host(in_dir.join(&rel))),
            mode: 0o644,
        });
    }
    Ok(())
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
                out.push(
                    rel.components()
                        .map(|c| c.as_os_str().to_string_lossy())
                        .collect::<Vec<_>>()
                        .join("/"),
                );
            }
        }
    }
    out.sort();
    Ok(out)
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
