//! Long-lived identities: the host's and the handset's key pairs and
//! self-signed certificates, and their SPKI fingerprints.
//!
//! Both sides are known by the SHA-256 of their certificate's
//! `SubjectPublicKeyInfo` ([`Fingerprint`]): the handset *pins* the host's
//! fingerprint (learned at enrollment), and the host knows each enrolled
//! handset by its fingerprint. Because the fingerprint covers the public key
//! and not the whole certificate, a certificate may be re-issued for the
//! same key without re-enrolling.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::BridgeError;

/// SHA-256 of a certificate's DER `SubjectPublicKeyInfo`.
///
/// Text form: 64 lowercase hex digits ([`fmt::Display`]); parsing also
/// accepts upper case and `:` separators.
#[derive(Clone, Copy, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct Fingerprint([u8; 32]);

/// The host fingerprint a handset pins (same thing as a [`Fingerprint`]).
pub type Pin = Fingerprint;

impl Fingerprint {
    /// The fingerprint of a DER `SubjectPublicKeyInfo`.
    #[must_use]
    pub fn of_spki(spki_der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, spki_der);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Self(out)
    }

    /// The fingerprint of a DER X.509 certificate's public key.
    ///
    /// # Errors
    ///
    /// [`BridgeError::Identity`] if the DER is not a certificate.
    pub fn of_certificate(cert_der: &[u8]) -> Result<Self, BridgeError> {
        spki_of_certificate(cert_der)
            .map(Self::of_spki)
            .ok_or_else(|| BridgeError::Identity("not a DER X.509 certificate".into()))
    }

    /// Wraps raw SHA-256 bytes.
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw SHA-256 bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = BridgeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex: Vec<u8> = s.bytes().filter(|&b| b != b':').collect();
        let bytes = crate::util::hex_decode(&hex)
            .ok_or_else(|| BridgeError::InvalidArgument("fingerprint is not hex".into()))?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| {
            BridgeError::InvalidArgument("fingerprint must be 32 bytes (64 hex digits)".into())
        })?;
        Ok(Self(arr))
    }
}

/// Reads one DER TLV at the start of `buf`: (tag, header length, content
/// length). `None` for anything malformed or longer than `buf`.
fn der_tlv(buf: &[u8]) -> Option<(u8, usize, usize)> {
    let tag = *buf.first()?;
    let first = *buf.get(1)?;
    let (header, len) = if first & 0x80 == 0 {
        (2, usize::from(first))
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*buf.get(2 + i)?);
        }
        (2 + n, len)
    };
    if buf.len() < header.checked_add(len)? {
        return None;
    }
    Some((tag, header, len))
}

/// Extracts the DER `SubjectPublicKeyInfo` (whole TLV) from a DER X.509
/// certificate (RFC 5280 §4.1: Certificate -> tbsCertificate -> the 7th
/// field, or the 6th when the optional `[0] version` is absent).
pub(crate) fn spki_of_certificate(cert: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    let (tag, h, len) = der_tlv(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let outer = &cert[h..h + len];
    let (tag, h, len) = der_tlv(outer)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut tbs = &outer[h..h + len];
    // Optional explicit [0] version.
    if tbs.first() == Some(&0xa0) {
        let (_, h, len) = der_tlv(tbs)?;
        tbs = &tbs[h + len..];
    }
    // serialNumber, signature, issuer, validity, subject.
    for _ in 0..5 {
        let (_, h, len) = der_tlv(tbs)?;
        tbs = &tbs[h + len..];
    }
    let (tag, h, len) = der_tlv(tbs)?;
    if tag != SEQUENCE {
        return None;
    }
    Some(&tbs[..h + len])
}

/// A certificate chain and its private key (shared by both identities).
struct KeyMaterial {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    fingerprint: Fingerprint,
}

impl Clone for KeyMaterial {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            fingerprint: self.fingerprint,
        }
    }
}

impl KeyMaterial {
    fn generate(name: &str) -> Result<(Self, String, String), BridgeError> {
        let key = rcgen::KeyPair::generate()
            .map_err(|e| BridgeError::Identity(format!("key generation failed: {e}")))?;
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()])
            .map_err(|e| BridgeError::Identity(format!("certificate parameters: {e}")))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params
            .self_signed(&key)
            .map_err(|e| BridgeError::Identity(format!("self-signing failed: {e}")))?;
        let cert_pem = cert.pem();
        let key_pem = key.serialize_pem();
        let material = Self::from_pem(cert_pem.as_bytes(), key_pem.as_bytes())?;
        Ok((material, cert_pem, key_pem))
    }

    fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, BridgeError> {
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BridgeError::Identity(format!("certificate PEM: {e}")))?;
        let leaf = chain
            .first()
            .ok_or_else(|| BridgeError::Identity("no certificate in PEM".into()))?;
        let fingerprint = Fingerprint::of_certificate(leaf)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| BridgeError::Identity(format!("private key PEM: {e}")))?;
        Ok(Self {
            chain,
            key,
            fingerprint,
        })
    }

    fn load_or_create(dir: &Path, name: &str) -> Result<Self, BridgeError> {
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        if cert_path.exists() && key_path.exists() {
            let chain_pem = fs::read(&cert_path)?;
            let key_pem = fs::read(&key_path)?;
            return Self::from_pem(&chain_pem, &key_pem);
        }
        fs::create_dir_all(dir)?;
        let (material, cert_pem, key_pem) = Self::generate(name)?;
        write_atomically(&key_path, key_pem.as_bytes(), 0o600)?;
        write_atomically(&cert_path, cert_pem.as_bytes(), 0o644)?;
        tracing::info!(dir = %dir.display(), fingerprint = %material.fingerprint, "created a new identity");
        Ok(material)
    }
}

/// Writes `data` to `path` via a temporary file and a rename, with `mode`
/// permissions (on Unix) from the moment the file exists.
pub(crate) fn write_atomically(path: &Path, data: &[u8], mode: u32) -> Result<(), BridgeError> {
    let mut tmp = PathBuf::from(path);
    tmp.set_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp)?;
    file.write_all(data)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    Ok(())
}

/// The host's identity: the key pair and (self-signed or operator-provided)
/// certificate chain it presents to every handset.
#[derive(Clone)]
pub struct HostIdentity(KeyMaterial);

impl HostIdentity {
    /// The subject name of generated host certificates.
    pub const DEFAULT_NAME: &'static str = "vphone-host";

    /// Loads `dir/key.pem` + `dir/cert.pem`, or creates a new key pair and a
    /// self-signed certificate there (key file mode 0600) if absent.
    ///
    /// # Errors
    ///
    /// File system errors, unreadable PEM.
    pub fn load_or_create(dir: impl AsRef<Path>) -> Result<Self, BridgeError> {
        KeyMaterial::load_or_create(dir.as_ref(), Self::DEFAULT_NAME).map(Self)
    }

    /// A fresh in-memory identity (tests, demos).
    ///
    /// # Errors
    ///
    /// Key generation failures.
    pub fn generate() -> Result<Self, BridgeError> {
        KeyMaterial::generate(Self::DEFAULT_NAME).map(|(m, _, _)| Self(m))
    }

    /// An operator-provided certificate chain (leaf first) and its private
    /// key (PKCS#8, SEC1 or PKCS#1 PEM). Handsets pin the leaf's public key.
    ///
    /// # Errors
    ///
    /// Unreadable PEM.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, BridgeError> {
        KeyMaterial::from_pem(chain_pem, key_pem).map(Self)
    }

    /// The pin handsets must be given at enrollment.
    #[must_use]
    pub fn pin(&self) -> Pin {
        self.0.fingerprint
    }

    pub(crate) fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.0.chain.clone()
    }

    pub(crate) fn key(&self) -> PrivateKeyDer<'static> {
        self.0.key.clone_key()
    }

    /// The leaf certificate's SubjectPublicKeyInfo (DER): what a browser
    /// handset imports to check what the host signs. Its SHA-256 is
    /// [`HostIdentity::pin`].
    #[must_use]
    pub fn spki(&self) -> Vec<u8> {
        self.0
            .chain
            .first()
            .and_then(|c| spki_of_certificate(c))
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    }

    /// Signs `message` with the host key (ECDSA P-256 with SHA-256, the
    /// fixed `r || s` form WebCrypto verifies); `None` when the host key is
    /// not a PKCS#8 ECDSA P-256 key (an operator-provided RSA key, say).
    #[must_use]
    pub fn sign_p256(&self, message: &[u8]) -> Option<Vec<u8>> {
        let PrivateKeyDer::Pkcs8(pkcs8) = &self.0.key else {
            return None;
        };
        let rng = ring::rand::SystemRandom::new();
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.secret_pkcs8_der(),
            &rng,
        )
        .ok()?;
        pair.sign(&rng, message).ok().map(|s| s.as_ref().to_vec())
    }
}

impl fmt::Debug for HostIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostIdentity")
            .field("pin", &self.0.fingerprint)
            .finish_non_exhaustive()
    }
}

/// The handset's identity: its own key pair and self-signed certificate,
/// presented as the TLS client certificate on every connection.
#[derive(Clone)]
pub struct HandsetIdentity(KeyMaterial);

impl HandsetIdentity {
    /// The subject name of generated handset certificates.
    pub const DEFAULT_NAME: &'static str = "vphone-handset";

    /// Loads `dir/key.pem` + `dir/cert.pem`, or creates them (key file mode
    /// 0600) if absent.
    ///
    /// # Errors
    ///
    /// File system errors, unreadable PEM.
    pub fn load_or_create(dir: impl AsRef<Path>) -> Result<Self, BridgeError> {
        KeyMaterial::load_or_create(dir.as_ref(), Self::DEFAULT_NAME).map(Self)
    }

    /// A fresh in-memory identity (tests, demos).
    ///
    /// # Errors
    ///
    /// Key generation failures.
    pub fn generate() -> Result<Self, BridgeError> {
        KeyMaterial::generate(Self::DEFAULT_NAME).map(|(m, _, _)| Self(m))
    }

    /// A certificate (chain) and key from PEM.
    ///
    /// # Errors
    ///
    /// Unreadable PEM.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, BridgeError> {
        KeyMaterial::from_pem(chain_pem, key_pem).map(Self)
    }

    /// The fingerprint the host knows this handset by.
    #[must_use]
    pub fn fingerprint(&self) -> Fingerprint {
        self.0.fingerprint
    }

    pub(crate) fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.0.chain.clone()
    }

    pub(crate) fn key(&self) -> PrivateKeyDer<'static> {
        self.0.key.clone_key()
    }
}

impl fmt::Debug for HandsetIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandsetIdentity")
            .field("fingerprint", &self.0.fingerprint)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use rcgen::PublicKeyData as _;

    use super::*;

    #[test]
    fn spki_walker_matches_rcgen_public_key() {
        let key = rcgen::KeyPair::generate().expect("keygen");
        let cert = rcgen::CertificateParams::new(vec!["x".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("sign");
        let spki = spki_of_certificate(cert.der()).expect("spki");
        assert_eq!(spki, key.subject_public_key_info().as_slice());
    }

    #[test]
    fn spki_walker_rejects_garbage_without_panicking() {
        for input in [
            &[][..],
            &[0x30],
            &[0x30, 0x82, 0xff],
            &[0x30, 0x03, 0x30, 0x01, 0x00],
        ] {
            assert!(spki_of_certificate(input).is_none());
        }
    }

    #[test]
    fn fingerprint_text_round_trips() {
        let fp = Fingerprint::of_spki(b"abc");
        let text = fp.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<Fingerprint>().expect("parse"), fp);
        let colons: String = text
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).to_uppercase())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(colons.parse::<Fingerprint>().expect("parse"), fp);
        assert!("zz".parse::<Fingerprint>().is_err());
        assert!("abcd".parse::<Fingerprint>().is_err());
    }

    #[test]
    fn operator_chain_pins_the_leaf_key() {
        let ca_key = rcgen::KeyPair::generate().expect("keygen");
        let mut ca_params = rcgen::CertificateParams::new(vec![]).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca");
        let issuer = rcgen::Issuer::new(ca_params, &ca_key);
        let leaf_key = rcgen::KeyPair::generate().expect("keygen");
        let leaf = rcgen::CertificateParams::new(vec!["host.example".to_owned()])
            .expect("params")
            .signed_by(&leaf_key, &issuer)
            .expect("leaf");
        let chain = format!("{}{}", leaf.pem(), ca_cert.pem());
        let id = HostIdentity::from_pem(chain.as_bytes(), leaf_key.serialize_pem().as_bytes())
            .expect("identity");
        assert_eq!(id.chain().len(), 2);
        assert_eq!(
            id.pin(),
            Fingerprint::of_spki(&leaf_key.subject_public_key_info())
        );
        assert!(HostIdentity::from_pem(b"", b"").is_err());
    }

    #[test]
    fn load_or_create_persists_and_protects_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = HostIdentity::load_or_create(dir.path()).expect("create");
        let second = HostIdentity::load_or_create(dir.path()).expect("load");
        assert_eq!(first.pin(), second.pin());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(dir.path().join("key.pem"))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let handset = HandsetIdentity::load_or_create(dir.path().join("h")).expect("handset");
        assert_ne!(handset.fingerprint(), first.pin());
    }

    proptest::proptest! {
        #[test]
        fn spki_walker_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = spki_of_certificate(&bytes);
        }
    }
}
