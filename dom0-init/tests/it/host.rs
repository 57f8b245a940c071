//! dom0-init as PID 1 of a fresh PID and mount namespace on the host (`unshare --fork --pid
//! --mount-proc`, as root), in host mode, with real `/bin/sh` services.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running init in its own namespaces; killed (by PID) on drop.
struct Init {
    unshare: Child,
    dir: PathBuf,
    out: PathBuf,
}

impl Init {
    /// Writes `config` (with `@DIR@` replaced by the test folder) and starts init on it.
    fn start(test: &str, config: &str) -> Init {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dom0-init").join(test);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config_path = dir.join("init.yml");
        std::fs::write(&config_path, config.replace("@DIR@", dir.to_str().unwrap())).unwrap();
        let out = dir.join("console.txt");
        let log = File::create(&out).unwrap();
        let unshare = Command::new("unshare")
            .args(["--fork", "--pid", "--mount-proc"])
            .arg(env!("CARGO_BIN_EXE_dom0-init"))
            .arg("--host")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("run unshare (util-linux) as root");
        Init { unshare, dir, out }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn wait_for(&mut self, what: &str, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            let out = self.output();
            if out.contains(what) {
                return out;
            }
            if let Ok(Some(status)) = self.unshare.try_wait() {
                panic!("init ended ({status}) before {what:?}:\n{out}");
            }
            assert!(start.elapsed() < limit, "no {what:?} within {limit:?}:\n{out}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The host PID of init (PID 1 inside): unshare's only child.
    fn init_pid(&self) -> i32 {
        let id = self.unshare.id();
        let start = Instant::now();
        loop {
            let children = std::fs::read_to_string(format!("/proc/{id}/task/{id}/children"))
                .unwrap_or_default();
            if let Some(pid) = children.split_whitespace().next() {
                return pid.parse().unwrap();
            }
            assert!(start.elapsed() < Duration::from_secs(10), "unshare started no child");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.init_pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait_end(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.unshare.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "namespace still alive after {limit:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// (pid, state letter, command) of every process in init's PID namespace, seen from the host.
    fn processes(&self) -> Vec<(i32, char, String)> {
        let ns = std::fs::metadata(format!("/proc/{}/ns/pid", self.init_pid())).unwrap().ino();
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if std::fs::metadata(format!("/proc/{pid}/ns/pid")).map(|m| m.ino()).ok() != Some(ns) {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some(close) = stat.rfind(')') else {
                continue;
            };
            let comm = stat[stat.find('(').unwrap() + 1..close].to_owned();
            let state = stat[close + 2..].chars().next().unwrap();
            out.push((pid, state, comm));
        }
        out
    }
}

impl Drop for Init {
    fn drop(&mut self) {
        if let Ok(None) = self.unshare.try_wait() {
            let pid = self.init_pid();
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            let _ = self.unshare.kill();
            let _ = self.unshare.wait();
        }
    }
}

/// Times (ms, as init wrote them) of the lines in a service log that contain `what`.
fn log_times(log: &str, what: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains(what))
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn crashing_service_is_restarted_with_backoff() {
    let mut init = Init::start(
        "backoff",
        r#"
log_dir: "@DIR@/log"
services:
  - name: crash
    command: [/bin/sh, -c, "echo crashing; exit 3"]
    backoff: {initial_ms: 100, max_ms: 400, reset_after_ms: 60000}
  - name: clean
    command: [/bin/sh, -c, "echo clean exit"]
    restart: on-failure
  - name: once
    command: [/bin/sh, -c, "exit 1"]
    restart: never
"#,
    );
    init.wait_for("rpixen: dom0 ready", Duration::from_secs(10));
    let log_path = init.dir.join("log/crash.log");
    let start = Instant::now();
    let log = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log_times(&log, "dom0-init: started").len() >= 7 {
            break log;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "too few restarts:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let starts = log_times(&log, "dom0-init: started");
    let gaps: Vec<u64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    // Waits double from 100 ms and stop at 400 ms (each gap also holds the run of /bin/sh).
    let expected = [100, 200, 400, 400, 400, 400];
    for (gap, want) in gaps.iter().zip(expected) {
        assert!(
            *gap >= want && *gap < want + 1000,
            "gaps {gaps:?}, expected about {expected:?}\n{log}"
        );
    }
    // Every run printed its line (the last one's may still be on its way through the pipe).
    assert!(log_times(&log, "crashing").len() >= starts.len() - 1, "{log}");
    assert!(log.contains("exited (exit status 3); restart in 400 ms"), "{log}");
    let out = init.output();
    assert!(out.contains("[crash] crashing"), "console lines carry the service name:\n{out}");
    // on-failure after a clean exit, and never: started once, not restarted.
    let clean = std::fs::read_to_string(init.dir.join("log/clean.log")).unwrap();
    assert_eq!(log_times(&clean, "dom0-init: started").len(), 1, "{clean}");
    assert!(clean.contains("not restarted"), "{clean}");
    let once = std::fs::read_to_string(init.dir.join("log/once.log")).unwrap();
    assert!(once.contains("exited (exit status 1); not restarted"), "{once}");
}

#[test]
fn orphans_are_reaped() {
    // Each round leaves five orphans (their parent subshell exits at once); they are re-parented to
    // PID 1, print their parent's pid, and exit. Without reaping they would stay zombies.
    let orphan = r#"read -r _ _ _ ppid _ < /proc/self/stat; echo orphan-ppid=$ppid"#;
    let script = format!(
        "for round in 1 2 3; do for i in 1 2 3 4 5; do (sh -c 'sleep 0.2; {orphan}' &); done; sleep 0.5; done; echo rounds-done; exec sleep 1000"
    );
    let early = format!("for i in 1 2 3 4 5; do (sh -c 'sleep 0.2; {orphan}' &); done");
    let config = format!(
        "log_dir: \"@DIR@/log\"\nonboot:\n  - name: orphans-early\n    command: [/bin/sh, -c, {e}]\nservices:\n  - name: orphans\n    command: [/bin/sh, -c, {q}]\n",
        e = serde_quote(&early),
        q = serde_quote(&script)
    );
    let mut init = Init::start("zombies", &config);
    init.wait_for("rpixen: dom0 ready", Duration::from_secs(20));
    init.wait_for("[orphans] rounds-done", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    let out = init.output();
    let orphans = out.lines().filter(|l| l.contains("orphan-ppid=1")).count();
    assert!(orphans >= 18, "expected 20 orphans re-parented to init, saw {orphans}:\n{out}");
    let procs = init.processes();
    let zombies: Vec<_> = procs.iter().filter(|p| p.1 == 'Z').collect();
    assert!(zombies.is_empty(), "zombies left: {zombies:?}");
    // What is left: init itself and the service's final sleep.
    let names: Vec<&str> = procs.iter().map(|p| p.2.as_str()).collect();
    assert_eq!(procs.len(), 2, "{names:?}");
}

/// YAML double-quoted string.
fn serde_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

const ORDERED: &str = r#"
log_dir: "@DIR@/log"
hostname: nsbox
onboot:
  - {name: net, command: [/bin/sh, -c, "echo host=$(hostname) lo=$(cat /sys/class/net/lo/flags)"]}
services:
  - name: a
    command: [/bin/sh, -c, "trap 'echo stop-a >> @DIR@/order; exit 0' TERM; echo up-a; while :; do sleep 0.05; done"]
  - name: b
    command: [/bin/sh, -c, "trap 'echo stop-b >> @DIR@/order; exit 0' TERM; echo up-b; while :; do sleep 0.05; done"]
  - name: stubborn
    command: [/bin/sh, -c, "trap '' TERM; echo up-stubborn; while :; do sleep 0.05; done"]
    stop_timeout_ms: 300
  - name: c
    command: [/bin/sh, -c, "trap 'echo stop-c >> @DIR@/order; exit 0' TERM; echo up-c; while :; do sleep 0.05; done"]
"#;

#[test]
fn sigterm_stops_services_in_reverse_order_and_ends_the_namespace() {
    let mut init = Init::start("sigterm", ORDERED);
    let out = init.wait_for("rpixen: dom0 ready", Duration::from_secs(10));
    // hostname and loopback were really set, in init's own UTS and network namespaces.
    assert!(out.contains("[net] host=nsbox lo=0x9"), "{out}");
    init.wait_for("[c] up-c", Duration::from_secs(10));
    init.wait_for("[stubborn] up-stubborn", Duration::from_secs(10));
    let t = Instant::now();
    init.signal("TERM");
    let status = init.wait_end(Duration::from_secs(20));
    // busybox `reboot` sends SIGTERM: a reboot(2) restart, which ends a PID namespace with SIGHUP.
    assert_eq!(status.signal(), Some(libc_sighup()), "{status}\n{}", init.output());
    let order = std::fs::read_to_string(init.dir.join("order")).unwrap();
    assert_eq!(order.split_whitespace().collect::<Vec<_>>(), ["stop-c", "stop-b", "stop-a"]);
    let out = init.output();
    assert!(out.contains("[stubborn] did not stop within 300 ms: SIGKILL"), "{out}");
    let stop_lines: Vec<&str> = out.lines().filter(|l| l.contains("stopping (pid")).collect();
    assert!(
        stop_lines[0].contains("[c]")
            && stop_lines[1].contains("[stubborn]")
            && stop_lines[3].contains("[a]")
    );
    assert!(out.contains("reboot now"), "{out}");
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[test]
fn busybox_poweroff_signal_powers_off_the_namespace() {
    let mut init = Init::start("poweroff", ORDERED);
    init.wait_for("[c] up-c", Duration::from_secs(10));
    init.signal("USR2");
    let status = init.wait_end(Duration::from_secs(20));
    // A power-off reboot(2) ends a PID namespace with SIGINT.
    assert_eq!(status.signal(), Some(2), "{status}\n{}", init.output());
    assert!(init.output().contains("SIGUSR2 received: power-off"), "{}", init.output());
}

fn libc_sighup() -> i32 {
    1
}

#[test]
fn broken_config_is_reported_and_the_console_stays_usable() {
    let mut init =
        Init::start("broken", "services: [\n  - {name: a, command: [/bin/true]\n  nonsense: {{{\n");
    let out = init.wait_for("rpixen: dom0 ready", Duration::from_secs(10));
    assert!(
        out.contains("init.yml") && out.contains("line"),
        "the error names the file and line:\n{out}"
    );
    // The fallback shell runs on init's console (stdin here).
    let stdin = init.unshare.stdin.as_mut().unwrap();
    stdin.write_all(b"echo shell-alive-$((6*7))\n").unwrap();
    stdin.flush().unwrap();
    init.wait_for("shell-alive-42", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(200));
    assert!(init.unshare.try_wait().unwrap().is_none(), "init must keep running");
    init.signal("TERM");
    init.wait_end(Duration::from_secs(20));
}

#[test]
fn partly_bad_config_runs_what_it_can() {
    let mut init = Init::start(
        "partial",
        r#"
hostname: "not a host name"
colour: blue
services:
  - {name: typo, comand: [/bin/true]}
  - {name: missing, command: [/does/not/exist]}
  - {name: good, command: [/bin/sh, -c, "echo good-is-running; exec sleep 1000"]}
"#,
    );
    let out = init.wait_for("[good] good-is-running", Duration::from_secs(10));
    assert!(out.contains("field `hostname`"), "{out}");
    assert!(out.contains("field `colour`: unknown field"), "{out}");
    assert!(out.contains("field `services[0]`") && out.contains("comand"), "{out}");
    assert!(out.contains("[missing] cannot start `/does/not/exist`"), "{out}");
    assert!(out.contains("rpixen: dom0 ready"), "{out}");
    init.signal("TERM");
    init.wait_end(Duration::from_secs(20));
}

#[test]
fn services_get_their_env_cwd_and_ids() {
    let mut init = Init::start(
        "identity",
        r#"
services:
  - name: who
    command: [/bin/sh, -c]
    args: ["echo uid=$(id -u) gid=$(id -g) groups=$(id -G) cwd=$(pwd) greeting=$GREETING path=$PATH; exec sleep 1000"]
    env: [GREETING=hello world]
    cwd: /usr
    uid: 65534
    gid: 65534
"#,
    );
    let out = init.wait_for("[who] uid=", Duration::from_secs(10));
    let line = out.lines().find(|l| l.starts_with("[who] uid=")).unwrap();
    assert!(
        line.contains("uid=65534 gid=65534 groups=65534 cwd=/usr greeting=hello world"),
        "{line}"
    );
    init.signal("TERM");
    init.wait_end(Duration::from_secs(20));
}

#[test]
fn a_panic_in_init_leaves_a_rescue_console() {
    let config = "services:\n  - {name: survivor, command: [/bin/sleep, \"1000\"]}\n";
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dom0-init/rescue");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("init.yml"), config).unwrap();
    let out = dir.join("console.txt");
    let log = File::create(&out).unwrap();
    let unshare = Command::new("unshare")
        .args(["--fork", "--pid", "--mount-proc"])
        .arg(env!("CARGO_BIN_EXE_dom0-init"))
        .args(["--host", "--config"])
        .arg(dir.join("init.yml"))
        .env("RPIXEN_INIT_TEST_PANIC", "1")
        .stdin(Stdio::piped())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut init = Init { unshare, dir, out };
    init.wait_for("rescue mode up", Duration::from_secs(10));
    let text = init.output();
    assert!(text.contains("dom0-init: BUG:") && text.contains("RPIXEN_INIT_TEST_PANIC"), "{text}");
    assert_eq!(text.matches("rpixen: dom0 ready").count(), 1, "{text}");
    let stdin = init.unshare.stdin.as_mut().unwrap();
    stdin.write_all(b"echo rescued-$((40+2))\n").unwrap();
    stdin.flush().unwrap();
    init.wait_for("rescued-42", Duration::from_secs(10));
    // The service from before the panic is still there (same PID 1, same children). Its output pipe
    // closed with the old image, so a service that writes after a rescue gets SIGPIPE.
    assert!(init.processes().iter().any(|p| p.2 == "sleep"), "{:?}", init.processes());
    init.signal("TERM");
    let status = init.wait_end(Duration::from_secs(20));
    assert_eq!(status.signal(), Some(libc_sighup()), "{status}\n{}", init.output());
}

#[test]
fn config_mounts_stay_inside_init_namespace() {
    let mut init = Init::start(
        "mounts",
        r#"
mounts:
  - {source: tmpfs, target: "@DIR@/mnt", fstype: tmpfs, options: "nosuid,size=1M,mode=0700"}
onboot:
  - name: look
    command: [/bin/sh, -c, "grep ' @DIR@/mnt ' /proc/self/mounts; stat -c mode=%a @DIR@/mnt"]
"#,
    );
    let out = init.wait_for("rpixen: dom0 ready", Duration::from_secs(10));
    let dir = init.dir.display().to_string();
    assert!(out.contains(&format!("[look] tmpfs {dir}/mnt tmpfs rw,nosuid")), "{out}");
    assert!(out.contains("size=1024k") && out.contains("[look] mode=700"), "{out}");
    // The host never sees it: init made its own mount namespace.
    let host_mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!host_mounts.contains(&format!("{dir}/mnt")), "{host_mounts}");
    init.signal("TERM");
    init.wait_end(Duration::from_secs(20));
}

#[test]
fn refuses_to_run_as_an_ordinary_process_without_host_mode() {
    // Inside private mount/UTS/net namespaces, in case the guard ever breaks.
    let out = Command::new("unshare")
        .args(["--mount", "--uts", "--net"])
        .arg(env!("CARGO_BIN_EXE_dom0-init"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not PID 1: refusing to run"), "{err}");
}

#[test]
fn an_endless_line_is_passed_on_in_pieces() {
    let mut init = Init::start(
        "longline",
        r#"
log_dir: "@DIR@/log"
services:
  - name: chatty
    command: [/bin/sh, -c, "head -c 200000 /dev/zero | tr '\\0' x; echo; echo after; exec sleep 1000"]
"#,
    );
    init.wait_for("[chatty] after", Duration::from_secs(10));
    let out = init.output();
    let pieces: Vec<usize> =
        out.lines().filter_map(|l| l.strip_prefix("[chatty] x")).map(|l| l.len() + 1).collect();
    assert_eq!(pieces, [65536, 65536, 65536, 200000 - 3 * 65536], "{pieces:?}");
    init.signal("TERM");
    init.wait_end(Duration::from_secs(20));
}
