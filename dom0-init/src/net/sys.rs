//! The kernel calls the network service makes: interface flags, IPv4 addresses and routes through
//! the classic `SIOC*` ioctls, the DHCP socket, and the clock.
//!
//! ioctls rather than rtnetlink (`netlink-packet-route` + `netlink-sys`): the service sets one
//! address, a netmask and a few routes per interface, which these calls do in a handful of lines,
//! while the netlink crates would add about 1 MB of generated message types to the static binary.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn ctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is a plain C struct; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= req.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name `{name}`"),
        ));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

fn sockaddr(a: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(a).to_be() },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size on Linux, and the kernel reads an
    // AF_INET sockaddr as sockaddr_in.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ioctl(request: libc::Ioctl, req: &mut libc::ifreq, what: &str, name: &str) -> io::Result<()> {
    let sock = ctl_socket()?;
    // SAFETY: the socket is open for the call and `req` is a valid, writable ifreq with a
    // NUL-terminated name, which every SIOC[GS]IF* request used here reads or fills.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request, req as *mut libc::ifreq) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{name}: {what}: {e}")));
    }
    Ok(())
}

/// Sets IFF_UP on `name` (or clears it).
pub fn set_up(name: &str, up: bool) -> io::Result<()> {
    let mut req = ifreq(name)?;
    ioctl(libc::SIOCGIFFLAGS as _, &mut req, "get flags", name)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe {
        if up {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        } else {
            req.ifr_ifru.ifru_flags &= !(libc::IFF_UP as libc::c_short);
        }
    }
    ioctl(libc::SIOCSIFFLAGS as _, &mut req, "set flags", name)
}

/// The interface's MAC address.
pub fn mac(name: &str) -> io::Result<[u8; 6]> {
    let mut req = ifreq(name)?;
    ioctl(libc::SIOCGIFHWADDR as _, &mut req, "get hardware address", name)?;
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(data.iter()) {
        *m = *d as u8;
    }
    Ok(mac)
}

/// Gives `label` (`eth0`, or `eth0:1` for a second address) `addr/prefix`. Setting 0.0.0.0 on the
/// interface itself removes its addresses and the routes through them.
pub fn set_address(label: &str, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
    let mut req = ifreq(label)?;
    req.ifr_ifru.ifru_addr = sockaddr(addr);
    ioctl(libc::SIOCSIFADDR as _, &mut req, "set address", label)?;
    if addr.is_unspecified() {
        return Ok(());
    }
    let mut req = ifreq(label)?;
    req.ifr_ifru.ifru_netmask = sockaddr(super::dhcp::mask(prefix));
    ioctl(libc::SIOCSIFNETMASK as _, &mut req, "set netmask", label)?;
    let host_bits = !u32::from(super::dhcp::mask(prefix));
    let mut req = ifreq(label)?;
    req.ifr_ifru.ifru_broadaddr = sockaddr(Ipv4Addr::from(u32::from(addr) | host_bits));
    ioctl(libc::SIOCSIFBRDADDR as _, &mut req, "set broadcast", label)
}

/// Adds a route through a gateway on `dev`; an existing identical route is not an error.
pub fn add_route(
    dev: &str,
    dest: Ipv4Addr,
    prefix: u8,
    via: Ipv4Addr,
    metric: u32,
) -> io::Result<()> {
    let sock = ctl_socket()?;
    let mut name: Vec<u8> = dev.as_bytes().to_vec();
    name.push(0);
    // SAFETY: rtentry is a plain C struct; all-zero is a valid value (no device, no flags).
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    rt.rt_dst = sockaddr(dest);
    rt.rt_gateway = sockaddr(via);
    rt.rt_genmask = sockaddr(super::dhcp::mask(prefix));
    rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    // route(8) adds 1: the kernel stores metric - 1 for this ioctl.
    rt.rt_metric = (metric + 1) as libc::c_short;
    rt.rt_dev = name.as_mut_ptr().cast();
    // SAFETY: the socket is open for the call; `rt` is a valid rtentry whose rt_dev points at
    // `name`, a NUL-terminated buffer that outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCADDRT as _, &rt as *const libc::rtentry) }
        < 0
    {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EEXIST) {
            return Ok(());
        }
        return Err(io::Error::new(
            e.kind(),
            format!("{dev}: route {dest}/{prefix} via {via}: {e}"),
        ));
    }
    Ok(())
}

/// The UDP socket of a DHCP client on `dev`: port 68, bound to the device, allowed to broadcast.
/// Bound to the device, limited-broadcast replies reach it before the interface has an address,
/// so no raw packet socket is needed (servers are asked to broadcast: see `dhcp::Request`).
pub fn dhcp_socket(dev: &str) -> io::Result<UdpSocket> {
    let sock = ctl_socket()?;
    let fd = sock.as_raw_fd();
    let one: libc::c_int = 1;
    let set = |level, opt, value: *const libc::c_void, len: usize, what: &str| -> io::Result<()> {
        // SAFETY: `value` points at `len` readable bytes for the duration of the call.
        if unsafe { libc::setsockopt(fd, level, opt, value, len as libc::socklen_t) } < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("{dev}: DHCP socket {what}: {e}")));
        }
        Ok(())
    };
    let one_ptr = (&one as *const libc::c_int).cast();
    let int = std::mem::size_of::<libc::c_int>();
    set(libc::SOL_SOCKET, libc::SO_REUSEADDR, one_ptr, int, "SO_REUSEADDR")?;
    set(libc::SOL_SOCKET, libc::SO_BROADCAST, one_ptr, int, "SO_BROADCAST")?;
    set(
        libc::SOL_SOCKET,
        libc::SO_BINDTODEVICE,
        dev.as_ptr().cast(),
        dev.len(),
        "SO_BINDTODEVICE",
    )?;
    let udp = UdpSocket::from(sock);
    let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68);
    // std's bind would make a new socket; bind this one through socket2-free plain bind(2).
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: any.port().to_be(),
        sin_addr: libc::in_addr { s_addr: 0 },
        sin_zero: [0; 8],
    };
    // SAFETY: `sa` is a valid sockaddr_in of the size passed.
    let rc = unsafe {
        libc::bind(
            udp.as_raw_fd(),
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{dev}: DHCP socket bind :68: {e}")));
    }
    Ok(udp)
}

/// Sets the system clock (CAP_SYS_TIME: the service runs as root).
pub fn set_clock(t: SystemTime) -> io::Result<()> {
    let d = t.duration_since(UNIX_EPOCH).map_err(|_| io::Error::other("time before 1970"))?;
    let ts = libc::timespec { tv_sec: d.as_secs() as libc::time_t, tv_nsec: d.subsec_nanos() as _ };
    // SAFETY: `ts` is a valid timespec for the duration of the call.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `/sys/class/net/NAME/carrier`: 1 with a link, 0 without; unreadable while the interface is down.
pub fn carrier(name: &str) -> bool {
    std::fs::read_to_string(format!("/sys/class/net/{name}/carrier")).is_ok_and(|s| s.trim() == "1")
}

/// The interfaces the kernel has (besides loopback), and which are wireless.
pub fn interfaces() -> Vec<super::plan::Found> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else { return out };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        // ARPHRD_ETHER (1) only: no loopback, tunnels or CAN.
        let ether = std::fs::read_to_string(path.join("type")).is_ok_and(|t| t.trim() == "1");
        let physical = path.join("device").exists();
        if !ether || !physical {
            continue;
        }
        let wireless = path.join("wireless").exists() || path.join("phy80211").exists();
        out.push(super::plan::Found { name, wireless });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Milliseconds the system has been up (CLOCK_BOOTTIME: unaffected by setting the clock).
pub fn uptime() -> Duration {
    // SAFETY: timespec is plain data; clock_gettime fills it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
