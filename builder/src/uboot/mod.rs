//! What U-Boot reads: the boot scripts ([`bootscript`]), wrapped as legacy script images
//! ([`uimage`]), the Pi firmware's `config.txt` ([`configtxt`]) and the addresses the files are loaded
//! at ([`load`]). Pure functions of their inputs: text and bytes in, text and bytes out.

pub mod bootscript;
pub mod configtxt;
pub mod load;
pub mod uimage;
