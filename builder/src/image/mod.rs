//! The disk image: boot scripts, config.txt, load-address plan, FAT and GPT writers, and their assembly
//! into a flashable `live.raw`.

pub mod uimage;
pub mod bootscript;
pub mod configtxt;
pub mod layout;
pub mod fat;
pub mod table;
pub mod ids;
pub mod disk;
pub mod output;
pub mod dtb;
pub mod files;
pub mod live;
pub mod inspect;
pub mod source;
