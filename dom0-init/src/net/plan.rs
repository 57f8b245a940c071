//! Which interface gets what, without I/O: the configuration (netplan `ethernets`/`wifis`) applied
//! to the interfaces the kernel has.
//!
//! rpixen's default differs from netplan's on purpose: a wired interface that the configuration does
//! not name still gets DHCP, because rpi-imager's `network-config` names only `wlan0` and a device
//! whose Ethernet stayed dark would be lost to its operator.

use std::net::Ipv4Addr;

use init_config::net::{parse_cidr, route_destination, Interface, Network};

/// What the kernel says an interface is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub name: String,
    pub wireless: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfacePlan {
    pub name: String,
    pub dhcp: bool,
    pub addresses: Vec<(Ipv4Addr, u8)>,
    pub routes: Vec<RoutePlan>,
    pub dns: Vec<Ipv4Addr>,
    pub search: Vec<String>,
    /// Wireless: render a supplicant configuration from `wifis.NAME`.
    pub wireless: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutePlan {
    pub dest: Ipv4Addr,
    pub prefix: u8,
    pub via: Ipv4Addr,
    pub metric: u32,
}

/// The plan for every interface found, and lines for the log about what the config asked that
/// cannot be done (an interface it names that does not exist, IPv6).
pub fn plan(net: &Network, found: &[Found]) -> (Vec<IfacePlan>, Vec<String>) {
    let mut notes = Vec::new();
    let mut out = Vec::new();
    for name in net.ethernets.keys().chain(net.wifis.keys()) {
        if !found.iter().any(|f| &f.name == name) {
            notes.push(format!("{name}: configured but not present (yet); skipped"));
        }
    }
    for f in found {
        let configured = net
            .ethernets
            .get(&f.name)
            .cloned()
            .or_else(|| net.wifis.get(&f.name).map(|w| w.interface()));
        let iface = match configured {
            Some(i) => i,
            // Wired and unnamed: DHCP (see the module note). Wireless and unnamed: nothing to join.
            None if !f.wireless => Interface { dhcp4: Some(true), ..Interface::default() },
            None => continue,
        };
        if iface.dhcp6 == Some(true) || iface.addresses.iter().any(|a| a.contains(':')) {
            notes.push(format!(
                "{}: IPv6 addressing is left to the kernel (SLAAC); no DHCPv6 client in Dom0",
                f.name
            ));
        }
        let addresses: Vec<(Ipv4Addr, u8)> = iface
            .addresses
            .iter()
            .filter(|a| !a.contains(':'))
            .filter_map(|a| parse_cidr(a).ok())
            .collect();
        let mut routes: Vec<RoutePlan> = iface
            .routes
            .iter()
            .filter(|r| !r.via.contains(':'))
            .filter_map(|r| {
                let (dest, prefix) = route_destination(&r.to).ok()?;
                Some(RoutePlan {
                    dest,
                    prefix,
                    via: r.via.parse().ok()?,
                    metric: r.metric.unwrap_or(0),
                })
            })
            .collect();
        if let Some(gw) = iface.gateway4.as_deref().and_then(|g| g.parse().ok()) {
            routes.push(RoutePlan { dest: Ipv4Addr::UNSPECIFIED, prefix: 0, via: gw, metric: 0 });
        }
        let ns = iface.nameservers.clone().unwrap_or_default();
        out.push(IfacePlan {
            name: f.name.clone(),
            dhcp: iface.dhcp4 == Some(true),
            addresses,
            routes,
            dns: ns.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
            search: ns.search,
            wireless: f.wireless,
        });
    }
    (out, notes)
}

/// `/etc/resolv.conf` for the given servers and search domains (at most 3 servers: libc's limit).
pub fn resolv_conf(dns: &[Ipv4Addr], search: &[String]) -> String {
    let mut out = String::from("# Written by dom0-init's network service.\n");
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    for s in dns.iter().take(3) {
        out.push_str(&format!("nameserver {s}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use init_config::net::parse_netplan;

    fn found(names: &[(&str, bool)]) -> Vec<Found> {
        names.iter().map(|(n, w)| Found { name: n.to_string(), wireless: *w }).collect()
    }

    fn network(doc: &str) -> Network {
        let n = parse_netplan(doc).unwrap().value;
        Network { ethernets: n.ethernets, wifis: n.wifis, ..Network::default() }
    }

    #[test]
    fn default_is_dhcp_on_every_wired_interface() {
        let (p, notes) =
            plan(&Network::default(), &found(&[("eth0", false), ("eth1", false), ("wlan0", true)]));
        assert_eq!(
            p.iter().map(|i| (i.name.as_str(), i.dhcp)).collect::<Vec<_>>(),
            [("eth0", true), ("eth1", true)]
        );
        assert!(notes.is_empty());
    }

    #[test]
    fn static_and_wifi() {
        let n = network(
            "network:\n  version: 2\n  ethernets:\n    eth0:\n      addresses: [192.168.7.2/24, 'fd00::2/64']\n      gateway4: 192.168.7.1\n      routes: [{to: 10.9.0.0/16, via: 192.168.7.254, metric: 50}]\n      nameservers: {addresses: [192.168.7.1], search: [lan]}\n    eth9: {dhcp4: true}\n  wifis:\n    wlan0:\n      dhcp4: true\n      access-points: {home: {password: abcdefgh}}\n",
        );
        let (p, notes) = plan(&n, &found(&[("eth0", false), ("wlan0", true)]));
        let eth0 = &p[0];
        assert!(!eth0.dhcp);
        assert_eq!(eth0.addresses, [(Ipv4Addr::new(192, 168, 7, 2), 24)]);
        assert_eq!(
            eth0.routes,
            [
                RoutePlan {
                    dest: Ipv4Addr::new(10, 9, 0, 0),
                    prefix: 16,
                    via: Ipv4Addr::new(192, 168, 7, 254),
                    metric: 50
                },
                RoutePlan {
                    dest: Ipv4Addr::UNSPECIFIED,
                    prefix: 0,
                    via: Ipv4Addr::new(192, 168, 7, 1),
                    metric: 0
                },
            ]
        );
        assert_eq!(
            resolv_conf(&eth0.dns, &eth0.search),
            "# Written by dom0-init's network service.\nsearch lan\nnameserver 192.168.7.1\n"
        );
        assert!(p[1].wireless && p[1].dhcp);
        assert!(
            notes.iter().any(|n| n.starts_with("eth9: configured but not present")),
            "{notes:?}"
        );
        assert!(notes.iter().any(|n| n.starts_with("eth0: IPv6")), "{notes:?}");
    }
}
