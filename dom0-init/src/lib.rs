//! rpixen's PID 1 for Dom0. `run` is the whole life of the system:
//!
//! 1. early mounts (/proc, /sys, /dev, /dev/pts, /run, /tmp) and the console on /dev/console;
//! 2. the config (`/etc/rpixen/init.yml`, read leniently: what is valid runs, the rest is logged);
//! 3. hostname, kernel modules, loopback up;
//! 4. from an initramfs: switch into the squashfs rootfs on IMGA/IMGB if there is one (exec's its init);
//! 5. CONFIG and PERSIST mounted by GPT label, then the config's mounts;
//! 6. console shell, `onboot` steps in order, services; then the single readiness line;
//! 7. supervise: reap every zombie, restart services with back-off, until a signal asks for
//!    power-off / reboot / halt, which `shutdown` carries out.
//!
//! Host mode (`--host` or `RPIXEN_INIT_HOST=1`) runs the same code in the test machine's own
//! namespaces: init unshares mount, UTS and network namespaces first, takes its console from
//! stdio, skips module loading and the root switch, and calls reboot(2) only as PID 1 of a PID
//! namespace (where the kernel turns it into the end of that namespace).

pub mod blockdev;
pub mod coldplug;
pub mod firstboot;
pub mod install;
pub mod log;
pub mod logfile;
pub mod loopdev;
pub mod modules;
pub mod mounts;
pub mod net;
pub mod nocloud;
pub mod roles;
pub mod rootswitch;
pub mod services;
pub mod shutdown;
pub mod signals;
pub mod ssh;
mod sys;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use init_config::{InitConfig, Service};

use services::{reap, Kind, Supervisor};
use signals::{action_for, Signals};

/// How this run differs from a real boot.
pub struct Mode {
    pub host: bool,
    pub config: PathBuf,
    /// Started again after a panic: no services, only the console shell, reaping and shutdown.
    pub rescue: bool,
    /// Mounts init made (unmounted at shutdown in host mode).
    pub mounted: Vec<String>,
}

/// The inode of the initial PID namespace (`PROC_PID_INIT_INO` in the kernel).
const INIT_PID_NS_INO: u64 = 0xEFFF_FFFC;

impl Mode {
    pub fn from_args() -> Mode {
        let mut host = std::env::var_os("RPIXEN_INIT_HOST").is_some_and(|v| v == "1");
        let mut config = std::env::var_os("RPIXEN_INIT_CONFIG").map(PathBuf::from);
        let mut rescue = false;
        // The kernel passes unknown command-line words to init as arguments: ignore what is not ours.
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--host" => host = true,
                "--config" => config = args.next().map(PathBuf::from),
                "--rescue" => rescue = true,
                _ => {}
            }
        }
        Mode {
            host,
            config: config.unwrap_or_else(|| init_config::DEFAULT_PATH.into()),
            rescue,
            mounted: Vec::new(),
        }
    }

    /// reboot(2) is for a real boot, or PID 1 of a PID namespace that is not the host's.
    pub fn may_reboot(&self) -> bool {
        if !self.host {
            return true;
        }
        let own_ns =
            std::fs::metadata("/proc/self/ns/pid").is_ok_and(|m| m.ino() != INIT_PID_NS_INO);
        nix::unistd::getpid().as_raw() == 1 && own_ns
    }
}

const DEFAULT_PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Never returns: PID 1 ends only through reboot(2).
pub fn run(t0: Instant) -> ! {
    log::set_start(t0);
    let signals = Signals::new(); // first: a shutdown signal must never be missed
    let mut mode = Mode::from_args();
    install_panic_hook(mode.rescue);
    if !mode.host && nix::unistd::getpid().as_raw() != 1 {
        // Outside PID 1 the real mounts and reboot(2) would hit whatever system this runs on.
        log::line(
            "dom0-init: not PID 1: refusing to run (use --host --config FILE for a test run)",
        );
        std::process::exit(2);
    }
    prepare_process();
    let isolated = if mode.host { host_isolate() } else { true };
    if isolated {
        let mut plan = mounts::early_plan();
        if mode.host {
            // A test checkout may live under /tmp or /run: a fresh tmpfs there would hide the
            // config and the services' files from the very run that is testing them.
            let (kept, skipped) = mounts::not_hiding(plan, &mode.config);
            for target in skipped {
                info!("host mode: not mounting {target}: it would hide {}", mode.config.display());
            }
            plan = kept;
        }
        mode.mounted = mounts::mount_all(&plan);
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if cmdline.split_whitespace().any(|w| w == "rpixen.trace") {
        log::enable_trace();
    }
    let console = if mode.host { None } else { open_console() };
    if !mode.host {
        // ctrl-alt-del then sends SIGINT to init (an orderly reboot) instead of an instant reset.
        if let Err(e) = nix::sys::reboot::set_cad_enabled(false) {
            info!("cannot route ctrl-alt-del to init: {e}");
        }
    }
    let pid = nix::unistd::getpid();
    info!("starting (pid {pid}{})", if mode.host { ", host mode" } else { "" });
    trace!("early mounts done");

    let (config, errors) = load_config(&mode);
    trace!("config read");
    set_up_system(&config, &mut mode, isolated, &cmdline);
    let device =
        (!mode.host && !mode.rescue).then(|| firstboot::identity_on_persist(&cmdline)).flatten();

    let log_dir = config.log_dir.clone().map(PathBuf::from).or_else(|| {
        let persist = mounts::current_mounts().iter().any(|m| m.target == "/persist");
        persist.then(|| PathBuf::from("/persist/log"))
    });
    let mut sup = Supervisor::new(log_dir, console, t0);
    // Host mode publishes only into its own /run, never the test machine's.
    if !mode.host || mode.mounted.iter().any(|m| m == "/run") {
        sup.publish_status(PathBuf::from(init_config::service_status::PATH));
    }
    // A console shell when configured, or when the config is broken and a shell exists, so the
    // system can still be reached.
    let shell = config.console_shell.clone().or_else(|| {
        (!errors.is_empty() && mounts::exists("/bin/sh")).then(|| vec!["/bin/sh".to_owned()])
    });
    if let Some(argv) = shell {
        let console = Service { name: "console".into(), command: argv, ..Service::default() };
        sup.add(console, Kind::Console);
        sup.start_due();
    }

    let onboot_start = Instant::now();
    for step in config.onboot.clone() {
        let i = sup.add(step, Kind::Onboot);
        sup.start(i);
        while sup.is_running(i) {
            supervise_once(&mut sup, &signals, &mode);
        }
    }
    let onboot_ms = onboot_start.elapsed().as_millis();
    for s in config.services.clone() {
        sup.add(s, Kind::Service);
    }
    sup.start_due();
    if mode.rescue {
        info!("rescue mode up");
    } else {
        let network = wait_for_network(&config, &mut sup, &signals, &mode);
        let uptime = std::fs::read_to_string("/proc/uptime").ok();
        let counts = (config.onboot.len(), onboot_ms, config.services.len());
        let line = readiness_line(t0.elapsed().as_millis(), uptime.as_deref(), counts);
        let id = firstboot::readiness_part(device.as_ref());
        log::line(&(line + &network + &id));
    }
    if mode.host && std::env::var_os("RPIXEN_INIT_TEST_PANIC").is_some() && !mode.rescue {
        // Host tests only: proves that a bug in init leaves a working system (see the panic hook).
        panic!("RPIXEN_INIT_TEST_PANIC is set");
    }
    loop {
        supervise_once(&mut sup, &signals, &mode);
    }
}

/// Process-wide settings every child inherits.
fn prepare_process() {
    if std::env::var_os("PATH").is_none() {
        // The kernel starts init without PATH. No other thread exists yet.
        std::env::set_var("PATH", DEFAULT_PATH_ENV);
    }
    if nix::unistd::getpid().as_raw() != 1 {
        // Not PID 1 (host mode without a PID namespace): orphans of our services still come to us.
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            info!("cannot become the reaper of orphans: {e}");
        }
    }
}

/// The config to run: the file (leniently read, errors logged), or in rescue mode just a shell.
fn load_config(mode: &Mode) -> (InitConfig, Vec<init_config::ConfigError>) {
    if mode.rescue {
        info!("rescue mode after a failure: console shell only");
        let shell = mounts::exists("/bin/sh").then(|| vec!["/bin/sh".to_owned()]);
        return (InitConfig { console_shell: shell, ..InitConfig::default() }, Vec::new());
    }
    let (config, errors) = read_config(&mode.config);
    for e in &errors {
        info!("config {}: {e}", mode.config.display());
    }
    (config, errors)
}

/// Hostname, modules, loopback, root switch (may not return), CONFIG/PERSIST and config mounts.
fn set_up_system(config: &InitConfig, mode: &mut Mode, isolated: bool, cmdline: &str) {
    if let (Some(h), true) = (&config.hostname, isolated) {
        if let Err(e) = nix::unistd::sethostname(h) {
            info!("cannot set hostname {h}: {e}");
        }
    }
    if !mode.host {
        modules::install_kernel_helper();
        modules::load_all(&config.modules, false);
        coldplug::start();
    } else if !config.modules.is_empty() {
        info!("host mode: not loading modules {}", config.modules.join(", "));
    }
    trace!("hostname set, modules loaded");
    if isolated {
        if let Err(e) = sys::interface_up("lo") {
            info!("cannot bring up lo: {e}");
        }
    }
    trace!("loopback up");
    // An installer boot leaves every disk alone: first boot, the root switch and the mounts by
    // label could each act on the disk it is about to overwrite.
    let installer = install::plan::is_installer_boot(cmdline);
    if !mode.host && !installer {
        if !mode.rescue {
            firstboot::prepare_disk(cmdline);
            trace!("first-boot disk steps done");
            rootswitch::try_switch(cmdline);
            trace!("no root switch");
        }
        mode.mounted.extend(label_mounts());
        trace!("label mounts done");
    }
    if isolated {
        let by_label =
            |l: &str| blockdev::find_by_partlabel(l).map(|p| p.to_string_lossy().into_owned());
        let (plan, problems) = mounts::config_plan(&config.mounts, by_label);
        for p in problems {
            info!("{p}");
        }
        mode.mounted.extend(mounts::mount_all(&plan));
    }
}

/// The one readiness line (contract C-INIT: it contains `rpixen: dom0 ready`).
pub fn readiness_line(
    exec_ms: u128,
    proc_uptime: Option<&str>,
    (onboot, onboot_ms, services): (usize, u128, usize),
) -> String {
    let since_boot = proc_uptime
        .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .map(|s| format!(", {} ms since kernel start", (s * 1000.0) as u64))
        .unwrap_or_default();
    format!(
        "rpixen: dom0 ready in {exec_ms} ms since exec{since_boot} ({onboot} onboot steps took {onboot_ms} ms, {services} services)"
    )
}

/// A panic in PID 1 would end the system (with `panic = "abort"` the kernel panics). Instead init
/// logs it and execs itself in rescue mode: same PID, its children stay its children, a console
/// shell comes up and shutdown signals still work. A panic in rescue mode only reaps, forever.
fn install_panic_hook(rescue: bool) {
    std::panic::set_hook(Box::new(move |p| {
        log::line(&format!("dom0-init: BUG: {p}"));
        if !rescue {
            use std::os::unix::process::CommandExt;
            let mut args: Vec<String> = std::env::args().skip(1).collect();
            args.push("--rescue".into());
            let err = std::process::Command::new("/proc/self/exe").args(&args).exec();
            log::line(&format!("dom0-init: cannot restart in rescue mode: {err}"));
        }
        loop {
            let _ = nix::sys::wait::waitpid(None, None);
            std::thread::sleep(Duration::from_millis(100));
        }
    }));
}

/// With a service named `network`, the readiness line waits (supervising meanwhile) for its first
/// address, at most `network.wait_ms` (default 20 s), and then tells the address and time to lease.
fn wait_for_network(
    config: &InitConfig,
    sup: &mut Supervisor,
    signals: &Signals,
    mode: &Mode,
) -> String {
    if !config.services.iter().any(|s| s.name == "network") {
        return String::new();
    }
    let limit = config.network.as_ref().and_then(|n| n.wait_ms).unwrap_or(20_000);
    let start = Instant::now();
    loop {
        let status = std::fs::read_to_string(net::STATUS).ok();
        let waited = start.elapsed();
        // A board without any network device (QEMU with `-nic none`) is not kept waiting: drivers
        // have had 2 s to bring one up.
        let no_device = waited >= Duration::from_secs(2) && net::sys::interfaces().is_empty();
        if status.is_some() || no_device || waited >= Duration::from_millis(limit) {
            return net::readiness_part(status.as_deref(), no_device, waited.as_millis());
        }
        supervise_for(sup, signals, mode, Duration::from_millis(100));
    }
}

/// One turn of the main loop: wait for a signal or the next restart, reap, restart, shut down.
fn supervise_once(sup: &mut Supervisor, signals: &Signals, mode: &Mode) {
    supervise_for(sup, signals, mode, Duration::from_secs(30));
}

/// One turn of the main loop that waits at most `cap`.
fn supervise_for(sup: &mut Supervisor, signals: &Signals, mode: &Mode, cap: Duration) {
    let timeout = sup
        .next_deadline()
        .map(|t| t.saturating_duration_since(Instant::now()))
        .unwrap_or(cap)
        .min(cap);
    for sig in signals.wait(timeout) {
        if let Some(action) = action_for(sig) {
            shutdown::shutdown(action, &format!("{} received", sig.as_str()), sup, signals, mode);
        }
    }
    for (pid, exit) in reap() {
        sup.on_exit(pid, exit);
    }
    sup.start_due();
}

/// Reads the config leniently; a missing file is an empty config (not an error).
fn read_config(path: &std::path::Path) -> (InitConfig, Vec<init_config::ConfigError>) {
    match std::fs::read_to_string(path) {
        Ok(text) => InitConfig::parse_lenient(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            info!("no config at {}: nothing to run", path.display());
            (InitConfig::default(), Vec::new())
        }
        Err(e) => (
            InitConfig::default(),
            vec![init_config::ConfigError::Syntax(format!("cannot read: {e}"))],
        ),
    }
}

/// Makes /dev/console init's stdio and log sink; returns its path for the console shell.
fn open_console() -> Option<PathBuf> {
    let path = PathBuf::from("/dev/console");
    match std::fs::OpenOptions::new().read(true).write(true).open(&path) {
        Ok(f) => {
            sys::console_to_stdio(&f);
            log::set_console(f);
            Some(path)
        }
        Err(e) => {
            info!("cannot open /dev/console: {e}");
            None
        }
    }
}

/// CONFIG (FAT, read-only) and PERSIST (writable) by GPT label, when present and formatted.
fn label_mounts() -> Vec<String> {
    let mut done = Vec::new();
    for (label, target, flags) in [
        ("CONFIG", "/config", nix::mount::MsFlags::MS_RDONLY),
        ("PERSIST", "/persist", nix::mount::MsFlags::empty()),
    ] {
        let Some(dev) = blockdev::find_by_partlabel(label) else {
            continue;
        };
        let Some(fstype) = blockdev::probe_device(&dev) else {
            info!("{label} ({}) holds no known filesystem; not mounted", dev.display());
            continue;
        };
        let spec = mounts::MountSpec::new(&dev.to_string_lossy(), target, fstype, flags, None);
        match mounts::mount_one(&spec) {
            Ok(true) => {
                info!("mounted {label} ({}, {fstype}) on {target}", dev.display());
                done.push(target.to_owned());
            }
            Ok(false) => {}
            Err(e) => info!("{label}: {e}"),
        }
    }
    done
}

/// Host mode: private mount namespace, own hostname and network, so init's real mount, hostname
/// and loopback code runs without touching the host. Returns false when that is impossible.
fn host_isolate() -> bool {
    use nix::sched::CloneFlags;
    let flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWNET;
    if let Err(e) = nix::sched::unshare(flags) {
        info!("host mode: cannot unshare namespaces ({e}); skipping mounts, hostname and network");
        return false;
    }
    let private = nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE;
    if let Err(e) = nix::mount::mount(None::<&str>, "/", None::<&str>, private, None::<&str>) {
        info!("host mode: cannot make mounts private ({e}); skipping mounts");
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_line_format() {
        let l = readiness_line(12, Some("3.25 1.00\n"), (2, 7, 3));
        assert_eq!(l, "rpixen: dom0 ready in 12 ms since exec, 3250 ms since kernel start (2 onboot steps took 7 ms, 3 services)");
        assert_eq!(
            readiness_line(5, None, (0, 0, 0)),
            "rpixen: dom0 ready in 5 ms since exec (0 onboot steps took 0 ms, 0 services)"
        );
    }
}
