//! rpi-imager's repository JSON (`{"os_list": [...]}`), the file `rpi-imager --repo FILE-or-URL`
//! reads and that Imager 2.x opens on double-click when it ends in `.rpi-imager-manifest`.
//!
//! Fields from raspberrypi/rpi-imager `doc/json-schema/os-list-schema.json` and
//! `src/oslistmodel.cpp` (read at 72ad1179): an OS entry requires `name`, `description`, `icon`,
//! `url`, `extract_size`, `extract_sha256`, `image_download_size`, `release_date`, `devices`.
//! `image_download_sha256` is what Imager's download cache checks (`src/cachemanager.h`), and
//! `init_format` must be set or Imager 2.x offers no customisation (hostname, SSH key, Wi-Fi).

use serde::Serialize;

use crate::digest::Digest;

/// rpi-imager writes `meta-data`, `user-data` and `network-config` (NoCloud) to partition 1.
pub const INIT_FORMAT: &str = "cloudinit";

/// What the builder knows about the release; digests and sizes come from the written files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagerMeta {
    /// Shown in "CHOOSE OS".
    pub name: String,
    pub description: String,
    /// URL of a 40x40 PNG or SVG.
    pub icon: String,
    /// Where the compressed image will be downloaded from (ends in `.xz`).
    pub url: String,
    /// The release date, `YYYY-MM-DD` (see [`crate::date::release_date`]).
    pub release_date: String,
    /// Device tags of Imager's device list (`pi4-64bit`, ...).
    pub devices: Vec<String>,
    /// Shown as the (i) link.
    pub website: Option<String>,
    /// `armv8` for arm64 images: Imager sorts by it when a device prefers an architecture.
    pub architecture: Option<String>,
    /// URL of the `.bmap` (Imager uses it for fastboot writes only).
    pub bmap_url: Option<String>,
}

/// One `os_list` entry, in the schema's field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OsEntry {
    pub name: String,
    pub description: String,
    pub icon: String,
    pub url: String,
    pub release_date: String,
    pub extract_size: u64,
    pub extract_sha256: String,
    pub image_download_size: u64,
    pub image_download_sha256: String,
    pub devices: Vec<String>,
    pub init_format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub website: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bmap_url: Option<String>,
}

/// The repository's own device list (`imager.devices`). Imager fills its "CHOOSE DEVICE" step only
/// from the `imager` object of the list it loaded (`src/hwlistmodel.cpp`), and a repository given
/// with `--repo` replaces the official one, device list included: without its own list the picker
/// is empty and an entry filtered by `devices` is never offered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImagerSection {
    pub devices: Vec<Device>,
}

/// One `imager.devices` entry (schema: `name`, `description`, `tags` required).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    /// `exclusive`: only entries whose `devices` name one of `tags` are listed for it.
    pub matching_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Repository {
    pub imager: ImagerSection,
    pub os_list: Vec<OsEntry>,
}

/// The device a tag stands for, in the names of Raspberry Pi's own list; Imager matches a BCM2711
/// board by the `pi4-` prefix (`HWListModel::tagsMatchChip`).
fn device_for(tag: &str, architecture: Option<&str>) -> Device {
    let (name, description) = match tag.split('-').next().unwrap_or(tag) {
        "pi5" => ("Raspberry Pi 5", "Raspberry Pi 5, 500 and Compute Module 5"),
        "pi4" => ("Raspberry Pi 4", "Raspberry Pi 4 Model B, 400 and Compute Module 4"),
        "pi3" => ("Raspberry Pi 3", "Raspberry Pi 3 Model B/B+/A+ and Zero 2 W"),
        _ => (tag, tag),
    };
    Device {
        name: name.to_owned(),
        description: description.to_owned(),
        tags: vec![tag.to_owned()],
        matching_type: "exclusive",
        architecture: architecture.map(str::to_owned),
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImagerError {
    #[error("rpi-imager entry: field `{field}`: {message}")]
    Field { field: &'static str, message: String },
}

/// The entry for a raw image (`extract_*`) distributed compressed (`image_download_*`).
pub fn os_entry(
    meta: &ImagerMeta,
    raw: &Digest,
    download: &Digest,
) -> Result<OsEntry, ImagerError> {
    let bad = |field, message: &str| Err(ImagerError::Field { field, message: message.to_owned() });
    for (field, value) in [
        ("name", &meta.name),
        ("description", &meta.description),
        ("icon", &meta.icon),
        ("url", &meta.url),
    ] {
        if value.trim().is_empty() {
            return bad(field, "must not be empty");
        }
    }
    if !is_date(&meta.release_date) {
        return bad("release_date", &format!("`{}` is not YYYY-MM-DD", meta.release_date));
    }
    if meta.devices.is_empty() || meta.devices.iter().any(|d| d.trim().is_empty()) {
        return bad(
            "devices",
            "name at least one device tag (Imager lists the OS only for matching devices)",
        );
    }
    Ok(OsEntry {
        name: meta.name.clone(),
        description: meta.description.clone(),
        icon: meta.icon.clone(),
        url: meta.url.clone(),
        release_date: meta.release_date.clone(),
        extract_size: raw.size,
        extract_sha256: raw.sha256.clone(),
        image_download_size: download.size,
        image_download_sha256: download.sha256.clone(),
        devices: meta.devices.clone(),
        init_format: INIT_FORMAT,
        website: meta.website.clone(),
        architecture: meta.architecture.clone(),
        bmap_url: meta.bmap_url.clone(),
    })
}

/// The repository file's text (pretty, with a trailing newline), with a device list naming every
/// device tag the entries use, in first-use order.
pub fn repository_json(entries: Vec<OsEntry>) -> String {
    let mut devices: Vec<Device> = Vec::new();
    for e in &entries {
        for tag in &e.devices {
            if !devices.iter().any(|d| d.tags.contains(tag)) {
                devices.push(device_for(tag, e.architecture.as_deref()));
            }
        }
    }
    let repo = Repository { imager: ImagerSection { devices }, os_list: entries };
    let mut s = serde_json::to_string_pretty(&repo).expect("plain data serialises");
    s.push('\n');
    s
}

fn is_date(s: &str) -> bool {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() && s.len() == 10
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> ImagerMeta {
        ImagerMeta {
            name: "rpixen".into(),
            description: "edge OS".into(),
            icon: "https://example.org/i.png".into(),
            url: "https://example.org/live.raw.xz".into(),
            release_date: "2023-11-14".into(),
            devices: vec!["pi4-64bit".into()],
            website: Some("https://example.org".into()),
            architecture: Some("armv8".into()),
            bmap_url: None,
        }
    }

    #[test]
    fn entry_carries_digests_and_cloudinit() {
        let raw = Digest { size: 10, sha256: "a".repeat(64) };
        let xz = Digest { size: 3, sha256: "b".repeat(64) };
        let json = repository_json(vec![os_entry(&meta(), &raw, &xz).unwrap()]);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let e = &v["os_list"][0];
        assert_eq!(e["extract_size"], 10);
        assert_eq!(e["extract_sha256"], "a".repeat(64));
        assert_eq!(e["image_download_size"], 3);
        assert_eq!(e["image_download_sha256"], "b".repeat(64));
        assert_eq!(e["init_format"], "cloudinit");
        assert_eq!(e["devices"][0], "pi4-64bit");
        assert!(e.get("bmap_url").is_none());
        // Loaded with `--repo`, the file brings its own device for the entry's tag.
        let d = &v["imager"]["devices"];
        assert_eq!(d.as_array().unwrap().len(), 1);
        assert_eq!(d[0]["name"], "Raspberry Pi 4");
        assert_eq!(d[0]["tags"], serde_json::json!(["pi4-64bit"]));
        assert_eq!(d[0]["matching_type"], "exclusive");
    }

    #[test]
    fn bad_fields_are_named() {
        let d = Digest { size: 1, sha256: "a".repeat(64) };
        let e = os_entry(&ImagerMeta { release_date: "2023-13-01".into(), ..meta() }, &d, &d)
            .unwrap_err();
        assert!(e.to_string().contains("release_date"), "{e}");
        let e = os_entry(&ImagerMeta { devices: vec![], ..meta() }, &d, &d).unwrap_err();
        assert!(e.to_string().contains("devices"), "{e}");
        let e = os_entry(&ImagerMeta { icon: " ".into(), ..meta() }, &d, &d).unwrap_err();
        assert!(e.to_string().contains("`icon`"), "{e}");
    }
}
