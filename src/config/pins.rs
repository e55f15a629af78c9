//! Host-key pins as agent.yaml holds them: text, checked here for form only (a `SHA256:`
//! fingerprint of the right length, or an OpenSSH public key line whose key blob is well formed
//! and names its own algorithm). The SSH layer turns them into key material and compares them
//! with the key a server offers; keeping that out of here keeps russh out of `Config`.

use base64ct::{Base64, Base64Unpadded, Encoding};

/// Checks one pin and returns it as the agent keeps it: a fingerprint as written, a key line
/// without its comment.
pub fn check_pin(text: &str) -> Result<String, String> {
    let t = text.trim();
    if let Some(b64) = t.strip_prefix("SHA256:") {
        return match Base64Unpadded::decode_vec(b64.trim_end_matches('=')) {
            Ok(digest) if digest.len() == 32 => Ok(t.to_string()),
            _ => Err(format!("\"{t}\" is not a valid SHA256 fingerprint")),
        };
    }
    if t.starts_with("MD5:") || (t.len() == 47 && t.matches(':').count() == 15) {
        return Err(format!(
            "\"{t}\" is an MD5 fingerprint; pin the SHA256 one instead"
        ));
    }
    let mut words = t.split_whitespace();
    let (Some(algorithm), Some(b64)) = (words.next(), words.next()) else {
        return Err(not_a_pin(t));
    };
    let blob = Base64::decode_vec(b64).map_err(|_| not_a_pin(t))?;
    if blob_algorithm(&blob) != Some(algorithm.as_bytes()) {
        return Err(not_a_pin(t));
    }
    Ok(format!("{algorithm} {b64}"))
}

/// The algorithm name a public key blob starts with (an SSH string: u32 length, then bytes),
/// when the blob holds more than the name.
fn blob_algorithm(blob: &[u8]) -> Option<&[u8]> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    let name = blob.get(4..4usize.checked_add(len)?)?;
    (blob.len() > 4 + len).then_some(name)
}

fn not_a_pin(t: &str) -> String {
    format!(
        "\"{}\" is neither a SHA256 fingerprint nor an OpenSSH public key line",
        shorten(t)
    )
}

fn shorten(t: &str) -> String {
    match t.char_indices().nth(37) {
        Some((i, _)) if t.len() > 40 => format!("{}...", &t[..i]),
        _ => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN+Wjn4+4Fcvl2JlKpggT+wCRxpSvtqqpVrQrKN1/A22";

    #[test]
    fn fingerprints_and_key_lines_are_kept_without_comments() {
        let fp = "SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8";
        assert_eq!(check_pin(&format!("  {fp} ")).unwrap(), fp);
        assert_eq!(check_pin(&format!("{ED} a comment")).unwrap(), ED);
    }

    #[test]
    fn malformed_pins_say_why() {
        assert!(
            check_pin("SHA256:nope")
                .unwrap_err()
                .contains("fingerprint")
        );
        assert!(check_pin("SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY").is_err());
        assert!(
            check_pin("MD5:16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48")
                .unwrap_err()
                .contains("MD5")
        );
        assert!(check_pin("hello").is_err());
        // The blob names another algorithm, or is cut short.
        assert!(check_pin(&ED.replace("ssh-ed25519", "ssh-rsa")).is_err());
        assert!(check_pin(&ED[..30]).is_err());
    }
}
