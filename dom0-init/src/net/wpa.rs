//! `wpa_supplicant.conf` rendered from netplan `wifis` (what rpi-imager's Wi-Fi dialog produces),
//! without I/O. QEMU has no Wi-Fi device, so these unit tests are the only automated check of the
//! Wi-Fi path; the Pi's driver (brcmfmac) and firmware are named in `images/rpi4.yml`.

use init_config::net::Wifi;

/// The configuration for one wireless interface, or why none can be made.
pub fn render(iface: &str, wifi: &Wifi) -> Result<String, String> {
    if wifi.access_points.is_empty() {
        return Err(format!("wifis.{iface}: no access-points"));
    }
    let mut out = String::from("# Written by dom0-init from network-config (netplan wifis).\n");
    out.push_str("ctrl_interface=/run/wpa_supplicant\nap_scan=1\n");
    if let Some(cc) = &wifi.regulatory_domain {
        let cc = cc.trim().to_ascii_uppercase();
        if cc.len() != 2 || !cc.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "wifis.{iface}.regulatory-domain: `{cc}` is not an ISO 3166 country code"
            ));
        }
        out.push_str(&format!("country={cc}\n"));
    }
    for (ssid, ap) in &wifi.access_points {
        out.push_str("\nnetwork={\n");
        // Hex form: any byte of an SSID is safe without quoting rules.
        out.push_str(&format!("\tssid={}\n", hex(ssid.as_bytes())));
        if ap.hidden == Some(true) {
            out.push_str("\tscan_ssid=1\n");
        }
        let key_mgmt = ap.auth.as_ref().and_then(|a| a.key_management.as_deref());
        let password = ap.password.as_ref().or(ap.auth.as_ref().and_then(|a| a.password.as_ref()));
        match (key_mgmt, password) {
            (Some("none"), _) | (None, None) => out.push_str("\tkey_mgmt=NONE\n"),
            (Some(other), _) if !matches!(other, "psk" | "sae") => {
                return Err(format!(
                    "wifis.{iface}.access-points.\"{ssid}\".auth.key-management: `{other}` (rpixen knows none, psk, sae)"
                ))
            }
            (_, None) => {
                return Err(format!("wifis.{iface}.access-points.\"{ssid}\": key-management needs a password"))
            }
            (km, Some(p)) => {
                let is_hex_psk = p.len() == 64 && p.bytes().all(|b| b.is_ascii_hexdigit());
                if is_hex_psk {
                    // A derived PSK cannot do SAE (WPA3 needs the passphrase): WPA2 only.
                    out.push_str("\tkey_mgmt=WPA-PSK\n");
                    out.push_str(&format!("\tpsk={}\n", p.to_ascii_lowercase()));
                } else {
                    let mgmt = if km == Some("sae") { "SAE" } else { "WPA-PSK SAE" };
                    out.push_str(&format!("\tkey_mgmt={mgmt}\n"));
                    out.push_str(&format!("\tpsk={}\n", quote(p)?));
                }
                out.push_str("\tieee80211w=1\n");
            }
        }
        out.push_str("}\n");
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// wpa_supplicant's quoted strings end at the next `"`; there is no escape, so refuse those bytes.
fn quote(p: &str) -> Result<String, String> {
    if p.contains(['"', '\n', '\r']) {
        return Err("a passphrase with `\"` or a line break cannot be written to wpa_supplicant.conf; give the 64-hex-digit PSK instead".into());
    }
    Ok(format!("\"{p}\""))
}

/// The supplicant's command line for `iface` with its config file.
pub fn command(iface: &str, conf: &str) -> Vec<String> {
    ["wpa_supplicant", "-i", iface, "-c", conf, "-D", "nl80211"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use init_config::net::parse_netplan;

    fn wifi(doc: &str) -> Wifi {
        parse_netplan(doc).unwrap().value.wifis["wlan0"].clone()
    }

    #[test]
    fn rpi_imager_psk() {
        let w = wifi("network:\n  version: 2\n  wifis:\n    wlan0:\n      dhcp4: true\n      regulatory-domain: \"gb\"\n      access-points:\n        \"Caf\u{e9} \\\"5G\\\"\":\n          hidden: true\n          password: \"7E1C0BA3D1B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3D4E5F60718293A4B5C\"\n      optional: true\n");
        let conf = render("wlan0", &w).unwrap();
        let expected = format!(
            "# Written by dom0-init from network-config (netplan wifis).\nctrl_interface=/run/wpa_supplicant\nap_scan=1\ncountry=GB\n\nnetwork={{\n\tssid={}\n\tscan_ssid=1\n\tkey_mgmt=WPA-PSK\n\tpsk=7e1c0ba3d1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c\n\tieee80211w=1\n}}\n",
            hex("Caf\u{e9} \"5G\"".as_bytes())
        );
        assert_eq!(conf, expected);
    }

    #[test]
    fn passphrase_open_and_errors() {
        let w = wifi("network:\n  version: 2\n  wifis:\n    wlan0:\n      access-points:\n        home: {password: \"correct horse\"}\n        guest: {auth: {key-management: none}}\n");
        let conf = render("wlan0", &w).unwrap();
        assert!(conf.contains(&format!("ssid={}\n\tkey_mgmt=NONE\n", hex(b"guest"))), "{conf}");
        assert!(
            conf.contains(&format!(
                "ssid={}\n\tkey_mgmt=WPA-PSK SAE\n\tpsk=\"correct horse\"\n",
                hex(b"home")
            )),
            "{conf}"
        );
        assert!(!conf.contains("country="));
        let bad = wifi("network:\n  version: 2\n  wifis:\n    wlan0:\n      regulatory-domain: GBR\n      access-points: {x: {}}\n");
        assert!(render("wlan0", &bad).unwrap_err().contains("regulatory-domain"));
        let quote = wifi("network:\n  version: 2\n  wifis:\n    wlan0:\n      access-points: {x: {password: 'ab\"cdefgh'}}\n");
        assert!(render("wlan0", &quote).unwrap_err().contains("64-hex-digit"));
        let eap = wifi("network:\n  version: 2\n  wifis:\n    wlan0:\n      access-points: {x: {auth: {key-management: eap, password: abcdefgh}}}\n");
        assert!(render("wlan0", &eap).unwrap_err().contains("`eap`"));
        assert!(render("wlan0", &Wifi::default()).unwrap_err().contains("no access-points"));
    }
}
