//! What the device agent will do first, as a command: `pull-verified REF cosign.pub STORE` checks the
//! cosign signature of REF and fetches every slot file into the blob store STORE, checking each
//! digest. Also the measure of the agent's size: it builds without the `sign` feature for
//! aarch64-unknown-linux-musl.

use std::process::ExitCode;

use rpixen_update::artifact::slot_files;
use rpixen_update::cosign::PublicKey;
use rpixen_update::registry::{Client, Credentials, Reference};
use rpixen_update::verify::{fetch_layers, verify_signed, BlobStore};

fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let [reference, key, store] = args else {
        return Err("usage: pull-verified REF cosign.pub STORE".into());
    };
    let reference = Reference::parse(reference)?;
    let key = PublicKey::from_pem(key, &std::fs::read_to_string(key)?)?;
    let client = Client::new(&reference.registry, Credentials::Anonymous, &[]);
    let verified = verify_signed(&client, &reference, &key)?;
    // The artifact's shape is checked before a byte of it is downloaded.
    let files = slot_files(&verified.digest, &verified.manifest)?;
    let paths = fetch_layers(&client, &verified, &BlobStore::new(store))?;
    for (file, path) in files.iter().zip(paths) {
        println!("{} {} {}", file.role.as_str(), file.name, path.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pull-verified: {e}");
            ExitCode::FAILURE
        }
    }
}
