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

    struct Full;
    impl Display for Full {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("disk full")
        }
    }
    impl Fault for Full {
        fn class(&self) -> &'static str {
            "full"
        }
        fn fix(&self) -> Option<String> {
            Some("free some space".into())
        }
    }

    struct Gone;
    impl Display for Gone {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("gone")
        }
    }
    impl Fault for Gone {
        fn class(&self) -> &'static str {
            "gone"
        }
    }

    #[test]
    fn the_fix_follows_the_message_when_there_is_one() {
        assert_eq!(Full.with_fix(), "disk full; fix: free some space");
        assert_eq!(Gone.with_fix(), "gone");
        assert_eq!(Gone.fix(), None);
    }
}
