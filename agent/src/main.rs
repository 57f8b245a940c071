//! `rpixen-agent [run] [OPTIONS]` (the service) and `rpixen-agent status [--json]`.
//!
//! Options are parsed by hand: a handful of paths, and clap would add ~300 KiB to a binary that
//! every device carries.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use rpixen_agent::run::{self, Paths, Reboot};
use rpixen_agent::status;

const USAGE: &str = "usage: rpixen-agent [run] [--config FILE] [--status FILE] [--store DIR] \
[--state DEV] [--slot-a DEV] [--slot-b DEV] [--services FILE] [--cmdline FILE] [--watchdog DEV] \
[--reboot init|exit] [--tick-ms N]\n       rpixen-agent status [--json] [--status FILE]";

fn parse(args: &[String]) -> Result<(String, Paths, bool)> {
    let mut paths = Paths::default();
    let mut verb = "run".to_owned();
    let mut json = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value\n{USAGE}"));
        match a.as_str() {
            "run" | "status" => verb = a.clone(),
            "--json" => json = true,
            "--config" => paths.config = value()?.into(),
            "--status" => paths.status = value()?.into(),
            "--store" => paths.blobs = value()?.into(),
            "--state" => paths.state = Some(value()?.into()),
            "--slot-a" => paths.slot_a = Some(value()?.into()),
            "--slot-b" => paths.slot_b = Some(value()?.into()),
            "--services" => paths.services = value()?.into(),
            "--cmdline" => paths.cmdline = value()?.into(),
            "--watchdog" => paths.watchdog = value()?.into(),
            "--reboot" => {
                paths.reboot = match value()?.as_str() {
                    "init" => Reboot::Init,
                    "exit" => Reboot::Exit,
                    other => bail!("--reboot {other}: expected init or exit"),
                }
            }
            "--tick-ms" => {
                let v = value()?;
                let ms: u64 = v.parse().with_context(|| format!("--tick-ms {v}: not a number"))?;
                paths.tick = Duration::from_millis(ms.max(1));
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    Ok((verb, paths, json))
}

fn main_result() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (verb, paths, json) = parse(&args)?;
    if verb == "status" {
        let s = status::load(&paths.status)?.unwrap_or_default();
        if json {
            println!("{}", serde_json::to_string_pretty(&s)?);
        } else {
            print!("{}", status::human(&s));
        }
        return Ok(());
    }
    run::run(&paths)
}

fn main() -> ExitCode {
    match main_result() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rpixen-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
