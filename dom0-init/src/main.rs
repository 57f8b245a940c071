//! Dom0's PID 1; see the library for what it does.

fn main() {
    // Run by the kernel as its module helper (`/proc/sys/kernel/modprobe`, a link named modprobe).
    if let Some(code) = dom0_init::modules::modprobe_main() {
        std::process::exit(code);
    }
    // `dom0-init nocloud|network|sshd`: the helper roles PID 1 starts (see `roles`).
    if let Some(code) = dom0_init::roles::dispatch() {
        std::process::exit(code);
    }
    dom0_init::run(std::time::Instant::now())
}
