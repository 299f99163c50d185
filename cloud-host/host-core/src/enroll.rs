//! The host's QUIC identity and enrollment tokens, from `device-bridge`,
//! behind the operator API's [`Enroller`] trait; a fleet's shared key set
//! and the operator's admin token, where they are read and made.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use device_bridge::{HostIdentity, TokenKey};

use crate::HostError;
use crate::registry::{PhoneGrant, Registry, TokenRecord, validate_name};

/// Mints tokens with the host's token key and reports the host's pin.
#[derive(Debug)]
pub struct BridgeEnroller {
    key: TokenKey,
    identity: HostIdentity,
    public_addr: String,
    web: Option<(String, std::sync::Arc<device_bridge::web::WebCertificates>)>,
}

fn bridge_err(what: &'static str, e: device_bridge::BridgeError) -> HostError {
    HostError::Internal {
        what,
        why: e.to_string(),
    }
}

impl BridgeEnroller {
    /// Loads (or creates on first start) the host identity in
    /// `<data dir>/identity/` and the token key in `<data dir>/token.key`.
    ///
    /// # Errors
    /// [`HostError::Invalid`] when a file exists but cannot be used.
    pub fn load_or_create(data_dir: &Path, public_addr: String) -> Result<Self, HostError> {
        let identity = HostIdentity::load_or_create(data_dir.join("identity"))
            .map_err(|e| bridge_err("host identity", e))?;
        let key = TokenKey::load_or_create(data_dir.join("token.key"))
            .map_err(|e| bridge_err("token key", e))?;
        Ok(Self::with(identity, key, public_addr))
    }

    /// With a fleet's shared keys from `keys` (see [`load_fleet_keys`])
    /// when given, else as [`BridgeEnroller::load_or_create`].
    ///
    /// # Errors
    /// As [`load_fleet_keys`] and [`BridgeEnroller::load_or_create`].
    pub fn open(
        data_dir: &Path,
        keys: Option<&Path>,
        public_addr: String,
    ) -> Result<Self, HostError> {
        match keys {
            Some(dir) => {
                let (identity, key) = load_fleet_keys(dir)?;
                Ok(Self::with(identity, key, public_addr))
            }
            None => Self::load_or_create(data_dir, public_addr),
        }
    }

    fn with(identity: HostIdentity, key: TokenKey, public_addr: String) -> Self {
        Self {
            key,
            identity,
            public_addr,
            web: None,
        }
    }

    /// Also offers browser enrollment links: the page at `base_url`, pinned
    /// to the WebTransport certificates `certs`.
    pub fn offer_web(
        &mut self,
        base_url: String,
        certs: std::sync::Arc<device_bridge::web::WebCertificates>,
    ) {
        self.web = Some((base_url, certs));
    }

    /// The host identity (for the QUIC server).
    pub fn identity(&self) -> &HostIdentity {
        &self.identity
    }

    /// The token key (for verifying tokens handsets present).
    pub fn key(&self) -> &TokenKey {
        &self.key
    }
}

impl Enroller for BridgeEnroller {
    fn mint(&self, ttl: Duration) -> Result<MintedToken, HostError> {
        let (verified, text) = self
            .key
            .mint(ttl)
            .map_err(|e| bridge_err("enrollment token", e))?;
        let expires_at_ms = verified
            .expires_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Ok(MintedToken {
            id: verified.id.to_string(),
            expires_at_ms,
            text,
        })
    }

    fn pin(&self) -> String {
        self.identity.pin().to_string()
    }

    fn public_addr(&self) -> String {
        self.public_addr.clone()
    }

    fn web_link(&self, token: &str) -> Option<String> {
        let (base, certs) = self.web.as_ref()?;
        Some(web_link(
            base,
            &self.identity.pin().to_string(),
            &certs.hashes_hex(),
            token,
        ))
    }
}

/// The files of a fleet's shared keys, as `vphone-host fleet-keys DIR`
/// writes them and a Kubernetes Secret holds them: the identity handsets
/// pin (certificate, private key), the enrollment token key, the admin
/// token.
pub const FLEET_KEY_FILES: [&str; 4] = ["cert.pem", "key.pem", "token.key", ADMIN_TOKEN_FILE];

/// The admin token's file name in a fleet key set (and in a data dir).
pub use sensor_proto::layout::ADMIN_TOKEN_FILE;

fn fleet_keys_err(path: &Path, why: impl std::fmt::Display) -> HostError {
    HostError::Invalid {
        what: "fleet keys",
        why: format!(
            "{}: {why} (a fleet key set is made with `vphone-host fleet-keys DIR`)",
            path.display()
        ),
    }
}

/// Loads a fleet's shared identity (`DIR/cert.pem`, `DIR/key.pem`) and
/// enrollment token key (`DIR/token.key`), as mounted from a Secret.
/// Never writes: the set is the operator's, made once with
/// `vphone-host fleet-keys`.
///
/// # Errors
/// [`HostError::Invalid`] naming the file that is missing or unusable.
pub fn load_fleet_keys(dir: &Path) -> Result<(HostIdentity, TokenKey), HostError> {
    let read = |name: &str| {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).map_err(|e| fleet_keys_err(&path, e))?;
        if name != "cert.pem" {
            crate::files::not_readable_by_others(&path)?;
        }
        Ok::<_, HostError>(bytes)
    };
    let identity = HostIdentity::from_pem(&read("cert.pem")?, &read("key.pem")?)
        .map_err(|e| fleet_keys_err(&dir.join("cert.pem"), e))?;
    let token_path = dir.join("token.key");
    let key = TokenKey::load(&token_path).map_err(|e| fleet_keys_err(&token_path, e))?;
    crate::files::not_readable_by_others(&token_path)?;
    Ok((identity, key))
}

/// Writes a new fleet key set into `dir` (created 0700 when absent): a
/// self-signed identity, an enrollment token key and an admin token, the
/// secret files mode 0600. Refuses to replace any file of a set already
/// there (a new identity would make every enrolled handset refuse the
/// fleet). Returns the identity's pin.
///
/// # Errors
/// [`HostError::Invalid`] when `dir` already holds a key file;
/// [`HostError::Io`] or [`HostError::Internal`] when writing fails.
pub fn create_fleet_keys(dir: &Path) -> Result<String, HostError> {
    use std::os::unix::fs::DirBuilderExt as _;
    for name in FLEET_KEY_FILES {
        let path = dir.join(name);
        if path.exists() {
            return Err(HostError::Invalid {
                what: "fleet keys",
                why: format!(
                    "{} already exists; the set there is left as it is (handsets pin its key): \
                     give an empty or new directory",
                    path.display()
                ),
            });
        }
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| HostError::io(format!("creating {}", dir.display()), e))?;
    // Writes cert.pem and key.pem (0600) in `dir`.
    let identity =
        HostIdentity::load_or_create(dir).map_err(|e| bridge_err("fleet identity", e))?;
    TokenKey::load_or_create(dir.join("token.key")).map_err(|e| bridge_err("token key", e))?;
    load_or_create_admin_token(dir)?;
    Ok(identity.pin().to_string())
}

/// Reads an admin token the operator provides (a mounted Secret): at
/// least 32 characters, no spaces, never created or changed here.
///
/// # Errors
/// [`HostError::Io`] naming the file; [`HostError::Invalid`] when it is
/// too short to be a secret.
pub fn load_admin_token(path: &Path) -> Result<String, HostError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| HostError::io(format!("reading the admin token {}", path.display()), e))?;
    crate::files::not_readable_by_others(path)?;
    let token = text.trim();
    if token.len() < 32 || !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err(HostError::Invalid {
            what: "admin token",
            why: format!(
                "{} must hold one token of at least 32 printable ASCII characters without \
                 spaces (make one with `vphone-host fleet-keys DIR` or `openssl rand -hex 32`)",
                path.display()
            ),
        });
    }
    Ok(token.to_owned())
}

/// Reads the admin token from `<data dir>/admin.token`, creating it (mode
/// 0600, 32 random bytes as hex) when absent.
///
/// # Errors
/// [`HostError::Io`] naming the file.
pub fn load_or_create_admin_token(data_dir: &Path) -> Result<String, HostError> {
    let path = sensor_proto::layout::admin_token_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(HostError::io(format!("reading {}", path.display()), e)),
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| HostError::io(format!("creating {}", data_dir.display()), e))?;
    let token = crate::backend::random_token()?;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| HostError::io(format!("creating {}", path.display()), e))?;
    writeln!(f, "{token}").map_err(|e| HostError::io(format!("writing {}", path.display()), e))?;
    Ok(token)
}

/// The link a browser handset opens:
/// `BASE#enroll=TOKEN&pin=PIN&certs=HASH,HASH`. Everything after `#` stays
/// in the browser (never sent to a server, never in a `Referer`); the page
/// removes it from the address bar once read.
#[must_use]
pub fn web_link(base: &str, pin: &str, cert_hashes: &[String], token: &str) -> String {
    format!(
        "{base}#enroll={token}&pin={pin}&certs={}",
        cert_hashes.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_key_persist_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let a = BridgeEnroller::load_or_create(dir.path(), "127.0.0.1:4433".into()).unwrap();
        let b = BridgeEnroller::load_or_create(dir.path(), "127.0.0.1:4433".into()).unwrap();
        assert_eq!(a.pin(), b.pin());
        assert_eq!(a.pin().len(), 64);
        // The token minted by one instance verifies with the reloaded key.
        minted_by_one_verifies_with_the_other(&a, &b);
    }

    fn minted_by_one_verifies_with_the_other(a: &BridgeEnroller, b: &BridgeEnroller) {
        let t = a.mint(Duration::from_secs(60)).unwrap();
        let v = b
            .key()
            .verify(&t.text, std::time::SystemTime::now())
            .unwrap();
        assert_eq!(v.id.to_string(), t.id);
    }

    #[test]
    fn a_fleet_key_set_is_made_once_and_shared_by_every_front_door() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let keys = tmp.path().join("keys");
        let pin = create_fleet_keys(&keys).unwrap();
        for (name, mode) in [
            ("key.pem", 0o600),
            ("token.key", 0o600),
            (ADMIN_TOKEN_FILE, 0o600),
        ] {
            let m = std::fs::metadata(keys.join(name)).unwrap().permissions();
            assert_eq!(m.mode() & 0o777, mode, "{name}");
        }
        // Never replaced: handsets pin the set's key.
        let before = std::fs::read(keys.join("key.pem")).unwrap();
        let e = create_fleet_keys(&keys).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::BadInput, "{e}");
        assert!(e.to_string().contains("already exists"), "{e}");
        assert_eq!(std::fs::read(keys.join("key.pem")).unwrap(), before);

        // Two front doors with their own data dirs and the set present one
        // pin, and a token one mints the other verifies.
        let a = BridgeEnroller::open(&tmp.path().join("a"), Some(&keys), "a:4433".into()).unwrap();
        let b = BridgeEnroller::open(&tmp.path().join("b"), Some(&keys), "b:4433".into()).unwrap();
        assert_eq!(a.pin(), pin);
        assert_eq!(b.pin(), pin);
        minted_by_one_verifies_with_the_other(&a, &b);
        // Nothing was written into their data dirs.
        assert!(!tmp.path().join("a").exists());

        // A private key every user may read is refused.
        let key = keys.join("key.pem");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = BridgeEnroller::open(tmp.path(), Some(&keys), "a:4433".into()).unwrap_err();
        assert!(e.to_string().contains("readable by every user"), "{e}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o440)).unwrap();
        BridgeEnroller::open(tmp.path(), Some(&keys), "a:4433".into()).unwrap();

        // A set missing a file is refused naming it, not completed.
        std::fs::remove_file(keys.join("token.key")).unwrap();
        let e = BridgeEnroller::open(tmp.path(), Some(&keys), "a:4433".into()).unwrap_err();
        assert!(e.to_string().contains("token.key"), "{e}");
        assert!(!keys.join("token.key").exists());
        std::fs::write(keys.join("token.key"), "not hex").unwrap();
        std::fs::set_permissions(
            keys.join("token.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let e = BridgeEnroller::open(tmp.path(), Some(&keys), "a:4433".into()).unwrap_err();
        assert!(e.to_string().contains("64 hex digits"), "{e}");
    }
}

/// A freshly minted enrollment token. Its `Debug` never shows the text.
#[derive(Clone)]
pub struct MintedToken {
    /// Its public id (recorded in the registry).
    pub id: String,
    /// When it expires, Unix ms.
    pub expires_at_ms: i64,
    /// The secret text given to the handset.
    pub text: String,
}

impl std::fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedToken")
            .field("id", &self.id)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("text", &crate::secret::Redacted(true))
            .finish()
    }
}

/// What the operator API needs from the host's QUIC identity.
pub trait Enroller: Send + Sync + std::fmt::Debug {
    /// Mints a single-use token valid for `ttl`.
    ///
    /// # Errors
    /// [`HostError`] when no randomness or key is available.
    fn mint(&self, ttl: Duration) -> Result<MintedToken, HostError>;
    /// The host's certificate pin (`sha256:<hex>` of its public key).
    fn pin(&self) -> String;
    /// The `host:port` handsets dial.
    fn public_addr(&self) -> String;
    /// The browser enrollment link for `token`, when the host serves
    /// browser handsets.
    fn web_link(&self, token: &str) -> Option<String> {
        let _ = token;
        None
    }
}

/// The one-line enrollment string a handset takes:
/// `vphone://HOST:PORT?pin=PIN&token=TOKEN`.
pub fn enrollment_string(addr: &str, pin: &str, token: &str) -> String {
    format!("vphone://{addr}?pin={pin}&token={token}")
}

/// The longest an enrollment offer may stay valid.
pub const MAX_ENROLLMENT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// An enrollment the host offers a handset. Its `Debug` hides the
/// enrollment string and the link (both hold the token).
#[derive(Clone)]
pub struct Offer {
    /// The one-line string the handset takes (`vphone://...`); it holds
    /// the single-use token, so never log it.
    pub enrollment: String,
    /// The host's certificate pin.
    pub pin: String,
    /// When the token expires, Unix ms.
    pub expires_at_ms: i64,
    /// The same offer as a link for a phone's browser (holds the token
    /// too), when the host serves browser handsets.
    pub web_link: Option<String>,
}

impl std::fmt::Debug for Offer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offer")
            .field("enrollment", &crate::secret::Redacted(true))
            .field("pin", &self.pin)
            .field("expires_at_ms", &self.expires_at_ms)
            .field(
                "web_link",
                &crate::secret::Redacted(self.web_link.is_some()),
            )
            .finish()
    }
}

/// The enrollment use case, the one place it lives (the operator API, the
/// demo and the tests call it): mints a single-use token valid for `ttl`
/// for a handset to be called `name` that may use the phones `grant`
/// names (every phone only when it says so), records it, and returns the
/// enrollment string.
///
/// # Errors
/// [`HostError::Invalid`] for a bad name or a ttl over a week; registry and
/// token errors.
pub fn offer_enrollment(
    registry: &Registry,
    enroller: &dyn Enroller,
    name: Option<String>,
    grant: PhoneGrant,
    ttl: Duration,
) -> Result<Offer, HostError> {
    if let Some(n) = &name {
        validate_name("handset name", n)?;
    }
    if ttl > MAX_ENROLLMENT_TTL {
        return Err(HostError::Invalid {
            what: "ttl",
            why: "an enrollment may stay valid for at most one week".to_owned(),
        });
    }
    let minted = enroller.mint(ttl)?;
    registry.insert_token(
        &TokenRecord {
            id: minted.id.clone(),
            name,
            grant,
            expires_at_ms: minted.expires_at_ms,
            used_at_ms: None,
        },
        crate::unix_ms(),
    )?;
    let pin = enroller.pin();
    Ok(Offer {
        enrollment: enrollment_string(&enroller.public_addr(), &pin, &minted.text),
        web_link: enroller.web_link(&minted.text),
        pin,
        expires_at_ms: minted.expires_at_ms,
    })
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn an_offer_never_shows_its_token_in_debug() {
        let offer = Offer {
            enrollment: "vphone://h:1?pin=00&token=vpe1.SECRET".into(),
            pin: "00".into(),
            expires_at_ms: 1,
            web_link: Some("https://h:1/#enroll=vpe1.SECRET&pin=00".into()),
        };
        let shown = format!("{offer:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
