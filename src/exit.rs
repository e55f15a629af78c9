//! Exit codes, documented in the README; automation relies on them. Also what every command that
//! refuses an invalid agent.yaml prints, so `run` and `health` say it the same way (and neither
//! depends on `cli`, which depends on them).

use std::process::ExitCode;

use crate::config::ConfigError;

/// Success: the command did what was asked (`health`: the agent is ready).
pub const OK: u8 = 0;
/// A runtime failure: `check` found a failing step, `health` found the agent not ready.
pub const FAILURE: u8 = 1;
/// Usage or configuration error: nothing was attempted (`health`: agent unreachable).
pub const USAGE: u8 = 2;

pub fn code(c: u8) -> ExitCode {
    ExitCode::from(c)
}

/// Prints every config problem to stderr (one per line, each naming the file, the field and the
/// fix); exit code 2.
pub fn invalid_config(e: &ConfigError) -> ExitCode {
    eprintln!("error: invalid configuration\n{e}");
    code(USAGE)
}
