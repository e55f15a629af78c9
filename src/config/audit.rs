//! `audit:`: the audit trail's file and what to do when it cannot be written.

use std::path::Path;

use super::raw::RawAudit;
use super::validate::{Problems, resolve};
use super::values;
use crate::audit::{DEFAULT_HEAD_INTERVAL, DEFAULT_MAX_SIZE, OnFailure, Settings};

/// Smaller files would rotate every few dozen records.
const MIN_MAX_SIZE: u64 = 64 << 10;

/// The validated section, `None` when absent (no audit trail), or when it says only
/// `http_query` (which [`super::Config::warnings`] then points out). With problems, the values
/// are fallbacks and the problems say which.
pub(super) fn settings(p: &mut Problems, base: &Path, raw: Option<RawAudit>) -> Option<Settings> {
    let raw = raw?;
    let only_http_query = raw.http_query.is_some()
        && raw.file.is_none()
        && raw.on_failure.is_none()
        && raw.max_size.is_none()
        && raw.head_interval.is_none();
    if only_http_query {
        return None;
    }
    let file = match raw.file.as_deref().map(str::trim) {
        Some(f) if !f.is_empty() => resolve(base, f),
        _ => {
            p.add(
                "audit.file",
                "is required when `audit:` is present",
                Some(
                    "add e.g. `file: /var/lib/agent/audit.jsonl` under `audit:`, or remove the section"
                        .to_string(),
                ),
            );
            base.join("audit.jsonl")
        }
    };
    if file.is_dir() {
        p.add(
            "audit.file",
            match super::values::shown_path(&file) {
                Some(path) => format!("{path} is a folder"),
                None => "names a folder".into(),
            },
            Some("name a file inside it, e.g. audit.jsonl".to_string()),
        );
    } else if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        p.add(
            "audit.file",
            match super::values::shown_path(dir) {
                Some(dir) => format!("the folder {dir} does not exist"),
                None => "names a file in a folder that does not exist".into(),
            },
            Some(match super::values::shown_path(dir) {
                Some(dir) => format!(
                    "create it (`mkdir -p {dir}`, writable by the agent's user only), or point audit.file elsewhere"
                ),
                None => "point audit.file at a file in an existing folder".to_string(),
            }),
        );
    }
    let on_failure = match raw.on_failure.as_deref().map(str::trim) {
        None | Some("refuse") => OnFailure::Refuse,
        Some("continue") => OnFailure::Continue,
        Some(_) => {
            p.add(
                "audit.on_failure",
                "is not refuse or continue",
                Some(
                    "use refuse (the default: no vendor connection goes unrecorded) or continue"
                        .to_string(),
                ),
            );
            OnFailure::Refuse
        }
    };
    let max_size = match raw.max_size.as_deref().map(values::byte_size) {
        None => DEFAULT_MAX_SIZE,
        Some(Ok(n)) if n >= MIN_MAX_SIZE => n,
        Some(Ok(_)) => {
            p.add(
                "audit.max_size",
                "must be at least 64KiB",
                Some("remove it to rotate at 64MiB".to_string()),
            );
            DEFAULT_MAX_SIZE
        }
        Some(Err(e)) => {
            p.add(
                "audit.max_size",
                e,
                Some("write a size such as \"64MiB\"".to_string()),
            );
            DEFAULT_MAX_SIZE
        }
    };
    let head_interval = p.duration(
        "audit.head_interval",
        raw.head_interval.as_deref(),
        DEFAULT_HEAD_INTERVAL,
    );
    Some(Settings {
        file,
        on_failure,
        max_size,
        head_interval,
    })
}

/// `audit.http_query`: `keep` puts query values of HTTP forwards' requests in the trail;
/// `drop` (the default) keeps their names only.
pub(super) fn http_query(p: &mut Problems, raw: Option<&RawAudit>) -> bool {
    match raw.and_then(|a| a.http_query.as_deref()).map(str::trim) {
        None | Some("drop") => false,
        Some("keep") => true,
        Some(_) => {
            p.add(
                "audit.http_query",
                "is neither keep nor drop",
                Some(
                    "use drop (the default: the trail names each query parameter, without its value) or keep (values too: a token in a query string then lands in the trail)"
                        .to_string(),
                ),
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::audit::OnFailure;
    use crate::config::Config;
    use std::path::Path;

    const BASE: &str = "server: { host: vendor.example, user: acme, host_keys: [\"SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8\"] }\nforwards: [{ name: a, remote: 5000, target: \"a:1\" }]\n";

    fn parse(dir: &Path, audit: &str) -> Result<Config, String> {
        Config::parse(&dir.join("agent.yaml"), &format!("{BASE}{audit}")).map_err(|e| e.to_string())
    }

    #[test]
    fn absent_is_off_and_present_has_defaults() {
        let dir = tempfile::tempdir().unwrap();
        assert!(parse(dir.path(), "").unwrap().audit.is_none());
        let c = parse(dir.path(), "audit: { file: audit.jsonl }\n").unwrap();
        let a = c.audit.unwrap();
        assert_eq!(
            a.file,
            dir.path().join("audit.jsonl"),
            "relative to agent.yaml"
        );
        assert_eq!(a.on_failure, OnFailure::Refuse);
        assert_eq!(a.max_size, 64 << 20);
        assert_eq!(a.head_interval.as_secs(), 300);
        assert_eq!(c.sha256.len(), 64);
        let c = parse(
            dir.path(),
            "audit: { file: a.jsonl, on_failure: continue, max_size: 1MiB, head_interval: 30s }\n",
        )
        .unwrap();
        let a = c.audit.unwrap();
        assert_eq!(
            (a.on_failure, a.max_size, a.head_interval.as_secs()),
            (OnFailure::Continue, 1 << 20, 30)
        );
    }

    #[test]
    fn each_mistake_names_the_field_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        for (yaml, says) in [
            ("audit: { on_failure: refuse }\n", "audit.file: is required"),
            ("audit: { file: nowhere/a.jsonl }\n", "does not exist"),
            ("audit: { file: \".\" }\n", "is a folder"),
            (
                "audit: { file: a, on_failure: ignore }\n",
                "audit.on_failure: is not refuse or continue",
            ),
            (
                "audit: { file: a, max_size: 1KiB }\n",
                "audit.max_size: must be at least 64KiB",
            ),
            ("audit: { file: a, max_size: lots }\n", "audit.max_size"),
            (
                "audit: { file: a, head_interval: 0s }\n",
                "audit.head_interval: must be greater than zero",
            ),
            (
                "audit: { file: a, rotate: daily }\n",
                "unknown field `rotate`",
            ),
        ] {
            let e = parse(dir.path(), yaml).unwrap_err();
            assert!(
                e.contains(says) && e.contains("agent.yaml") && e.contains("fix:"),
                "{yaml}: {e}"
            );
        }
    }
}
