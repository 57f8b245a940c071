//! The agent's status: what it reports (the step, as EVE's `ZInfoDevSW` names them) and what it
//! must remember across reboots (what each slot holds, the update under way, the digests that
//! failed). One JSON file on PERSIST, replaced atomically, read by `rpixen-agent status`.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rpixen_slot_state::record::Slot;
use serde::{Deserialize, Serialize};

/// Where the file lives on a device.
pub const DEFAULT_PATH: &str = "/persist/rpixen-agent/status.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Step {
    /// Nothing to do: the running slot holds what the reference names (or updates are not set up).
    Idle,
    Downloading,
    Updating,
    Testing,
    Updated,
    Fallback,
    Failed,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Idle => "IDLE",
            Step::Downloading => "DOWNLOADING",
            Step::Updating => "UPDATING",
            Step::Testing => "TESTING",
            Step::Updated => "UPDATED",
            Step::Fallback => "FALLBACK",
            Step::Failed => "FAILED",
        }
    }
}

/// A slot artifact, by digest (and version annotation when known).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The slot image's sha256 (the `dev.rpixen.slot.image.digest` annotation): what the slot's
    /// bytes hash to, whichever manifest (re-signed, re-tagged) carried it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

impl std::fmt::Display for Artifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{v} ({})", self.digest),
            None => write!(f, "{}", self.digest),
        }
    }
}

/// The update under way: what goes into which slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub slot: SlotName,
    pub artifact: Artifact,
    /// When the poll that found it began (ms since the Unix epoch), for the poll-to-commit time.
    pub polled_at_ms: u64,
}

/// `a` / `b` in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotName {
    A,
    B,
}

impl From<Slot> for SlotName {
    fn from(s: Slot) -> SlotName {
        match s {
            Slot::A => SlotName::A,
            Slot::B => SlotName::B,
        }
    }
}

impl From<SlotName> for Slot {
    fn from(s: SlotName) -> Slot {
        match s {
            SlotName::A => Slot::A,
            SlotName::B => Slot::B,
        }
    }
}

impl SlotName {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotName::A => "a",
            SlotName::B => "b",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slots {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a: Option<Artifact>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b: Option<Artifact>,
}

impl Slots {
    pub fn get(&self, s: Slot) -> Option<&Artifact> {
        match s {
            Slot::A => self.a.as_ref(),
            Slot::B => self.b.as_ref(),
        }
    }

    pub fn set(&mut self, s: Slot, a: Option<Artifact>) {
        match s {
            Slot::A => self.a = a,
            Slot::B => self.b = a,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub step: Step,
    /// The slot running when this was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<SlotName>,
    /// The reference followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// A line for people: what happened last (the error for FAILED).
    pub message: String,
    #[serde(default)]
    pub slots: Slots,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// Digests whose trial failed: not tried again.
    #[serde(default)]
    pub failed: Vec<String>,
    /// The last update's time from the poll that found it to the commit, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_to_commit_ms: Option<u64>,
    /// When this was written, ms since the Unix epoch.
    pub at_ms: u64,
}

impl Default for Status {
    fn default() -> Status {
        Status {
            step: Step::Idle,
            running: None,
            reference: None,
            message: "no update yet".into(),
            slots: Slots::default(),
            target: None,
            failed: Vec::new(),
            poll_to_commit_ms: None,
            at_ms: 0,
        }
    }
}

/// What `rpixen-agent status` prints for people.
pub fn human(s: &Status) -> String {
    let mut out = format!("step:      {}\nmessage:   {}\n", s.step.as_str(), s.message);
    if let Some(r) = s.running {
        out += &format!("running:   slot {}\n", r.as_str());
    }
    if let Some(r) = &s.reference {
        out += &format!("following: {r}\n");
    }
    for (name, a) in [("slot a", &s.slots.a), ("slot b", &s.slots.b)] {
        let text = a.as_ref().map_or("unknown".to_owned(), |a| a.to_string());
        out += &format!("{name}:    {text}\n");
    }
    if let Some(t) = &s.target {
        out += &format!("target:    slot {}: {}\n", t.slot.as_str(), t.artifact);
    }
    for d in &s.failed {
        out += &format!("failed:    {d} (not retried)\n");
    }
    if let Some(ms) = s.poll_to_commit_ms {
        out += &format!("last update took {ms} ms from poll to commit\n");
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not an agent status file")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Reads the status file; None when there is none yet.
pub fn load(path: &Path) -> Result<Option<Status>, StatusError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StatusError::Io { path: path.to_owned(), source }),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| StatusError::Parse { path: path.to_owned(), source })
}

/// Replaces the file so that a power cut leaves the old version or the new one, whole: temp file,
/// fsync, rename, fsync of the folder.
pub fn store(path: &Path, status: &Status) -> Result<(), StatusError> {
    let io = |p: &Path| {
        let p = p.to_owned();
        move |source| StatusError::Io { path: p, source }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = path.with_extension("json.tmp");
    let mut json = serde_json::to_vec_pretty(status).expect("status serializes");
    json.push(b'\n');
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(&json).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io(path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
        let v2 = Artifact { digest: "sha256:22".into(), version: Some("v2".into()), image: None };
        Status {
            step: Step::Updated,
            running: Some(SlotName::B),
            reference: Some("10.0.2.2:5000/fleet/virt:stable".into()),
            message: "committed v2".into(),
            slots: Slots {
                a: Some(Artifact { digest: "sha256:11".into(), version: None, image: None }),
                b: Some(v2),
            },
            target: None,
            failed: vec!["sha256:33".into()],
            poll_to_commit_ms: Some(4200),
            at_ms: 1,
        }
    }

    #[test]
    fn json_names_the_steps_as_eve_does_and_round_trips() {
        let s = sample();
        let json = serde_json::to_string(&s).unwrap();
        assert!(
            json.contains(r#""step":"UPDATED""#) && json.contains(r#""running":"b""#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), s);
        for step in [Step::Idle, Step::Downloading, Step::Fallback, Step::Failed, Step::Testing] {
            let j = serde_json::to_string(&step).unwrap();
            assert_eq!(j, format!("\"{}\"", step.as_str()));
        }
    }

    #[test]
    fn human_text() {
        let text = human(&sample());
        assert!(text.starts_with("step:      UPDATED\n"), "{text}");
        assert!(text.contains("slot b:    v2 (sha256:22)"), "{text}");
        assert!(text.contains("failed:    sha256:33 (not retried)"), "{text}");
        assert!(text.contains("4200 ms from poll to commit"), "{text}");
    }

    #[test]
    fn store_replaces_whole_and_load_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/status.json");
        assert_eq!(load(&path).unwrap(), None);
        store(&path, &Status::default()).unwrap();
        store(&path, &sample()).unwrap();
        assert_eq!(load(&path).unwrap(), Some(sample()));
        assert!(!path.with_extension("json.tmp").exists());
        std::fs::write(&path, "{").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("status.json: not an agent status file"), "{e}");
    }
}
