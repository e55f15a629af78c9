//! The customer's identity: loading it in every format customers have (PKCS#1 from OpenSSL 1.x,
//! PKCS#8 from OpenSSL 3, OpenSSH from ssh-keygen; RSA or Ed25519) and generating a new one.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::keys::{HashAlg, PrivateKey};

use crate::fault::Fault;
// Key material is overwritten before its allocation is freed (best effort): `wipe`.
use crate::sys::private::{self, Holds, ReadError, wipe};

/// A loaded private key. `Debug` shows only public facts.
#[derive(Clone)]
pub struct Identity {
    pub(crate) key: Arc<PrivateKey>,
    pub path: PathBuf,
    /// What the open file said about itself when the key was read from it.
    pub file: KeyFile,
    /// "PKCS#8 PEM", "PKCS#1 PEM", "OpenSSH format" or "PEM".
    pub format: &'static str,
}

/// The key file's owner and mode, from the open file the key was read from (fstat), and the
/// rule they must follow: [`crate::sys::private`]'s, which the secrets of an HTTP forward follow
/// too.
pub use crate::sys::private::PrivateFile as KeyFile;

impl Identity {
    /// `SHA256:...`, as `ssh-keygen -l` prints it: what the vendor must hold.
    pub fn fingerprint(&self) -> String {
        self.key
            .public_key()
            .fingerprint(HashAlg::Sha256)
            .to_string()
    }

    /// e.g. "RSA 3072" or "ED25519 256".
    pub fn description(&self) -> String {
        let public = self.key.public_key();
        match public.key_data().rsa() {
            Some(rsa) => format!("RSA {}", rsa.key_size()),
            None => match public.algorithm().as_str() {
                "ssh-ed25519" => "ED25519 256".to_string(),
                other => other.to_string(),
            },
        }
    }

    /// RSA smaller than 2048 bits is weak; the caller decides whether that warns or fails.
    pub fn rsa_bits(&self) -> Option<u32> {
        self.key.public_key().key_data().rsa().map(|k| k.key_size())
    }

    /// The OpenSSH public key line (no comment), what the vendor's authorized_keys holds.
    pub fn public_line(&self) -> String {
        self.key.public_key().to_openssh().unwrap_or_default()
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("path", &self.path)
            .field("file", &self.file)
            .field("key", &self.description())
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{} does not exist", .path.display())]
    Missing { path: PathBuf },
    #[error("{} cannot be read: {source}", .path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is {}", .path.display(), .file.refusal(Holds::KEY))]
    TooOpen { path: PathBuf, file: KeyFile },
    #[error("{} is protected by a passphrase; the agent runs unattended and cannot unlock it", .path.display())]
    Encrypted { path: PathBuf },
    #[error("{} is a public key; `identity` must name the private key", .path.display())]
    PublicKey { path: PathBuf },
    #[error("{} is not a private key the agent can read ({detail})", .path.display())]
    NotAKey { path: PathBuf, detail: String },
    #[error("{} already exists; refusing to overwrite a key", .path.display())]
    Exists { path: PathBuf },
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key generation failed: {0}")]
    Generate(String),
}

impl Fault for KeyError {
    fn class(&self) -> &'static str {
        match self {
            KeyError::Missing { .. } => "key_missing",
            KeyError::Unreadable { .. } => "key_unreadable",
            KeyError::TooOpen { .. } => "key_too_open",
            KeyError::Encrypted { .. } => "key_encrypted",
            KeyError::PublicKey { .. } => "key_public",
            KeyError::NotAKey { .. } => "key_invalid",
            KeyError::Exists { .. } => "key_exists",
            KeyError::Write { .. } => "key_write",
            KeyError::Generate(_) => "key_generate",
        }
    }

    /// One line a customer's IT person can act on.
    fn fix(&self) -> Option<String> {
        Some(match self {
            KeyError::Missing { path } => format!(
                "run `agent keygen --out-dir {}` and send the public key to the vendor, or set `identity` to your key's path",
                path.parent().map(|p| p.display().to_string()).filter(|p| !p.is_empty()).unwrap_or_else(|| ".".into())
            ),
            KeyError::Unreadable { path, .. } => format!(
                "make it readable by the user the agent runs as (in the container: uid 65532), e.g. `chown 65532 {}`",
                path.display()
            ),
            KeyError::TooOpen { path, file } => file.fix(path),
            KeyError::Encrypted { path } => format!(
                "remove the passphrase: `ssh-keygen -p -N '' -f {}` (keep the file mode 400)",
                path.display()
            ),
            KeyError::PublicKey { .. } => "point `identity` at the private key (e.g. keys/private-key.pem)".into(),
            KeyError::NotAKey { .. } => {
                "use a PEM (`openssl genrsa`) or OpenSSH (`ssh-keygen -t rsa`) private key, or make one with `agent keygen`".into()
            }
            KeyError::Exists { .. } => "pass --force to replace it (the vendor must then get the new public key)".into(),
            KeyError::Write { .. } | KeyError::Generate(_) => return None,
        })
    }
}

/// The largest key file read, as OpenSSH's MAX_KEY_FILE_SIZE: an `identity` naming a log or a
/// disk image is refused, not read into memory.
const MAX_KEY_FILE: u64 = 1 << 20;

/// Reads and checks the private key at `path`. The file is opened once; its owner and mode are
/// checked on the open file (fstat) and the key is read from that same file, so what was checked
/// is what is read, whatever happens to the path meanwhile. `agent run`, a reload and
/// `agent check` all load the key here.
pub fn load_identity(path: &Path) -> Result<Identity, KeyError> {
    let (bytes, file) = read_key_file(path)?;
    // A binary file (e.g. a DER key from `openssl ... -outform DER`) is readable but not a key:
    // say so, rather than "cannot be read" with a chown hint.
    let text = String::from_utf8(bytes).map_err(|e| {
        wipe(e.into_bytes());
        KeyError::NotAKey {
            path: path.to_path_buf(),
            detail: "binary data, not a PEM or OpenSSH text file".into(),
        }
    })?;
    let decoded = decode(&text).map_err(|detail| classify(path, &text, detail));
    let format = key_format(&text);
    wipe(text.into_bytes());
    Ok(Identity {
        key: Arc::new(decoded?),
        path: path.to_path_buf(),
        file,
        format,
    })
}

/// Opens `path` once, checks the open file, and reads it ([`crate::sys::private::read`]).
fn read_key_file(path: &Path) -> Result<(Vec<u8>, KeyFile), KeyError> {
    let path_buf = || path.to_path_buf();
    let not_a_key = |detail: String| KeyError::NotAKey {
        path: path_buf(),
        detail,
    };
    private::read(path, MAX_KEY_FILE).map_err(|e| match e {
        ReadError::Missing => KeyError::Missing { path: path_buf() },
        ReadError::Unreadable(source) => KeyError::Unreadable {
            path: path_buf(),
            source,
        },
        ReadError::Directory => not_a_key("a directory, not a key file".into()),
        ReadError::NotRegular => not_a_key("not a regular file (a device, FIFO or socket)".into()),
        ReadError::TooOpen(file) => KeyError::TooOpen {
            path: path_buf(),
            file,
        },
        ReadError::TooLarge => not_a_key(format!(
            "larger than {} KiB: no key file is",
            MAX_KEY_FILE >> 10
        )),
    })
}

fn decode(text: &str) -> Result<PrivateKey, russh::keys::Error> {
    // russh matches the BEGIN line exactly; editors and copy-paste add stray blanks.
    let trimmed: String = text.lines().map(str::trim).collect::<Vec<_>>().join("\n");
    let key = russh::keys::decode_secret_key(&trimmed, None);
    wipe(trimmed.into_bytes());
    key
}

fn key_format(text: &str) -> &'static str {
    let begin = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("-----BEGIN "));
    match begin {
        Some(l) if l.contains("OPENSSH PRIVATE KEY") => "OpenSSH format",
        Some(l) if l.contains("RSA PRIVATE KEY") => "PKCS#1 PEM",
        Some(l) if l.contains("BEGIN PRIVATE KEY") => "PKCS#8 PEM",
        _ => "PEM",
    }
}

fn classify(path: &Path, text: &str, err: russh::keys::Error) -> KeyError {
    let path = path.to_path_buf();
    let t = text.trim_start();
    if matches!(err, russh::keys::Error::KeyIsEncrypted)
        || t.contains("ENCRYPTED")
        || t.contains("Proc-Type: 4,ENCRYPTED")
    {
        return KeyError::Encrypted { path };
    }
    if t.starts_with("ssh-")
        || t.starts_with("ecdsa-")
        || t.contains("BEGIN PUBLIC KEY")
        || t.contains("BEGIN RSA PUBLIC KEY")
    {
        return KeyError::PublicKey { path };
    }
    KeyError::NotAKey {
        path,
        detail: err.to_string(),
    }
}

/// A freshly generated key pair, not yet on disk.
pub struct GeneratedKey {
    private_pem: String,
    pub public_line: String,
    pub fingerprint: String,
}

impl Drop for GeneratedKey {
    fn drop(&mut self) {
        wipe(std::mem::take(&mut self.private_pem).into_bytes());
    }
}

/// Makes an RSA key: PKCS#8 PEM (what `openssl genrsa` writes on OpenSSL 3, readable by
/// openssl, ssh-keygen and the agent) plus its OpenSSH public line.
pub fn generate_rsa(bits: usize, comment: &str) -> Result<GeneratedKey, KeyError> {
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    let mut rng = rand::rng();
    let key =
        rsa::RsaPrivateKey::new(&mut rng, bits).map_err(|e| KeyError::Generate(e.to_string()))?;
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    let parsed = russh::keys::decode_secret_key(&pem, None)
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    let mut public = parsed.public_key().clone();
    public.set_comment(comment);
    let public_line = public
        .to_openssh()
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    let fingerprint = public.fingerprint(HashAlg::Sha256).to_string();
    Ok(GeneratedKey {
        private_pem: pem.to_string(),
        public_line,
        fingerprint,
    })
}

/// Where `agent keygen` put the pair.
#[derive(Debug)]
pub struct WrittenKeys {
    pub private_path: PathBuf,
    pub public_path: PathBuf,
    pub public_line: String,
    pub fingerprint: String,
}

pub const PRIVATE_KEY_FILE: &str = "private-key.pem";
pub const PUBLIC_KEY_FILE: &str = "public-key.pem";

/// Writes `dir/private-key.pem` (mode 0400) and `dir/public-key.pem`. Without `force`, an
/// existing file of either name is an error and nothing is written.
pub fn write_keypair(dir: &Path, key: &GeneratedKey, force: bool) -> Result<WrittenKeys, KeyError> {
    let private_path = dir.join(PRIVATE_KEY_FILE);
    let public_path = dir.join(PUBLIC_KEY_FILE);
    if !force {
        for p in [&private_path, &public_path] {
            if p.exists() {
                return Err(KeyError::Exists { path: p.clone() });
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| KeyError::Write {
        path: dir.to_path_buf(),
        source: e,
    })?;
    write_new(&private_path, key.private_pem.as_bytes(), 0o400)?;
    write_new(
        &public_path,
        format!("{}\n", key.public_line).as_bytes(),
        0o644,
    )?;
    Ok(WrittenKeys {
        private_path,
        public_path,
        public_line: key.public_line.clone(),
        fingerprint: key.fingerprint.clone(),
    })
}

/// Writes through a temporary file in the same folder and renames it into place, so a crash
/// never leaves a half-written key and a 0400 file can be replaced.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let err = |e| KeyError::Write {
        path: path.to_path_buf(),
        source: e,
    };
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(mode: u32, owner: u32, agent_uid: u32) -> KeyFile {
        KeyFile {
            mode,
            owner,
            agent_uid,
        }
    }

    /// The rule for every kind of owner: the agent's own key is private to it; a root-owned key
    /// (the agent not root) may be group-readable; nothing is ever open to others, whoever owns
    /// it (OpenSSH checked only the first case, so a key another user owned passed at 0666).
    #[test]
    fn the_mode_rule_for_each_owner() {
        let (agent, root, other) = (65532, 0, 1000);
        for (mode, owner, agent_uid, ok) in [
            (0o400, agent, agent, true),
            (0o600, agent, agent, true),
            (0o440, agent, agent, false),
            (0o640, agent, agent, false),
            (0o604, agent, agent, false),
            // The agent runs as root: a root-owned key is its own.
            (0o600, root, root, true),
            (0o440, root, root, false),
            // A Kubernetes Secret with fsGroup: root-owned, read through the group.
            (0o440, root, agent, true),
            (0o640, root, agent, true),
            (0o400, root, agent, true),
            (0o460, root, agent, false),
            (0o444, root, agent, false),
            (0o644, root, agent, false),
            (0o666, root, agent, false),
            // Another (non-root) user's key: never shared with a group or others.
            (0o400, other, agent, true),
            (0o600, other, root, true),
            (0o440, other, agent, false),
            (0o440, other, root, false),
            (0o644, other, root, false),
            (0o666, other, agent, false),
        ] {
            let f = file(mode, owner, agent_uid);
            assert_eq!(
                f.refused_bits() == 0,
                ok,
                "mode {mode:04o}, owner {owner}, agent {agent_uid}"
            );
        }
    }

    #[test]
    fn a_refusal_names_file_owner_mode_and_fix() {
        let path = Path::new("/keys/private-key.pem");
        let err = |f: KeyFile| {
            let e = KeyError::TooOpen {
                path: path.to_path_buf(),
                file: f,
            };
            (e.to_string(), e.fix().unwrap())
        };
        let (msg, fix) = err(file(0o666, 1000, 0));
        assert_eq!(
            msg,
            "/keys/private-key.pem is readable by its group and others (mode 0666, owned by uid 1000, the agent runs as uid 0): only a root-owned key may be shared with a group; one another user owns must be private to that user"
        );
        assert!(
            fix.starts_with("give it to the agent's user: chown 0 /keys/private-key.pem && chmod 400 /keys/private-key.pem"),
            "{fix}"
        );
        let (msg, fix) = err(file(0o644, 0, 65532));
        assert!(
            msg.contains(
                "readable by others (mode 0644, owned by uid 0, the agent runs as uid 65532)"
            ),
            "{msg}"
        );
        assert!(fix.starts_with("chmod 440 /keys/private-key.pem"), "{fix}");
        let (msg, fix) = err(file(0o620, 65532, 65532));
        assert!(
            msg.contains(
                "writable by its group (mode 0620, owned by the agent's own user, uid 65532)"
            ),
            "{msg}"
        );
        assert_eq!(fix, "chmod 400 /keys/private-key.pem");
    }
}
