//! Fleet updates for rpixen devices: slot artifacts as OCI images, their cosign signatures, and the
//! verified, chunk-deduplicated install the device agent runs.
//!
//! - [`artifact`]: the slot artifact (a slot partition's image cut into content-defined chunks, one
//!   raw layer each) and its OCI layout writer, [`artifact::write_slot_layout`].
//! - [`chunking`]: the FastCDC parameters producer and device share.
//! - [`oci`]: the manifest and descriptor types and sha256 digests.
//! - [`cosign`]: cosign's key files, simple-signing payloads and `.sig` manifests.
//! - [`registry`]: a small blocking registry client (pull, and the pushes signing needs).
//! - [`sign`]: signing a manifest in a registry, stored as cosign stores it (feature `sign`; the device
//!   agent builds without it: no scrypt, no secretbox).
//! - [`verify`]: the signature check and the blob store (downloads checked while they stream,
//!   resumed with Range requests).
//! - [`install`]: writing a verified artifact into the inactive slot, downloading only the chunks
//!   the active slot lacks.
//!
//! # The device agent's calls
//! ```no_run
//! use std::ops::ControlFlow;
//! use std::path::Path;
//! use rpixen_update::cosign::PublicKey;
//! use rpixen_update::install::{install_slot, Slots};
//! use rpixen_update::registry::{Client, Credentials, Reference};
//! use rpixen_update::verify::{verify_signed, BlobStore};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let reference = Reference::parse("10.0.2.2:5000/fleet/qemu-virt:2.0.0")?;
//! let key = PublicKey::from_pem("cosign.pub", &std::fs::read_to_string("/config/cosign.pub")?)?;
//! let client = Client::new(&reference.registry, Credentials::Anonymous, &[]);
//! // 1. The signature, before anything else is fetched.
//! let verified = verify_signed(&client, &reference, &key)?;
//! // 2. Chunks: reused from the active slot, the rest downloaded and checked; then the write and
//! //    the read-back. Only after this returns may the inactive slot be marked for a trial boot.
//! let store = BlobStore::new("/persist/update/blobs");
//! let slots = Slots {
//!     active: Path::new("/dev/disk/by-partlabel/IMGA"),
//!     inactive: Path::new("/dev/disk/by-partlabel/IMGB"),
//!     store: &store,
//!     store_cap: 256 << 20,
//! };
//! let done = install_slot(&client, &verified, &slots, &mut |p| {
//!     eprintln!("{:?}: fetched {} of {}, written {}", p.stage, p.fetched, p.to_fetch, p.written);
//!     ControlFlow::Continue(())
//! })?;
//! println!("{}: downloaded {} bytes, reused {}", done.digest, done.downloaded, done.reused);
//! # Ok(())
//! # }
//! ```

pub mod artifact;
pub mod chunking;
pub mod cosign;
pub mod install;
pub mod oci;
pub mod registry;
#[cfg(feature = "sign")]
pub mod sign;
pub mod verify;
