//! The same static binary in a second role, so one package carries PID 1 and its helpers. PID 1
//! starts them as services or onboot steps with `command: [/proc/self/exe, ROLE]` (the path
//! works for the initramfs's `/init` and the squashfs's `/sbin/init` alike):
//!
//! | role | what |
//! |---|---|
//! | `nocloud` | onboot: applies the boot FAT's NoCloud files and CONFIG's overrides |
//! | `network` | service: DHCP/static addresses, link changes, DNS, SNTP, Wi-Fi |
//! | `sshd` | service: host keys on PERSIST, then dropbear (keys only) |
//! | `install` | onboot, installer images only: writes the carried live image to another disk |

use std::path::Path;

/// Runs a role named by the first argument and returns its exit code; `None` for PID 1's own
/// start. Only a process that is not PID 1 takes a role: the kernel passes PID 1 its unknown
/// command-line words as arguments, which must never select one.
pub fn dispatch() -> Option<i32> {
    if nix::unistd::getpid().as_raw() == 1 {
        return None;
    }
    let role = std::env::args().nth(1)?;
    let code = match role.as_str() {
        "nocloud" => crate::nocloud::apply::main(Path::new("/config")),
        "network" => crate::net::main(Path::new(init_config::DEFAULT_PATH)),
        "sshd" => crate::ssh::main(),
        "install" => crate::install::main(),
        _ => return None,
    };
    Some(code)
}
