//! Dom0's network: the `network` service (`dom0-init network`, supervised by PID 1).
//!
//! - every wired interface gets DHCPv4 unless the configuration gives it static addresses
//!   (`plan`); the lease brings the address, routes, DNS (`/etc/resolv.conf`) and NTP servers, and is
//!   renewed at T1 (unicast) and T2 (broadcast), and dropped at expiry (`dhcp`);
//! - losing the link (carrier) drops the lease's address; the link coming back starts DHCP again;
//! - Wi-Fi interfaces get a `wpa_supplicant.conf` rendered from netplan `wifis` (`wpa`), or CONFIG's
//!   own, and the supplicant is started when the image has one;
//! - the clock: set forward to the image's build time (the mtime of `/etc/rpixen/init.yml`, which
//!   the builder stamps with `SOURCE_DATE_EPOCH`) or the last time saved on
//!   PERSIST after an SNTP sync, whichever is
//!   later; then set by SNTP when a server answers, never to a time before that floor (`sntp`).
//!
//! The first address is written to [`STATUS`], which PID 1 puts in the readiness line.

pub mod dhcp;
pub mod plan;
pub mod sntp;
pub mod sys;
pub mod wpa;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, ToSocketAddrs, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use init_config::net::Network;

use dhcp::{Lease, LeasePhase, MessageType, Reply, Request};

/// One line about the first configured address: `eth0 10.0.2.15/24 dhcp from 10.0.2.2 in 812 ms`.
pub const STATUS: &str = "/run/rpixen/network.status";
/// Where the clock's floor is kept across boots (a power-loss-safe rename).
pub const SAVED_CLOCK: &str = "/persist/rpixen/clock";
const DEFAULT_NTP: &str = "pool.ntp.org";

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}

/// The service's main: never returns unless it cannot work at all.
pub fn main(init_yml: &Path) -> i32 {
    let started = Instant::now();
    let net = load(init_yml);
    let floor = clock_floor(init_yml);
    if let Some(f) = floor {
        if let Some(t) = sntp::boot_adjustment(SystemTime::now(), f) {
            match sys::set_clock(t) {
                Ok(()) => {
                    say(&format!("clock was before the image's build time: set to {}", unix(t)))
                }
                Err(e) => say(&format!("cannot set the clock to its floor: {e}")),
            }
        }
    }
    let _ = std::fs::remove_file(STATUS);
    let shared = Arc::new(Shared {
        ntp: net.ntp.clone(),
        floor: floor.unwrap_or(SystemTime::UNIX_EPOCH),
        status_written: AtomicBool::new(false),
        clock_synced: AtomicBool::new(false),
        started,
    });
    let mut running: Vec<String> = Vec::new();
    let mut first = true;
    // The floor for the next boot is refreshed hourly once the clock is right (PERSIST is flash:
    // no more writes than that).
    let mut saved_at = Instant::now();
    // Interfaces can appear late (modules loading, USB adapters): look again every 2 s.
    loop {
        let found = sys::interfaces();
        let (plans, notes) = plan::plan(&net, &found);
        if first {
            for n in notes {
                say(&n);
            }
            if found.is_empty() {
                say("no network interface yet (waiting for one)");
            }
            first = false;
        }
        for p in plans {
            if running.contains(&p.name) {
                continue;
            }
            running.push(p.name.clone());
            let shared = shared.clone();
            let wifi = net.wifis.get(&p.name).cloned();
            let name = p.name.clone();
            let spawned = std::thread::Builder::new().name(name.clone()).spawn(move || {
                run_interface(p, wifi, &shared);
            });
            if let Err(e) = spawned {
                say(&format!("{name}: cannot start its thread: {e}"));
            }
        }
        std::thread::sleep(Duration::from_secs(2));
        if shared.clock_synced.load(Ordering::Relaxed)
            && saved_at.elapsed() > Duration::from_secs(3600)
        {
            save_clock();
            saved_at = Instant::now();
        }
    }
}

/// `init.network` from the image, with the interfaces replaced by a `network-config` (the
/// `nocloud` step leaves the one that applies in `NETWORK_OVERRIDE`).
fn load(init_yml: &Path) -> Network {
    let text = std::fs::read_to_string(init_yml).unwrap_or_default();
    let (config, _) = init_config::InitConfig::parse_lenient(&text);
    let mut net = config.network.unwrap_or_default();
    let path = crate::nocloud::apply::NETWORK_OVERRIDE;
    match std::fs::read_to_string(path) {
        Ok(text) => match serde_norway::from_str::<Network>(&text) {
            Ok(o) => {
                say("interfaces from network-config");
                net.ethernets = o.ethernets;
                net.wifis = o.wifis;
            }
            Err(e) => say(&format!("{path}: {e}; using the image's network configuration")),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => say(&format!("{path}: {e}")),
    }
    net
}

struct Shared {
    ntp: Vec<String>,
    floor: SystemTime,
    status_written: AtomicBool,
    clock_synced: AtomicBool,
    started: Instant,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// The later of the image's build time and the time last saved on PERSIST.
fn clock_floor(init_yml: &Path) -> Option<SystemTime> {
    let built = std::fs::metadata(init_yml).and_then(|m| m.modified()).ok();
    let saved = std::fs::read_to_string(SAVED_CLOCK)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
    built.into_iter().chain(saved).max()
}

/// Keeps the current time on PERSIST as the next boot's floor: written to a temporary file,
/// synced, then renamed over the old one, so a power cut leaves the old or the new value.
fn save_clock() {
    let Some(dir) = Path::new(SAVED_CLOCK).parent() else { return };
    if !Path::new("/persist").join(".").exists() || std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let tmp = dir.join("clock.tmp");
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{}", unix(SystemTime::now()))?;
        f.sync_all()?;
        std::fs::rename(&tmp, SAVED_CLOCK)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        say(&format!("cannot save the clock to {SAVED_CLOCK}: {e}"));
    }
}

/// One interface for the life of the service.
fn run_interface(p: plan::IfacePlan, wifi: Option<init_config::net::Wifi>, shared: &Shared) {
    let name = p.name.as_str();
    if let Err(e) = sys::set_up(name, true) {
        say(&format!("{e}"));
        return;
    }
    if p.wireless {
        start_supplicant(name, wifi.as_ref());
    }
    if !p.dhcp {
        run_static(&p, shared);
        return;
    }
    let mac = match sys::mac(name) {
        Ok(m) => m,
        Err(e) => return say(&format!("{e}")),
    };
    let sock = match sys::dhcp_socket(name) {
        Ok(s) => s,
        Err(e) => return say(&format!("{e}")),
    };
    let mut link = false;
    loop {
        // Wait for the link.
        while !sys::carrier(name) {
            if link {
                say(&format!("{name}: link down"));
                link = false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if !link {
            say(&format!("{name}: link up"));
            link = true;
        }
        let begin = Instant::now();
        let Some(lease) = acquire(name, mac, &sock) else { continue };
        let took = begin.elapsed();
        if let Err(e) = configure(name, &lease, &p) {
            say(&format!("{name}: cannot configure {}: {e}", lease.address));
            std::thread::sleep(Duration::from_secs(5));
            continue;
        }
        say(&format!(
            "{name}: lease {}/{} from {} for {} s, router {}, DNS {} (in {} ms)",
            lease.address,
            lease.prefix,
            lease.server,
            lease.lease.as_secs(),
            list(&lease.routers),
            list(&lease.dns),
            took.as_millis()
        ));
        write_status(
            shared,
            &format!(
                "{name} {}/{} dhcp from {} in {} ms",
                lease.address,
                lease.prefix,
                lease.server,
                took.as_millis()
            ),
        );
        sync_clock(shared, &lease.ntp);
        if !hold(name, mac, &sock, lease, &p) {
            link = false;
            say(&format!("{name}: link down"));
        }
        let _ = sys::set_address(name, Ipv4Addr::UNSPECIFIED, 0);
    }
}

fn list(a: &[Ipv4Addr]) -> String {
    if a.is_empty() {
        return "none".into();
    }
    a.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(" ")
}

/// DISCOVER → OFFER → REQUEST → ACK, with RFC 2131 retransmission; gives up (None) when the link
/// goes away, so the caller waits for it again.
fn acquire(name: &str, mac: [u8; 6], sock: &UdpSocket) -> Option<Lease> {
    let begin = Instant::now();
    let hostname = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok());
    let mut attempt = 0;
    loop {
        if !sys::carrier(name) {
            return None;
        }
        let xid = random_u32();
        let secs = begin.elapsed().as_secs().min(u16::MAX.into()) as u16;
        let base = Request {
            kind: MessageType::Discover,
            xid,
            mac,
            secs,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            requested: None,
            server: None,
            hostname: hostname.clone(),
        };
        let wait = dhcp::retransmit(attempt);
        attempt += 1;
        if let Err(e) = broadcast(sock, &base.encode()) {
            say(&format!("{name}: DHCP send: {e}"));
            std::thread::sleep(wait);
            continue;
        }
        let Some(offer) = receive(sock, xid, mac, &[MessageType::Offer], wait) else {
            if attempt == 3 {
                say(&format!("{name}: no DHCP offer yet (still asking)"));
            }
            continue;
        };
        let request = Request {
            kind: MessageType::Request,
            requested: Some(offer.yiaddr),
            server: offer.server,
            ..base
        };
        if broadcast(sock, &request.encode()).is_err() {
            continue;
        }
        match receive(sock, xid, mac, &[MessageType::Ack, MessageType::Nak], dhcp::retransmit(1)) {
            Some(r) if r.kind == Some(MessageType::Ack) => match Lease::from_ack(&r) {
                Ok(l) => return Some(l),
                Err(e) => say(&format!("{name}: unusable ACK: {e}")),
            },
            Some(_) => {
                say(&format!("{name}: server declined {} (NAK); starting over", offer.yiaddr))
            }
            None => {}
        }
    }
}

/// Keeps a lease: renews at T1 (unicast to its server), rebinds at T2 (broadcast), lets it go at
/// expiry. Returns false when the link went down, true when the lease ended.
fn hold(name: &str, mac: [u8; 6], sock: &UdpSocket, mut lease: Lease, p: &plan::IfacePlan) -> bool {
    let mut since = Instant::now();
    let mut next_try = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        if !sys::carrier(name) {
            return false;
        }
        let phase = dhcp::phase(&lease, since.elapsed());
        if phase == LeasePhase::Bound || Instant::now() < next_try {
            continue;
        }
        if phase == LeasePhase::Expired {
            say(&format!("{name}: lease on {} expired", lease.address));
            return true;
        }
        let xid = random_u32();
        let req = Request {
            kind: MessageType::Request,
            xid,
            mac,
            secs: 0,
            ciaddr: lease.address,
            requested: None,
            server: None,
            hostname: None,
        }
        .encode();
        let sent = if phase == LeasePhase::Renewing {
            sock.send_to(&req, SocketAddrV4::new(lease.server, 67)).map(|_| ())
        } else {
            broadcast(sock, &req)
        };
        if let Err(e) = sent {
            say(&format!("{name}: DHCP renew send: {e}"));
        }
        // RFC 2131 4.4.5: wait half the remaining time to T2 (or expiry), at least 60 s.
        let left = if phase == LeasePhase::Renewing { lease.rebind } else { lease.lease };
        let retry = (left.saturating_sub(since.elapsed()) / 2).max(Duration::from_secs(60));
        next_try = Instant::now() + retry;
        match receive(sock, xid, mac, &[MessageType::Ack, MessageType::Nak], Duration::from_secs(4))
        {
            Some(r) if r.kind == Some(MessageType::Ack) => match Lease::from_ack(&r) {
                Ok(l) if l.address == lease.address => {
                    say(&format!(
                        "{name}: lease on {} renewed for {} s",
                        l.address,
                        l.lease.as_secs()
                    ));
                    if l.routers != lease.routers || l.dns != lease.dns {
                        let _ = configure(name, &l, p);
                    }
                    lease = l;
                    since = Instant::now();
                    next_try = since;
                }
                Ok(l) => {
                    say(&format!("{name}: server moved us to {}; starting over", l.address));
                    return true;
                }
                Err(e) => say(&format!("{name}: unusable ACK: {e}")),
            },
            Some(_) => {
                say(&format!(
                    "{name}: server refused to renew {} (NAK); starting over",
                    lease.address
                ));
                return true;
            }
            None => {}
        }
    }
}

fn broadcast(sock: &UdpSocket, msg: &[u8]) -> std::io::Result<()> {
    sock.send_to(msg, SocketAddrV4::new(Ipv4Addr::BROADCAST, 67)).map(|_| ())
}

/// The next reply for our `xid` and MAC of one of the `kinds`, within `wait`.
fn receive(
    sock: &UdpSocket,
    xid: u32,
    mac: [u8; 6],
    kinds: &[MessageType],
    wait: Duration,
) -> Option<Reply> {
    let end = Instant::now() + wait;
    let mut buf = [0u8; 1500];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let _ = sock.set_read_timeout(Some(left));
        let Ok((n, _)) = sock.recv_from(&mut buf) else { continue };
        let Ok(r) = dhcp::parse_reply(&buf[..n]) else { continue };
        if r.xid == xid && r.mac == mac && r.kind.is_some_and(|k| kinds.contains(&k)) {
            return Some(r);
        }
    }
}

/// Address, routes (the lease's routers as default routes, plus configured ones) and DNS.
fn configure(name: &str, lease: &Lease, p: &plan::IfacePlan) -> std::io::Result<()> {
    sys::set_address(name, lease.address, lease.prefix)?;
    for (i, r) in lease.routers.iter().take(1).enumerate() {
        sys::add_route(name, Ipv4Addr::UNSPECIFIED, 0, *r, i as u32)?;
    }
    for r in &p.routes {
        sys::add_route(name, r.dest, r.prefix, r.via, r.metric)?;
    }
    let mut dns = p.dns.clone();
    dns.extend(lease.dns.iter().copied().filter(|d| !p.dns.contains(d)));
    let mut search = p.search.clone();
    search.extend(lease.domain.clone().filter(|d| !d.is_empty() && !search.contains(d)));
    write_resolv(&dns, &search)
}

fn run_static(p: &plan::IfacePlan, shared: &Shared) {
    let name = p.name.as_str();
    let apply = || -> std::io::Result<()> {
        for (i, (addr, prefix)) in p.addresses.iter().enumerate() {
            let label = if i == 0 { name.to_owned() } else { format!("{name}:{i}") };
            sys::set_address(&label, *addr, *prefix)?;
        }
        for r in &p.routes {
            sys::add_route(name, r.dest, r.prefix, r.via, r.metric)?;
        }
        if !p.dns.is_empty() {
            write_resolv(&p.dns, &p.search)?;
        }
        Ok(())
    };
    match apply() {
        Ok(()) if p.addresses.is_empty() => say(&format!("{name}: up, no address configured")),
        Ok(()) => {
            let (a, pre) = p.addresses[0];
            say(&format!("{name}: static {a}/{pre}"));
            write_status(shared, &format!("{name} {a}/{pre} static in 0 ms"));
        }
        Err(e) => say(&format!("{name}: {e}")),
    }
    if !p.addresses.is_empty() {
        sync_clock(shared, &[]);
    }
    // Link changes: report them, and restore the routes when the link returns (the kernel keeps
    // addresses of a static interface across carrier loss).
    let mut link = sys::carrier(name);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = sys::carrier(name);
        if now != link {
            say(&format!("{name}: link {}", if now { "up" } else { "down" }));
            if now {
                if let Err(e) = apply() {
                    say(&format!("{name}: {e}"));
                }
            }
            link = now;
        }
    }
}

fn start_supplicant(name: &str, wifi: Option<&init_config::net::Wifi>) {
    let override_path = crate::nocloud::apply::WPA_OVERRIDE;
    let conf_path = format!("/run/rpixen/wpa_supplicant-{name}.conf");
    let conf = if Path::new(override_path).exists() {
        say(&format!("{name}: Wi-Fi from CONFIG's wpa_supplicant.conf"));
        std::fs::read_to_string(override_path).map_err(|e| e.to_string())
    } else {
        match wifi {
            Some(w) => wpa::render(name, w),
            None => Err("no wifis entry".into()),
        }
    };
    let conf = match conf {
        Ok(c) => c,
        Err(e) => return say(&format!("{name}: Wi-Fi not configured: {e}")),
    };
    if let Err(e) = std::fs::write(&conf_path, conf) {
        return say(&format!("{conf_path}: {e}"));
    }
    let argv = wpa::command(name, &conf_path);
    match std::process::Command::new(&argv[0]).args(&argv[1..]).spawn() {
        // The child stays ours: when the service stops, PID 1 stops its whole process group.
        Ok(child) => say(&format!("{name}: wpa_supplicant started (pid {})", child.id())),
        Err(e) => say(&format!("{name}: cannot start wpa_supplicant ({e}); Wi-Fi stays down")),
    }
}

fn write_resolv(dns: &[Ipv4Addr], search: &[String]) -> std::io::Result<()> {
    let tmp = "/etc/resolv.conf.rpixen";
    std::fs::write(tmp, plan::resolv_conf(dns, search))?;
    std::fs::rename(tmp, "/etc/resolv.conf")
}

fn write_status(shared: &Shared, line: &str) {
    if shared.status_written.swap(true, Ordering::Relaxed) {
        return;
    }
    let _ = std::fs::create_dir_all("/run/rpixen");
    let tmp = format!("{STATUS}.tmp");
    let result =
        std::fs::write(&tmp, format!("{line}\n")).and_then(|()| std::fs::rename(&tmp, STATUS));
    if let Err(e) = result {
        say(&format!("cannot write {STATUS}: {e}"));
    }
}

/// Asks the servers in order (the lease's, then the configured ones, else pool.ntp.org) until one
/// answers; sets the clock unless the answer is before the floor.
fn sync_clock(shared: &Shared, from_lease: &[Ipv4Addr]) {
    if shared.clock_synced.load(Ordering::Relaxed) {
        return;
    }
    let mut servers: Vec<String> = from_lease.iter().map(|a| a.to_string()).collect();
    servers.extend(shared.ntp.iter().cloned());
    if servers.is_empty() {
        servers.push(DEFAULT_NTP.into());
    }
    for s in &servers {
        match query_ntp(s) {
            Ok((t, rtt)) => {
                if let Err(e) = sntp::acceptable(t, shared.floor) {
                    say(&format!("SNTP {s}: {e}"));
                    continue;
                }
                let before = SystemTime::now();
                if let Err(e) = sys::set_clock(t) {
                    say(&format!("SNTP {s}: cannot set the clock: {e}"));
                    return;
                }
                let step = match t.duration_since(before) {
                    Ok(d) => format!("+{} ms", d.as_millis()),
                    Err(e) => format!("-{} ms", e.duration().as_millis()),
                };
                say(&format!(
                    "clock set by SNTP from {s}: {} (step {step}, round trip {} ms, {} ms after the service started)",
                    unix(t),
                    rtt.as_millis(),
                    shared.started.elapsed().as_millis()
                ));
                shared.clock_synced.store(true, Ordering::Relaxed);
                save_clock();
                return;
            }
            Err(e) => say(&format!("SNTP {s}: {e}")),
        }
    }
}

fn query_ntp(server: &str) -> Result<(SystemTime, Duration), String> {
    let with_port = if server.contains(':') { server.to_owned() } else { format!("{server}:123") };
    let addr: SocketAddr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve: {e}"))?
        .find(SocketAddr::is_ipv4)
        .ok_or("no IPv4 address")?;
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
    for _ in 0..3 {
        let sent = SystemTime::now();
        let t0 = Instant::now();
        sock.send_to(&sntp::request(sent), addr).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 128];
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if from == addr => {
                let rtt = t0.elapsed();
                return sntp::parse_reply(&buf[..n], sent).map(|t| (sntp::corrected(t, rtt), rtt));
            }
            _ => continue,
        }
    }
    Err("no answer".into())
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        let t = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        return t.subsec_nanos() ^ std::process::id();
    }
    u32::from_ne_bytes(b)
}

/// The readiness line's network part, from the service's status line (`None`: no address yet).
pub fn readiness_part(status: Option<&str>, no_device: bool, waited_ms: u128) -> String {
    match status.map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => format!(", network {s}"),
        None if no_device => ", network: no interface".to_owned(),
        None => format!(", network: no address after {waited_ms} ms"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn readiness_part() {
        assert_eq!(
            super::readiness_part(
                Some("eth0 10.0.2.15/24 dhcp from 10.0.2.2 in 812 ms\n"),
                false,
                900
            ),
            ", network eth0 10.0.2.15/24 dhcp from 10.0.2.2 in 812 ms"
        );
        assert_eq!(
            super::readiness_part(None, false, 20000),
            ", network: no address after 20000 ms"
        );
        assert_eq!(super::readiness_part(None, true, 2000), ", network: no interface");
    }
}
