//! Release files next to a written `live.raw`: multi-block xz, bmaptool block map, sha256 sums and an
//! rpi-imager repository entry, written by `rpixen-release`. The block map's ranges are the
//! layout's own [`Disk::mapped`], never holes found in the written file (a pipe or `docker run >`
//! has none, and zero FAT sectors must still be written to a used card).

use std::path::{Path, PathBuf};

use rpixen_release::imager::ImagerMeta;
use rpixen_release::xz::XzOptions;
use rpixen_release::{Release, ReleaseError, ReleaseRequest};

use crate::disk::Disk;
use crate::manifest::BoardKind;

#[derive(Debug, thiserror::Error)]
pub enum ReleaseOutputError {
    #[error("{path}: the release files need a folder and a file name for the image")]
    Path { path: PathBuf },
    #[error("--imager-url: {message}")]
    Imager { message: String },
    #[error("rpi-imager's release_date")]
    ReleaseDate(#[source] rpixen_release::date::EpochError),
    #[error("release files for {path}")]
    Write { path: PathBuf, source: ReleaseError },
}

/// Which release files to write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleaseOptions {
    pub xz: bool,
    pub bmap: bool,
    /// `FILE.sha256` (also written whenever any other release file is).
    pub sha256: bool,
    pub imager: Option<ImagerOptions>,
}

impl ReleaseOptions {
    pub fn any(&self) -> bool {
        self.xz || self.bmap || self.sha256 || self.imager.is_some()
    }
}

/// What a user says about the rpi-imager entry; the rest comes from the board and the files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImagerOptions {
    /// Where the image will be downloaded from (the published `.xz`).
    pub url: String,
    /// Default: `icon.png` in the download URL's folder.
    pub icon: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub website: Option<String>,
    /// Default: the board's tags ([`device_tags`]).
    pub devices: Vec<String>,
}

/// rpi-imager's device tags for a board. Imager matches a BCM2711 (Pi 4, Pi 400, CM4) by the `pi4-`
/// prefix (`src/hwlistmodel.cpp`, `tagsMatchChip`), and its device list names the 64-bit Pi 4 OS
/// family `pi4-64bit`. QEMU `virt` is not a device Imager writes for.
pub fn device_tags(kind: BoardKind) -> Vec<String> {
    match kind {
        BoardKind::Rpi4 => vec!["pi4-64bit".to_owned()],
        BoardKind::QemuVirt => Vec::new(),
    }
}

/// The imager entry's metadata, checked before the build starts.
pub fn imager_meta(
    opts: &ImagerOptions,
    board: &str,
    kind: BoardKind,
    epoch: u64,
) -> Result<ImagerMeta, ReleaseOutputError> {
    let bad = |message: String| ReleaseOutputError::Imager { message };
    let url = opts.url.trim();
    let Some((folder, _)) =
        url.rsplit_once('/').filter(|(f, n)| f.contains("://") && !n.is_empty())
    else {
        return Err(bad(format!("`{url}` is not a URL of a file (https://HOST/PATH/live.raw.xz)")));
    };
    let devices = if opts.devices.is_empty() { device_tags(kind) } else { opts.devices.clone() };
    if devices.is_empty() {
        return Err(bad(format!(
            "board `{board}` is no Raspberry Pi device rpi-imager lists; name its tag with --imager-device"
        )));
    }
    Ok(ImagerMeta {
        name: opts.name.clone().unwrap_or_else(|| format!("rpixen ({board})")),
        description: opts.description.clone().unwrap_or_else(|| {
            format!("rpixen edge OS for {board}: Rust hypervisor, Dom0 Linux, root filesystem from OCI images")
        }),
        icon: opts.icon.clone().unwrap_or_else(|| format!("{folder}/icon.png")),
        url: url.to_owned(),
        release_date: rpixen_release::date::release_date(epoch).map_err(ReleaseOutputError::ReleaseDate)?,
        devices,
        website: opts.website.clone(),
        architecture: Some("armv8".to_owned()),
        bmap_url: None,
    })
}

/// Reads the image written at `image` once and writes the requested release files beside it.
pub fn write(
    disk: &Disk,
    image: &Path,
    opts: &ReleaseOptions,
    imager: Option<&ImagerMeta>,
) -> Result<Release, ReleaseOutputError> {
    let path_err = || ReleaseOutputError::Path { path: image.to_owned() };
    let name = image.file_name().and_then(|n| n.to_str()).ok_or_else(path_err)?;
    let dir = match image.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let werr = |source| ReleaseOutputError::Write { path: image.to_owned(), source };
    let (file, size) = rpixen_release::open_image(image).map_err(werr)?;
    if size != disk.len {
        return Err(werr(ReleaseError::ImageSize { expected: disk.len, got: size }));
    }
    let data: Vec<std::ops::Range<u64>> = disk.mapped.clone();
    rpixen_release::write_release(
        std::io::BufReader::with_capacity(1 << 20, file),
        &ReleaseRequest {
            dir,
            base_name: name,
            image_size: disk.len,
            data: &data,
            xz: opts.xz.then(XzOptions::default),
            bmap: opts.bmap,
            imager,
        },
    )
    .map_err(werr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imager_defaults_come_from_the_board() {
        let o = ImagerOptions {
            url: "https://example.org/r/1.0/live.raw.xz".into(),
            ..Default::default()
        };
        let m = imager_meta(&o, "rpi4", BoardKind::Rpi4, 1_700_000_000).unwrap();
        assert_eq!(m.devices, ["pi4-64bit"]);
        assert_eq!(m.icon, "https://example.org/r/1.0/icon.png");
        assert_eq!(m.release_date, "2023-11-14");
        let e = imager_meta(&o, "qemu-virt", BoardKind::QemuVirt, 0).unwrap_err().to_string();
        assert!(e.contains("--imager-device") && e.contains("qemu-virt"), "{e}");
        let e = imager_meta(
            &ImagerOptions { url: "live.raw.xz".into(), ..o },
            "rpi4",
            BoardKind::Rpi4,
            0,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`live.raw.xz`"), "{e}");
    }
}
