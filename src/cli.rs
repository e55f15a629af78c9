//! The command line. `main.rs` parses [`Cli`] and hands it to [`dispatch`]; everything else is
//! library code that tests call directly.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::access::client::default_by;
use crate::access::protocol::Request;
use crate::exit;
use crate::fault::Fault;

#[derive(Debug, Parser)]
#[command(
    name = "agent",
    version,
    about = "Outbound-only SSH reverse tunnel: lets a vendor reach the on-prem services you list, and nothing else",
    long_about = None,
    after_help = "Exit codes: 0 ok, 1 runtime failure (check failed, not ready), 2 usage or config error.\nStart with `agent keygen`, send keys/public-key.pem to the vendor, write agent.yaml, then `agent check` and `agent run`."
)]
pub struct Cli {
    /// Path to agent.yaml; relative paths inside it resolve against its folder.
    #[arg(
        short,
        long,
        global = true,
        env = "AGENT_CONFIG",
        default_value = "agent.yaml"
    )]
    pub config: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate the RSA key pair; send the public key to the vendor.
    Keygen {
        /// Folder for private-key.pem and public-key.pem (created if missing).
        #[arg(long, default_value = "keys")]
        out_dir: PathBuf,
        /// RSA key size.
        #[arg(long, default_value_t = 3072, value_parser = parse_bits)]
        bits: usize,
        /// Comment at the end of the public key line (e.g. your company and host).
        #[arg(long, default_value = "agent")]
        comment: String,
        /// Replace an existing key pair (the vendor then needs the new public key).
        #[arg(long)]
        force: bool,
    },
    /// Probe every hop (config, key, DNS, TCP, SSH, forwards, targets) and say how to fix what fails.
    Check {
        /// Print one JSON document instead of a table.
        #[arg(long)]
        json: bool,
        /// Bound for each network step.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: std::time::Duration,
        /// Probe just this vendor server (ports 22 and 443, banner, host key), without a config.
        host: Option<String>,
    },
    /// Hold the tunnel: connect, forward, reconnect forever.
    Run,
    /// Ask the running agent whether it is ready (exit 0), not ready (1) or unreachable (2).
    Health,
    /// Turn the old supervisord.conf (autossh programs) or ssh command lines into agent.yaml.
    ///
    /// Exit 0: written. 1: written, but it needs an edit first (e.g. the host key pin; every
    /// ATTENTION line says what). 2: nothing written (bad input, output exists).
    Import {
        /// supervisord.conf, or a text file with one ssh/autossh command per line.
        input: PathBuf,
        /// Write agent.yaml here instead of to stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// The vendor server's key, as `SHA256:...` or an OpenSSH public key line (repeatable).
        /// `agent check HOST` prints it; confirm it with the vendor.
        #[arg(long = "host-key", value_name = "PIN")]
        host_keys: Vec<String>,
        /// Replace the output file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Open a forward whose `access.grant` allows it, for a bounded time and a stated reason.
    ///
    /// The duration is capped by the forward's `access.grant.max`; a grant also opens a
    /// windowed forward outside its windows. It closes by itself when it ends.
    Grant {
        forward: String,
        /// How long, e.g. 3h or 90m.
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
        duration: std::time::Duration,
        /// Why (an incident or ticket reference): required, recorded in the audit trail.
        #[arg(long)]
        reason: String,
        /// Who asked (default: the sudo user, else the login name).
        #[arg(long)]
        by: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// End a forward's grant now: the server's port closes and its connections are cut.
    Revoke {
        forward: String,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        by: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The kill switch: close the named forwards (none named: all) until `agent resume`, also
    /// across restarts.
    Pause {
        forwards: Vec<String>,
        /// Why: required, recorded in the audit trail.
        #[arg(long)]
        reason: String,
        #[arg(long)]
        by: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Lift pauses: of the named forwards, or (none named) every pause.
    Resume {
        forwards: Vec<String>,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        by: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Per forward: open or closed by the access policy, why, until when, the server's side and
    /// open connections.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The audit trail (`audit.file` in agent.yaml).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Vendor tokens for HTTP and CONNECT forwards.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a random token (256 bits, URL-safe) for the vendor to present on FORWARD, print it
    /// once with the `vendor_tokens` line to add to agent.yaml. The token is stored nowhere.
    New { forward: String },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check that no record was edited, removed or reordered (exit 0 intact, 1 broken, 2 unreadable).
    Verify {
        /// Files to check as one chain, oldest first. Default: agent.yaml's audit.file and its
        /// rotated predecessors (FILE.1, FILE.2, ...).
        files: Vec<PathBuf>,
        /// A head the agent logged earlier (the hash of an `audit head` log line): the chain
        /// must still contain it, or its tail was cut off.
        #[arg(long, value_name = "HASH")]
        head: Option<String>,
    },
}

fn parse_bits(s: &str) -> Result<usize, String> {
    let bits: usize = s.parse().map_err(|_| format!("\"{s}\" is not a number"))?;
    if crate::keygen::BITS.contains(&bits) {
        Ok(bits)
    } else {
        Err("use 2048, 3072 or 4096".into())
    }
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::config::values::duration(s)
}

/// Runs one subcommand to completion and returns the process exit code.
pub fn dispatch(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Keygen {
            out_dir,
            bits,
            comment,
            force,
        } => match crate::keygen::keygen(&out_dir, bits, &comment, force) {
            Ok(written) => {
                print!("{}", crate::keygen::report(&written));
                exit::code(exit::OK)
            }
            Err(e) => {
                eprintln!("error: {e}");
                if let Some(fix) = e.fix() {
                    eprintln!("  fix: {fix}");
                }
                exit::code(match e {
                    crate::ssh::keys::KeyError::Exists { .. } => exit::USAGE,
                    _ => exit::FAILURE,
                })
            }
        },
        Command::Check {
            json,
            timeout,
            host,
        } => crate::check::main(&crate::check::Options {
            config: cli.config.clone(),
            host,
            timeout,
            json,
        }),
        Command::Run => crate::run::main(&cli.config),
        Command::Health => crate::admin::client::main(&cli.config),
        Command::Import {
            input,
            output,
            host_keys,
            force,
        } => crate::import::command::main(&input, output.as_deref(), &host_keys, force),
        Command::Token {
            command: TokenCommand::New { forward },
        } => {
            let (token, hash) = crate::gateway::auth::new_token();
            let line = crate::gateway::auth::hash_line(&hash);
            println!("token for the vendor (shown once, stored nowhere): {token}");
            println!();
            println!("add to forwards[name: {forward}] (http: or connect:) in agent.yaml:");
            println!("  vendor_tokens: [\"{line}\"]");
            println!("(keep the old line beside it until the vendor has switched, then remove it)");
            exit::code(exit::OK)
        }
        Command::Grant {
            forward,
            duration,
            reason,
            by,
            json,
        } => control(
            &cli.config,
            Request::Grant {
                forward,
                seconds: duration.as_secs().max(u64::from(!duration.is_zero())),
                reason,
                by: by.unwrap_or_else(default_by),
            },
            json,
        ),
        Command::Revoke {
            forward,
            reason,
            by,
            json,
        } => control(
            &cli.config,
            Request::Revoke {
                forward,
                reason,
                by: by.unwrap_or_else(default_by),
            },
            json,
        ),
        Command::Pause {
            forwards,
            reason,
            by,
            json,
        } => control(
            &cli.config,
            Request::Pause {
                forwards,
                reason,
                by: by.unwrap_or_else(default_by),
            },
            json,
        ),
        Command::Resume {
            forwards,
            reason,
            by,
            json,
        } => control(
            &cli.config,
            Request::Resume {
                forwards,
                reason,
                by: by.unwrap_or_else(default_by),
            },
            json,
        ),
        Command::Status { json } => control(&cli.config, Request::Status, json),
        Command::Audit {
            command: AuditCommand::Verify { files, head },
        } => audit_verify(&cli.config, files, head.as_deref()),
    }
}

/// `agent audit verify`: the files given, or the configured file and its rotated predecessors.
fn audit_verify(config: &std::path::Path, files: Vec<PathBuf>, head: Option<&str>) -> ExitCode {
    use crate::audit::verify::{Outcome, default_files, verify};
    let files = if files.is_empty() {
        match crate::config::Config::read(config) {
            Ok(c) => match c.audit {
                Some(a) => default_files(&a.file),
                None => {
                    eprintln!(
                        "error: {} has no `audit:` section; name the files to verify: agent audit verify FILE...",
                        config.display()
                    );
                    return exit::code(exit::USAGE);
                }
            },
            Err(e) => return exit::invalid_config(&e),
        }
    } else {
        files
    };
    let (report, outcome) = verify(&files, head);
    match outcome {
        Outcome::Intact => {
            print!("{report}");
            exit::code(exit::OK)
        }
        Outcome::Broken => {
            print!("{report}");
            exit::code(exit::FAILURE)
        }
        Outcome::Unusable => {
            eprint!("{report}");
            exit::code(exit::USAGE)
        }
    }
}

fn control(config: &std::path::Path, request: Request, json: bool) -> ExitCode {
    crate::access::client::main(config, request, json)
}
