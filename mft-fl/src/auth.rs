//! The node's identity: an ECDSA P-384 key kept on disk, and the signed headers the SuperLink
//! checks on every Fleet API call.
//!
//! - `flwr-public-key`: base64 of the public key as PEM SubjectPublicKeyInfo (the bytes also
//!   sent in `register-node` and `activate-node`);
//! - `flwr-timestamp`: the current time in ISO 8601 with microseconds and `+00:00`, as Python's
//!   `datetime.now(UTC).isoformat()` writes it (the SuperLink accepts it about 5 s ahead and
//!   300 s behind its clock);
//! - `flwr-signature`: base64 of the DER ECDSA-SHA256 signature of the timestamp's bytes.
//!
//! The key file is PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, as `openssl genpkey -algorithm EC
//! -pkeyopt ec_paramgen_curve:P-384` writes it; a SEC1 `EC PRIVATE KEY` is read too). A missing
//! file is created (mode 0600 on Unix) with a fresh key; the same file gives the same node
//! after a restart.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use p384::ecdsa::signature::hazmat::PrehashSigner;
use p384::ecdsa::{DerSignature, SigningKey, VerifyingKey};
use p384::elliptic_curve::Generate as _;
use p384::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Header carrying the public key.
pub const PUBLIC_KEY_HEADER: &str = "flwr-public-key";
/// Header carrying the signed timestamp.
pub const TIMESTAMP_HEADER: &str = "flwr-timestamp";
/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "flwr-signature";

/// The node's key pair.
#[derive(Clone)]
pub struct NodeKey {
    signing: SigningKey,
    /// The public key as PEM SubjectPublicKeyInfo.
    public_pem: Vec<u8>,
    path: PathBuf,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKey").field("path", &self.path).finish_non_exhaustive()
    }
}

impl NodeKey {
    /// Reads the key at `path`, or creates it (and its directory) with a fresh key.
    ///
    /// # Errors
    /// [`Error::Key`] for a file that is not a P-384 private key; [`Error::Io`] for one that
    /// cannot be read or written.
    pub fn load_or_create(path: &Path) -> Result<NodeKey> {
        match std::fs::read_to_string(path) {
            Ok(text) => NodeKey::from_pem(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let signing = SigningKey::try_generate().map_err(|e| Error::Key {
                    path: path.to_path_buf(),
                    problem: format!("the system's random generator failed: {e}"),
                })?;
                let pem = signing.to_pkcs8_pem(LineEnding::LF).map_err(|e| Error::Key {
                    path: path.to_path_buf(),
                    problem: format!("cannot encode the new key: {e}"),
                })?;
                write_private(path, pem.as_bytes())?;
                NodeKey::new(signing, path)
            }
            Err(source) => Err(Error::Io { path: path.to_path_buf(), source }),
        }
    }

    /// The key in `pem` (PKCS#8 or SEC1); `path` is named in errors.
    ///
    /// # Errors
    /// [`Error::Key`] when `pem` is not a P-384 private key.
    pub fn from_pem(pem: &str, path: &Path) -> Result<NodeKey> {
        let signing = SigningKey::from_pkcs8_pem(pem)
            .or_else(|_| {
                use p384::elliptic_curve::SecretKey;
                SecretKey::<p384::NistP384>::from_sec1_pem(pem).map(SigningKey::from)
            })
            .map_err(|_| Error::Key {
                path: path.to_path_buf(),
                problem: "not an ECDSA P-384 (secp384r1) private key in PEM (PKCS#8 or SEC1)"
                    .into(),
            })?;
        NodeKey::new(signing, path)
    }

    fn new(signing: SigningKey, path: &Path) -> Result<NodeKey> {
        let public_pem = signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| Error::Key {
                path: path.to_path_buf(),
                problem: format!("cannot encode the public key: {e}"),
            })?
            .into_bytes();
        Ok(NodeKey { signing, public_pem, path: path.to_path_buf() })
    }

    /// The public key as PEM SubjectPublicKeyInfo: what `register-node` sends.
    pub fn public_pem(&self) -> &[u8] {
        &self.public_pem
    }

    /// The public key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        self.signing.verifying_key()
    }

    /// The file the key lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The DER ECDSA-SHA256 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let digest = Sha256::digest(message);
        let signature: DerSignature =
            self.signing.sign_prehash(&digest).expect("a SHA-256 digest is a valid prehash");
        signature.as_bytes().to_vec()
    }

    /// The three authentication headers for a call made at `now`.
    pub fn headers(&self, now: SystemTime) -> [(&'static str, String); 3] {
        let timestamp = iso8601_utc(now);
        let signature = self.sign(timestamp.as_bytes());
        [
            (PUBLIC_KEY_HEADER, B64.encode(&self.public_pem)),
            (TIMESTAMP_HEADER, timestamp),
            (SIGNATURE_HEADER, B64.encode(signature)),
        ]
    }
}

/// Writes a new private key file, readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
    }
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(io)?;
    std::io::Write::write_all(&mut file, bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io)
}

/// `t` as `YYYY-MM-DDTHH:MM:SS.ffffff+00:00`.
pub fn iso8601_utc(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}+00:00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_micros()
    )
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p384::ecdsa::signature::hazmat::PrehashVerifier;
    use std::time::Duration;

    #[test]
    fn timestamps_as_python_writes_them() {
        let at = |s: u64, us: u64| UNIX_EPOCH + Duration::from_secs(s) + Duration::from_micros(us);
        assert_eq!(iso8601_utc(at(0, 0)), "1970-01-01T00:00:00.000000+00:00");
        // datetime.fromtimestamp(1795600800.123456, UTC).isoformat()
        assert_eq!(iso8601_utc(at(1_795_600_800, 123_456)), "2026-11-25T10:00:00.123456+00:00");
        // A leap day and the end of a year.
        assert_eq!(iso8601_utc(at(951_782_400, 0)), "2000-02-29T00:00:00.000000+00:00");
        assert_eq!(iso8601_utc(at(1_767_225_599, 999_999)), "2025-12-31T23:59:59.999999+00:00");
    }

    #[test]
    fn headers_verify_with_the_public_key_and_the_key_persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/node.pem");
        let key = NodeKey::load_or_create(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let now = SystemTime::now();
        let headers = key.headers(now);
        assert_eq!(headers[0].0, PUBLIC_KEY_HEADER);
        let public_pem = B64.decode(&headers[0].1).unwrap();
        let public = std::str::from_utf8(&public_pem).unwrap();
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        // Verify as the SuperLink does: public key from the header, SHA-256 of the timestamp.
        use p384::pkcs8::DecodePublicKey;
        let verifying = VerifyingKey::from_public_key_pem(public).unwrap();
        let signature = DerSignature::from_bytes(&B64.decode(&headers[2].1).unwrap()).unwrap();
        let digest = Sha256::digest(headers[1].1.as_bytes());
        verifying.verify_prehash(&digest, &signature).unwrap();
        // Another timestamp does not verify with this signature.
        let other = Sha256::digest(b"2000-01-01T00:00:00.000000+00:00");
        assert!(verifying.verify_prehash(&other, &signature).is_err());
        // The same file gives the same key.
        let again = NodeKey::load_or_create(&path).unwrap();
        assert_eq!(again.public_pem(), key.public_pem());
        // A file that is not a key is refused, naming the file.
        std::fs::write(&path, "hello").unwrap();
        let err = NodeKey::load_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("node.pem") && err.contains("P-384"), "{err}");
    }
}
