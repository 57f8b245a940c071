//! The few system calls no safe wrapper covers. Every other module is free of `unsafe`.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Where the signal handler writes: the write end of init's self-pipe (-1: not set up yet).
static SIGNAL_PIPE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_PIPE.load(std::sync::atomic::Ordering::Relaxed);
    if fd >= 0 {
        let saved = nix::errno::Errno::last_raw();
        let byte = sig as u8;
        // SAFETY: write(2) is async-signal-safe and `byte` lives for the call. A full pipe only
        // drops this byte; enough others are pending to wake the main loop.
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
        nix::errno::Errno::set_raw(saved);
    }
}

/// Installs a handler for `signals` that writes each delivery's number as one byte to `write_fd`
/// (the self-pipe trick). Handlers, unlike a blocked mask, do not survive exec, so children start
/// with default signal handling and std can spawn them with vfork speed.
pub fn route_signals_to(
    write_fd: std::os::fd::RawFd,
    signals: &[nix::sys::signal::Signal],
) -> nix::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet};
    SIGNAL_PIPE.store(write_fd, std::sync::atomic::Ordering::Relaxed);
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART | SaFlags::SA_NOCLDSTOP,
        SigSet::empty(),
    );
    for s in signals {
        // SAFETY: `on_signal` only does async-signal-safe work (an atomic load and write(2)).
        unsafe { sigaction(*s, &action)? };
    }
    Ok(())
}

/// Makes the child a session leader whose controlling terminal is its stdin, so a shell on the
/// console gets job control and ctrl-C. Failing TIOCSCTTY (stdin is not a terminal, as in host tests)
/// is not an error: the shell still runs.
pub fn new_session_with_tty(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls async-signal-safe
    // functions (setsid, ioctl); it touches no locks or allocations.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            libc::ioctl(0, libc::TIOCSCTTY as _, 1);
            Ok(())
        });
    }
}

/// Sets IFF_UP on the interface `name` (SIOCGIFFLAGS / SIOCSIFFLAGS): neither nix nor rustix wraps
/// these interface ioctls. Bringing `lo` up makes the kernel add 127.0.0.1/8 and ::1 itself.
pub fn interface_up(name: &str) -> io::Result<()> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    // Any socket will do for interface ioctls; no need to bind one.
    let sock = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)
        .or_else(|_| socket(AddressFamily::Inet6, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None))
        .map_err(io::Error::from)?;
    // SAFETY: ifreq is a plain C struct; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "interface name too long"));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: the socket fd is open for the duration of the call and `req` is a valid, writable
    // ifreq with a NUL-terminated name, as SIOCGIFFLAGS requires.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above; SIOCSIFFLAGS reads the same struct.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes `console` the process's stdin, stdout and stderr (children inherit them).
pub fn console_to_stdio(console: &std::fs::File) {
    for fd in 0..3 {
        // SAFETY: both descriptors are valid: `console` is open and 0-2 are plain numbers dup2
        // replaces atomically; no Rust object owns fds 0-2 in PID 1 at this point.
        unsafe { libc::dup2(console.as_raw_fd(), fd) };
    }
}
