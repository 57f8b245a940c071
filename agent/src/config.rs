//! `update.yml` on the CONFIG partition (`/config/update.yml`): what the agent follows and how.
//!
//! ```yaml
//! reference: registry.example.com/fleet/rpi4:stable   # the tag (or digest) this device follows
//! public_key: cosign.pub             # cosign public key, relative to the CONFIG partition
//! poll_interval_secs: 300            # how often the reference is resolved (default 300)
//! health_window_secs: 60             # a trial commits after this long healthy (default 60)
//! trial_timeout_secs: 300            # a trial not healthy for a whole window by then falls back
//!                                    # (default: 3 x health window + 120 s)
//! credentials: registry-auth.yml     # optional: {username: ..., password: ...}
//! insecure_registries: [10.0.2.2:5000]  # plain HTTP (loopback registries always are)
//! store_max_mib: 1024                # downloaded chunks kept on PERSIST at most (default 1024)
//! ```
//!
//! Parsing is pure and strict: an unknown key or a bad value is an error naming the file and field.

use std::path::{Path, PathBuf};

use rpixen_update::registry::{Credentials, Reference};
use serde::Deserialize;

/// Where the agent reads its config on a device.
pub const DEFAULT_PATH: &str = "/config/update.yml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {message}")]
    Syntax { file: PathBuf, message: String },
    #[error("{file}: field `{field}`: {message}")]
    Field { file: PathBuf, field: &'static str, message: String },
    #[error("{file}: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    reference: String,
    public_key: String,
    poll_interval_secs: Option<u64>,
    health_window_secs: Option<u64>,
    trial_timeout_secs: Option<u64>,
    credentials: Option<String>,
    #[serde(default)]
    insecure_registries: Vec<String>,
    store_max_mib: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredentials {
    username: String,
    password: String,
}

/// The agent's settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub reference: Reference,
    /// The key file, resolved against the config file's folder.
    pub public_key: PathBuf,
    pub poll_interval_secs: u64,
    pub health_window_secs: u64,
    pub trial_timeout_secs: u64,
    pub credentials: Option<PathBuf>,
    pub insecure_registries: Vec<String>,
    /// The most the chunk store on PERSIST may hold, in bytes.
    pub store_max_bytes: u64,
}

pub const DEFAULT_STORE_MAX_MIB: u64 = 1024;
pub const DEFAULT_POLL_SECS: u64 = 300;
pub const DEFAULT_HEALTH_WINDOW_SECS: u64 = 60;

/// The default trial timeout: time to boot and get healthy, then three windows' worth of chances.
pub fn default_trial_timeout(window: u64) -> u64 {
    window * 3 + 120
}

/// Parses `text`, the contents of `file`; relative paths resolve against `file`'s folder.
pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
    let raw: Raw = serde_norway::from_str(text)
        .map_err(|e| ConfigError::Syntax { file: file.to_owned(), message: e.to_string() })?;
    let field = |field: &'static str, message: String| ConfigError::Field {
        file: file.to_owned(),
        field,
        message,
    };
    let reference =
        Reference::parse(&raw.reference).map_err(|e| field("reference", e.to_string()))?;
    let dir = file.parent().unwrap_or(Path::new("/"));
    let relative = |name: &'static str, p: &str| {
        if p.is_empty() {
            return Err(field(name, "is empty".into()));
        }
        Ok(dir.join(p))
    };
    let public_key = relative("public_key", &raw.public_key)?;
    let credentials = raw.credentials.as_deref().map(|c| relative("credentials", c)).transpose()?;
    let positive = |name: &'static str, v: Option<u64>, default: u64| match v {
        Some(0) => Err(field(name, "must be at least 1".into())),
        Some(v) => Ok(v),
        None => Ok(default),
    };
    let poll_interval_secs =
        positive("poll_interval_secs", raw.poll_interval_secs, DEFAULT_POLL_SECS)?;
    let health_window_secs =
        positive("health_window_secs", raw.health_window_secs, DEFAULT_HEALTH_WINDOW_SECS)?;
    let trial_timeout_secs = positive(
        "trial_timeout_secs",
        raw.trial_timeout_secs,
        default_trial_timeout(health_window_secs),
    )?;
    if trial_timeout_secs <= health_window_secs {
        return Err(field(
            "trial_timeout_secs",
            format!(
                "{trial_timeout_secs} s leaves no time for a {health_window_secs} s health window"
            ),
        ));
    }
    let store_max_bytes = positive("store_max_mib", raw.store_max_mib, DEFAULT_STORE_MAX_MIB)?
        .checked_mul(1 << 20)
        .ok_or_else(|| field("store_max_mib", "is more bytes than a u64 holds".into()))?;
    if let Some(r) = raw.insecure_registries.iter().find(|r| r.is_empty() || r.contains('/')) {
        return Err(field("insecure_registries", format!("`{r}` is not host or host:port")));
    }
    Ok(Config {
        reference,
        public_key,
        poll_interval_secs,
        health_window_secs,
        trial_timeout_secs,
        credentials,
        insecure_registries: raw.insecure_registries,
        store_max_bytes,
    })
}

/// Reads and parses the config file.
pub fn load(file: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(file)
        .map_err(|source| ConfigError::Read { file: file.to_owned(), source })?;
    parse(file, &text)
}

/// Parses a credentials file (`username:`, `password:`).
pub fn parse_credentials(file: &Path, text: &str) -> Result<Credentials, ConfigError> {
    let raw: RawCredentials = serde_norway::from_str(text)
        .map_err(|e| ConfigError::Syntax { file: file.to_owned(), message: e.to_string() })?;
    if raw.username.is_empty() {
        return Err(ConfigError::Field {
            file: file.to_owned(),
            field: "username",
            message: "is empty".into(),
        });
    }
    Ok(Credentials::Basic { user: raw.username, password: raw.password })
}

/// The registry credentials the config names (anonymous without a credentials file).
pub fn credentials(config: &Config) -> Result<Credentials, ConfigError> {
    let Some(file) = &config.credentials else { return Ok(Credentials::Anonymous) };
    let text = std::fs::read_to_string(file)
        .map_err(|source| ConfigError::Read { file: file.clone(), source })?;
    parse_credentials(file, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> &'static Path {
        Path::new("/config/update.yml")
    }

    #[test]
    fn defaults_and_relative_paths() {
        let c =
            parse(file(), "reference: 10.0.2.2:5000/fleet/virt:stable\npublic_key: cosign.pub\n")
                .unwrap();
        assert_eq!(c.reference.registry, "10.0.2.2:5000");
        assert_eq!(c.reference.tag.as_deref(), Some("stable"));
        assert_eq!(c.public_key, Path::new("/config/cosign.pub"));
        assert_eq!((c.poll_interval_secs, c.health_window_secs), (300, 60));
        assert_eq!(c.trial_timeout_secs, 300);
        assert_eq!(c.credentials, None);
        assert_eq!(c.store_max_bytes, 1024 << 20);
    }

    #[test]
    fn every_field() {
        let c = parse(
            file(),
            "reference: r.example/a/b@sha256:0000000000000000000000000000000000000000000000000000000000000000\n\
             public_key: keys/k.pub\npoll_interval_secs: 2\nhealth_window_secs: 5\n\
             trial_timeout_secs: 40\ncredentials: auth.yml\ninsecure_registries: [r.example]\n\
             store_max_mib: 64\n",
        )
        .unwrap();
        assert_eq!(c.public_key, Path::new("/config/keys/k.pub"));
        assert_eq!((c.poll_interval_secs, c.health_window_secs, c.trial_timeout_secs), (2, 5, 40));
        assert_eq!(c.credentials.as_deref(), Some(Path::new("/config/auth.yml")));
        assert_eq!(c.insecure_registries, ["r.example"]);
        assert_eq!(c.store_max_bytes, 64 << 20);
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let err = |text: &str| parse(file(), text).unwrap_err().to_string();
        let e = err("reference: a/B\npublic_key: k\n");
        assert!(e.starts_with("/config/update.yml: field `reference`"), "{e}");
        let e = err("reference: a/b\npublic_key: k\nhealth_window_secs: 0\n");
        assert!(e.contains("`health_window_secs`: must be at least 1"), "{e}");
        let e = err("reference: a/b\npublic_key: k\nstore_max_mib: 18446744073709551615\n");
        assert!(e.contains("`store_max_mib`: is more bytes than a u64 holds"), "{e}");
        let e =
            err("reference: a/b\npublic_key: k\nhealth_window_secs: 60\ntrial_timeout_secs: 60\n");
        assert!(e.contains("`trial_timeout_secs`"), "{e}");
        let e = err("reference: a/b\npublic_key: k\npoll: 3\n");
        assert!(e.starts_with("/config/update.yml: ") && e.contains("poll"), "{e}");
        let e = err("public_key: k\n");
        assert!(e.contains("reference"), "{e}");
        let e = err("reference: a/b\npublic_key: ''\n");
        assert!(e.contains("`public_key`: is empty"), "{e}");
        let e = err("reference: a/b\npublic_key: k\ninsecure_registries: [http://x/]\n");
        assert!(e.contains("`insecure_registries`"), "{e}");
    }

    #[test]
    fn credentials_files() {
        let f = Path::new("/config/auth.yml");
        assert_eq!(
            parse_credentials(f, "username: u\npassword: p\n").unwrap(),
            Credentials::Basic { user: "u".into(), password: "p".into() }
        );
        let e = parse_credentials(f, "username: ''\npassword: p\n").unwrap_err().to_string();
        assert!(e.contains("/config/auth.yml: field `username`"), "{e}");
        assert!(parse_credentials(f, "user: u\n").is_err());
    }
}
