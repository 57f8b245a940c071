//! The state of dom0-init's supervised services, as PID 1 publishes it for other programs (the
//! update agent's health check): the file [`PATH`], one line per service,
//!
//! ```text
//! # name state starts
//! network running 1
//! sshd restarting 3
//! ```
//!
//! `state` is `running`, `restarting` (exited, a restart is due) or `stopped` (exited, not
//! restarted); `starts` counts how often the service was started since boot, so a reader sees a
//! crash loop even when every look finds the service running. PID 1 rewrites the file whole (temp
//! and rename) on every change. Here once, for the writer and the readers.

use std::fmt;

/// Where PID 1 writes the file (tmpfs: it describes this boot only).
pub const PATH: &str = "/run/rpixen/services";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceState {
    Running,
    Restarting,
    Stopped,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Running => "running",
            ServiceState::Restarting => "restarting",
            ServiceState::Stopped => "stopped",
        }
    }

    fn parse(s: &str) -> Option<ServiceState> {
        [ServiceState::Running, ServiceState::Restarting, ServiceState::Stopped]
            .into_iter()
            .find(|st| st.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceStatus {
    pub name: String,
    pub state: ServiceState,
    pub starts: u32,
}

/// A line of the file that is not `name state starts`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: `{text}` is not `name running|restarting|stopped starts`")]
pub struct StatusLineError {
    pub line: usize,
    pub text: String,
}

impl fmt::Display for ServiceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.name, self.state.as_str(), self.starts)
    }
}

/// The file's text.
pub fn render(services: &[ServiceStatus]) -> String {
    let mut out = String::from("# name state starts\n");
    for s in services {
        out.push_str(&format!("{s}\n"));
    }
    out
}

/// Reads the file's text.
pub fn parse(text: &str) -> Result<Vec<ServiceStatus>, StatusLineError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || StatusLineError { line: i + 1, text: raw.to_owned() };
        let mut words = line.split_whitespace();
        let (Some(name), Some(state), Some(starts), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return Err(bad());
        };
        let state = ServiceState::parse(state).ok_or_else(bad)?;
        let starts = starts.parse().map_err(|_| bad())?;
        out.push(ServiceStatus { name: name.to_owned(), state, starts });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let s = vec![
            ServiceStatus { name: "network".into(), state: ServiceState::Running, starts: 1 },
            ServiceStatus { name: "sshd".into(), state: ServiceState::Restarting, starts: 3 },
            ServiceStatus { name: "x".into(), state: ServiceState::Stopped, starts: 2 },
        ];
        let text = render(&s);
        assert_eq!(
            text,
            "# name state starts\nnetwork running 1\nsshd restarting 3\nx stopped 2\n"
        );
        assert_eq!(parse(&text).unwrap(), s);
        let err = parse("# h\nnetwork sleeping 1\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(parse("a running").is_err());
        assert!(parse("a running x").is_err());
        assert!(parse("a running 1 extra").is_err());
    }
}
