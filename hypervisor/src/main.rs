//! The EL2 binary. Only meaningful for `aarch64-unknown-none`; on the host it is an empty program so
//! that `cargo test --workspace` can run the library's tests.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
