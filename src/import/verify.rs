//! Proves the generated text is an agent.yaml `agent run` accepts and that it says what the
//! plan says, before anything is written. When the host key is still missing, the only
//! problem allowed is that one, and the rest of the file is checked with a stand-in pin.

use std::path::Path;

use super::ImportError;
use super::merge::{KeepalivePlan, Plan};
use super::render;
use crate::config::{Config, ConfigError, values};

/// A syntactically valid fingerprint that matches no key, to check the rest of the file.
const STAND_IN_PIN: &str = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

fn invalid(e: &ConfigError) -> Vec<ImportError> {
    e.problems
        .iter()
        .map(|p| {
            ImportError::whole(
                format!(
                    "the agent.yaml this input gives would be invalid: {}: {}",
                    p.field, p.message
                ),
                p.fix.as_deref(),
            )
        })
        .collect()
}

pub fn verify(config_path: &Path, yaml: &str, plan: &Plan) -> Result<(), Vec<ImportError>> {
    let config = if plan.host_keys.is_empty() {
        match Config::parse(config_path, yaml) {
            Ok(_) => {
                return Err(vec![ImportError::whole(
                    "internal error: agent.yaml without a pinned key was accepted",
                    None,
                )]);
            }
            Err(e) if e.problems.iter().all(|p| p.field == "server.host_keys") => {}
            Err(e) => return Err(invalid(&e)),
        }
        let stand_in = [STAND_IN_PIN.to_string()];
        Config::parse(config_path, &render::render_with(plan, Some(&stand_in)))
            .map_err(|e| invalid(&e))?
    } else {
        Config::parse(config_path, yaml).map_err(|e| invalid(&e))?
    };
    let mismatch = |what: &str, got: String, want: String| {
        vec![ImportError::whole(
            format!(
                "internal error: the generated agent.yaml reads back with {what} {got}, not {want}"
            ),
            None,
        )]
    };
    if config.server.host != plan.host.value {
        return Err(mismatch(
            "host",
            config.server.host,
            plan.host.value.clone(),
        ));
    }
    if config.server.user != plan.user.value {
        return Err(mismatch(
            "user",
            config.server.user,
            plan.user.value.clone(),
        ));
    }
    if config.server.ports != plan.ports {
        return Err(mismatch(
            "ports",
            format!("{:?}", config.server.ports),
            format!("{:?}", plan.ports),
        ));
    }
    if config.server.host_keys.len() != plan.host_keys.len().max(1) {
        return Err(mismatch(
            "host keys",
            config.server.host_keys.len().to_string(),
            plan.host_keys.len().to_string(),
        ));
    }
    let base = config_path.parent().unwrap_or(Path::new(""));
    let identity = plan
        .identity
        .as_ref()
        .map(|i| i.value.as_str())
        .unwrap_or(crate::config::DEFAULT_IDENTITY);
    if config.identity != base.join(identity) {
        return Err(mismatch(
            "identity",
            config.identity.display().to_string(),
            identity.to_string(),
        ));
    }
    if config.forwards.len() != plan.forwards.len() {
        return Err(mismatch(
            "forward count",
            config.forwards.len().to_string(),
            plan.forwards.len().to_string(),
        ));
    }
    for (got, want) in config.forwards.iter().zip(&plan.forwards) {
        let remote = values::remote_spec(&want.remote).unwrap_or_default();
        if got.name != want.name
            || (got.remote_addr.clone(), got.remote_port) != remote
            || got.target() != want.target
        {
            return Err(mismatch(
                "forward",
                format!("{} {} -> {}", got.name, got.remote(), got.target()),
                format!("{} {} -> {}", want.name, want.remote, want.target),
            ));
        }
    }
    if let KeepalivePlan::Set(interval, missed, _) = plan.keepalive
        && (
            config.keepalive.interval.as_secs(),
            config.keepalive.max_missed,
        ) != (interval, missed)
    {
        return Err(mismatch(
            "keepalive",
            format!("{:?}", config.keepalive),
            format!("{interval}s/{missed}"),
        ));
    }
    if let Some(t) = &plan.connect_timeout
        && config.timeouts.connect.as_secs() != t.value
    {
        return Err(mismatch(
            "connect timeout",
            format!("{:?}", config.timeouts.connect),
            format!("{}s", t.value),
        ));
    }
    Ok(())
}
