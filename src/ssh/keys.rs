//! The customer's identity: loading it in every format customers have (PKCS#1 from OpenSSL 1.x,
//! PKCS#8 from OpenSSL 3, OpenSSH from ssh-keygen; RSA or Ed25519) and generating a new one.

use std::fmt;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::keys::{HashAlg, PrivateKey};

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

/// The key file's owner and mode, from the open file the key was read from (fstat).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyFile {
    /// Permission bits (`0o400`).
    pub mode: u32,
    /// The owner's uid.
    pub owner: u32,
    /// The agent's real uid when the file was checked.
    pub agent_uid: u32,
}

impl KeyFile {
    /// OpenSSH's rule, as `sshkey_perm_ok` in openssh-portable's authfile.c applies it: a key
    /// owned by the user the program runs as (its real uid) must not be accessible to group or
    /// others at all (`mode & 077 == 0`); a key owned by another user is not checked, because
    /// that user (typically root) decides who may read it. So a Kubernetes Secret mounted with
    /// `fsGroup` (root-owned, mode 0440, group = the agent's) is accepted, while the agent's own
    /// key must be 0400 or 0600.
    pub fn owned_by_agent(&self) -> bool {
        self.owner == self.agent_uid
    }

    fn too_open(&self) -> bool {
        self.owned_by_agent() && self.mode & 0o077 != 0
    }

    /// "mode 0400", or "mode 0440, owned by uid 0 (not the agent's uid 65532, ...)".
    pub fn describe(&self) -> String {
        if self.owned_by_agent() {
            format!("mode {:04o}", self.mode)
        } else {
            format!(
                "mode {:04o}, owned by uid {} (not the agent's uid {}, so group read is allowed, as in OpenSSH)",
                self.mode, self.owner, self.agent_uid
            )
        }
    }
}

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
    #[error("{} is {} by group or others (mode {mode:04o}) and owned by the agent's own user (uid {owner}); a private key that user owns must be readable by it only", .path.display(), access(*.mode))]
    TooOpen {
        path: PathBuf,
        mode: u32,
        owner: u32,
    },
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

impl KeyError {
    /// One line a customer's IT person can act on.
    pub fn fix(&self) -> Option<String> {
        Some(match self {
            KeyError::Missing { path } => format!(
                "run `agent keygen --out-dir {}` and send the public key to the vendor, or set `identity` to your key's path",
                path.parent().map(|p| p.display().to_string()).filter(|p| !p.is_empty()).unwrap_or_else(|| ".".into())
            ),
            KeyError::Unreadable { path, .. } => format!(
                "make it readable by the user the agent runs as (in the container: uid 65532), e.g. `chown 65532 {}`",
                path.display()
            ),
            KeyError::TooOpen { path, .. } => format!("chmod 400 {}", path.display()),
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

/// "readable", "writable" or "accessible" (execute only), for the group/other bits of `mode`.
fn access(mode: u32) -> &'static str {
    if mode & 0o044 != 0 {
        "readable"
    } else if mode & 0o022 != 0 {
        "writable"
    } else {
        "accessible"
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

/// Opens `path` once, checks the open file, and reads it.
fn read_key_file(path: &Path) -> Result<(Vec<u8>, KeyFile), KeyError> {
    let unreadable = |source| KeyError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let not_a_key = |detail: String| KeyError::NotAKey {
        path: path.to_path_buf(),
        detail,
    };
    // O_NONBLOCK: a FIFO named as the key must not hang the agent in open(); it is refused
    // below as not a regular file. Reads of a regular file ignore the flag.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => KeyError::Missing {
                path: path.to_path_buf(),
            },
            _ => unreadable(e),
        })?;
    let meta = f.metadata().map_err(unreadable)?;
    if meta.is_dir() {
        return Err(not_a_key("a directory, not a key file".into()));
    }
    if !meta.is_file() {
        return Err(not_a_key(
            "not a regular file (a device, FIFO or socket)".into(),
        ));
    }
    let file = KeyFile {
        mode: meta.mode() & 0o7777,
        owner: meta.uid(),
        agent_uid: crate::sys::real_uid(),
    };
    if file.too_open() {
        return Err(KeyError::TooOpen {
            path: path.to_path_buf(),
            mode: file.mode,
            owner: file.owner,
        });
    }
    let too_large = || {
        not_a_key(format!(
            "larger than {} KiB: no key file is",
            MAX_KEY_FILE >> 10
        ))
    };
    if meta.len() > MAX_KEY_FILE {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    (&mut f)
        .take(MAX_KEY_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        wipe(bytes);
        return Err(too_large());
    }
    Ok((bytes, file))
}

/// Best effort: overwrites key material before its allocation is freed.
fn wipe(mut bytes: Vec<u8>) {
    bytes.iter_mut().for_each(|b| *b = 0);
    std::hint::black_box(&bytes);
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
