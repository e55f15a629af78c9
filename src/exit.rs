//! Exit codes, documented in the README; automation relies on them.

use std::process::ExitCode;

/// Success: the command did what was asked (`health`: the agent is ready).
pub const OK: u8 = 0;
/// A runtime failure: `check` found a failing step, `health` found the agent not ready.
pub const FAILURE: u8 = 1;
/// Usage or configuration error: nothing was attempted (`health`: agent unreachable).
pub const USAGE: u8 = 2;

pub fn code(c: u8) -> ExitCode {
    ExitCode::from(c)
}
