//! What `dom0-init` runs: the YAML file `/etc/rpixen/init.yml`, written by `rpixen` from the image
//! manifest's `init:` section (the manifest re-uses these types, so both agree on every field).
//!
//! ```yaml
//! hostname: rpixen
//! modules: [virtio_blk, squashfs]        # loaded with their dependencies, before the root switch
//! console_shell: [/bin/sh]               # kept running on /dev/console
//! onboot:                                # run once, in order, before services start
//!   - {name: sysctl, command: [/sbin/sysctl, -p]}
//! services:                              # supervised for the life of the system
//!   - name: sshd
//!     command: [/usr/sbin/sshd, -D]
//!     restart: always                    # always (default) | on-failure | never
//!     backoff: {initial_ms: 100, max_ms: 30000}
//! ```
//!
//! Two ways to read it: [`InitConfig::parse`] is strict (unknown keys and invalid values are errors
//! naming the field), for the builder; [`InitConfig::parse_lenient`] keeps every part that is valid and
//! reports the rest, for PID 1, which must run what it can rather than stop.

#![forbid(unsafe_code)]

pub mod net;
pub mod service_status;

use serde::{Deserialize, Serialize};

/// Where `rpixen` puts the file in the rootfs and where `dom0-init` looks for it.
pub const DEFAULT_PATH: &str = "/etc/rpixen/init.yml";

/// A problem in the file, naming the field (and line, where the parser knows it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Syntax(String),
    #[error("field `{field}`: {message}")]
    Invalid { field: String, message: String },
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Kernel modules to load at boot, as `modprobe` names them (`-` and `_` are the same);
    /// dependencies are loaded first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<String>,
    /// Extra filesystems to mount after the early mounts (CONFIG and PERSIST are mounted by label
    /// without being listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// A program kept running on `/dev/console` as its controlling terminal (e.g. `[/bin/sh]`).
    /// Also started when the config cannot be read, if `/bin/sh` exists, so the console stays usable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_shell: Option<Vec<String>>,
    /// Folder for per-service log files (`<name>.log`). Default: `/persist/log` when PERSIST is mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_dir: Option<String>,
    /// Run once, in order, before services start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub onboot: Vec<Service>,
    /// Supervised for the life of the system.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    /// Dom0's network defaults (netplan v2 `ethernets`/`wifis`, SNTP servers, readiness wait); a
    /// NoCloud or CONFIG `network-config` replaces the interfaces. See [`net::Network`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<net::Network>,
}

/// A filesystem to mount. `source` is a path, `PARTLABEL=NAME` (GPT label) or, for virtual
/// filesystems, any name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    pub source: String,
    pub target: String,
    pub fstype: String,
    /// As mount(8) takes them: `ro,nosuid,size=10M`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<String>,
}

/// A program run once (`onboot`) or supervised (`services`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Prefix on the console (`[name]`) and log file name; letters, digits, `.`, `_`, `-`.
    pub name: String,
    /// The program and its first arguments; a program name without `/` is looked up in `PATH`.
    pub command: Vec<String>,
    /// More arguments, appended to `command`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// `KEY=VALUE` entries added to the environment init passes on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// When a service is started again after it exits. Ignored for `onboot` steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<Restart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// How long shutdown waits after SIGTERM before it sends SIGKILL (default 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    #[default]
    Always,
    OnFailure,
    Never,
}

/// Exponential back-off between restarts: the first restart waits `initial_ms`, each further one
/// twice as long up to `max_ms`; a run longer than `reset_after_ms` starts over at `initial_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    #[serde(default = "Backoff::default_initial")]
    pub initial_ms: u64,
    #[serde(default = "Backoff::default_max")]
    pub max_ms: u64,
    #[serde(default = "Backoff::default_reset")]
    pub reset_after_ms: u64,
}

impl Backoff {
    fn default_initial() -> u64 {
        100
    }
    fn default_max() -> u64 {
        30_000
    }
    fn default_reset() -> u64 {
        10_000
    }

    /// The wait before restart number `attempt` (1 = the first restart).
    pub fn delay_ms(&self, attempt: u32) -> u64 {
        let shift = attempt.saturating_sub(1).min(32);
        self.initial_ms.saturating_mul(1u64 << shift).min(self.max_ms.max(self.initial_ms))
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial_ms: Self::default_initial(),
            max_ms: Self::default_max(),
            reset_after_ms: Self::default_reset(),
        }
    }
}

impl Service {
    /// The full argument vector: `command` then `args`.
    pub fn argv(&self) -> Vec<String> {
        self.command.iter().chain(self.args.iter()).cloned().collect()
    }

    pub fn restart(&self) -> Restart {
        self.restart.unwrap_or_default()
    }

    pub fn backoff(&self) -> Backoff {
        self.backoff.unwrap_or_default()
    }

    pub fn stop_timeout_ms(&self) -> u64 {
        self.stop_timeout_ms.unwrap_or(5000)
    }

    /// Checks one service; `field` is where it sits (`services[2]`).
    pub fn validate(&self, field: &str) -> Result<(), ConfigError> {
        let invalid = |sub: &str, message: String| ConfigError::Invalid {
            field: format!("{field}.{sub}"),
            message,
        };
        if self.name.is_empty()
            || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(invalid(
                "name",
                format!("`{}` is not a name (letters, digits, `.`, `_`, `-`)", self.name),
            ));
        }
        if self.command.first().is_none_or(|c| c.is_empty()) {
            return Err(invalid(
                "command",
                format!("service `{}` has no program to run", self.name),
            ));
        }
        if let Some(bad) = self.env.iter().find(|e| !e.contains('=') || e.starts_with('=')) {
            return Err(invalid("env", format!("`{bad}` is not KEY=VALUE")));
        }
        if let Some(cwd) = &self.cwd {
            if !cwd.starts_with('/') {
                return Err(invalid("cwd", format!("`{cwd}` is not an absolute path")));
            }
        }
        if let Some(b) = &self.backoff {
            if b.initial_ms == 0 || b.max_ms < b.initial_ms {
                return Err(invalid("backoff", "needs 0 < initial_ms <= max_ms".into()));
            }
        }
        Ok(())
    }
}

impl InitConfig {
    /// Strict parse: any unknown key or invalid value is an error.
    pub fn parse(text: &str) -> Result<InitConfig, ConfigError> {
        // The network types accept unknown keys (NoCloud files are read leniently); a manifest is not.
        let mut ignored = Vec::new();
        let de = serde_norway::Deserializer::from_str(text);
        let config: InitConfig =
            serde_ignored::deserialize(de, |p| ignored.push(net::key_path(&p)))
                .map_err(|e| ConfigError::Syntax(e.to_string()))?;
        if let Some(field) = ignored.into_iter().next() {
            return Err(ConfigError::Invalid { field, message: "unknown field".into() });
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: names, commands, paths, unique service names.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(h) = &self.hostname {
            validate_hostname(h)?;
        }
        for (i, m) in self.mounts.iter().enumerate() {
            validate_mount(m, &format!("mounts[{i}]"))?;
        }
        if let Some(shell) = &self.console_shell {
            if shell.first().is_none_or(|c| c.is_empty()) {
                return Err(ConfigError::Invalid {
                    field: "console_shell".into(),
                    message: "names no program".into(),
                });
            }
        }
        if let Some(n) = &self.network {
            n.validate()
                .map_err(|message| ConfigError::Invalid { field: "network".into(), message })?;
        }
        let mut names = std::collections::BTreeSet::new();
        for (section, list) in [("onboot", &self.onboot), ("services", &self.services)] {
            for (i, s) in list.iter().enumerate() {
                let field = format!("{section}[{i}]");
                s.validate(&field)?;
                if !names.insert(s.name.as_str()) {
                    return Err(ConfigError::Invalid {
                        field: format!("{field}.name"),
                        message: format!(
                            "`{}` is used twice (names must be unique: they name log files)",
                            s.name
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Lenient parse for PID 1: every top-level field and every service that is valid is kept; the
    /// errors list what was dropped. If the text is not YAML at all, the config is empty.
    pub fn parse_lenient(text: &str) -> (InitConfig, Vec<ConfigError>) {
        // The common case, a valid file, in one pass; the field-by-field walk only when needed.
        if let Ok(config) = InitConfig::parse(text) {
            return (config, Vec::new());
        }
        let mut errors = Vec::new();
        let mut config = InitConfig::default();
        let value: serde_norway::Value = match serde_norway::from_str(text) {
            Ok(v) => v,
            Err(e) => return (config, vec![ConfigError::Syntax(e.to_string())]),
        };
        let map = match value {
            serde_norway::Value::Mapping(m) => m,
            serde_norway::Value::Null => return (config, errors),
            _ => {
                return (
                    config,
                    vec![ConfigError::Syntax("the file is not a mapping of fields".into())],
                )
            }
        };
        let mut names = std::collections::BTreeSet::new();
        for (key, value) in map {
            let Some(key) = key.as_str().map(str::to_owned) else {
                errors.push(ConfigError::Syntax(format!("a key is not a string: {key:?}")));
                continue;
            };
            let mut bad =
                |message: String| errors.push(ConfigError::Invalid { field: key.clone(), message });
            match key.as_str() {
                "hostname" => match from_value::<Option<String>>(value) {
                    Ok(h) => match h.as_deref().map(validate_hostname).transpose() {
                        Ok(_) => config.hostname = h,
                        Err(e) => errors.push(e),
                    },
                    Err(m) => bad(m),
                },
                "modules" => match from_value(value) {
                    Ok(m) => config.modules = m,
                    Err(m) => bad(m),
                },
                "console_shell" => match from_value::<Option<Vec<String>>>(value) {
                    Ok(s) if s.as_ref().is_some_and(|s| s.first().is_none_or(|c| c.is_empty())) => {
                        bad("names no program".into())
                    }
                    Ok(s) => config.console_shell = s,
                    Err(m) => bad(m),
                },
                "log_dir" => match from_value(value) {
                    Ok(d) => config.log_dir = d,
                    Err(m) => bad(m),
                },
                "network" => match from_value::<Option<net::Network>>(value) {
                    Ok(n) => match n.as_ref().map(net::Network::validate).transpose() {
                        Ok(_) => config.network = n,
                        Err(m) => bad(m),
                    },
                    Err(m) => bad(m),
                },
                "mounts" => {
                    for (i, item) in seq(value, &key, &mut errors).into_iter().enumerate() {
                        let field = format!("mounts[{i}]");
                        match from_value::<Mount>(item) {
                            Ok(m) => match validate_mount(&m, &field) {
                                Ok(()) => config.mounts.push(m),
                                Err(e) => errors.push(e),
                            },
                            Err(message) => errors.push(ConfigError::Invalid { field, message }),
                        }
                    }
                }
                "onboot" | "services" => {
                    for (i, item) in seq(value, &key, &mut errors).into_iter().enumerate() {
                        let field = format!("{key}[{i}]");
                        let service = match from_value::<Service>(item) {
                            Ok(s) => s,
                            Err(message) => {
                                errors.push(ConfigError::Invalid { field, message });
                                continue;
                            }
                        };
                        if let Err(e) = service.validate(&field) {
                            errors.push(e);
                        } else if !names.insert(service.name.clone()) {
                            errors.push(ConfigError::Invalid {
                                field: format!("{field}.name"),
                                message: format!("`{}` is used twice", service.name),
                            });
                        } else if key == "onboot" {
                            config.onboot.push(service);
                        } else {
                            config.services.push(service);
                        }
                    }
                }
                _ => bad("unknown field (ignored)".into()),
            }
        }
        (config, errors)
    }

    /// The YAML text `rpixen` writes to [`DEFAULT_PATH`].
    pub fn to_yaml(&self) -> String {
        serde_norway::to_string(self).expect("plain data serializes")
    }
}

fn from_value<T: serde::de::DeserializeOwned>(value: serde_norway::Value) -> Result<T, String> {
    serde_norway::from_value(value).map_err(|e| e.to_string())
}

fn seq(
    value: serde_norway::Value,
    key: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<serde_norway::Value> {
    match value {
        serde_norway::Value::Sequence(s) => s,
        serde_norway::Value::Null => Vec::new(),
        _ => {
            errors.push(ConfigError::Invalid {
                field: key.into(),
                message: "expected a list".into(),
            });
            Vec::new()
        }
    }
}

fn validate_hostname(h: &str) -> Result<(), ConfigError> {
    // sethostname(2) takes at most 64 bytes; RFC 1123 labels are letters, digits and `-`.
    if h.is_empty()
        || h.len() > 64
        || !h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(ConfigError::Invalid {
            field: "hostname".into(),
            message: format!("`{h}` is not a host name (1-64 letters, digits, `-`, `.`)"),
        });
    }
    Ok(())
}

fn validate_mount(m: &Mount, field: &str) -> Result<(), ConfigError> {
    if !m.target.starts_with('/') {
        return Err(ConfigError::Invalid {
            field: format!("{field}.target"),
            message: format!("`{}` is not an absolute path", m.target),
        });
    }
    if m.fstype.is_empty() || m.source.is_empty() {
        return Err(ConfigError::Invalid {
            field: field.into(),
            message: "needs `source` and `fstype`".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
hostname: rpixen
modules: [virtio_blk, squashfs]
mounts:
  - {source: PARTLABEL=DATA, target: /data, fstype: ext4, options: "noatime"}
console_shell: [/bin/sh]
onboot:
  - {name: setup, command: [/bin/sh, -c, "echo hi"]}
services:
  - name: web
    command: [httpd]
    args: [-f]
    env: [A=1]
    cwd: /
    uid: 1000
    gid: 1000
    restart: on-failure
    backoff: {initial_ms: 50, max_ms: 400}
"#;

    #[test]
    fn full_config_round_trips() {
        let c = InitConfig::parse(FULL).unwrap();
        assert_eq!(c.services[0].argv(), ["httpd", "-f"]);
        assert_eq!(c.services[0].restart(), Restart::OnFailure);
        assert_eq!(c.services[0].backoff().reset_after_ms, 10_000);
        assert_eq!(InitConfig::parse(&c.to_yaml()).unwrap(), c);
        let (lenient, errors) = InitConfig::parse_lenient(FULL);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(lenient, c);
    }

    #[test]
    fn backoff_doubles_up_to_max() {
        let b = Backoff { initial_ms: 100, max_ms: 1000, reset_after_ms: 0 };
        let delays: Vec<u64> = (1..=6).map(|a| b.delay_ms(a)).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay_ms(u32::MAX), 1000);
    }

    #[test]
    fn strict_errors_name_the_field() {
        let e =
            InitConfig::parse("services:\n  - {name: a, command: [x], colour: red}\n").unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        let e = InitConfig::parse("services:\n  - {name: a, command: []}\n").unwrap_err();
        assert!(e.to_string().contains("services[0].command"), "{e}");
        let e = InitConfig::parse(
            "onboot:\n  - {name: a, command: [x]}\nservices:\n  - {name: a, command: [y]}\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("services[0].name"), "{e}");
        let e = InitConfig::parse("services:\n  - {name: a, command: [x], env: [NOVALUE]}\n")
            .unwrap_err();
        assert!(e.to_string().contains("env"), "{e}");
    }

    #[test]
    fn lenient_keeps_the_good_parts() {
        let text = "hostname: ok\ncolour: red\nservices:\n  - {name: good, command: [a]}\n  - {name: bad, restart: sometimes, command: [b]}\n  - {nme: typo}\n";
        let (c, errors) = InitConfig::parse_lenient(text);
        assert_eq!(c.hostname.as_deref(), Some("ok"));
        assert_eq!(c.services.len(), 1);
        assert_eq!(c.services[0].name, "good");
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 3, "{text:?}");
        assert!(text[0].contains("colour"));
        assert!(text[1].contains("services[1]") && text[1].contains("sometimes"), "{text:?}");
        assert!(text[2].contains("services[2]"), "{text:?}");
    }

    #[test]
    fn network_section() {
        let text = "network:\n  ethernets:\n    eth0: {addresses: [10.0.0.2/24], routes: [{to: default, via: 10.0.0.1}]}\n  ntp: [10.0.0.1]\n  wait_ms: 5000\n";
        let c = InitConfig::parse(text).unwrap();
        let n = c.network.as_ref().unwrap();
        assert_eq!(n.ethernets["eth0"].addresses, ["10.0.0.2/24"]);
        assert_eq!(InitConfig::parse(&c.to_yaml()).unwrap(), c);
        let e = InitConfig::parse("network:\n  ethernets:\n    eth0: {dhcp: true}\n").unwrap_err();
        assert!(e.to_string().contains("network.ethernets.eth0.dhcp"), "{e}");
        let e =
            InitConfig::parse("network:\n  ethernets:\n    eth0: {addresses: [10.0.0.300/24]}\n")
                .unwrap_err();
        assert!(e.to_string().contains("ethernets.eth0.addresses[0]"), "{e}");
        let (c, errors) = InitConfig::parse_lenient(
            "hostname: h\nnetwork: {ethernets: {eth0: {addresses: [x]}}}\n",
        );
        assert_eq!((c.hostname.as_deref(), c.network), (Some("h"), None));
        assert!(errors[0].to_string().contains("network"), "{errors:?}");
    }

    #[test]
    fn lenient_survives_garbage() {
        let (c, errors) = InitConfig::parse_lenient("services: [\n  - {{{");
        assert_eq!(c, InitConfig::default());
        assert_eq!(errors.len(), 1);
        assert!(errors[0].to_string().contains("line"), "{}", errors[0]);
        let (c, errors) = InitConfig::parse_lenient("");
        assert_eq!((c, errors.len()), (InitConfig::default(), 0));
    }
}
