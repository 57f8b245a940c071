//! Links the EL2 binary with its own linker script as a position-independent executable: U-Boot's
//! `booti` moves the image to the next 2 MiB boundary, so the entry code applies its own
//! R_AARCH64_RELATIVE relocations. Host builds (the empty main) are left alone.
fn main() {
    println!("cargo:rerun-if-changed=link.ld");
    if std::env::var("TARGET").as_deref() == Ok("aarch64-unknown-none") {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        for arg in [
            format!("-T{dir}/link.ld"),
            "--pie".into(),
            "-znotext".into(),
            "-zpack-relative-relocs".into(),
            "--no-dynamic-linker".into(),
        ] {
            println!("cargo:rustc-link-arg-bins={arg}");
        }
    }
}
