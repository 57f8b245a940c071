//! Talking to the Debian archive through apt's own client with a private configuration: our own source
//! list, index lists and cache, an empty dpkg status, and the arm64 architecture. apt checks each index's
//! signature against Debian's archive keyring and each `.deb` against the index, so what we read here
//! is what the archive signed. The host's apt state is never touched.
//!
//! The mirror is the host's own (from its apt sources), or `$RPIXEN_DEBIAN_MIRROR`: nothing is hard-coded.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{PkgError, VersionGone};

const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
const COMPONENTS: &str = "main non-free-firmware";
const ARCH: &str = "arm64";

pub struct Apt {
    dir: PathBuf,
    suite: String,
    updated: bool,
    _lock: std::fs::File,
}

/// The fields of one `apt-cache show` stanza we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stanza {
    pub package: String,
    pub version: String,
    pub arch: String,
    pub sha256: String,
    pub depends: Vec<String>,
}

impl Apt {
    /// Sets up (or reuses) the private apt state for `suite` under `apt_root`. Holds a lock on it for
    /// the life of the value, since apt refuses to share its lists directory.
    pub fn open(apt_root: &Path, suite: &str) -> Result<Apt, PkgError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| PkgError::Io { path, source }
        };
        // apt reads a relative `Dir::*` path against its own root folder (/etc/apt for the lists
        // and parts), not against ours: every path it gets must be absolute.
        let dir = std::path::absolute(apt_root.join(suite)).map_err(io(apt_root))?;
        for sub in ["lists/partial", "cache/archives/partial", "parts"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(io(&dir.join(sub)))?;
        }
        let lock_path = dir.join("rpixen.lock");
        let lock = std::fs::File::create(&lock_path).map_err(io(&lock_path))?;
        lock.lock().map_err(io(&lock_path))?;
        let mirror = mirror()?;
        let line = format!("deb [arch={ARCH} signed-by={KEYRING}] {mirror} {suite} {COMPONENTS}\n");
        let list = dir.join("sources.list");
        if std::fs::read_to_string(&list).ok().as_deref() != Some(line.as_str()) {
            std::fs::write(&list, &line).map_err(io(&list))?;
        }
        Ok(Apt { dir, suite: suite.to_owned(), updated: false, _lock: lock })
    }

    fn command(&self, program: &str) -> Command {
        let d = |sub: &str| self.dir.join(sub).display().to_string();
        let mut cmd = Command::new(program);
        for opt in [
            format!("APT::Architecture={ARCH}"),
            format!("APT::Architectures={ARCH}"),
            format!("Dir::State::Lists={}", d("lists")),
            "Dir::State::Status=/dev/null".into(),
            format!("Dir::Etc::SourceList={}", d("sources.list")),
            format!("Dir::Etc::SourceParts={}", d("parts")),
            format!("Dir::Cache={}", d("cache")),
            "Dir::Etc::Preferences=/dev/null".into(),
            format!("Dir::Etc::PreferencesParts={}", d("parts")),
            // apt drops to the `_apt` user for downloads, who cannot write into a private cache.
            "APT::Sandbox::User=root".into(),
        ] {
            cmd.arg("-o").arg(opt);
        }
        cmd
    }

    /// `apt-get update`: fetches the suite's indexes and checks their signatures. Once per process and
    /// apt folder is enough: `rpixen pkg update` re-pins many packages from the same indexes.
    pub fn update(&mut self) -> Result<(), PkgError> {
        static DONE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
        let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
        if done.contains(&self.dir) {
            self.updated = true;
            return Ok(());
        }
        crate::report::status(format_args!("pkg: updating the {} package index", self.suite));
        let mut cmd = self.command("apt-get");
        cmd.args(["-q", "update"]);
        run(cmd, "apt-get update")?;
        done.push(self.dir.clone());
        self.updated = true;
        Ok(())
    }

    fn has_lists(&self) -> bool {
        std::fs::read_dir(self.dir.join("lists"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .any(|e| e.file_name().to_string_lossy().ends_with("_Packages"))
            })
            .unwrap_or(false)
    }

    /// Downloads `package=version` into the empty folder `into` and returns the file. When the indexes
    /// do not know the version, they are refreshed once; a version the archive no longer serves is
    /// [`PkgError::VersionGone`].
    pub fn download(
        &mut self,
        package: &str,
        version: &str,
        into: &Path,
    ) -> Result<PathBuf, PkgError> {
        if !self.has_lists() && !self.updated {
            self.update()?;
        }
        loop {
            crate::report::status(format_args!("pkg: downloading {package}={version}"));
            let mut cmd = self.command("apt-get");
            cmd.args(["-q", "download", &format!("{package}={version}")]).current_dir(into);
            match run(cmd, "apt-get download") {
                Ok(_) => break,
                Err(PkgError::Tool { stderr, .. })
                    if stderr.contains("was not found")
                        || stderr.contains("Unable to locate package") =>
                {
                    if self.updated {
                        // The caller names the package definition.
                        return Err(PkgError::VersionGone(Box::new(VersionGone {
                            package: String::new(),
                            deb: package.to_owned(),
                            def: PathBuf::new(),
                            version: version.to_owned(),
                            suite: self.suite.clone(),
                            detail: stderr.trim().to_owned(),
                        })));
                    }
                    self.update()?;
                }
                Err(e) => return Err(e),
            }
        }
        let mut debs: Vec<PathBuf> = std::fs::read_dir(into)
            .map_err(|source| PkgError::Io { path: into.to_owned(), source })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "deb"))
            .collect();
        match debs.len() {
            1 => Ok(debs.remove(0)),
            n => Err(PkgError::Tool {
                tool: "apt-get download".into(),
                stderr: format!("expected one .deb in {}, found {n}", into.display()),
            }),
        }
    }

    /// The candidate (newest) version the verified index lists for `package`.
    pub fn show(&mut self, package: &str) -> Result<Stanza, PkgError> {
        let mut cmd = self.command("apt-cache");
        cmd.args(["show", "--no-all-versions", package]);
        let out = run(cmd, "apt-cache show")?;
        parse_stanza(&out).ok_or_else(|| PkgError::Tool {
            tool: "apt-cache show".into(),
            stderr: format!("no complete stanza for {package} in:\n{out}"),
        })
    }
}

fn run(mut cmd: Command, tool: &str) -> Result<String, PkgError> {
    let out = cmd.output().map_err(|source| PkgError::Start { tool: tool.into(), source })?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() || stderr.contains("\nE: ") || stderr.starts_with("E: ") {
        return Err(PkgError::Tool { tool: tool.into(), stderr });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The Debian mirror: `$RPIXEN_DEBIAN_MIRROR`, else the host's first deb822 `URIs:` or `deb` line.
fn mirror() -> Result<String, PkgError> {
    if let Ok(m) = std::env::var("RPIXEN_DEBIAN_MIRROR") {
        return Ok(m);
    }
    let deb822 =
        std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    let classic = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    mirror_from(&deb822, &classic).ok_or_else(|| PkgError::Tool {
        tool: "apt sources".into(),
        stderr:
            "no Debian mirror in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list; \
                 set RPIXEN_DEBIAN_MIRROR"
                .into(),
    })
}

fn mirror_from(deb822: &str, classic: &str) -> Option<String> {
    let from_822 = deb822
        .lines()
        .find_map(|l| l.strip_prefix("URIs:"))
        .and_then(|u| u.split_whitespace().next());
    let from_classic = || {
        classic.lines().find_map(|l| {
            let mut words = l.split_whitespace().filter(|w| !w.starts_with('['));
            (words.next() == Some("deb")).then(|| words.next()).flatten()
        })
    };
    from_822.or_else(from_classic).map(str::to_owned)
}

/// Parses the first stanza of `apt-cache show` output.
pub fn parse_stanza(text: &str) -> Option<Stanza> {
    let stanza = text.split("\n\n").next()?;
    let field = |name: &str| {
        stanza.lines().find_map(|l| {
            l.strip_prefix(name).and_then(|r| r.strip_prefix(':')).map(|v| v.trim().to_owned())
        })
    };
    let depends = field("Depends")
        .map(|d| {
            d.split(',')
                .filter_map(|dep| dep.split_whitespace().next().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Some(Stanza {
        package: field("Package")?,
        version: field("Version")?,
        arch: field("Architecture")?,
        sha256: field("SHA256")?,
        depends,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_from_host_sources() {
        let deb822 =
            "Types: deb\n# comment\nURIs: http://mirror.example/debian\nSuites: bookworm\n";
        assert_eq!(mirror_from(deb822, "").as_deref(), Some("http://mirror.example/debian"));
        let classic = "# x\ndeb [arch=amd64] http://m.example/debian bookworm main\n";
        assert_eq!(mirror_from("", classic).as_deref(), Some("http://m.example/debian"));
        assert_eq!(mirror_from("", ""), None);
    }

    #[test]
    fn stanza_fields() {
        let text = "Package: linux-image-arm64\nVersion: 6.12.57-1\nArchitecture: arm64\n\
                    Depends: linux-image-6.12.57+deb13-arm64 (= 6.12.57-1), other\nSHA256: ab12\n\n\
                    Package: second\n";
        let s = parse_stanza(text).unwrap();
        assert_eq!(s.version, "6.12.57-1");
        assert_eq!(s.depends, ["linux-image-6.12.57+deb13-arm64", "other"]);
        assert_eq!(s.sha256, "ab12");
        assert!(parse_stanza("Package: x\n").is_none());
    }
}
