//! The short-lived certificates of the WebTransport side.
//!
//! A browser pins a WebTransport server with `serverCertificateHashes`,
//! which it honours only for an ECDSA P-256 certificate valid for at most
//! 14 days. The host keeps two: the *current* one (presented to browsers)
//! and the *next* one (valid from 6 days after the current one began), and
//! publishes both hashes, so a page that learnt the pair keeps working
//! across one rotation. Every 6 days the next becomes current and a new
//! next is made. They live in `<dir>/web-current.pem` and
//! `<dir>/web-next.pem` (0600: certificate and key), so a restart keeps
//! the pins browsers hold.
//!
//! The published set is signed with the host identity's key
//! ([`WebCertificates::signed_set`]); a page that enrolled with the host's
//! pin checks that signature, so it trusts only hashes its host vouches for.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::BridgeError;
use crate::identity::{HostIdentity, write_atomically};
use crate::session::lock;
use crate::util::hex_encode;

/// How long each certificate is valid (browsers allow at most 14 days).
pub const VALIDITY: Duration = Duration::from_secs(13 * 24 * 3600);
/// How often the current certificate is replaced by the next.
pub const ROTATE_EVERY: Duration = Duration::from_secs(6 * 24 * 3600);
/// How far before "now" a new certificate's validity starts (clock skew).
const BACKDATE: Duration = Duration::from_secs(3600);
/// Starts the line that introduces each certificate in the file.
const MARKER: &str = "vphone web certificate ";
/// The file both certificates live in.
const FILE: &str = "web-certs.pem";

/// What the host signs over: this line, then one hex hash per line.
pub const SET_CONTEXT: &str = "vphone webtransport certificates v1";

#[derive(Clone)]
struct WebCert {
    der: CertificateDer<'static>,
    key_pem: String,
    not_before: SystemTime,
    not_after: SystemTime,
    hash: [u8; 32],
}

impl WebCert {
    fn generate(not_before: SystemTime) -> Result<Self, BridgeError> {
        let fail = |what: &str, e: rcgen::Error| BridgeError::Identity(format!("{what}: {e}"));
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| fail("web certificate key", e))?;
        let mut params = rcgen::CertificateParams::new(vec!["vphone-host".to_owned()])
            .map_err(|e| fail("web certificate parameters", e))?;
        let not_after = not_before + VALIDITY;
        params.not_before = to_time(not_before)?;
        params.not_after = to_time(not_after)?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| fail("web certificate", e))?;
        let der = cert.der().clone();
        Ok(Self {
            hash: sha256(&der),
            der,
            key_pem: key.serialize_pem(),
            not_before: round_down(not_before),
            not_after: round_down(not_after),
        })
    }

    fn to_pem(&self, role: &str) -> String {
        format!(
            "{MARKER}{role} not_before={} not_after={}\n{}{}",
            unix(self.not_before),
            unix(self.not_after),
            pem_block("CERTIFICATE", &self.der),
            self.key_pem
        )
    }

    fn from_pem(text: &str) -> Option<Self> {
        let first = text.lines().next()?;
        let mut nb = None;
        let mut na = None;
        for word in first.split_whitespace() {
            if let Some(v) = word.strip_prefix("not_before=") {
                nb = v.parse::<u64>().ok();
            } else if let Some(v) = word.strip_prefix("not_after=") {
                na = v.parse::<u64>().ok();
            }
        }
        let der = CertificateDer::from_pem_slice(text.as_bytes()).ok()?;
        let key = PrivateKeyDer::from_pem_slice(text.as_bytes()).ok()?;
        let key_pem = pem_block("PRIVATE KEY", key.secret_der());
        Some(Self {
            hash: sha256(&der),
            der,
            key_pem,
            not_before: UNIX_EPOCH + Duration::from_secs(nb?),
            not_after: UNIX_EPOCH + Duration::from_secs(na?),
        })
    }

    fn certified(&self) -> Result<Arc<CertifiedKey>, BridgeError> {
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| BridgeError::Identity(format!("web certificate key: {e}")))?;
        let signer = rustls::crypto::ring::sign::any_ecdsa_type(&key)
            .map_err(|e| BridgeError::Identity(format!("web certificate key: {e}")))?;
        Ok(Arc::new(CertifiedKey::new(vec![self.der.clone()], signer)))
    }
}

fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn round_down(t: SystemTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(unix(t))
}

fn to_time(t: SystemTime) -> Result<time::OffsetDateTime, BridgeError> {
    let secs = i64::try_from(unix(t)).unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|e| BridgeError::Identity(format!("certificate time: {e}")))
}

struct Pair {
    current: WebCert,
    next: WebCert,
    certified: Arc<CertifiedKey>,
}

/// The current and next WebTransport certificates (see the module docs).
pub struct WebCertificates {
    dir: Option<PathBuf>,
    pair: Mutex<Pair>,
}

impl std::fmt::Debug for WebCertificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebCertificates")
            .field("dir", &self.dir)
            .field("hashes", &self.hashes_hex())
            .finish_non_exhaustive()
    }
}

/// One published certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedCert {
    /// SHA-256 of the certificate DER, lowercase hex.
    pub hash_hex: String,
    /// Validity start, Unix seconds.
    pub not_before: u64,
    /// Validity end, Unix seconds.
    pub not_after: u64,
}

impl WebCertificates {
    /// Loads the pair from `dir` (creating or rotating it as due).
    ///
    /// # Errors
    ///
    /// Key generation or file errors.
    pub fn load_or_create(dir: impl AsRef<Path>) -> Result<Self, BridgeError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let text = std::fs::read_to_string(dir.join(FILE)).unwrap_or_default();
        let mut parts = text.split(MARKER).filter(|p| !p.trim().is_empty());
        let mut part = |role: &str| {
            parts
                .next()
                .filter(|p| p.starts_with(role))
                .and_then(|p| WebCert::from_pem(&format!("{MARKER}{p}")))
        };
        let current = part("current");
        let next = part("next");
        Self::start(Some(dir), current, next, SystemTime::now())
    }

    /// A pair kept in memory only (tests, demos).
    ///
    /// # Errors
    ///
    /// Key generation errors.
    pub fn ephemeral() -> Result<Self, BridgeError> {
        Self::start(None, None, None, SystemTime::now())
    }

    fn start(
        dir: Option<PathBuf>,
        current: Option<WebCert>,
        next: Option<WebCert>,
        now: SystemTime,
    ) -> Result<Self, BridgeError> {
        let (current, next) = plan(current, next, now)?;
        let this = Self {
            dir,
            pair: Mutex::new(Pair {
                certified: current.certified()?,
                current,
                next,
            }),
        };
        this.save()?;
        Ok(this)
    }

    fn save(&self) -> Result<(), BridgeError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let both = {
            let p = lock(&self.pair);
            format!("{}{}", p.current.to_pem("current"), p.next.to_pem("next"))
        };
        write_atomically(&dir.join(FILE), both.as_bytes(), 0o600)
    }

    /// Rotates if due at `now`; true if it did.
    ///
    /// # Errors
    ///
    /// Key generation or file errors (the old pair stays in use).
    pub fn rotate_if_due(&self, now: SystemTime) -> Result<bool, BridgeError> {
        let changed = {
            let mut p = lock(&self.pair);
            let (current, next) = plan(Some(p.current.clone()), Some(p.next.clone()), now)?;
            if current.hash == p.current.hash && next.hash == p.next.hash {
                false
            } else {
                p.certified = current.certified()?;
                p.current = current;
                p.next = next;
                true
            }
        };
        if changed {
            tracing::info!(hashes = ?self.hashes_hex(), "rotated the WebTransport certificates");
            self.save()?;
        }
        Ok(changed)
    }

    /// The certificate to present to a browser now (no work: rotation runs
    /// on its own timer).
    pub(crate) fn current(&self) -> Arc<CertifiedKey> {
        lock(&self.pair).certified.clone()
    }

    /// The current and next certificates.
    #[must_use]
    pub fn published(&self) -> Vec<PublishedCert> {
        let p = lock(&self.pair);
        [&p.current, &p.next]
            .into_iter()
            .map(|c| PublishedCert {
                hash_hex: hex_encode(&c.hash),
                not_before: unix(c.not_before),
                not_after: unix(c.not_after),
            })
            .collect()
    }

    /// The current and next hashes, lowercase hex.
    #[must_use]
    pub fn hashes_hex(&self) -> Vec<String> {
        self.published().into_iter().map(|c| c.hash_hex).collect()
    }

    /// The published set and the host identity's signature over
    /// [`SET_CONTEXT`] + `\n` + one hex hash per line (ECDSA P-256 SHA-256,
    /// `r || s`), for a page to verify with the host's public key. `None`
    /// for the signature when the host key is not an ECDSA P-256 key.
    #[must_use]
    pub fn signed_set(&self, identity: &HostIdentity) -> (Vec<PublishedCert>, Option<Vec<u8>>) {
        let published = self.published();
        let message = signed_message(&published);
        (published, identity.sign_p256(message.as_bytes()))
    }
}

/// What [`WebCertificates::signed_set`] signs.
#[must_use]
pub fn signed_message(published: &[PublishedCert]) -> String {
    let mut m = String::from(SET_CONTEXT);
    for c in published {
        m.push('\n');
        m.push_str(&c.hash_hex);
    }
    m
}

/// When the certificate after one that became valid at `not_before`
/// becomes valid: an hour before it is presented.
fn next_start(not_before: SystemTime) -> SystemTime {
    not_before + ROTATE_EVERY
}

/// Which pair should be in use at `now`, given what was loaded.
fn plan(
    current: Option<WebCert>,
    next: Option<WebCert>,
    now: SystemTime,
) -> Result<(WebCert, WebCert), BridgeError> {
    let usable = |c: &WebCert| c.not_before <= now && now + Duration::from_secs(60) < c.not_after;
    let mut current = current.filter(usable);
    let mut next = next;
    // Due (or the current one is gone, say after a long downtime): the next
    // one takes over if it is valid now.
    let due = current
        .as_ref()
        .is_none_or(|c| now >= next_start(c.not_before) + BACKDATE);
    if due {
        current = next.take().filter(usable).or(current);
    }
    let current = match current {
        Some(c) => c,
        None => WebCert::generate(now - BACKDATE)?,
    };
    let next = match next.filter(|n| n.not_before == next_start(current.not_before)) {
        Some(n) => n,
        None => WebCert::generate(next_start(current.not_before))?,
    };
    Ok((current, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_p256_short_lived_and_rotate_in_order() {
        let dir = tempfile::tempdir().expect("tmp");
        let certs = WebCertificates::load_or_create(dir.path()).expect("create");
        let first = certs.published();
        assert_eq!(first.len(), 2);
        for c in &first {
            assert!(c.not_after - c.not_before <= 14 * 24 * 3600, "{c:?}");
        }
        assert_eq!(
            first[1].not_before,
            first[0].not_before + ROTATE_EVERY.as_secs()
        );
        assert!(
            std::fs::read_to_string(dir.path().join(FILE))
                .is_ok_and(|t| t.contains("current") && t.contains("next"))
        );
        // A restart keeps the pins.
        let again = WebCertificates::load_or_create(dir.path()).expect("load");
        assert_eq!(again.published(), first);
        // Valid an hour before it is presented: not presented yet then.
        let early = UNIX_EPOCH + Duration::from_secs(first[1].not_before + 10);
        assert!(!again.rotate_if_due(early).expect("not due"));
        // Six days (and that hour) later the next one is presented and a
        // new next appears.
        let later = UNIX_EPOCH + Duration::from_secs(first[1].not_before + 3600 + 10);
        assert!(again.rotate_if_due(later).expect("rotate"));
        let rotated = again.published();
        assert_eq!(rotated[0], first[1]);
        assert_ne!(rotated[1], first[0]);
        assert!(!again.rotate_if_due(later).expect("no second rotation"));
        // After a downtime past the current one's end, a next still valid
        // takes over rather than being thrown away.
        let t0 = SystemTime::now();
        let (c, n) = plan(None, None, t0).expect("plan");
        let after = t0 + VALIDITY + Duration::from_secs(3600);
        let (c2, _) = plan(Some(c), Some(n.clone()), after).expect("plan");
        assert_eq!(c2.hash, n.hash, "the still-valid next is promoted");
    }

    #[test]
    fn the_set_is_signed_by_the_host_key() {
        let identity = HostIdentity::generate().expect("id");
        let certs = WebCertificates::ephemeral().expect("certs");
        let (published, sig) = certs.signed_set(&identity);
        let sig = sig.expect("a P-256 host key signs");
        let spki = identity.spki();
        let point = &spki[spki.len() - 65..];
        let key = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            point,
        );
        key.verify(signed_message(&published).as_bytes(), &sig)
            .expect("valid signature");
        assert!(key.verify(b"something else", &sig).is_err());
    }
}
