//! The `rpixen` subcommands. Each module owns its clap arguments and its `run`, which turns the
//! arguments into calls on the library.

pub mod container;
pub mod inspect;
pub mod installer;
pub mod live;
pub mod netboot;
pub mod pkg;
pub mod pull;
pub mod rootfs;
pub mod sbom;
pub mod update;
