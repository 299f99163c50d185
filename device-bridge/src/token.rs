//! Single-use, expiring enrollment tokens (HMAC-SHA256, ring).
//!
//! The operator mints a token on the host ([`TokenKey::mint`]) and hands
//! it, together with the host's [`Pin`](crate::Pin), to the handset's user
//! (QR code, link). The handset presents it in its first `Hello`
//! (`enrollment_token`); the host verifies it ([`TokenKey::verify`]) and
//! records the handset's certificate fingerprint. From then on the handset
//! authenticates with its certificate alone.
//!
//! Text form: `vpe1.` followed by hex of `id (16 bytes) || expiry (u64 BE,
//! Unix seconds) || HMAC-SHA256(key, "vphone-enroll-v1" || id || expiry)`.
//! The MAC makes tokens unforgeable and their expiry tamper-proof; being
//! *single-use* needs state, so the host's [`Authorizer`](crate::Authorizer)
//! records used [`TokenId`]s (see [`MemoryAuthorizer`](crate::MemoryAuthorizer)).

use std::fmt;
use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::hmac;

use crate::BridgeError;
use crate::util::{hex_decode, hex_encode, random_bytes};

const PREFIX: &str = "vpe1.";
const DOMAIN: &[u8] = b"vphone-enroll-v1";
const ID_LEN: usize = 16;
const BODY_LEN: usize = ID_LEN + 8;
const MAC_LEN: usize = 32;

/// The host's secret for minting and verifying enrollment tokens.
#[derive(Clone)]
pub struct TokenKey {
    raw: [u8; 32],
    key: hmac::Key,
}

/// The public, unique id of one enrollment token (lowercase hex in text).
#[derive(Clone, Copy, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct TokenId([u8; ID_LEN]);

/// What a valid token says.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct VerifiedToken {
    /// The token's id: record it to make the token single-use.
    pub id: TokenId,
    /// When the token stops being valid.
    pub expires_at: SystemTime,
}

impl TokenKey {
    /// A new random key.
    ///
    /// # Errors
    ///
    /// If the system RNG fails.
    pub fn generate() -> Result<Self, BridgeError> {
        Ok(Self::from_bytes(random_bytes::<32>()?))
    }

    /// A key from its 32 secret bytes.
    #[must_use]
    pub fn from_bytes(raw: [u8; 32]) -> Self {
        Self {
            raw,
            key: hmac::Key::new(hmac::HMAC_SHA256, &raw),
        }
    }

    /// The secret bytes (to persist the key).
    #[must_use]
    pub fn to_bytes(&self) -> [u8; 32] {
        self.raw
    }

    /// Loads the key from `path` (64 hex digits), never creating one: a key
    /// an operator provides (a fleet's, shared by its front doors).
    ///
    /// # Errors
    ///
    /// [`BridgeError::Io`] when it cannot be read (missing included);
    /// [`BridgeError::Identity`] when it does not hold 64 hex digits.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, BridgeError> {
        let text = fs::read(path.as_ref())?;
        Self::parse(&text)
    }

    fn parse(text: &[u8]) -> Result<Self, BridgeError> {
        let raw = hex_decode(text.trim_ascii())
            .and_then(|v| <[u8; 32]>::try_from(v).ok())
            .ok_or_else(|| {
                BridgeError::Identity("corrupt token key file (not 64 hex digits)".into())
            })?;
        Ok(Self::from_bytes(raw))
    }

    /// Loads the key from `path` (64 hex digits), or creates it there with
    /// mode 0600.
    ///
    /// # Errors
    ///
    /// File system errors or a corrupt key file.
    pub fn load_or_create(path: impl AsRef<Path>) -> Result<Self, BridgeError> {
        let path = path.as_ref();
        if path.exists() {
            return Self::load(path);
        }
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let key = Self::generate()?;
        // Atomically: written and synced under a temporary name, then
        // linked into place (which fails if another process won the race:
        // then its key is the key). A crash leaves either no key file or a
        // whole one, never a torn one that would stop the host.
        let tmp = path.with_extension(format!("tmp-{}", hex_encode(&random_bytes::<8>()?)));
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let written = (|| {
            use std::io::Write as _;
            let mut f = options.open(&tmp)?;
            f.write_all(hex_encode(&key.raw).as_bytes())?;
            f.sync_all()?;
            fs::hard_link(&tmp, path)
        })();
        let _ = fs::remove_file(&tmp);
        match written {
            Ok(()) => {
                if let Some(dir) = path.parent() {
                    fs::File::open(dir)?.sync_all()?;
                }
                Ok(key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load_or_create(path),
            Err(e) => Err(e.into()),
        }
    }

    /// Mints a token valid for `ttl` from now.
    ///
    /// # Errors
    ///
    /// If the system RNG fails.
    pub fn mint(&self, ttl: Duration) -> Result<(VerifiedToken, String), BridgeError> {
        self.mint_until(SystemTime::now() + ttl)
    }

    /// Mints a token valid until `expires_at` (whole seconds).
    ///
    /// # Errors
    ///
    /// If the system RNG fails.
    pub fn mint_until(
        &self,
        expires_at: SystemTime,
    ) -> Result<(VerifiedToken, String), BridgeError> {
        let id = TokenId(random_bytes::<ID_LEN>()?);
        let secs = expires_at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut body = [0u8; BODY_LEN];
        body[..ID_LEN].copy_from_slice(&id.0);
        body[ID_LEN..].copy_from_slice(&secs.to_be_bytes());
        let tag = self.tag(&body);
        let mut text = String::with_capacity(PREFIX.len() + 2 * (BODY_LEN + MAC_LEN));
        text.push_str(PREFIX);
        text.push_str(&hex_encode(&body));
        text.push_str(&hex_encode(tag.as_ref()));
        let verified = VerifiedToken {
            id,
            expires_at: UNIX_EPOCH + Duration::from_secs(secs),
        };
        Ok((verified, text))
    }

    fn tag(&self, body: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(DOMAIN);
        ctx.update(body);
        ctx.sign()
    }

    /// Checks a token's MAC and expiry at time `now`. Does NOT check
    /// single use: the caller records [`VerifiedToken::id`].
    ///
    /// # Errors
    ///
    /// [`BridgeError::TokenInvalid`] for anything this key did not mint
    /// (wrong format, wrong MAC); [`BridgeError::TokenExpired`] if `now` is
    /// at or past the expiry.
    pub fn verify(&self, text: &str, now: SystemTime) -> Result<VerifiedToken, BridgeError> {
        let hex = text
            .trim()
            .strip_prefix(PREFIX)
            .ok_or(BridgeError::TokenInvalid)?;
        let raw = hex_decode(hex.as_bytes()).ok_or(BridgeError::TokenInvalid)?;
        if raw.len() != BODY_LEN + MAC_LEN {
            return Err(BridgeError::TokenInvalid);
        }
        let (body, mac) = raw.split_at(BODY_LEN);
        let mut ctx_input = Vec::with_capacity(DOMAIN.len() + BODY_LEN);
        ctx_input.extend_from_slice(DOMAIN);
        ctx_input.extend_from_slice(body);
        hmac::verify(&self.key, &ctx_input, mac).map_err(|_| BridgeError::TokenInvalid)?;
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(&body[..ID_LEN]);
        let mut secs = [0u8; 8];
        secs.copy_from_slice(&body[ID_LEN..]);
        let expires_at = UNIX_EPOCH + Duration::from_secs(u64::from_be_bytes(secs));
        if now >= expires_at {
            return Err(BridgeError::TokenExpired);
        }
        Ok(VerifiedToken {
            id: TokenId(id),
            expires_at,
        })
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex_encode(&self.0))
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TokenKey {
        TokenKey::from_bytes([7; 32])
    }

    #[test]
    fn minted_token_verifies_with_its_id_and_expiry() {
        let (minted, text) = key().mint(Duration::from_secs(60)).expect("mint");
        let verified = key().verify(&text, SystemTime::now()).expect("verify");
        assert_eq!(minted, verified);
    }

    #[test]
    fn expired_token_is_refused() {
        let (_, text) = key()
            .mint_until(SystemTime::now() - Duration::from_secs(1))
            .expect("mint");
        assert!(matches!(
            key().verify(&text, SystemTime::now()),
            Err(BridgeError::TokenExpired)
        ));
    }

    #[test]
    fn tampered_or_foreign_tokens_are_invalid() {
        let (_, text) = key().mint(Duration::from_secs(60)).expect("mint");
        let other = TokenKey::from_bytes([8; 32]);
        assert!(matches!(
            other.verify(&text, SystemTime::now()),
            Err(BridgeError::TokenInvalid)
        ));
        // Push the expiry forward: the MAC no longer matches.
        let mut bytes = text.into_bytes();
        let i = PREFIX.len() + 2 * ID_LEN + 2;
        bytes[i] = if bytes[i] == b'f' { b'e' } else { b'f' };
        let tampered = String::from_utf8(bytes).expect("ascii");
        assert!(matches!(
            key().verify(&tampered, SystemTime::now()),
            Err(BridgeError::TokenInvalid)
        ));
        for junk in ["", "vpe1.", "vpe1.zz", "hello"] {
            assert!(matches!(
                key().verify(junk, SystemTime::now()),
                Err(BridgeError::TokenInvalid)
            ));
        }
    }

    #[test]
    fn key_file_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token.key");
        let a = TokenKey::load_or_create(&path).expect("create");
        let b = TokenKey::load_or_create(&path).expect("load");
        assert_eq!(a.to_bytes(), b.to_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("token.key")],
            "no temporary left"
        );
    }

    #[test]
    fn racing_starts_agree_on_one_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token.key");
        let keys: Vec<[u8; 32]> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| TokenKey::load_or_create(&path).expect("key").to_bytes()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(keys.windows(2).all(|w| w[0] == w[1]), "one key for all");
    }
}
