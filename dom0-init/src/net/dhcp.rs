//! DHCPv4 client messages (RFC 2131, options RFC 2132) and the lease's timers, without I/O.
//!
//! Hand-written rather than `dhcproto`: that crate brings `hickory-proto`'s DNS stack into PID 1's
//! static binary for the one domain-name option we read; a client needs six message fields and
//! ten options, which fit on this page and are tested below against RFC 2131's layout.

use std::net::Ipv4Addr;
use std::time::Duration;

const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;
/// The fixed part before the options: op..file (236 bytes) plus the magic cookie.
const FIXED_LEN: usize = 240;
/// Asks servers to broadcast their replies: the interface has no address to receive unicast on yet.
const FLAG_BROADCAST: u16 = 0x8000;

pub mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOSTNAME: u8 = 12;
    pub const DOMAIN_NAME: u8 = 15;
    pub const NTP: u8 = 42;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETER_LIST: u8 = 55;
    pub const RENEWAL_TIME: u8 = 58;
    pub const REBINDING_TIME: u8 = 59;
    pub const CLIENT_ID: u8 = 61;
    pub const END: u8 = 255;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Decline = 4,
    Ack = 5,
    Nak = 6,
    Release = 7,
}

impl MessageType {
    fn from_u8(v: u8) -> Option<MessageType> {
        Some(match v {
            1 => MessageType::Discover,
            2 => MessageType::Offer,
            3 => MessageType::Request,
            4 => MessageType::Decline,
            5 => MessageType::Ack,
            6 => MessageType::Nak,
            7 => MessageType::Release,
            _ => return None,
        })
    }
}

/// What the client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub kind: MessageType,
    pub xid: u32,
    pub mac: [u8; 6],
    /// Seconds since the client began (RFC 2131 `secs`).
    pub secs: u16,
    /// Our address while renewing or rebinding (`ciaddr`); unspecified otherwise.
    pub ciaddr: Ipv4Addr,
    /// Option 50, in SELECTING/INIT-REBOOT only.
    pub requested: Option<Ipv4Addr>,
    /// Option 54, in SELECTING only.
    pub server: Option<Ipv4Addr>,
    pub hostname: Option<String>,
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; FIXED_LEN];
        b[0] = BOOTREQUEST;
        b[1] = 1; // htype: Ethernet
        b[2] = 6; // hlen
        b[4..8].copy_from_slice(&self.xid.to_be_bytes());
        b[8..10].copy_from_slice(&self.secs.to_be_bytes());
        // Broadcast replies until we hold an address (RFC 2131 4.1); unicast while renewing.
        if self.ciaddr.is_unspecified() {
            b[10..12].copy_from_slice(&FLAG_BROADCAST.to_be_bytes());
        }
        b[12..16].copy_from_slice(&self.ciaddr.octets());
        b[28..34].copy_from_slice(&self.mac);
        b[236..240].copy_from_slice(&MAGIC_COOKIE);
        let mut put = |code: u8, data: &[u8]| {
            b.push(code);
            b.push(data.len() as u8);
            b.extend_from_slice(data);
        };
        put(opt::MESSAGE_TYPE, &[self.kind as u8]);
        let mut client_id = vec![1u8];
        client_id.extend_from_slice(&self.mac);
        put(opt::CLIENT_ID, &client_id);
        if let Some(ip) = self.requested {
            put(opt::REQUESTED_IP, &ip.octets());
        }
        if let Some(ip) = self.server {
            put(opt::SERVER_ID, &ip.octets());
        }
        if let Some(h) = &self.hostname {
            let h = h.as_bytes();
            put(opt::HOSTNAME, &h[..h.len().min(255)]);
        }
        put(
            opt::PARAMETER_LIST,
            &[
                opt::SUBNET_MASK,
                opt::ROUTER,
                opt::DNS,
                opt::DOMAIN_NAME,
                opt::NTP,
                opt::LEASE_TIME,
                opt::RENEWAL_TIME,
                opt::REBINDING_TIME,
            ],
        );
        b.push(opt::END);
        // Some relays drop BOOTP messages shorter than the original 300 bytes.
        b.resize(b.len().max(300), opt::PAD);
        b
    }
}

/// A server's reply, with the options a client uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub kind: Option<MessageType>,
    pub xid: u32,
    pub mac: [u8; 6],
    pub yiaddr: Ipv4Addr,
    pub server: Option<Ipv4Addr>,
    pub subnet_mask: Option<Ipv4Addr>,
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub ntp: Vec<Ipv4Addr>,
    pub lease_secs: Option<u32>,
    pub renew_secs: Option<u32>,
    pub rebind_secs: Option<u32>,
}

impl Default for Reply {
    fn default() -> Reply {
        Reply {
            kind: None,
            xid: 0,
            mac: [0; 6],
            yiaddr: Ipv4Addr::UNSPECIFIED,
            server: None,
            subnet_mask: None,
            routers: Vec::new(),
            dns: Vec::new(),
            domain: None,
            ntp: Vec::new(),
            lease_secs: None,
            renew_secs: None,
            rebind_secs: None,
        }
    }
}

/// Parses a BOOTREPLY; `Err` says what is wrong (for the log, then the packet is dropped).
pub fn parse_reply(b: &[u8]) -> Result<Reply, String> {
    if b.len() < FIXED_LEN {
        return Err(format!("{} bytes, shorter than a DHCP message", b.len()));
    }
    if b[0] != BOOTREPLY || b[236..240] != MAGIC_COOKIE {
        return Err("not a DHCP reply".into());
    }
    let ip = |o: &[u8]| Ipv4Addr::new(o[0], o[1], o[2], o[3]);
    let mut r = Reply {
        xid: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        yiaddr: ip(&b[16..20]),
        ..Reply::default()
    };
    r.mac.copy_from_slice(&b[28..34]);
    let mut i = FIXED_LEN;
    while i < b.len() {
        let code = b[i];
        if code == opt::PAD {
            i += 1;
            continue;
        }
        if code == opt::END {
            break;
        }
        let len = *b.get(i + 1).ok_or("option without a length")? as usize;
        let data =
            b.get(i + 2..i + 2 + len).ok_or_else(|| format!("option {code} runs past the end"))?;
        let addrs = || data.chunks_exact(4).map(ip).collect::<Vec<_>>();
        let secs = || (len == 4).then(|| u32::from_be_bytes([data[0], data[1], data[2], data[3]]));
        match code {
            opt::MESSAGE_TYPE if len == 1 => r.kind = MessageType::from_u8(data[0]),
            opt::SERVER_ID if len == 4 => r.server = Some(ip(data)),
            opt::SUBNET_MASK if len == 4 => r.subnet_mask = Some(ip(data)),
            opt::ROUTER => r.routers = addrs(),
            opt::DNS => r.dns = addrs(),
            opt::NTP => r.ntp = addrs(),
            opt::DOMAIN_NAME => {
                r.domain = Some(String::from_utf8_lossy(data).trim_end_matches('\0').to_owned())
            }
            opt::LEASE_TIME => r.lease_secs = secs(),
            opt::RENEWAL_TIME => r.renew_secs = secs(),
            opt::REBINDING_TIME => r.rebind_secs = secs(),
            _ => {}
        }
        i += 2 + len;
    }
    Ok(r)
}

/// A bound lease: the address and everything that comes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub server: Ipv4Addr,
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub ntp: Vec<Ipv4Addr>,
    pub lease: Duration,
    /// T1: when to ask the same server to extend (RFC 2131: default half the lease).
    pub renew: Duration,
    /// T2: when to ask any server (default 7/8 of the lease).
    pub rebind: Duration,
}

impl Lease {
    /// The lease an ACK grants, or why it grants none.
    pub fn from_ack(ack: &Reply) -> Result<Lease, String> {
        if ack.yiaddr.is_unspecified() {
            return Err("ACK without an address".into());
        }
        let server = ack.server.ok_or("ACK without a server identifier")?;
        let lease = ack.lease_secs.ok_or("ACK without a lease time")?;
        // 0xffffffff is "infinite"; a day-long renew interval still refreshes the lease's options.
        let lease = Duration::from_secs(u64::from(lease.min(u32::MAX - 1)));
        let mask = ack.subnet_mask.unwrap_or_else(|| default_mask(ack.yiaddr));
        let prefix = u32::from(mask).leading_ones() as u8;
        let renew = ack.renew_secs.map(|s| Duration::from_secs(s.into())).unwrap_or(lease / 2);
        let rebind =
            ack.rebind_secs.map(|s| Duration::from_secs(s.into())).unwrap_or(lease * 7 / 8);
        // A server giving T1 >= T2 >= lease would make us wait past expiry: clamp to the RFC order.
        let rebind = rebind.min(lease * 7 / 8).max(Duration::from_secs(1));
        let renew = renew.min(rebind);
        Ok(Lease {
            address: ack.yiaddr,
            prefix,
            server,
            routers: ack.routers.clone(),
            dns: ack.dns.clone(),
            domain: ack.domain.clone(),
            ntp: ack.ntp.clone(),
            lease,
            renew,
            rebind,
        })
    }
}

/// The classful mask RFC 2132 says to assume when a server sends none.
fn default_mask(a: Ipv4Addr) -> Ipv4Addr {
    match a.octets()[0] {
        0..=127 => Ipv4Addr::new(255, 0, 0, 0),
        128..=191 => Ipv4Addr::new(255, 255, 0, 0),
        _ => Ipv4Addr::new(255, 255, 255, 0),
    }
}

/// What to do at `elapsed` time since the lease was bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeasePhase {
    Bound,
    /// Unicast REQUEST to the server that gave the lease.
    Renewing,
    /// Broadcast REQUEST to any server.
    Rebinding,
    /// The address must go; start over with DISCOVER.
    Expired,
}

pub fn phase(lease: &Lease, elapsed: Duration) -> LeasePhase {
    if elapsed >= lease.lease {
        LeasePhase::Expired
    } else if elapsed >= lease.rebind {
        LeasePhase::Rebinding
    } else if elapsed >= lease.renew {
        LeasePhase::Renewing
    } else {
        LeasePhase::Bound
    }
}

/// Retransmission wait for attempt `n` (0-based): 4, 8, 16, 32, 64 s (RFC 2131 4.1), shortened to
/// 2 s for the first try because most LANs answer within milliseconds.
pub fn retransmit(n: u32) -> Duration {
    match n {
        0 => Duration::from_secs(2),
        n => Duration::from_secs(4u64 << (n - 1).min(4)),
    }
}

/// `a.b.c.d` of a prefix length, for the ioctl that takes a netmask.
pub fn mask(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    fn reply(kind: u8, extra: &[(u8, &[u8])]) -> Vec<u8> {
        let mut b = vec![0u8; FIXED_LEN];
        b[0] = BOOTREPLY;
        b[4..8].copy_from_slice(&0xdead_beefu32.to_be_bytes());
        b[16..20].copy_from_slice(&[10, 0, 2, 15]);
        b[28..34].copy_from_slice(&MAC);
        b[236..240].copy_from_slice(&MAGIC_COOKIE);
        b.extend_from_slice(&[opt::MESSAGE_TYPE, 1, kind, opt::PAD]);
        for (code, data) in extra {
            b.push(*code);
            b.push(data.len() as u8);
            b.extend_from_slice(data);
        }
        b.push(opt::END);
        b
    }

    #[test]
    fn discover_layout() {
        let d = Request {
            kind: MessageType::Discover,
            xid: 0x0102_0304,
            mac: MAC,
            secs: 3,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            requested: None,
            server: None,
            hostname: Some("dev1".into()),
        }
        .encode();
        assert_eq!(d.len(), 300);
        assert_eq!(&d[0..4], &[1, 1, 6, 0]);
        assert_eq!(&d[4..8], &[1, 2, 3, 4]);
        assert_eq!(&d[8..12], &[0, 3, 0x80, 0]); // secs, broadcast flag
        assert_eq!(&d[28..34], &MAC);
        assert_eq!(&d[236..244], &[99, 130, 83, 99, 53, 1, 1, 61]);
        let hostname = d.windows(6).position(|w| w == [12, 4, b'd', b'e', b'v', b'1']);
        assert!(hostname.is_some());
        let renew = Request {
            kind: MessageType::Request,
            xid: 1,
            mac: MAC,
            secs: 0,
            ciaddr: Ipv4Addr::new(10, 0, 2, 15),
            requested: None,
            server: None,
            hostname: None,
        }
        .encode();
        assert_eq!(&renew[10..16], &[0, 0, 10, 0, 2, 15], "no broadcast flag, ciaddr set");
    }

    #[test]
    fn ack_to_lease() {
        let b = reply(
            5,
            &[
                (opt::SERVER_ID, &[10, 0, 2, 2]),
                (opt::SUBNET_MASK, &[255, 255, 255, 0]),
                (opt::ROUTER, &[10, 0, 2, 2]),
                (opt::DNS, &[10, 0, 2, 3, 9, 9, 9, 9]),
                (opt::DOMAIN_NAME, b"lan\0"),
                (opt::LEASE_TIME, &86400u32.to_be_bytes()),
                (opt::NTP, &[10, 0, 2, 2]),
            ],
        );
        let r = parse_reply(&b).unwrap();
        assert_eq!(r.kind, Some(MessageType::Ack));
        assert_eq!(r.xid, 0xdead_beef);
        let l = Lease::from_ack(&r).unwrap();
        assert_eq!((l.address, l.prefix), (Ipv4Addr::new(10, 0, 2, 15), 24));
        assert_eq!(l.dns, [Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(9, 9, 9, 9)]);
        assert_eq!(l.domain.as_deref(), Some("lan"));
        assert_eq!((l.renew.as_secs(), l.rebind.as_secs()), (43200, 75600));
        assert_eq!(phase(&l, Duration::from_secs(100)), LeasePhase::Bound);
        assert_eq!(phase(&l, Duration::from_secs(43200)), LeasePhase::Renewing);
        assert_eq!(phase(&l, Duration::from_secs(80000)), LeasePhase::Rebinding);
        assert_eq!(phase(&l, Duration::from_secs(86400)), LeasePhase::Expired);
    }

    #[test]
    fn odd_servers() {
        // No mask: classful default; T1 beyond T2 clamped.
        let b = reply(
            5,
            &[
                (opt::SERVER_ID, &[10, 0, 2, 2]),
                (opt::LEASE_TIME, &100u32.to_be_bytes()),
                (opt::RENEWAL_TIME, &200u32.to_be_bytes()),
            ],
        );
        let l = Lease::from_ack(&parse_reply(&b).unwrap()).unwrap();
        assert_eq!(l.prefix, 8);
        assert!(l.renew <= l.rebind && l.rebind < l.lease, "{l:?}");
        let no_server = reply(5, &[(opt::LEASE_TIME, &100u32.to_be_bytes())]);
        assert!(Lease::from_ack(&parse_reply(&no_server).unwrap()).unwrap_err().contains("server"));
        let mut cut = reply(2, &[(opt::ROUTER, &[1, 2, 3, 4])]);
        cut.truncate(cut.len() - 3);
        assert!(parse_reply(&cut).unwrap_err().contains("past the end"));
        assert!(parse_reply(&[0u8; 100]).is_err());
        assert_eq!(parse_reply(&reply(6, &[])).unwrap().kind, Some(MessageType::Nak));
    }

    #[test]
    fn timers_and_masks() {
        let waits: Vec<u64> = (0..7).map(|n| retransmit(n).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 64, 64]);
        assert_eq!(mask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(mask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(mask(32), Ipv4Addr::BROADCAST);
    }
}
