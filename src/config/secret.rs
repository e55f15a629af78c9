//! The values an HTTP forward injects (`forwards[].http.inject`): read at load, so a reload
//! reads them again (a rotated secret needs no restart), checked as header values and held as
//! [`Secret`]. No message here holds a secret's bytes, nor the name of the variable (a token
//! pasted into `env:` would be repeated): it names the file, or only the field.

use std::path::Path;

use base64ct::{Base64, Encoding};

use super::values::shown_path;
use crate::gateway::Secret;
use crate::sys::private::{self, Holds, ReadError, wipe};

/// The largest secret file read: far above any header value a server accepts.
const MAX_SECRET: u64 = 64 << 10;

/// Why a secret was refused: what is wrong (said after the field) and how to fix it.
#[derive(Debug)]
pub(super) struct Refused {
    pub message: String,
    pub fix: String,
}

fn refused(message: impl Into<String>, fix: impl Into<String>) -> Refused {
    Refused {
        message: message.into(),
        fix: fix.into(),
    }
}

/// The secret in the file at `path`: read once through the owner-and-mode rule of the identity
/// key ([`crate::sys::private`]), one trailing newline dropped, checked as a header value.
pub(super) fn from_file(path: &Path) -> Result<Vec<u8>, Refused> {
    let shown = shown_path(path);
    let name = shown.clone().unwrap_or_else(|| "the file it names".into());
    let chown = match &shown {
        Some(p) => format!(
            "make it readable by the user the agent runs as (in the container: uid 65532), e.g. `chown 65532 {p} && chmod 400 {p}`"
        ),
        None => "make it readable by the user the agent runs as".into(),
    };
    let bytes = match private::read(path, MAX_SECRET) {
        Ok((bytes, _)) => bytes,
        Err(e) => {
            return Err(match e {
                ReadError::Missing => refused(
                    format!("{name} does not exist"),
                    "write the secret into it (e.g. `printf '%s' \"$TOKEN\" > FILE && chmod 400 FILE`, as the agent's user), or fix the path",
                ),
                ReadError::Unreadable(e) => refused(format!("{name} cannot be read: {e}"), chown),
                ReadError::Directory => {
                    refused(format!("{name} is a folder"), "name the file inside it")
                }
                ReadError::NotRegular => refused(
                    format!("{name} is not a regular file (a device, FIFO or socket)"),
                    "point it at a file holding the secret",
                ),
                ReadError::TooOpen(file) => refused(
                    format!("{name} is {}", file.refusal(Holds::SECRET)),
                    file.fix(path),
                ),
                ReadError::TooLarge => refused(
                    format!(
                        "{name} is larger than {} KiB: no header value is",
                        MAX_SECRET >> 10
                    ),
                    "point it at the file holding the secret alone",
                ),
            });
        }
    };
    header_value(bytes).map_err(|what| refused(format!("{name} {}", what.message()), what.fix()))
}

/// The secret in the environment variable `name`, as the agent's process has it now: one
/// trailing newline dropped, checked as a header value.
pub(super) fn from_env(name: &str) -> Result<Vec<u8>, Refused> {
    let first = name.chars().next().unwrap_or('0');
    let valid =
        !first.is_ascii_digit() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(refused(
            "is not an environment variable's name (letters, digits and '_', not starting with a digit)",
            "write the variable's name, not its value, e.g. `env: GITLAB_TOKEN`",
        ));
    }
    let Some(value) = std::env::var_os(name) else {
        return Err(refused(
            "names an environment variable that is not set in the agent's environment",
            "set it where the agent is started (systemd `Environment=`/`EnvironmentFile=`, the container's env), or use `file:`",
        ));
    };
    use std::os::unix::ffi::OsStringExt;
    header_value(value.into_vec()).map_err(|what| {
        refused(
            format!("names an environment variable that {}", what.message()),
            what.fix(),
        )
    })
}

/// `Basic ` + base64(`user:password`), the value of an `Authorization` header (RFC 7617).
pub(super) fn basic(user: &str, password: &[u8]) -> Secret {
    let mut plain = Vec::with_capacity(user.len() + 1 + password.len());
    plain.extend_from_slice(user.as_bytes());
    plain.push(b':');
    plain.extend_from_slice(password);
    let encoded = Base64::encode_string(&plain);
    wipe(plain);
    let value = format!("Basic {encoded}");
    wipe(encoded.into_bytes());
    let secret = Secret::new(value.as_bytes());
    wipe(value.into_bytes());
    secret
}

/// The user of a `basic` entry: what RFC 7617 allows (no ':', no control character).
pub(super) fn basic_user(user: &str) -> Result<(), Refused> {
    if user.contains(':') {
        return Err(refused(
            "holds a ':', which ends the user in Basic authentication",
            "write the user name alone; the password goes in password_file",
        ));
    }
    if user.chars().any(char::is_control) {
        return Err(refused(
            "holds a control character",
            "write the user name as printable text",
        ));
    }
    Ok(())
}

/// What is wrong with a header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bad {
    Empty,
    LineBreak,
    Control,
}

impl Bad {
    fn message(self) -> &'static str {
        match self {
            Bad::Empty => "is empty (one trailing newline is not counted)",
            Bad::LineBreak => {
                "holds a line break (CR or LF) or a NUL byte besides one trailing newline: sent as a header value, it would end the header and start another"
            }
            Bad::Control => "holds a control character, which no header value may hold",
        }
    }

    fn fix(self) -> &'static str {
        match self {
            Bad::Empty => "put the secret in it (a header with no value is never injected)",
            Bad::LineBreak => {
                "keep the secret on one line: one trailing newline (\\n or \\r\\n) is dropped, nothing else"
            }
            Bad::Control => "write the secret as printable text",
        }
    }
}

/// `bytes` without one trailing `\n` or `\r\n`, when they make a header value: not empty, no
/// CR, LF or NUL (header injection), no other control character but a tab. Refused bytes are
/// overwritten before they are freed.
fn header_value(mut bytes: Vec<u8>) -> Result<Vec<u8>, Bad> {
    if bytes.ends_with(b"\r\n") {
        bytes.truncate(bytes.len() - 2);
    } else if bytes.ends_with(b"\n") {
        bytes.truncate(bytes.len() - 1);
    }
    let bad = if bytes.is_empty() {
        Some(Bad::Empty)
    } else if bytes.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        Some(Bad::LineBreak)
    } else if bytes
        .iter()
        .any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f)
    {
        Some(Bad::Control)
    } else {
        None
    };
    match bad {
        Some(bad) => {
            wipe(bytes);
            Err(bad)
        }
        None => Ok(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_newline_is_dropped_and_nothing_else() {
        assert_eq!(header_value(b"tok\n".to_vec()).unwrap(), b"tok");
        assert_eq!(header_value(b"tok\r\n".to_vec()).unwrap(), b"tok");
        assert_eq!(header_value(b"tok".to_vec()).unwrap(), b"tok");
        assert_eq!(header_value(b" a\tb ".to_vec()).unwrap(), b" a\tb ");
        assert_eq!(header_value(b"tok\n\n".to_vec()), Err(Bad::LineBreak));
        assert_eq!(header_value(b"tok\r".to_vec()), Err(Bad::LineBreak));
        assert_eq!(
            header_value(b"a\r\nX-Evil: 1".to_vec()),
            Err(Bad::LineBreak)
        );
        assert_eq!(header_value(b"a\0b".to_vec()), Err(Bad::LineBreak));
        assert_eq!(header_value(b"a\x1bb".to_vec()), Err(Bad::Control));
        assert_eq!(header_value(b"\n".to_vec()), Err(Bad::Empty));
        assert_eq!(header_value(b"\r\n".to_vec()), Err(Bad::Empty));
        assert_eq!(header_value(Vec::new()), Err(Bad::Empty));
    }

    #[test]
    fn basic_is_rfc_7617() {
        // RFC 7617 section 2's example.
        assert_eq!(
            basic("Aladdin", b"open sesame").expose(),
            b"Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert!(basic_user("a:b").is_err());
        assert!(basic_user("").is_ok());
    }
}
