//! Dom0's network configuration in netplan v2's shape, the format rpi-imager and cloud-init's
//! NoCloud `network-config` use, so one set of types serves the image manifest (`init.network`),
//! the boot FAT's `network-config` and CONFIG's `network-config`:
//!
//! ```yaml
//! network:
//!   version: 2
//!   ethernets:
//!     eth0: {dhcp4: true}
//!     eth1:
//!       addresses: [192.168.7.2/24]
//!       routes: [{to: default, via: 192.168.7.1}]
//!       nameservers: {addresses: [192.168.7.1], search: [lan]}
//!   wifis:
//!     wlan0:
//!       dhcp4: true
//!       regulatory-domain: "GB"
//!       access-points:
//!         "my ssid": {password: "<64 hex digits: the pbkdf2 PSK rpi-imager writes>"}
//! ```
//!
//! Keys these types do not know are reported by [`parse_netplan`] (with their path) and skipped,
//! never fatal: a device must come up with what it can use.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// `init.network` in the image manifest: defaults for the device (a `network-config` from the
/// boot FAT or CONFIG replaces `ethernets`/`wifis`), SNTP servers and the readiness wait.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ethernets: BTreeMap<String, Interface>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub wifis: BTreeMap<String, Wifi>,
    /// SNTP servers (`host` or `host:port`), asked in order after DHCP's own (option 42).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ntp: Vec<String>,
    /// How long the readiness line waits for the first address (default 20000; 0: no wait).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// A netplan v2 document: `network: {version: 2, ethernets: ..., wifis: ...}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Netplan {
    pub network: NetplanNetwork,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetplanNetwork {
    #[serde(default)]
    pub version: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ethernets: BTreeMap<String, Interface>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub wifis: BTreeMap<String, Wifi>,
}

/// One interface (netplan `ethernets.NAME`, and the same keys in `wifis.NAME`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp4: Option<bool>,
    /// rpi-imager writes `dhcp6: ...`; Dom0 has no DHCPv6 client, so it is accepted and reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp6: Option<bool>,
    /// `ADDRESS/PREFIX`, e.g. `192.168.7.2/24`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// netplan's older way to name the default gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway4: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nameservers: Option<Nameservers>,
    /// netplan: boot does not wait for this interface (rpixen never blocks boot on a network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// `default`, `0.0.0.0/0` or `NET/PREFIX`.
    pub to: String,
    pub via: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nameservers {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
}

/// netplan `wifis.NAME`: the interface keys plus the networks to join. (The interface keys are
/// repeated rather than `#[serde(flatten)]`ed: flatten would hide unknown keys from the report.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wifi {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp4: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp6: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway4: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nameservers: Option<Nameservers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    #[serde(rename = "regulatory-domain", default, skip_serializing_if = "Option::is_none")]
    pub regulatory_domain: Option<String>,
    #[serde(rename = "access-points", default)]
    pub access_points: BTreeMap<String, AccessPoint>,
}

impl Wifi {
    /// The addressing part, as for an Ethernet interface.
    pub fn interface(&self) -> Interface {
        Interface {
            dhcp4: self.dhcp4,
            dhcp6: self.dhcp6,
            addresses: self.addresses.clone(),
            routes: self.routes.clone(),
            gateway4: self.gateway4.clone(),
            nameservers: self.nameservers.clone(),
            optional: self.optional,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessPoint {
    /// A passphrase (8-63 characters) or the 64-hex-digit PSK rpi-imager writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    /// `none`, `psk` or `sae` (netplan's names).
    #[serde(rename = "key-management", default, skip_serializing_if = "Option::is_none")]
    pub key_management: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// A parsed `network-config`: what it configures, and the keys it had that rpixen skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed<T> {
    pub value: T,
    /// Paths of skipped keys, e.g. `network.ethernets.eth0.match`.
    pub skipped: Vec<String>,
}

/// Reads a netplan v2 document (a NoCloud or CONFIG `network-config`). Unknown keys are returned in
/// `skipped`; a document that is not YAML, not version 2, or has a value of the wrong type is an
/// error naming the line or field, and the caller falls back to its defaults.
pub fn parse_netplan(text: &str) -> Result<Parsed<NetplanNetwork>, String> {
    let mut skipped = Vec::new();
    let de = serde_norway::Deserializer::from_str(text);
    // serde_ignored reports every key the types do not name, with its path, instead of failing
    // (deny_unknown_fields) or dropping it silently (serde's default).
    let plan: Netplan = serde_ignored::deserialize(de, |path| skipped.push(key_path(&path)))
        .map_err(|e| e.to_string())?;
    let network = plan.network;
    if network.version != Some(2) {
        return Err(format!(
            "network.version: {} (only netplan version 2 is understood)",
            network.version.map_or("missing".to_owned(), |v| v.to_string())
        ));
    }
    validate_interfaces(&network.ethernets, &network.wifis)?;
    Ok(Parsed { value: network, skipped })
}

impl Network {
    /// Checks addresses, routes and servers so a bad manifest fails at build time.
    pub fn validate(&self) -> Result<(), String> {
        validate_interfaces(&self.ethernets, &self.wifis)
    }
}

fn validate_interfaces(
    ethernets: &BTreeMap<String, Interface>,
    wifis: &BTreeMap<String, Wifi>,
) -> Result<(), String> {
    let all = ethernets
        .iter()
        .map(|(n, i)| (format!("ethernets.{n}"), i.clone()))
        .chain(wifis.iter().map(|(n, w)| (format!("wifis.{n}"), w.interface())));
    for (field, i) in all {
        for (k, a) in i.addresses.iter().enumerate() {
            if a.contains(':') {
                continue; // IPv6: accepted (the kernel's SLAAC serves IPv6), not configured by us
            }
            parse_cidr(a).map_err(|e| format!("{field}.addresses[{k}]: {e}"))?;
        }
        for (k, r) in i.routes.iter().enumerate() {
            if r.via.contains(':') {
                continue;
            }
            route_destination(&r.to).map_err(|e| format!("{field}.routes[{k}].to: {e}"))?;
            r.via.parse::<Ipv4Addr>().map_err(|_| {
                format!("{field}.routes[{k}].via: `{}` is not an IPv4 address", r.via)
            })?;
        }
        if let Some(g) = &i.gateway4 {
            g.parse::<Ipv4Addr>()
                .map_err(|_| format!("{field}.gateway4: `{g}` is not an IPv4 address"))?;
        }
        for (k, s) in i.nameservers.iter().flat_map(|n| n.addresses.iter()).enumerate() {
            s.parse::<std::net::IpAddr>().map_err(|_| {
                format!("{field}.nameservers.addresses[{k}]: `{s}` is not an IP address")
            })?;
        }
    }
    for (name, w) in wifis {
        for (ssid, ap) in &w.access_points {
            if ssid.is_empty() || ssid.len() > 32 {
                return Err(format!(
                    "wifis.{name}.access-points: `{ssid}` is not an SSID (1-32 bytes)"
                ));
            }
            if let Some(p) =
                ap.password.as_ref().or(ap.auth.as_ref().and_then(|a| a.password.as_ref()))
            {
                let hex = p.len() == 64 && p.chars().all(|c| c.is_ascii_hexdigit());
                if !hex && !(8..=63).contains(&p.len()) {
                    return Err(format!(
                        "wifis.{name}.access-points.\"{ssid}\".password: neither a passphrase (8-63 characters) nor a 64-hex-digit PSK"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A skipped key's path as a user writes it (`network.ethernets.eth0.match`): serde_ignored marks
/// each `Option` it passes through with a `?` segment.
pub fn key_path(path: &serde_ignored::Path) -> String {
    path.to_string().split('.').filter(|s| *s != "?").collect::<Vec<_>>().join(".")
}

/// `192.168.7.2/24` → (address, prefix length).
pub fn parse_cidr(text: &str) -> Result<(Ipv4Addr, u8), String> {
    let (addr, prefix) = text
        .split_once('/')
        .ok_or_else(|| format!("`{text}` has no /PREFIX (e.g. 192.168.7.2/24)"))?;
    let addr = addr.parse::<Ipv4Addr>().map_err(|_| format!("`{addr}` is not an IPv4 address"))?;
    let prefix = prefix
        .parse::<u8>()
        .ok()
        .filter(|p| *p <= 32)
        .ok_or_else(|| format!("`/{prefix}` is not a prefix length (0-32)"))?;
    Ok((addr, prefix))
}

/// A route's `to`: `default` is 0.0.0.0/0.
pub fn route_destination(to: &str) -> Result<(Ipv4Addr, u8), String> {
    match to {
        "default" => Ok((Ipv4Addr::UNSPECIFIED, 0)),
        other => parse_cidr(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What rpi-imager's `generateCloudInitNetworkConfig` writes for a Wi-Fi network.
    const IMAGER: &str = "network:\n  version: 2\n  wifis:\n    wlan0:\n      dhcp4: true\n      regulatory-domain: \"GB\"\n      access-points:\n        \"my \\\"home\\\" net\":\n          password: \"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"\n      optional: true\n";

    #[test]
    fn rpi_imager_wifi_document() {
        let p = parse_netplan(IMAGER).unwrap();
        assert!(p.skipped.is_empty(), "{:?}", p.skipped);
        let w = &p.value.wifis["wlan0"];
        assert_eq!(w.regulatory_domain.as_deref(), Some("GB"));
        assert_eq!(w.dhcp4, Some(true));
        assert_eq!(w.optional, Some(true));
        let ap = &w.access_points["my \"home\" net"];
        assert_eq!(ap.password.as_ref().unwrap().len(), 64);
    }

    #[test]
    fn static_ethernet_and_unknown_keys() {
        let text = "network:\n  version: 2\n  renderer: networkd\n  ethernets:\n    eth0:\n      match: {macaddress: 'aa:bb:cc:dd:ee:ff'}\n      addresses: [192.168.7.2/24]\n      routes: [{to: default, via: 192.168.7.1, on-link: true}]\n      nameservers: {addresses: [192.168.7.1, 9.9.9.9], search: [lan]}\n";
        let p = parse_netplan(text).unwrap();
        assert_eq!(
            p.skipped,
            [
                "network.renderer",
                "network.ethernets.eth0.match",
                "network.ethernets.eth0.routes.0.on-link"
            ]
        );
        let e = &p.value.ethernets["eth0"];
        assert_eq!(parse_cidr(&e.addresses[0]).unwrap(), (Ipv4Addr::new(192, 168, 7, 2), 24));
        assert_eq!(route_destination(&e.routes[0].to).unwrap(), (Ipv4Addr::UNSPECIFIED, 0));
        assert_eq!(e.nameservers.as_ref().unwrap().addresses.len(), 2);
    }

    #[test]
    fn bad_documents_name_the_field() {
        let e = parse_netplan(
            "network:\n  version: 2\n  ethernets:\n    eth0: {addresses: [10.0.0.1]}\n",
        )
        .unwrap_err();
        assert!(e.contains("ethernets.eth0.addresses[0]") && e.contains("/PREFIX"), "{e}");
        let e = parse_netplan("network:\n  version: 1\n  config: []\n").unwrap_err();
        assert!(e.contains("version"), "{e}");
        let e = parse_netplan("network:\n  version: 2\n  ethernets:\n    eth0: {dhcp4: maybe}\n")
            .unwrap_err();
        assert!(e.contains("dhcp4"), "{e}");
        let e = parse_netplan("network: [\n").unwrap_err();
        assert!(e.contains("line"), "{e}");
        let e = parse_netplan(
            "network:\n  version: 2\n  wifis:\n    wlan0:\n      access-points:\n        x: {password: short}\n",
        )
        .unwrap_err();
        assert!(e.contains("wifis.wlan0.access-points.\"x\".password"), "{e}");
        let e = parse_netplan(
            "network:\n  version: 2\n  ethernets:\n    eth0: {routes: [{to: 10.1.0.0/33, via: 10.0.0.1}]}\n",
        )
        .unwrap_err();
        assert!(e.contains("routes[0].to"), "{e}");
    }
}
