//! The vendor's token: where it is read from (`Authorization: Bearer`, the password of
//! `Authorization: Basic`, or the forward's `vendor_token_header`), how it is checked (its
//! SHA-256 against each configured hash, in constant time), and `agent token new`.

use base64ct::{Base64, Base64UrlUnpadded, Encoding};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::settings::TokenHash;
use super::wire::Head;

/// Why a request was not authenticated (the answer is `401`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No token where the forward reads it.
    Missing,
    /// A token that matches none of `vendor_tokens`.
    Wrong,
}

impl AuthFailure {
    pub fn class(self) -> &'static str {
        match self {
            AuthFailure::Missing => "token_missing",
            AuthFailure::Wrong => "token_wrong",
        }
    }
}

/// The token carried by `value`, a value of the header the token is read from: with
/// `authorization` true, `Bearer TOKEN` or `Basic base64(user:TOKEN)`; otherwise the whole value.
pub fn presented(value: &[u8], authorization: bool) -> Option<Vec<u8>> {
    let value = value.trim_ascii();
    if !authorization {
        return (!value.is_empty()).then(|| value.to_vec());
    }
    let (scheme, rest) = split_scheme(value)?;
    if scheme.eq_ignore_ascii_case(b"bearer") {
        return (!rest.is_empty()).then(|| rest.to_vec());
    }
    if scheme.eq_ignore_ascii_case(b"basic") {
        let decoded = Base64::decode_vec(std::str::from_utf8(rest).ok()?).ok()?;
        // Any user name (git sends one); the password is the token.
        let colon = decoded.iter().position(|&b| b == b':')?;
        let password = &decoded[colon + 1..];
        return (!password.is_empty()).then(|| password.to_vec());
    }
    None
}

fn split_scheme(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = value.iter().position(|&b| b == b' ')?;
    Some((&value[..space], value[space + 1..].trim_ascii()))
}

/// Which of `tokens` the request's token is (its index), reading it from `header`
/// (`authorization` when the forward names no other; `proxy-authorization` for CONNECT). Every hash is compared, in constant
/// time, whatever matched before.
pub fn authenticate(head: &Head, header: &str, tokens: &[TokenHash]) -> Result<usize, AuthFailure> {
    let authorization = header.eq_ignore_ascii_case("authorization")
        || header.eq_ignore_ascii_case("proxy-authorization");
    let token = head
        .header(header)
        .and_then(|v| presented(v, authorization))
        .ok_or(AuthFailure::Missing)?;
    let digest: [u8; 32] = Sha256::digest(&token).into();
    let mut found = None;
    for (i, hash) in tokens.iter().enumerate() {
        if bool::from(digest.ct_eq(&hash.0)) && found.is_none() {
            found = Some(i);
        }
    }
    found.ok_or(AuthFailure::Wrong)
}

/// A new vendor token: 256 random bits, URL-safe base64 (43 characters), and the hash line the
/// customer adds to `vendor_tokens`.
pub fn new_token() -> (String, TokenHash) {
    let bytes: [u8; 32] = rand::random();
    let token = Base64UrlUnpadded::encode_string(&bytes);
    let hash = TokenHash(Sha256::digest(token.as_bytes()).into());
    (token, hash)
}

/// The hash line of `token` as agent.yaml writes it.
pub fn hash_line(hash: &TokenHash) -> String {
    let hex: String = hash.0.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::wire::Framing;

    fn head(name: &str, value: &[u8]) -> Head {
        Head {
            method: "GET".into(),
            target: "/".into(),
            minor: 1,
            headers: vec![(name.into(), value.to_vec())],
            framing: Framing::None,
            keep_alive: true,
            expect_continue: false,
            upgrade: false,
            size: 0,
        }
    }

    fn hash(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    #[test]
    fn bearer_and_basic_carry_the_token() {
        let tokens = [hash("old-token"), hash("new-token")];
        let basic = format!("Basic {}", Base64::encode_string(b"oauth2:new-token"));
        assert_eq!(
            authenticate(
                &head("Authorization", b"Bearer old-token"),
                "authorization",
                &tokens
            ),
            Ok(0)
        );
        assert_eq!(
            authenticate(
                &head("authorization", basic.as_bytes()),
                "authorization",
                &tokens
            ),
            Ok(1)
        );
        assert_eq!(
            authenticate(
                &head("X-Vendor-Token", b"new-token"),
                "x-vendor-token",
                &tokens
            ),
            Ok(1)
        );
    }

    #[test]
    fn a_wrong_or_missing_token_is_refused() {
        let tokens = [hash("right")];
        let basic_user_only = format!("Basic {}", Base64::encode_string(b"right:"));
        for (value, why) in [
            (&b"Bearer wrong"[..], AuthFailure::Wrong),
            (b"Bearer right2", AuthFailure::Wrong),
            (b"Bearer ", AuthFailure::Missing),
            (b"right", AuthFailure::Missing),
            (b"Token right", AuthFailure::Missing),
            (b"Basic !!!", AuthFailure::Missing),
            (basic_user_only.as_bytes(), AuthFailure::Missing),
        ] {
            assert_eq!(
                authenticate(&head("Authorization", value), "authorization", &tokens),
                Err(why),
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
        assert_eq!(
            authenticate(&head("X-Other", b"Bearer right"), "authorization", &tokens),
            Err(AuthFailure::Missing)
        );
    }

    #[test]
    fn a_new_token_is_256_random_url_safe_bits_and_its_line_parses_back() {
        let (a, hash_a) = new_token();
        let (b, _) = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        let line = hash_line(&hash_a);
        assert_eq!(TokenHash::parse(&line).unwrap(), hash_a);
        let bearer = format!("Bearer {a}");
        assert_eq!(
            authenticate(
                &head("Authorization", bearer.as_bytes()),
                "authorization",
                &[hash_a]
            ),
            Ok(0)
        );
    }
}
