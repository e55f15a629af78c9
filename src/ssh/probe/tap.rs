//! What the server sends first, kept to show it: its SSH banner, or whatever a non-SSH service
//! on that port answers instead.

use std::sync::{Arc, Mutex};

use super::lock;
use crate::logging::printable;
use crate::ssh::observed::{Observed, ReadObserver};

/// The first bytes the server sent, kept to show its banner (or what it sent instead).
#[derive(Default)]
pub(super) struct Tap {
    bytes: Vec<u8>,
}

/// Enough for a banner line plus any pre-banner text; more is not kept.
const TAP_LIMIT: usize = 1024;

impl Tap {
    fn record(&mut self, data: &[u8]) {
        let room = TAP_LIMIT.saturating_sub(self.bytes.len());
        self.bytes.extend_from_slice(&data[..data.len().min(room)]);
    }

    /// The server's identification line, escaped ([`printable`]): it is shown as it is.
    pub(super) fn banner(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.bytes);
        text.split_inclusive('\n')
            .find(|l| l.starts_with("SSH-") && l.ends_with('\n'))
            .map(|l| printable(l.trim_end_matches(['\r', '\n'])).into_owned())
    }

    /// The first bytes, when they are not an SSH banner: at most 60, escaped ([`printable`]).
    pub(super) fn other_bytes(&self) -> Option<String> {
        if self.bytes.is_empty() || self.banner().is_some() {
            return None;
        }
        let text = String::from_utf8_lossy(&self.bytes[..self.bytes.len().min(60)]);
        Some(printable(text.trim()).into_owned())
    }
}

/// A TCP stream that copies the first bytes it reads into a [`Tap`].
pub(super) type Tapped = Observed<Box<dyn crate::transport::Io>, Arc<Mutex<Tap>>>;

impl ReadObserver for Arc<Mutex<Tap>> {
    fn observe(&mut self, data: &[u8]) -> bool {
        let mut tap = lock(self);
        tap.record(data);
        tap.bytes.len() < TAP_LIMIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner_is_the_ssh_line_even_after_other_lines() {
        let mut tap = Tap::default();
        tap.record(b"hello there\r\nSSH-2.0-OpenSSH_9.2p1 Debian\r\n\0\0\0");
        assert_eq!(
            tap.banner().as_deref(),
            Some("SSH-2.0-OpenSSH_9.2p1 Debian")
        );
        assert_eq!(tap.other_bytes(), None);
    }

    #[test]
    fn what_the_server_sends_is_escaped() {
        let mut tap = Tap::default();
        tap.record(b"SSH-2.0-Evil\x1b[2J\x1b]0;owned\x07 \xe2\x80\xae\r\n");
        assert_eq!(
            tap.banner().as_deref(),
            Some("SSH-2.0-Evil\\u{1b}[2J\\u{1b}]0;owned\\u{7} \\u{202e}")
        );
        let mut tap = Tap::default();
        tap.record(b"\x1b[31mred\rINFO forged\n\x00");
        let shown = tap.other_bytes().unwrap();
        assert_eq!(shown, "\\u{1b}[31mred\\rINFO forged\\n\\u{0}");
    }

    #[test]
    fn non_ssh_answer_is_shown() {
        let mut tap = Tap::default();
        tap.record(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        assert_eq!(tap.banner(), None);
        assert_eq!(
            tap.other_bytes().as_deref(),
            Some("HTTP/1.1 400 Bad Request")
        );
    }
}
