//! Dom0's PID 1; see the library for what it does.

fn main() {
    dom0_init::run(std::time::Instant::now())
}
