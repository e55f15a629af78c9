//! The rows `agent check` prints: one per step, as a table for people or one JSON document for
//! automation (field names are stable: step, target, status, detail, duration_ms, fix).

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::exit;

/// A step's verdict. `Skip` means it could not run because an earlier step failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pass,
    Skip,
    Warn,
    Fail,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Skip => "SKIP",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One step: what was tried, how it went, how long it took, and (WARN/FAIL) how to fix it.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `config`, `identity`, `proxy`, `dns`, `tcp`, `ssh`, `host-key`, `auth`, `forward`, `target`,
    /// `tls`.
    pub step: &'static str,
    /// What the step was about: a file, `host:port`, a forward.
    pub target: String,
    pub status: Status,
    pub detail: String,
    pub duration_ms: u64,
    /// One line a customer's IT person can act on; present for WARN and FAIL.
    pub fix: Option<String>,
}

impl Row {
    pub fn new(step: &'static str, target: impl Into<String>, status: Status) -> Self {
        Self {
            step,
            target: target.into(),
            status,
            detail: String::new(),
            duration_ms: 0,
            fix: None,
        }
    }

    pub fn pass(step: &'static str, target: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(step, target, Status::Pass).detail(detail)
    }

    pub fn skip(step: &'static str, target: impl Into<String>, why: impl Into<String>) -> Self {
        Self::new(step, target, Status::Skip).detail(format!("not run: {}", why.into()))
    }

    pub fn problem(
        step: &'static str,
        target: impl Into<String>,
        status: Status,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        let mut row = Self::new(step, target, status).detail(detail);
        row.fix = Some(fix.into());
        row
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    pub fn took(mut self, d: Duration) -> Self {
        self.duration_ms = d.as_millis() as u64;
        self
    }
}

/// A host key a server offered, with the line to paste into agent.yaml.
#[derive(Debug, Clone, Serialize)]
pub struct OfferedHostKey {
    /// `host:port` that offered it.
    pub server: String,
    pub algorithm: String,
    pub fingerprint: String,
    /// The OpenSSH public key line (no comment); also pinnable.
    pub key: String,
    pub trusted: bool,
}

impl OfferedHostKey {
    pub fn new(server: &str, k: &crate::ssh::probe::OfferedKey) -> Self {
        Self {
            server: server.to_string(),
            algorithm: k.algorithm.clone(),
            fingerprint: k.fingerprint.clone(),
            key: k.line.clone(),
            trusted: k.trusted,
        }
    }
}

/// Everything one run of `agent check` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The config file checked; absent for `agent check HOST`.
    pub config: Option<String>,
    /// Bound for each network wait, in milliseconds.
    pub timeout_ms: u64,
    /// The worst status of any row.
    pub status: Status,
    pub exit_code: u8,
    pub rows: Vec<Row>,
    pub offered_host_keys: Vec<OfferedHostKey>,
    /// The config could not be read or validated (exit 2).
    #[serde(skip)]
    pub config_unusable: bool,
}

impl Report {
    pub fn new(
        config: Option<String>,
        timeout: Duration,
        rows: Vec<Row>,
        offered_host_keys: Vec<OfferedHostKey>,
        config_unusable: bool,
    ) -> Self {
        let status = rows.iter().map(|r| r.status).max().unwrap_or(Status::Pass);
        let exit_code = if config_unusable {
            exit::USAGE
        } else if status == Status::Fail {
            exit::FAILURE
        } else {
            exit::OK
        };
        Self {
            config,
            timeout_ms: timeout.as_millis() as u64,
            status,
            exit_code,
            rows,
            offered_host_keys,
            config_unusable,
        }
    }

    fn count(&self, s: Status) -> usize {
        self.rows.iter().filter(|r| r.status == s).count()
    }

    /// One JSON document (pretty-printed, ends with a newline).
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_else(|e| {
            format!("{{\"status\":\"FAIL\",\"exit_code\":1,\"error\":\"{e}\"}}")
        });
        text.push('\n');
        text
    }

    /// The table for people: one line per step, its fix indented below it, then a summary.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let what = match &self.config {
            Some(c) => format!("agent check: {c}"),
            None => "agent check: first contact".to_string(),
        };
        let _ = writeln!(
            out,
            "{what} (each network wait bounded by {})\n",
            duration(self.timeout_ms)
        );
        let step_w = self.rows.iter().map(|r| r.step.len()).max().unwrap_or(0);
        let target_w = self
            .rows
            .iter()
            .map(|r| r.target.chars().count())
            .max()
            .unwrap_or(0)
            .min(40);
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{}  {:step_w$}  {:target_w$}  {:>6}  {}",
                r.status.label(),
                r.step,
                r.target,
                duration(r.duration_ms),
                r.detail
            );
            if let Some(fix) = &r.fix
                && matches!(r.status, Status::Warn | Status::Fail)
            {
                let _ = writeln!(out, "      fix: {fix}");
            }
        }
        // The keys of servers that no pin trusts yet (a server with a trusted key needs none).
        let untrusted: Vec<&OfferedHostKey> = {
            let trusted_servers: Vec<&str> = self
                .offered_host_keys
                .iter()
                .filter(|k| k.trusted)
                .map(|k| k.server.as_str())
                .collect();
            let mut seen = Vec::new();
            for k in self
                .offered_host_keys
                .iter()
                .filter(|k| !trusted_servers.contains(&k.server.as_str()))
            {
                if !seen
                    .iter()
                    .any(|s: &&OfferedHostKey| s.fingerprint == k.fingerprint)
                {
                    seen.push(k);
                }
            }
            seen
        };
        if !untrusted.is_empty() {
            let _ = writeln!(
                out,
                "\nTo trust the server, confirm its fingerprint with the vendor over another channel \
                 (phone, ticket), then put this under `server:` in agent.yaml:\n  host_keys:"
            );
            for k in untrusted {
                let _ = writeln!(
                    out,
                    "    - \"{}\"   # {} offered by {}",
                    k.fingerprint, k.algorithm, k.server
                );
            }
        }
        let (fail, warn, pass, skip) = (
            self.count(Status::Fail),
            self.count(Status::Warn),
            self.count(Status::Pass),
            self.count(Status::Skip),
        );
        let verdict = match (self.exit_code, self.config.is_some()) {
            (exit::OK, false) => "the server is reachable",
            (exit::OK, true) if warn == 0 => "ready",
            (exit::OK, true) => "ready, with warnings",
            (exit::USAGE, true) => "the configuration must be fixed first",
            (exit::USAGE, false) => "nothing was checked",
            (_, false) => "the server is not reachable",
            _ => "not ready",
        };
        let _ = writeln!(
            out,
            "\n{fail} failed, {warn} {}, {pass} passed, {skip} skipped: {verdict} (exit {}).",
            if warn == 1 { "warning" } else { "warnings" },
            self.exit_code
        );
        out
    }
}

/// `0ms`, `840ms`, `1.2s`, `10s`.
pub fn duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_worst_row() {
        let ok = Report::new(
            None,
            Duration::from_secs(1),
            vec![Row::pass("dns", "h", "x")],
            vec![],
            false,
        );
        assert_eq!(ok.exit_code, 0);
        let warn = Row::problem("tcp", "h:22", Status::Warn, "blocked", "allow it");
        let fail = Row::problem("tcp", "h:443", Status::Fail, "blocked", "allow it");
        let r = Report::new(
            None,
            Duration::from_secs(1),
            vec![warn.clone()],
            vec![],
            false,
        );
        assert_eq!((r.exit_code, r.status), (0, Status::Warn));
        let r = Report::new(
            None,
            Duration::from_secs(1),
            vec![warn, fail],
            vec![],
            false,
        );
        assert_eq!((r.exit_code, r.status), (1, Status::Fail));
        let r = Report::new(None, Duration::from_secs(1), vec![], vec![], true);
        assert_eq!(r.exit_code, 2);
    }

    #[test]
    fn text_shows_fix_under_failures_only() {
        let mut pass = Row::pass("dns", "h", "1.2.3.4");
        pass.fix = Some("never shown".into());
        let fail = Row::problem("tcp", "h:22", Status::Fail, "refused", "allow outbound 22");
        let text = Report::new(
            None,
            Duration::from_secs(10),
            vec![pass, fail],
            vec![],
            false,
        )
        .to_text();
        assert!(text.contains("fix: allow outbound 22"), "{text}");
        assert!(!text.contains("never shown"), "{text}");
        assert!(text.contains("1 failed, 0 warnings, 1 passed"), "{text}");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(12), "12ms");
        assert_eq!(duration(1234), "1.2s");
    }
}
