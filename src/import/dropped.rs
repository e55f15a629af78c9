//! Everything ssh and autossh did that the agent does not, and why: `-o` keywords, flags,
//! options with values, and `AUTOSSH_*` variables. Each becomes a note, never a silent drop.

use super::Severity::{self, *};
use super::ssh_args::{Builder, Tool};

/// Keywords with no counterpart, grouped by the reason given.
pub const OPTIONS: &[(&[&str], Severity, &str)] = &[
    (
        &[
            "batchmode",
            "passwordauthentication",
            "pubkeyauthentication",
            "kbdinteractiveauthentication",
            "challengeresponseauthentication",
            "preferredauthentications",
            "identitiesonly",
            "gssapiauthentication",
            "gssapidelegatecredentials",
            "hostbasedauthentication",
            "numberofpasswordprompts",
            "addkeystoagent",
            "identityagent",
            "certificatefile",
        ],
        Info,
        "the agent signs in with its one key file and never prompts",
    ),
    (
        &[
            "ciphers",
            "macs",
            "kexalgorithms",
            "hostkeyalgorithms",
            "pubkeyacceptedalgorithms",
            "pubkeyacceptedkeytypes",
            "casignaturealgorithms",
            "hostbasedacceptedalgorithms",
            "requiredrsasize",
            "fingerprinthash",
        ],
        Info,
        "the agent negotiates its own modern algorithms",
    ),
    (
        &[
            "hostkeyalias",
            "checkhostip",
            "verifyhostkeydns",
            "updatehostkeys",
            "hashknownhosts",
            "visualhostkey",
            "knownhostscommand",
            "revokedhostkeys",
            "globalknownhostsfile",
        ],
        Info,
        "the agent checks the server against the keys pinned in server.host_keys",
    ),
    (
        &[
            "forwardagent",
            "forwardx11",
            "forwardx11trusted",
            "forwardx11timeout",
        ],
        Info,
        "the agent never forwards an ssh-agent or X11, by design",
    ),
    (
        &["controlmaster", "controlpath", "controlpersist"],
        Info,
        "the agent holds its own single connection",
    ),
    (
        &["tcpkeepalive"],
        Info,
        "the agent detects dead links with SSH keepalives (keepalive)",
    ),
    (
        &["connectionattempts"],
        Info,
        "the agent retries forever, with backoff (reconnect)",
    ),
    (&["compression"], Info, "the agent does not compress"),
    (
        &["loglevel", "logverbose", "syslogfacility"],
        Info,
        "the agent logs to stdout; set log.level for more or less detail",
    ),
    (
        &["gatewayports"],
        Info,
        "it only affects local (-L) forwards; the vendor-side address is each forward's `remote`",
    ),
    (
        &["rekeylimit"],
        Info,
        "the agent renews session keys after limits.rekey_after (1GiB by default)",
    ),
    (
        &["addressfamily"],
        Info,
        "the agent tries every address of the server, IPv6 and IPv4",
    ),
    (
        &[
            "requesttty",
            "sessiontype",
            "stdinnull",
            "forkafterauthentication",
            "escapechar",
            "enableescapecommandline",
            "ipqos",
            "obscurekeystroketiming",
            "tag",
            "sendenv",
            "setenv",
            "canonicalizehostname",
            "canonicaldomains",
            "canonicalizefallbacklocal",
            "canonicalizemaxdots",
            "canonicalizepermittedcnames",
            "permitremoteopen",
            "streamlocalbindmask",
            "streamlocalbindunlink",
            "nohostauthenticationforlocalhost",
            "securitykeyprovider",
            "pkcs11provider",
            "xauthlocation",
            "channeltimeout",
            "hostbasedkeytypes",
            "warnweakcrypto",
        ],
        Info,
        "it has no meaning for the agent",
    ),
    (
        &["localforward", "dynamicforward"],
        Warning,
        "a local forward let this machine reach into the vendor's network; the agent only exposes the services you list",
    ),
    (
        &["bindaddress", "bindinterface"],
        Warning,
        "the agent lets the operating system choose the source address",
    ),
    (
        &["remotecommand", "localcommand", "permitlocalcommand"],
        Warning,
        "the agent never runs commands",
    ),
    (
        &["tunnel", "tunneldevice"],
        Warning,
        "the agent does not forward tun devices",
    ),
    (
        &["include"],
        Warning,
        "the ssh config files it names were NOT read; copy any settings that matter onto the command line",
    ),
];

/// A flag (`-f`, `-C`, ...): nothing to carry over; some are worth a note, a few mean the
/// command never opened a tunnel.
pub fn flag(b: &mut Builder, tool: Tool, c: char) -> Result<(), String> {
    match c {
        'N' => b.no_command = true,
        'T' | 'n' | 'a' | 'x' | 'k' | 'q' => {}
        'f' => b.note(Info, "-f (go to the background) dropped: the agent runs in the foreground; let your service manager or container runtime keep it running"),
        'v' => b.note(Info, "-v dropped: for more detail set `log: { level: debug }`"),
        '4' | '6' => b.note(Info, format!("-{c} dropped: the agent tries every address of the server, IPv6 and IPv4")),
        'C' => b.note(Info, "-C (compression) dropped: the agent does not compress"),
        'g' => b.note(Info, "-g dropped: it only affects local (-L) forwards; the vendor-side listening address is the bind address of each forward's `remote`"),
        'A' | 'X' | 'Y' => b.note(Info, format!("-{c} dropped: the agent never forwards an ssh-agent or X11, by design")),
        't' => b.note(Info, "-t dropped: the agent never asks for a terminal"),
        'K' => b.note(Info, "-K (GSSAPI) dropped: the agent signs in with its key only"),
        'y' => b.note(Info, "-y (log to syslog) dropped: the agent logs to stdout"),
        'M' => b.note(Info, "-M (ssh connection sharing) dropped: the agent holds its own single connection"),
        's' => b.note(Warning, "-s (subsystem) dropped: the agent never starts anything on the server"),
        '1' | '2' => b.note(Info, format!("-{c} dropped: the agent speaks SSH protocol 2 only")),
        'G' | 'V' if tool == Tool::Ssh => return Err(format!("-{c} makes ssh print something and exit; this command never opened a tunnel")),
        'V' => return Err("-V makes autossh print its version and exit; this command never opened a tunnel".into()),
        _ => {}
    }
    Ok(())
}

/// What each ssh option with a value that the agent has no use for meant, and why it is dropped.
pub fn option(b: &mut Builder, c: char, v: &str) -> Result<(), String> {
    match c {
        'J' => b.note(Attention, format!("-J {v} dropped: the old tunnel reached the server through that jump host; the agent dials the server directly. Make sure this machine can reach it directly before switching")),
        'L' => b.note(Warning, format!("-L {v} dropped: a local forward let this machine reach into the vendor's network; the agent only exposes the services you list")),
        'D' => b.note(Warning, format!("-D {v} dropped: a local SOCKS proxy into the vendor's network; the agent only exposes the services you list")),
        'W' => b.note(Warning, format!("-W {v} dropped: stdio forwarding is not something the agent does")),
        'w' => b.note(Warning, format!("-w {v} dropped: the agent does not forward tun devices")),
        'F' => b.note(Warning, format!("-F {v}: settings in that ssh config file were NOT read; copy any that matter (User, Port, IdentityFile, ServerAlive*) onto the command line and import again")),
        'b' | 'B' => b.note(Warning, format!("-{c} {v} dropped: the agent lets the operating system choose the source address")),
        'I' => b.note(Warning, format!("-I {v} dropped: the agent cannot use a PKCS#11 token; it needs the key as a file")),
        'c' | 'm' => b.note(Info, format!("-{c} {v} dropped: the agent negotiates its own modern algorithms")),
        'E' => b.note(Info, format!("-E {v} dropped: the agent logs to stdout")),
        'e' | 'P' | 'S' => b.note(Info, format!("-{c} {v} dropped: it has no meaning for the agent")),
        'O' => return Err(format!("-O {v} sends a command to a running ssh instead of connecting; this command never opened a tunnel")),
        'Q' => return Err(format!("-Q {v} makes ssh print a list and exit; this command never opened a tunnel")),
        _ => {}
    }
    Ok(())
}

/// autossh's `-M` / `AUTOSSH_PORT`: its own dead-link monitor.
pub fn autossh_monitor(b: &mut Builder, v: &str, how: &str) {
    if v.trim() == "0" {
        b.note(Info, format!("{how} 0 (autossh's monitor off) dropped: the agent detects a dead link with SSH keepalives, see keepalive"));
    } else {
        b.note(Info, format!("{how} {v} (autossh's echo monitor) dropped: the agent detects a dead link with SSH keepalives instead, so those monitor ports on the server are no longer used"));
    }
}

/// `environment=` or `NAME=value` before the command.
pub fn environment(b: &mut Builder, tool: Tool, env: &[(String, String)]) {
    for (k, v) in env {
        let kv = format!("{k}={v}");
        match (tool, k.as_str()) {
            (Tool::Autossh, "AUTOSSH_PORT") => autossh_monitor(b, v, "AUTOSSH_PORT="),
            (Tool::Autossh, "AUTOSSH_GATETIME") => b.note(Info, format!("{kv} dropped: the agent retries a failed first connection like any other, forever (reconnect)")),
            (Tool::Autossh, "AUTOSSH_POLL" | "AUTOSSH_FIRST_POLL") => b.note(Info, format!("{kv} dropped: the agent checks the link with SSH keepalives (keepalive)")),
            (Tool::Autossh, "AUTOSSH_MAXSTART") => b.note(Info, format!("{kv} dropped: autossh gave up after that many starts; the agent never gives up")),
            (Tool::Autossh, "AUTOSSH_MAXLIFETIME") => b.note(Warning, format!("{kv} dropped: autossh stopped after that many seconds; the agent runs until it is stopped")),
            (Tool::Autossh, "AUTOSSH_LOGFILE" | "AUTOSSH_LOGLEVEL" | "AUTOSSH_DEBUG" | "AUTOSSH_PIDFILE") => b.note(Info, format!("{kv} dropped: the agent logs to stdout (log.level sets the detail)")),
            (Tool::Autossh, "AUTOSSH_PATH") => b.note(Info, format!("{kv} dropped: the agent does not run ssh")),
            (_, k) if k.starts_with("AUTOSSH_") => b.note(Info, format!("{kv} dropped: it has no meaning for the agent")),
            _ => b.note(Warning, format!("environment {kv} dropped: the agent does not run ssh, so it passes no environment on")),
        }
    }
}
