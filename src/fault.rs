//! What a failure tells the operator beyond its message: a short stable class, for the logs,
//! metrics and records that count failures by kind, and, when the agent knows one, one line
//! saying how to fix it. Every error type the operator sees implements [`Fault`], so a caller
//! composes "message; fix: ..." one way ([`Fault::with_fix`]).
//!
//! A leaf: it imports nothing of the crate, so every module (`sys` included) may use it.

use std::fmt::Display;

pub trait Fault: Display {
    /// A short, stable snake_case label (`network`, `proxy_auth_rejected`, `target_error`).
    fn class(&self) -> &'static str;

    /// One line a customer's IT person can act on, when there is one.
    fn fix(&self) -> Option<String> {
        None
    }

    /// The message, then "; fix: " and the fix when there is one.
    fn with_fix(&self) -> String {
        match self.fix() {
            Some(fix) => format!("{self}; fix: {fix}"),
            None => self.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failure with or without a fix.
    struct Failure(Option<&'static str>);

    impl Display for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("disk full")
        }
    }

    impl Fault for Failure {
        fn class(&self) -> &'static str {
            "full"
        }

        fn fix(&self) -> Option<String> {
            self.0.map(String::from)
        }
    }

    #[test]
    fn the_fix_follows_the_message_when_there_is_one() {
        let full = Failure(Some("free some space"));
        assert_eq!(full.with_fix(), "disk full; fix: free some space");
        assert_eq!(Failure(None).with_fix(), "disk full");
    }
}
