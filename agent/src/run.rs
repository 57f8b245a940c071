//! The agent's life: read what the last boot left (STATE, the status file), finish what it says,
//! then poll the reference forever. Decisions come from [`crate::decide`]; this module does the
//! I/O around them and reports every step on the console and in the status file.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context as _, Result};
use init_config::service_status::{self, ServiceStatus};
use rpixen_slot_state::device::StateDevice;
use rpixen_slot_state::machine::{self, Copies};
use rpixen_slot_state::record::{Record, Slot};
use rpixen_update::artifact::{self, SlotImage};
use rpixen_update::cosign::PublicKey;
use rpixen_update::install::{install_slot, Slots, Stage};
use rpixen_update::oci;
use rpixen_update::registry::{Client, RegistryError};
use rpixen_update::verify::{verify_signed, BlobStore, Verified};

use crate::config::{self, Config};
use crate::decide::{self, OnPoll, OnStart, TrialClock, Verdict};
use crate::status::{self, Artifact, Status, Step, Target};
use crate::watchdog::Watchdog;

/// How long after start a registry that cannot be reached is retried quietly (DHCP, DNS and the registry coming up).
const STARTUP_GRACE: Duration = Duration::from_secs(90);
const STARTUP_RETRY: Duration = Duration::from_secs(5);

/// How a reboot is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reboot {
    /// SIGTERM to PID 1 (dom0-init's orderly reboot, as busybox `reboot` asks for it).
    Init,
    /// Exit with [`REBOOT_EXIT_CODE`]: a test plays the boot script and starts the agent again.
    Exit,
}

/// The exit code of `--reboot exit`.
pub const REBOOT_EXIT_CODE: i32 = 75;

/// Where everything is. The defaults are a device's; tests point them at files.
#[derive(Debug, Clone)]
pub struct Paths {
    pub config: PathBuf,
    pub status: PathBuf,
    pub blobs: PathBuf,
    /// None: the partition labelled STATE (IMGA, IMGB).
    pub state: Option<PathBuf>,
    pub slot_a: Option<PathBuf>,
    pub slot_b: Option<PathBuf>,
    pub services: PathBuf,
    pub cmdline: PathBuf,
    pub watchdog: PathBuf,
    pub reboot: Reboot,
    /// The look interval during a trial.
    pub tick: Duration,
}

impl Default for Paths {
    fn default() -> Paths {
        Paths {
            config: config::DEFAULT_PATH.into(),
            status: status::DEFAULT_PATH.into(),
            blobs: "/persist/rpixen-agent/store".into(),
            state: None,
            slot_a: None,
            slot_b: None,
            services: service_status::PATH.into(),
            cmdline: "/proc/cmdline".into(),
            watchdog: "/dev/watchdog".into(),
            reboot: Reboot::Init,
            tick: Duration::from_secs(1),
        }
    }
}

impl Paths {
    fn partition(given: &Option<PathBuf>, label: &str) -> Result<PathBuf> {
        if let Some(p) = given {
            return Ok(p.clone());
        }
        find_by_partlabel(label).ok_or_else(|| anyhow!("no partition labelled {label}"))
    }

    fn slot(&self, s: Slot) -> Result<PathBuf> {
        match s {
            Slot::A => Paths::partition(&self.slot_a, "IMGA"),
            Slot::B => Paths::partition(&self.slot_b, "IMGB"),
        }
    }
}

/// The `/dev` node of the partition whose GPT name is `label` (sysfs, as dom0-init finds them).
fn find_by_partlabel(label: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir("/sys/class/block").ok()?.flatten() {
        let Ok(text) = std::fs::read_to_string(e.path().join("uevent")) else { continue };
        let value = |key: &str| text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('='));
        if value("PARTNAME") == Some(label) {
            return Some(Path::new("/dev").join(value("DEVNAME")?));
        }
    }
    None
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A step on the console (dom0-init also copies it to the agent's log on PERSIST).
fn say(text: &str) {
    println!("rpixen-agent: {text}");
}

struct Agent<'a> {
    paths: &'a Paths,
    status: Status,
    running: Slot,
    state: StateDevice,
}

impl Agent<'_> {
    /// Records a step: the status file first (durably), then the console.
    fn report(&mut self, step: Step, message: String) -> Result<()> {
        self.status.step = step;
        self.status.message = message;
        self.status.at_ms = now_ms();
        status::store(&self.paths.status, &self.status)?;
        say(&format!("{} {}", step.as_str(), self.status.message));
        Ok(())
    }

    fn newest(&self) -> Result<(Copies, Option<Record>)> {
        let copies = self.state.read()?;
        let rec = copies.newest().map(|(_, r)| r);
        Ok((copies, rec))
    }

    /// Applies a transition of [`machine`] to the newest record and writes it.
    fn transition(
        &self,
        step: fn(&Record, Slot) -> Result<Record, machine::TransitionError>,
    ) -> Result<()> {
        let (copies, rec) = self.newest()?;
        let rec = rec.ok_or_else(|| anyhow!("STATE holds no valid record"))?;
        self.state.write(&copies, &step(&rec, self.running)?)?;
        Ok(())
    }

    fn reboot(&self, why: &str) -> Result<()> {
        say(&format!("rebooting: {why}"));
        match self.paths.reboot {
            Reboot::Exit => std::process::exit(REBOOT_EXIT_CODE),
            Reboot::Init => {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(1), nix::sys::signal::SIGTERM)
                    .context("cannot ask init (pid 1) to reboot")?;
                // dom0-init stops every service, this one included, before it reboots.
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
        }
    }
}

/// The registry client, public key and reference a config names.
struct Remote {
    config: Config,
    client: Client,
    key: PublicKey,
}

impl Remote {
    fn new(config: Config) -> Result<Remote> {
        let pem = std::fs::read_to_string(&config.public_key)
            .with_context(|| format!("{}", config.public_key.display()))?;
        let key = PublicKey::from_pem(&config.public_key.display().to_string(), &pem)?;
        let credentials = config::credentials(&config)?;
        let client =
            Client::new(&config.reference.registry, credentials, &config.insecure_registries);
        Ok(Remote { config, client, key })
    }

    /// The digest the reference names now.
    fn resolve(&self) -> Result<String> {
        let r = &self.config.reference;
        let (bytes, _) = self
            .client
            .manifest(&r.repository, r.tag_or_digest())?
            .ok_or_else(|| anyhow!("{r}: no such manifest in the registry"))?;
        Ok(oci::sha256(&bytes))
    }
}

/// The whole service. A setup error (no slot on the command line, no STATE) is reported and the
/// agent then idles: exiting would only make dom0-init restart it in a loop, which also reads as
/// an unhealthy system. With `--reboot exit` (tests) it returns the error.
pub fn run(paths: &Paths) -> Result<()> {
    let err = match serve(paths) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    if paths.reboot == Reboot::Exit {
        return Err(err);
    }
    let mut s = status::load(&paths.status).ok().flatten().unwrap_or_default();
    (s.step, s.message, s.at_ms) = (Step::Failed, format!("{err:#}"), now_ms());
    if let Err(e) = status::store(&paths.status, &s) {
        say(&format!("{e:#}"));
    }
    say(&format!("FAILED {err:#}; idle"));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn serve(paths: &Paths) -> Result<()> {
    let status = match status::load(&paths.status) {
        Ok(s) => s.unwrap_or_default(),
        // Written atomically, so this is damage from outside: start over, saying so.
        Err(e) => Status { message: format!("{e:#}; starting over"), ..Status::default() },
    };
    let cmdline = std::fs::read_to_string(&paths.cmdline)
        .with_context(|| format!("{}", paths.cmdline.display()))?;
    let running = decide::running_slot(&cmdline).ok_or_else(|| {
        anyhow!(
            "{}: no `rpixen.slot=a|b` (this image's boot script does not choose slots)",
            paths.cmdline.display()
        )
    })?;
    let state_path = Paths::partition(&paths.state, rpixen_slot_state::PARTITION_NAME)?;
    let state = StateDevice::open(&state_path)?;
    let mut agent = Agent { paths, status, running, state };
    agent.status.running = Some(running.into());
    let remote = config::load(&paths.config).map_err(anyhow::Error::from).and_then(Remote::new);
    if let Ok(r) = &remote {
        agent.status.reference = Some(r.config.reference.to_string());
    }

    let (copies, _) = agent.newest()?;
    let after = machine::after_boot(&copies, running);
    match decide::on_start(after, &agent.status, running) {
        OnStart::Test => trial(&mut agent, remote.as_ref().map_err(|e| format!("{e:#}")))?,
        OnStart::Fallback => fallback(&mut agent)?,
        OnStart::RebootIntoTrial => {
            agent.reboot(&format!("slot {} waits for its trial boot", running.other()))?
        }
        OnStart::FinishCommit => finish_commit(&mut agent)?,
        OnStart::Repair => {
            let (copies, rec) = agent.newest()?;
            agent.state.write(&copies, &machine::repair(rec.as_ref(), running))?;
            agent.status.slots.set(running.other(), None);
            let m = format!("slot state rewritten: slot {running} committed (booted without it)");
            agent.report(Step::Idle, m)?;
        }
        OnStart::Poll => {}
    }

    let remote = match remote {
        Ok(r) => r,
        Err(e) => {
            // No update.yml is a device that does not follow anything, not a failure.
            let absent = matches!(e.downcast_ref::<config::ConfigError>(), Some(config::ConfigError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound);
            let step = if absent { Step::Idle } else { Step::Failed };
            agent.report(step, format!("updates are off: {e:#}"))?;
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    };
    let started = Instant::now();
    loop {
        let mut wait = Duration::from_secs(remote.config.poll_interval_secs);
        if let Err(e) = poll(&mut agent, &remote) {
            let unreachable =
                matches!(e.downcast_ref::<RegistryError>(), Some(RegistryError::Http { .. }));
            if unreachable && started.elapsed() < STARTUP_GRACE {
                // Right after boot the network may not be up yet: not a failure to report.
                say(&format!("not yet: {e:#}; again in {} s", STARTUP_RETRY.as_secs()));
                wait = wait.min(STARTUP_RETRY);
            } else {
                agent.status.target = None;
                agent.report(Step::Failed, format!("{e:#}"))?;
            }
        }
        std::thread::sleep(wait);
    }
}

/// One poll: resolve the reference and act on what it names.
fn poll(agent: &mut Agent, remote: &Remote) -> Result<()> {
    let polled_at_ms = now_ms();
    let digest = remote.resolve()?;
    let running = agent.running;
    match decide::on_poll(&agent.status, running, &digest) {
        OnPoll::Current => {
            if agent.status.step == Step::Failed {
                agent.report(Step::Idle, format!("slot {running} holds {digest}: up to date"))?;
            }
        }
        OnPoll::KnownFailed => {
            if agent.status.step != Step::Fallback {
                let m = format!("{digest} failed its trial before: not retried");
                agent.report(Step::Fallback, m)?;
            }
        }
        OnPoll::Identify | OnPoll::Update => {
            let verified = verify(remote, &digest)?;
            let image = artifact::slot_image(&digest, &verified.manifest)?;
            let held = artifact_of(&verified, &image);
            if holds_image(agent, &image)? {
                agent.status.slots.set(running, Some(held.clone()));
                agent.report(Step::Idle, format!("slot {running} holds {held}: up to date"))?;
            } else {
                update(agent, remote, verified, held, polled_at_ms)?;
            }
        }
    }
    Ok(())
}

fn verify(remote: &Remote, digest: &str) -> Result<Verified> {
    Ok(verify_signed(&remote.client, &remote.config.reference.at(digest), &remote.key)?)
}

fn artifact_of(v: &Verified, image: &SlotImage) -> Artifact {
    Artifact {
        digest: v.digest.clone(),
        version: v.manifest.annotations.get(artifact::VERSION).cloned(),
        image: Some(image.digest.clone()),
    }
}

/// Whether the running slot already holds `image`: the status file says so, or (a factory image,
/// a status file that names another manifest) the slot's first `image.size` bytes hash to it.
fn holds_image(agent: &Agent, image: &SlotImage) -> Result<bool> {
    if let Some(known) = agent.status.slots.get(agent.running).and_then(|a| a.image.as_deref()) {
        return Ok(known == image.digest);
    }
    let dev = agent.paths.slot(agent.running)?;
    let file = std::fs::File::open(&dev).with_context(|| format!("{}", dev.display()))?;
    let (digest, n) =
        oci::copy_hashed(&mut std::io::Read::take(file, image.size), &mut std::io::sink())
            .with_context(|| format!("{}", dev.display()))?;
    Ok(n == image.size && digest == image.digest)
}

/// DOWNLOADING (the chunks the running slot lacks, every digest checked) → UPDATING (STATE marks
/// the other slot `unused`, then it is written and read back) → the trial scheduled in STATE →
/// reboot. A refused artifact or a failed download leaves the other slot and STATE untouched.
fn update(
    agent: &mut Agent,
    remote: &Remote,
    verified: Verified,
    art: Artifact,
    polled_at_ms: u64,
) -> Result<()> {
    let running = agent.running;
    let target = running.other();
    agent.status.target = Some(Target { slot: target.into(), artifact: art.clone(), polled_at_ms });
    agent.report(Step::Downloading, format!("{art} for slot {target}"))?;
    let (active, inactive) = (agent.paths.slot(running)?, agent.paths.slot(target)?);
    let store = BlobStore::new(&agent.paths.blobs);
    let slots = Slots {
        active: &active,
        inactive: &inactive,
        store: &store,
        store_cap: remote.config.store_max_bytes,
    };
    // Called by install_slot once every chunk is at hand and verified, before the first write.
    let writing = |agent: &mut Agent| -> Result<()> {
        agent.report(Step::Updating, format!("writing {art} into slot {target}"))?;
        agent.transition(machine::begin_write)?;
        agent.status.slots.set(target, None);
        Ok(())
    };
    let mut before_write: Option<Result<()>> = None;
    let installed = install_slot(&remote.client, &verified, &slots, &mut |p| {
        if p.stage == Stage::Writing && before_write.is_none() {
            let r = writing(agent);
            let stop = r.is_err();
            before_write = Some(r);
            if stop {
                return std::ops::ControlFlow::Break(());
            }
        }
        std::ops::ControlFlow::Continue(())
    });
    if let Some(Err(e)) = before_write {
        return Err(e);
    }
    let installed = installed?;
    agent.transition(machine::schedule_trial)?;
    let m = format!(
        "slot {target} holds {art} (read back; {} of {} bytes downloaded, {} reused from slot {running}); trial scheduled",
        installed.downloaded, installed.image_size, installed.reused
    );
    agent.report(Step::Updating, m)?;
    agent.reboot(&format!("trial of slot {target}"))
}

/// TESTING: feed the watchdog while the trial is undecided; commit after a whole healthy window,
/// or reboot into the committed slot at the timeout.
fn trial(agent: &mut Agent, remote: Result<&Remote, String>) -> Result<()> {
    let running = agent.running;
    let (window, timeout) = match &remote {
        Ok(r) => (r.config.health_window_secs, r.config.trial_timeout_secs),
        Err(_) => (config::DEFAULT_HEALTH_WINDOW_SECS, config::default_trial_timeout(60)),
    };
    let what = agent
        .status
        .target
        .as_ref()
        .map_or("an unknown artifact".into(), |t| t.artifact.to_string());
    agent.report(
        Step::Testing,
        format!("{what} in slot {running}: commit after {window} s healthy (timeout {timeout} s)"),
    )?;
    // sp805_wdt may still be loading (coldplug): the device is opened as soon as it is there.
    let mut watchdog: Option<Watchdog> = None;
    let mut watchdog_error: Option<String> = None;
    let start = Instant::now();
    let mut clock = TrialClock::default();
    let mut previous: Option<Vec<ServiceStatus>> = None;
    let mut last_reason: Option<String> = None;
    loop {
        let services = std::fs::read_to_string(&agent.paths.services)
            .ok()
            .and_then(|t| service_status::parse(&t).ok());
        let registry = match &remote {
            Ok(r) => r.resolve().map(|_| ()).map_err(|e| format!("{e:#}")),
            Err(e) => Err(e.clone()),
        };
        let reason = decide::unhealthy_reason(services.as_deref(), previous.as_deref(), registry);
        if reason != last_reason {
            say(&format!("trial health: {}", reason.as_deref().unwrap_or("healthy")));
        }
        let now = start.elapsed().as_millis() as u64;
        let verdict =
            decide::trial_step(&mut clock, now, reason.is_none(), window * 1000, timeout * 1000);
        previous = services;
        match verdict {
            Verdict::Wait => {
                if watchdog.is_none() {
                    match Watchdog::open(&agent.paths.watchdog) {
                        Ok(w) => watchdog = Some(w),
                        Err(e) if watchdog_error.is_none() => {
                            let m =
                                format!("{}: {e}: not fed (yet)", agent.paths.watchdog.display());
                            say(&m);
                            watchdog_error = Some(m);
                        }
                        Err(_) => {}
                    }
                }
                if let Some(w) = &mut watchdog {
                    if let Err(e) = w.feed() {
                        say(&format!("{}: {e}", agent.paths.watchdog.display()));
                    }
                }
            }
            Verdict::Commit => {
                agent.transition(machine::commit)?;
                if let Some(w) = watchdog.take() {
                    w.disarm().with_context(|| format!("{}", agent.paths.watchdog.display()))?;
                }
                return finish_commit(agent);
            }
            Verdict::GiveUp => {
                // No more feeding: if the reboot itself hangs, the watchdog ends it.
                let why =
                    reason.or(last_reason).unwrap_or_else(|| "not healthy long enough".into());
                let m = format!("{what} in slot {running} not healthy for {window} s within {timeout} s ({why})");
                agent.status.message = m.clone();
                status::store(&agent.paths.status, &agent.status)?;
                say(&m);
                return agent.reboot(&format!("back to slot {}", running.other()));
            }
        }
        last_reason = reason;
        std::thread::sleep(agent.paths.tick);
    }
}

/// UPDATED: the running slot holds the target, the other one is free.
fn finish_commit(agent: &mut Agent) -> Result<()> {
    let running = agent.running;
    let target = agent.status.target.take();
    let art = target.as_ref().map(|t| t.artifact.clone());
    agent.status.slots.set(running, art.clone());
    agent.status.slots.set(running.other(), None);
    agent.status.poll_to_commit_ms = target.map(|t| now_ms().saturating_sub(t.polled_at_ms));
    let what = art.map_or("the trial".into(), |a| a.to_string());
    let took = agent
        .status
        .poll_to_commit_ms
        .map_or(String::new(), |ms| format!(", {ms} ms after the poll"));
    agent.report(Step::Updated, format!("{what} committed in slot {running}{took}"))
}

/// FALLBACK: remember the failed digest (status file first: a cut before STATE is rewritten only
/// repeats this), then free the other slot in STATE.
fn fallback(agent: &mut Agent) -> Result<()> {
    let running = agent.running;
    let target = agent.status.target.take();
    if let Some(t) = &target {
        agent.status.failed = decide::remember_failed(&agent.status.failed, &t.artifact.digest);
    }
    agent.status.slots.set(running.other(), None);
    let what = target.map_or("the other slot".into(), |t| t.artifact.to_string());
    agent.report(
        Step::Fallback,
        format!("{what} did not commit its trial: back on slot {running}; not retried"),
    )?;
    agent.transition(machine::abandon_trial)
}
