//! Dom0's PID 1; see the library for what it does.

fn main() {
    // Run by the kernel as its module helper (`/proc/sys/kernel/modprobe`, a link named modprobe).
    if let Some(code) = dom0_init::modules::modprobe_main() {
        std::process::exit(code);
    }
    dom0_init::run(std::time::Instant::now())
}
