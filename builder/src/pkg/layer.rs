//! The single layer of a package image, written as a reproducible tar: entries in the order they are
//! added, parent folders before their contents, owner root, mtime 0, so the same inputs always give the
//! same layer digest.

use std::collections::BTreeSet;
use std::io::{Read, Write};

use super::PkgError;
use crate::error::context;

pub struct LayerTar<W: Write> {
    tar: tar::Builder<W>,
    seen: BTreeSet<String>,
}

impl<W: Write> LayerTar<W> {
    pub fn new(out: W) -> LayerTar<W> {
        let mut tar = tar::Builder::new(out);
        tar.mode(tar::HeaderMode::Deterministic);
        LayerTar { tar, seen: BTreeSet::new() }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h
    }

    /// Claims `path`: two sources writing the same image path is a definition error.
    fn claim(&mut self, path: &str) -> Result<(), PkgError> {
        self.parents(path)?;
        if !self.seen.insert(path.to_owned()) {
            return Err(PkgError::Layer(format!("two sources write `{path}`").into()));
        }
        Ok(())
    }

    fn parents(&mut self, path: &str) -> Result<(), PkgError> {
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            let parent = &path[..end + i];
            end += i + 1;
            if self.seen.insert(parent.to_owned()) {
                let mut h = Self::header(tar::EntryType::Directory, 0o755, 0);
                self.tar
                    .append_data(&mut h, format!("{parent}/"), std::io::empty())
                    .map_err(write_err)?;
            }
        }
        Ok(())
    }

    /// A folder; adding one that is already there (as a parent) is fine.
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<(), PkgError> {
        self.parents(path)?;
        if self.seen.insert(path.to_owned()) {
            let mut h = Self::header(tar::EntryType::Directory, mode, 0);
            self.tar
                .append_data(&mut h, format!("{path}/"), std::io::empty())
                .map_err(write_err)?;
        }
        Ok(())
    }

    pub fn file(
        &mut self,
        path: &str,
        mode: u32,
        size: u64,
        data: impl Read,
    ) -> Result<(), PkgError> {
        self.claim(path)?;
        let mut h = Self::header(tar::EntryType::Regular, mode, size);
        self.tar.append_data(&mut h, path, data).map_err(write_err)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), PkgError> {
        self.claim(path)?;
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.tar.append_link(&mut h, path, target).map_err(write_err)
    }

    /// A hard link to `target`, an image path written earlier.
    pub fn hardlink(&mut self, path: &str, target: &str) -> Result<(), PkgError> {
        if !self.seen.contains(target) {
            return Err(PkgError::Layer(
                format!("hard link `{path}` points at `{target}`, which is not in the image")
                    .into(),
            ));
        }
        self.claim(path)?;
        let mut h = Self::header(tar::EntryType::Link, 0o644, 0);
        self.tar.append_link(&mut h, path, target).map_err(write_err)
    }

    /// Whether an image path was written.
    pub fn contains(&self, path: &str) -> bool {
        self.seen.contains(path)
    }

    pub fn finish(self) -> Result<W, PkgError> {
        self.tar.into_inner().map_err(write_err)
    }
}

fn write_err(e: std::io::Error) -> PkgError {
    PkgError::Layer(context("writing the layer")(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_first_and_duplicates_refused() {
        let mut l = LayerTar::new(Vec::new());
        l.file("bin/busybox", 0o755, 3, &b"abc"[..]).unwrap();
        l.symlink("bin/sh", "busybox").unwrap();
        let err = l.symlink("bin/sh", "busybox").unwrap_err();
        assert!(crate::error::one_line(&err).contains("bin/sh"), "{err}");
        let bytes = l.finish().unwrap();
        let mut a = tar::Archive::new(&bytes[..]);
        let names: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["bin/", "bin/busybox", "bin/sh"]);
    }

    #[test]
    fn same_input_same_bytes() {
        let make = || {
            let mut l = LayerTar::new(Vec::new());
            l.file("a/b/c", 0o644, 1, &b"x"[..]).unwrap();
            l.finish().unwrap()
        };
        assert_eq!(make(), make());
    }
}
