//! Flash-time customisation: cloud-init's NoCloud files, as rpi-imager writes them onto partition 1
//! (the boot FAT) for an OS entry with `init_format: cloudinit`, and CONFIG's own files (EVE's
//! convention) that override them.
//!
//! | file | where | what rpixen applies |
//! |---|---|---|
//! | `meta-data` | boot FAT | `instance-id` (logged), `local-hostname` |
//! | `user-data` (`#cloud-config`) | boot FAT | `hostname`, `users[].name` + `ssh_authorized_keys`, top-level `ssh_authorized_keys` (root), `timezone` |
//! | `network-config` (netplan v2) | boot FAT, CONFIG | `ethernets`/`wifis` (CONFIG's wins) |
//! | `authorized_keys` | CONFIG | root's keys (replaces user-data's top-level keys) |
//! | `hostname` | CONFIG | the host name (wins over user-data) |
//! | `wpa_supplicant.conf` | CONFIG | used as is for Wi-Fi instead of the rendered one |
//!
//! Everything here is pure: [`plan`] turns file contents into a [`Provision`] and the lines to log.
//! `apply` does the I/O. Unknown keys are logged and skipped; a malformed file is logged and
//! ignored as a whole (the device boots with the image's defaults).

pub mod apply;

use std::collections::BTreeMap;

use init_config::net::{self, Network};
use serde::Deserialize;

/// The NoCloud and CONFIG files that exist (`None`: no such file).
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub meta_data: Option<String>,
    pub user_data: Option<String>,
    pub network_config: Option<String>,
    pub config_authorized_keys: Option<String>,
    pub config_hostname: Option<String>,
    pub config_network_config: Option<String>,
    pub config_wpa_supplicant: Option<String>,
}

/// What to do to the system, with where each part came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Provision {
    pub hostname: Option<String>,
    /// Keys for root's `authorized_keys`.
    pub root_keys: Vec<String>,
    pub users: Vec<User>,
    pub timezone: Option<String>,
    /// The interfaces to configure; `None`: the image's own (`init.network`, or DHCP everywhere).
    pub network: Option<Network>,
    /// CONFIG's `wpa_supplicant.conf`, used verbatim.
    pub wpa_supplicant: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub keys: Vec<String>,
}

/// Turns the files into a provision and the lines to log (problems and what was skipped).
pub fn plan(src: &Sources) -> (Provision, Vec<String>) {
    let mut log = Vec::new();
    let mut p = Provision::default();

    let meta = src.meta_data.as_deref().and_then(|t| match parse_meta_data(t) {
        Ok((m, skipped)) => {
            log.extend(
                skipped.into_iter().map(|k| format!("meta-data: unknown key `{k}` skipped")),
            );
            Some(m)
        }
        Err(e) => {
            log.push(format!("meta-data: malformed, ignored: {e}"));
            None
        }
    });
    if let Some(id) = meta.as_ref().and_then(|m| m.instance_id.as_deref()) {
        log.push(format!("meta-data: instance-id {id}"));
    }

    let user = src.user_data.as_deref().and_then(|t| match parse_user_data(t) {
        Ok((u, skipped)) => {
            log.extend(
                skipped.into_iter().map(|k| format!("user-data: key `{k}` not supported, skipped")),
            );
            Some(u)
        }
        Err(e) => {
            log.push(format!("user-data: malformed, ignored: {e}"));
            None
        }
    });

    // Host name: CONFIG's file, then user-data, then meta-data's local-hostname.
    let candidates = [
        src.config_hostname.as_deref().map(|h| ("CONFIG hostname", h.trim().to_owned())),
        user.as_ref().and_then(|u| u.hostname.clone()).map(|h| ("user-data hostname", h)),
        meta.as_ref()
            .and_then(|m| m.local_hostname.clone())
            .map(|h| ("meta-data local-hostname", h)),
    ];
    for (origin, h) in candidates.into_iter().flatten() {
        if valid_hostname(&h) {
            p.hostname = Some(h);
            break;
        }
        log.push(format!(
            "{origin}: `{h}` is not a host name (letters, digits, `-`, `.`; at most 64), skipped"
        ));
    }

    if let Some(u) = &user {
        p.timezone = u.timezone.clone();
        p.root_keys = clean_keys(&u.ssh_authorized_keys, "user-data ssh_authorized_keys", &mut log);
        for entry in &u.users {
            let i = entry.index;
            if !valid_user_name(&entry.name) {
                log.push(format!(
                    "user-data users[{i}].name: `{}` is not a user name, skipped",
                    entry.name
                ));
                continue;
            }
            let keys = clean_keys(
                &entry.keys,
                &format!("user-data users[{i}].ssh_authorized_keys"),
                &mut log,
            );
            if entry.name == "root" {
                p.root_keys.extend(keys);
            } else if p.users.iter().all(|x| x.name != entry.name) {
                p.users.push(User { name: entry.name.clone(), keys });
            }
        }
        log.extend(u.notes.iter().cloned());
    }
    if let Some(text) = &src.config_authorized_keys {
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        p.root_keys = clean_keys(&lines, "CONFIG authorized_keys", &mut log);
    }

    // Network: CONFIG's network-config, else the boot FAT's.
    for (origin, text) in [
        ("CONFIG network-config", &src.config_network_config),
        ("network-config", &src.network_config),
    ] {
        let Some(text) = text else { continue };
        match net::parse_netplan(text) {
            Ok(parsed) => {
                log.extend(
                    parsed.skipped.iter().map(|k| format!("{origin}: unknown key `{k}` skipped")),
                );
                let n = parsed.value;
                p.network =
                    Some(Network { ethernets: n.ethernets, wifis: n.wifis, ..Network::default() });
                break;
            }
            Err(e) => log.push(format!("{origin}: malformed, ignored: {e}")),
        }
    }
    p.wpa_supplicant = src.config_wpa_supplicant.clone();
    (p, log)
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
struct MetaData {
    #[serde(rename = "instance-id", default)]
    instance_id: Option<String>,
    #[serde(rename = "local-hostname", default)]
    local_hostname: Option<String>,
}

/// `meta-data`: YAML (`instance-id: rpi-imager-1700000000000`); the skipped keys.
fn parse_meta_data(text: &str) -> Result<(MetaData, Vec<String>), String> {
    if text.trim().is_empty() {
        return Ok((MetaData::default(), Vec::new()));
    }
    let mut skipped = Vec::new();
    let de = serde_norway::Deserializer::from_str(text);
    let m = serde_ignored::deserialize(de, |p| skipped.push(init_config::net::key_path(&p)))
        .map_err(|e| e.to_string())?;
    Ok((m, skipped))
}

/// The parts of `#cloud-config` rpixen applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct UserData {
    hostname: Option<String>,
    timezone: Option<String>,
    ssh_authorized_keys: Vec<String>,
    users: Vec<UserEntry>,
    /// Things worth saying about keys that were understood but not applied as asked.
    notes: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct UserEntry {
    /// Its position in `users:`, for messages.
    index: usize,
    name: String,
    keys: Vec<String>,
}

#[derive(Deserialize)]
struct RawUserData {
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    ssh_authorized_keys: Vec<String>,
    #[serde(default)]
    users: Vec<serde_norway::Value>,
    /// Understood so it can be answered: rpixen never allows passwords.
    #[serde(default)]
    ssh_pwauth: Option<serde_norway::Value>,
}

#[derive(Deserialize)]
struct RawUser {
    name: String,
    #[serde(default)]
    ssh_authorized_keys: Vec<String>,
}

/// `user-data`: must be a `#cloud-config` document (rpixen runs no scripts). Returns the keys it
/// skipped, by path (`packages`, `users.0.groups`).
fn parse_user_data(text: &str) -> Result<(UserData, Vec<String>), String> {
    let first = text.lines().next().unwrap_or("").trim_end();
    if first != "#cloud-config" {
        let what = if first.starts_with("#!") {
            "a script (rpixen runs none)"
        } else {
            "not `#cloud-config`"
        };
        return Err(format!(
            "the first line is {what}: `{}`",
            first.chars().take(40).collect::<String>()
        ));
    }
    let mut skipped = Vec::new();
    let de = serde_norway::Deserializer::from_str(text);
    let raw: Option<RawUserData> =
        serde_ignored::deserialize(de, |p| skipped.push(init_config::net::key_path(&p)))
            .map_err(|e| e.to_string())?;
    let Some(raw) = raw else {
        return Ok((UserData::default(), skipped)); // only the header line
    };
    let mut out = UserData {
        hostname: raw.hostname,
        timezone: raw.timezone,
        ssh_authorized_keys: raw.ssh_authorized_keys,
        ..UserData::default()
    };
    if raw.ssh_pwauth.as_ref().and_then(serde_norway::Value::as_bool) == Some(true) {
        out.notes.push(
            "user-data: ssh_pwauth: true not honoured: rpixen's SSH server takes keys only".into(),
        );
    }
    for (i, item) in raw.users.into_iter().enumerate() {
        match item {
            // cloud-init's `- default` means "the distribution's default user": Dom0 has none.
            serde_norway::Value::String(s) if s == "default" => {}
            serde_norway::Value::String(s) => {
                out.users.push(UserEntry { index: i, name: s, keys: Vec::new() })
            }
            value => {
                let mut inner = Vec::new();
                let user: RawUser = serde_ignored::deserialize(value, |p| {
                    inner.push(init_config::net::key_path(&p))
                })
                .map_err(|e| format!("users[{i}]: {e}"))?;
                skipped.extend(inner.into_iter().map(|p| format!("users.{i}.{p}")));
                out.users.push(UserEntry {
                    index: i,
                    name: user.name,
                    keys: user.ssh_authorized_keys,
                });
            }
        }
    }
    Ok((out, skipped))
}

/// Keeps lines that look like OpenSSH public keys (`[options] TYPE BASE64 [comment]`), logging the rest.
fn clean_keys(keys: &[String], origin: &str, log: &mut Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let k = k.trim();
        if k.is_empty() || k.starts_with('#') {
            continue;
        }
        if is_public_key(k) {
            out.push(k.to_owned());
        } else {
            let shown: String = k.chars().take(30).collect();
            log.push(format!("{origin}[{i}]: `{shown}` is not an SSH public key, skipped"));
        }
    }
    out
}

fn is_public_key(line: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    // The key type may follow an options field (`command="..." ssh-ed25519 AAAA...`).
    words.windows(2).any(|w| {
        (w[0].starts_with("ssh-") || w[0].starts_with("ecdsa-sha2-") || w[0].starts_with("sk-"))
            && w[1].len() > 16
            && w[1].bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    })
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 64
        && !h.starts_with(['-', '.'])
        && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// What `useradd` accepts by default (`NAME_REGEX`), which keeps `/etc/passwd` parseable.
fn valid_user_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && n.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// `/etc/passwd` and `/etc/group` text for root plus `users` (uids from 1000 in order, shell
/// `/bin/sh`, home `/home/NAME`). Dom0's rootfs is rebuilt every boot, so this is all there is.
pub fn passwd_and_group(users: &[User]) -> (String, String) {
    let mut passwd = String::from("root:x:0:0:root:/root:/bin/sh\n");
    let mut group = String::from("root:x:0:\n");
    for (i, u) in users.iter().enumerate() {
        let id = 1000 + i;
        passwd.push_str(&format!("{0}:x:{id}:{id}:{0}:/home/{0}:/bin/sh\n", u.name));
        group.push_str(&format!("{}:x:{id}:\n", u.name));
    }
    (passwd, group)
}

/// `/etc/shadow`: every account locked for passwords (`*`), so no password can ever log in.
pub fn shadow(users: &[User]) -> String {
    std::iter::once("root")
        .chain(users.iter().map(|u| u.name.as_str()))
        .map(|n| format!("{n}:*:1::::::\n"))
        .collect()
}

/// The hosts file for `hostname`.
pub fn hosts(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    )
}

/// Key count per user, for the summary line.
pub fn summary(p: &Provision) -> String {
    let mut parts = BTreeMap::new();
    parts.insert("root".to_owned(), p.root_keys.len());
    for u in &p.users {
        parts.insert(u.name.clone(), u.keys.len());
    }
    let keys: Vec<String> = parts.iter().map(|(n, k)| format!("{n}: {k}")).collect();
    format!(
        "hostname {}, SSH keys ({}), timezone {}, network {}",
        p.hostname.as_deref().unwrap_or("(image's)"),
        keys.join(", "),
        p.timezone.as_deref().unwrap_or("UTC"),
        if p.network.is_some() { "from network-config" } else { "image default" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHq7l1oN6QbTqmVnDmnC6eV1S0cPq3w0mJ4y9m0h0r5d me@laptop";
    const KEY2: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 other@host";

    /// What rpi-imager's `generateCloudInitUserData` writes (hostname, timezone, keyboard, a user
    /// with a key) after the `#cloud-config` header.
    fn imager_user_data() -> String {
        format!(
            "#cloud-config\nhostname: fleet-pi-07\nmanage_etc_hosts: true\npackages:\n- avahi-daemon\napt:\n  conf: |\n    Acquire {{\n      Check-Date \"false\";\n    }};\ntimezone: Europe/London\nkeyboard:\n  model: pc105\n  layout: \"gb\"\nenable_ssh: true\nusers:\n- name: pi\n  groups: users,adm,dialout,audio,netdev,video,plugdev,cdrom,games,input,gpio,spi,i2c,render,sudo\n  shell: /bin/bash\n  lock_passwd: true\n  ssh_authorized_keys:\n    - {KEY}\n  sudo: ALL=(ALL) NOPASSWD:ALL\n"
        )
    }

    #[test]
    fn rpi_imager_files() {
        let src = Sources {
            meta_data: Some("instance-id: rpi-imager-1764150000000\n".into()),
            user_data: Some(imager_user_data()),
            network_config: Some("network:\n  version: 2\n  ethernets:\n    eth0:\n      dhcp4: true\n      optional: true\n".into()),
            ..Sources::default()
        };
        let (p, log) = plan(&src);
        assert_eq!(p.hostname.as_deref(), Some("fleet-pi-07"));
        assert_eq!(p.timezone.as_deref(), Some("Europe/London"));
        assert_eq!(p.users, [User { name: "pi".into(), keys: vec![KEY.into()] }]);
        assert!(p.root_keys.is_empty());
        assert_eq!(p.network.as_ref().unwrap().ethernets["eth0"].dhcp4, Some(true));
        assert!(
            log.contains(&"meta-data: instance-id rpi-imager-1764150000000".to_owned()),
            "{log:?}"
        );
        for k in [
            "manage_etc_hosts",
            "packages",
            "apt",
            "keyboard",
            "enable_ssh",
            "users.0.groups",
            "users.0.sudo",
        ] {
            assert!(
                log.iter().any(|l| l.contains(&format!("`{k}` not supported"))),
                "{k}: {log:?}"
            );
        }
    }

    #[test]
    fn config_files_override_nocloud() {
        let src = Sources {
            user_data: Some(format!(
                "#cloud-config\nhostname: from-user-data\nssh_authorized_keys: [\"{KEY}\"]\n"
            )),
            network_config: Some(
                "network: {version: 2, ethernets: {eth0: {dhcp4: true}}}\n".into(),
            ),
            config_hostname: Some("from-config\n".into()),
            config_authorized_keys: Some(format!("# ops team\n{KEY2}\n\nnot a key\n")),
            config_network_config: Some(
                "network: {version: 2, ethernets: {eth0: {addresses: [10.1.2.3/24]}}}\n".into(),
            ),
            ..Sources::default()
        };
        let (p, log) = plan(&src);
        assert_eq!(p.hostname.as_deref(), Some("from-config"));
        assert_eq!(p.root_keys, [KEY2]);
        assert_eq!(p.network.unwrap().ethernets["eth0"].addresses, ["10.1.2.3/24"]);
        assert!(
            log.iter()
                .any(|l| l.contains("CONFIG authorized_keys[3]")
                    && l.contains("not an SSH public key")),
            "{log:?}"
        );
    }

    #[test]
    fn malformed_files_are_reported_and_ignored() {
        let src = Sources {
            meta_data: Some("instance-id: [unclosed\n".into()),
            user_data: Some("#cloud-config\nhostname: [a, b\nusers: {{{\n".into()),
            network_config: Some(
                "network:\n  version: 2\n  ethernets:\n    eth0: {addresses: [10.0.0.1]}\n".into(),
            ),
            config_network_config: Some("network: {version: 1}\n".into()),
            ..Sources::default()
        };
        let (p, log) = plan(&src);
        assert_eq!(p, Provision::default());
        let joined = log.join("\n");
        assert!(joined.contains("meta-data: malformed, ignored"), "{joined}");
        assert!(
            joined.contains("user-data: malformed, ignored") && joined.contains("line"),
            "{joined}"
        );
        assert!(
            joined.contains("network-config: malformed, ignored: ethernets.eth0.addresses[0]"),
            "{joined}"
        );
        assert!(
            joined.contains("CONFIG network-config: malformed, ignored: network.version"),
            "{joined}"
        );
    }

    #[test]
    fn user_data_edge_cases() {
        let (p, log) =
            plan(&Sources { user_data: Some("#!/bin/sh\necho hi\n".into()), ..Sources::default() });
        assert_eq!(p, Provision::default());
        assert!(log[0].contains("a script"), "{log:?}");
        let (p, log) =
            plan(&Sources { user_data: Some("#cloud-config\n".into()), ..Sources::default() });
        assert_eq!((p, log.len()), (Provision::default(), 0));
        let text = format!(
            "#cloud-config\nhostname: -bad\nssh_pwauth: true\nusers:\n- default\n- name: Bad:Name\n- name: root\n  ssh_authorized_keys: [\"{KEY}\"]\n- ops\n"
        );
        let (p, log) = plan(&Sources {
            user_data: Some(text),
            meta_data: Some("local-hostname: meta-name\n".into()),
            ..Sources::default()
        });
        assert_eq!(p.hostname.as_deref(), Some("meta-name"));
        assert_eq!(p.root_keys, [KEY]);
        assert_eq!(p.users, [User { name: "ops".into(), keys: vec![] }]);
        let joined = log.join("\n");
        assert!(joined.contains("user-data hostname: `-bad`"), "{joined}");
        assert!(joined.contains("users[1].name: `Bad:Name`"), "{joined}");
        assert!(joined.contains("ssh_pwauth: true not honoured"), "{joined}");
    }

    #[test]
    fn system_files() {
        let users = [User { name: "pi".into(), keys: vec![] }];
        let (passwd, group) = passwd_and_group(&users);
        assert_eq!(passwd, "root:x:0:0:root:/root:/bin/sh\npi:x:1000:1000:pi:/home/pi:/bin/sh\n");
        assert_eq!(group, "root:x:0:\npi:x:1000:\n");
        assert_eq!(shadow(&users), "root:*:1::::::\npi:*:1::::::\n");
        assert!(hosts("h1").ends_with("127.0.1.1\th1\n"));
    }
}
