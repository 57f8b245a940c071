//! Loading the modules the hardware asks for, with no list: every device the kernel knows has a
//! `modalias` (`of:NmmcT(null)Cbrcm,bcm2711-emmc2`, `virtio:d00000002v00554D4D`), which
//! `modules.alias` maps to its driver.
//!
//! - Coldplug at boot: walk `/sys/devices` for `modalias` files, load what matches, and walk again
//!   while loads made new devices appear (virtio_mmio's probe creates the virtio devices whose
//!   drivers are the next round), up to a fixed point.
//! - Later devices (USB, an SD card put in, a Wi-Fi chip whose firmware loads late): a thread reads
//!   the kernel's uevents from a NETLINK_KOBJECT_UEVENT socket and loads for each `add` with a
//!   `MODALIAS`. A thread rather than periodic re-scans of the supervised loop: it reacts within
//!   milliseconds, costs nothing while idle and leaves the supervisor's loop untouched. The socket
//!   is opened before the coldplug walk, so a device appearing during the walk is never missed.

use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use crate::info;
use crate::modules::Loader;

/// The `modalias` values of every device below `root` (`/sys/devices`), without duplicates.
/// Symbolic links are not followed: sysfs links every device from many places.
pub fn modaliases(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() && e.file_name() == "modalias" {
                if let Ok(v) = std::fs::read_to_string(e.path()) {
                    let v = v.trim();
                    if !v.is_empty() {
                        out.insert(v.to_owned());
                    }
                }
            }
        }
    }
    out
}

/// For each modalias not in `seen`, the modules the index names and `tried` does not hold yet.
pub fn wanted(
    aliases: &kmod_index::AliasIndex,
    modaliases: &BTreeSet<String>,
    seen: &mut BTreeSet<String>,
    tried: &BTreeSet<String>,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for m in modaliases {
        if !seen.insert(m.clone()) {
            continue;
        }
        for module in aliases.lookup(m) {
            if !tried.contains(module) && !out.iter().any(|(x, _)| x == module) {
                out.push((module.to_owned(), m.clone()));
            }
        }
    }
    out
}

/// Loads `module` (asked for by the device `modalias`), logging the outcome once.
fn load_for(loader: &mut Loader, module: &str, modalias: &str) {
    match loader.load(module, false) {
        Ok(order) if order.is_empty() => {}
        Ok(order) => info!("modules for {modalias}: loaded {}", order.join(", ")),
        // A driver that finds nothing to drive fails with ENODEV: normal on a generic alias.
        Err(e) => info!("modules for {modalias}: {e}"),
    }
}

/// Coldplug, then a thread for later devices. Silent when the rootfs has no `modules.alias`.
pub fn start() {
    let uevents = open_uevent_socket();
    let mut loader = match Loader::for_running_kernel() {
        Ok(l) => l,
        Err(e) => {
            crate::trace!("coldplug: {e}");
            return;
        }
    };
    if loader.aliases().is_empty() {
        info!(
            "coldplug: no modules.alias in {}: only configured modules are loaded",
            loader.dir().display()
        );
        return;
    }
    let started = std::time::Instant::now();
    let mut seen = BTreeSet::new();
    let mut tried = BTreeSet::new();
    for _round in 0..8 {
        let found = modaliases(Path::new("/sys/devices"));
        let todo = wanted(loader.aliases(), &found, &mut seen, &tried);
        if todo.is_empty() {
            break;
        }
        for (module, modalias) in todo {
            tried.insert(module.clone());
            load_for(&mut loader, &module, &modalias);
        }
    }
    crate::trace!(
        "coldplug: {} devices, {} modules tried in {} ms",
        seen.len(),
        tried.len(),
        started.elapsed().as_millis()
    );
    match uevents {
        Ok(sock) => {
            let spawned = std::thread::Builder::new()
                .name("hotplug".into())
                .spawn(move || hotplug(sock, loader, tried));
            if let Err(e) = spawned {
                info!("hotplug: cannot start its thread: {e}");
            }
        }
        Err(e) => info!("hotplug: no uevent socket ({e}); devices added later get no driver"),
    }
}

fn open_uevent_socket() -> nix::Result<OwnedFd> {
    use nix::sys::socket::{
        bind, setsockopt, socket, sockopt, AddressFamily, NetlinkAddr, SockFlag, SockProtocol,
        SockType,
    };
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkKObjectUEvent,
    )?;
    // Coldplug's own loads add devices while nobody reads yet: room for a burst of events.
    let _ = setsockopt(&fd, sockopt::RcvBufForce, &(4 << 20));
    // Group 1: the kernel's own events.
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 1))?;
    Ok(fd)
}

/// `ACTION` and `MODALIAS` of one uevent message (`add@/devices/...\0ACTION=add\0...`).
pub fn parse_uevent(msg: &[u8]) -> (Option<&str>, Option<&str>) {
    let mut action = None;
    let mut modalias = None;
    for field in msg.split(|b| *b == 0) {
        let Ok(f) = std::str::from_utf8(field) else {
            continue;
        };
        if let Some(v) = f.strip_prefix("ACTION=") {
            action = Some(v);
        } else if let Some(v) = f.strip_prefix("MODALIAS=") {
            modalias = Some(v);
        }
    }
    (action, modalias)
}

fn hotplug(sock: OwnedFd, mut loader: Loader, mut tried: BTreeSet<String>) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        match nix::sys::socket::recv(
            sock.as_raw_fd(),
            &mut buf,
            nix::sys::socket::MsgFlags::empty(),
        ) {
            Ok(n) => {
                let (action, modalias) = parse_uevent(&buf[..n]);
                let (Some("add"), Some(m)) = (action, modalias) else {
                    continue;
                };
                for module in
                    loader.aliases().lookup(m).into_iter().map(str::to_owned).collect::<Vec<_>>()
                {
                    if tried.insert(module.clone()) {
                        load_for(&mut loader, &module, m);
                    }
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::ENOBUFS) => {
                // Events were lost: a walk finds whatever they announced.
                let found = modaliases(Path::new("/sys/devices"));
                let todo = wanted(loader.aliases(), &found, &mut BTreeSet::new(), &tried);
                for (module, modalias) in todo {
                    tried.insert(module.clone());
                    load_for(&mut loader, &module, &modalias);
                }
            }
            Err(e) => {
                info!("hotplug: reading uevents: {e}; stopped");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uevent_fields() {
        let msg = b"add@/devices/platform/a000000.virtio_mmio/virtio0\0ACTION=add\0DEVPATH=/devices/x\0SUBSYSTEM=virtio\0MODALIAS=virtio:d00000002v00554D4D\0SEQNUM=812\0";
        assert_eq!(parse_uevent(msg), (Some("add"), Some("virtio:d00000002v00554D4D")));
        assert_eq!(parse_uevent(b"libudev\0\xfe\xed"), (None, None));
        assert_eq!(parse_uevent(b"remove@/x\0ACTION=remove\0"), (Some("remove"), None));
    }

    #[test]
    fn each_device_and_module_once() {
        let idx = kmod_index::AliasIndex::parse(
            "alias virtio:d00000002v* virtio_blk\nalias virtio:d00000001v* virtio_net\nalias of:N*T*Cvirtio,mmio virtio_mmio\n",
        );
        let devices: BTreeSet<String> =
            ["of:NvirtioT(null)Cvirtio,mmio", "virtio:d00000002v00554D4D", "platform:unknown"]
                .map(String::from)
                .into();
        let mut seen = BTreeSet::new();
        let tried = BTreeSet::from(["virtio_mmio".to_owned()]);
        let todo = wanted(&idx, &devices, &mut seen, &tried);
        assert_eq!(todo, [("virtio_blk".to_owned(), "virtio:d00000002v00554D4D".to_owned())]);
        // A second walk finding the same devices plus a new one asks only for the new one.
        let more: BTreeSet<String> =
            devices.iter().cloned().chain(["virtio:d00000001v00554D4D".to_owned()]).collect();
        let todo = wanted(&idx, &more, &mut seen, &tried);
        assert_eq!(todo, [("virtio_net".to_owned(), "virtio:d00000001v00554D4D".to_owned())]);
    }

    #[test]
    fn walks_a_tree_without_following_links() {
        let root = std::env::temp_dir().join(format!("dom0-init-sysfs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("platform/a000000.virtio_mmio/virtio0")).unwrap();
        std::fs::write(
            root.join("platform/a000000.virtio_mmio/modalias"),
            "of:NvirtioT(null)Cvirtio,mmio\n",
        )
        .unwrap();
        std::fs::write(
            root.join("platform/a000000.virtio_mmio/virtio0/modalias"),
            "virtio:d00000002v00554D4D\n",
        )
        .unwrap();
        std::fs::create_dir_all(root.join("platform/no-driver")).unwrap();
        std::fs::write(root.join("platform/no-driver/modalias"), "\n").unwrap();
        std::os::unix::fs::symlink(
            root.join("platform"),
            root.join("platform/a000000.virtio_mmio/loop"),
        )
        .unwrap();
        let found = modaliases(&root);
        assert_eq!(
            found.into_iter().collect::<Vec<_>>(),
            ["of:NvirtioT(null)Cvirtio,mmio", "virtio:d00000002v00554D4D"]
        );
        std::fs::remove_dir_all(root).unwrap();
    }
}
