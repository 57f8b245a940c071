//! What the device agent does, as a command: `install-slot REF cosign.pub STORE ACTIVE INACTIVE`
//! checks the cosign signature of REF, then installs its slot image into the partition INACTIVE,
//! reading unchanged chunks from ACTIVE and downloading the rest into the blob store STORE. Also the
//! measure of the agent's size: it builds without the `sign` feature for aarch64-unknown-linux-musl.

use std::ops::ControlFlow;
use std::path::Path;
use std::process::ExitCode;

use rpixen_update::cosign::PublicKey;
use rpixen_update::install::{install_slot, Slots};
use rpixen_update::registry::{Client, Credentials, Reference};
use rpixen_update::verify::{verify_signed, BlobStore};

fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let [reference, key, store, active, inactive] = args else {
        return Err("usage: install-slot REF cosign.pub STORE ACTIVE INACTIVE".into());
    };
    let reference = Reference::parse(reference)?;
    let key = PublicKey::from_pem(key, &std::fs::read_to_string(key)?)?;
    let client = Client::new(&reference.registry, Credentials::Anonymous, &[]);
    let verified = verify_signed(&client, &reference, &key)?;
    let store = BlobStore::new(store);
    let slots = Slots {
        active: Path::new(active),
        inactive: Path::new(inactive),
        store: &store,
        store_cap: 1 << 30,
    };
    let done = install_slot(&client, &verified, &slots, &mut |_| ControlFlow::Continue(()))?;
    println!(
        "{} {} bytes: downloaded {}, reused {}",
        done.digest, done.image_size, done.downloaded, done.reused
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("install-slot: {e}");
            ExitCode::FAILURE
        }
    }
}
