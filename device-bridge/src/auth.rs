//! Deciding who may open a session: the [`Authorizer`] trait the host
//! implements, and [`MemoryAuthorizer`], an in-memory implementation for
//! tests and demos.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use sensor_proto::bridge::{AppErrorCode, Hello, PhoneDisplay};

use crate::BridgeError;
use crate::identity::{Fingerprint, Pin};
use crate::token::{TokenId, TokenKey};

/// What the host knows about a handset that wants a session.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AuthRequest<'a> {
    /// The SPKI fingerprint of the handset's TLS client certificate (proven
    /// by the TLS handshake).
    pub handset: Fingerprint,
    /// The handset's `Hello` (enrollment token, name, requested phone, ...).
    pub hello: &'a Hello,
    /// Where the connection comes from.
    pub remote: SocketAddr,
    /// `Some(session id)` when the handset resumes an existing session (its
    /// certificate already matched that session's); the authorizer should
    /// then only check that the handset is still allowed (not revoked).
    pub resuming: Option<&'a str>,
}

impl<'a> AuthRequest<'a> {
    /// A request for a new session (not a resume).
    #[must_use]
    pub fn new(handset: Fingerprint, hello: &'a Hello, remote: SocketAddr) -> Self {
        Self {
            handset,
            hello,
            remote,
            resuming: None,
        }
    }
}

/// A successful authorization: which phone the session drives.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Authorized {
    /// The phone's name (`Welcome.phone_name`).
    pub phone_name: String,
    /// The phone's display (`Welcome.display`).
    pub display: PhoneDisplay,
    /// The name the host knows the handset by; when set it replaces the
    /// self-declared `Hello.handset_name` in the session
    /// ([`crate::ServerSession::hello`]).
    pub handset_name: Option<String>,
}

impl Authorized {
    /// A grant for `phone_name` with `display`.
    #[must_use]
    pub fn new(phone_name: impl Into<String>, display: PhoneDisplay) -> Self {
        Self {
            phone_name: phone_name.into(),
            display,
            handset_name: None,
        }
    }

    /// The same grant, naming the handset as the host knows it.
    #[must_use]
    pub fn with_handset_name(mut self, name: impl Into<String>) -> Self {
        self.handset_name = Some(name.into());
        self
    }
}

/// Why a handset is refused. Sent to the handset as the QUIC
/// CONNECTION_CLOSE application error code plus the reason text, which the
/// client surfaces as [`BridgeError::Refused`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The code (one of UNAUTHORIZED, REVOKED, TOKEN_*, PHONE_*,
    /// NOT_ASSIGNED, ...).
    pub code: AppErrorCode,
    /// Human-readable, shown to the handset's user; never secret.
    pub message: String,
}

impl Refusal {
    /// A refusal with `code` and `message`.
    #[must_use]
    pub fn new(code: AppErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl Refusal {
    /// Sends the handset to another host of the fleet: `to` runs the phone.
    /// The reason carries the target ahead of `message` (see
    /// [`Redirect::parse`]).
    #[must_use]
    pub fn redirect(to: &Redirect, message: impl fmt::Display) -> Self {
        Self {
            code: AppErrorCode::Redirect,
            message: format!("{}; {message}", to.encode()),
        }
    }
}

/// Where a redirect sends a handset: the host running its phone, the key
/// to pin there, and the host's name (for people).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// `host:port` to dial.
    pub addr: String,
    /// The key to pin there.
    pub pin: Pin,
    /// The host's name.
    pub host: String,
}

impl Redirect {
    fn encode(&self) -> String {
        format!(
            "redirect addr={} pin={} host={}",
            self.addr, self.pin, self.host
        )
    }

    /// Reads the target from a `REDIRECT` close reason
    /// (`redirect addr=A pin=P host=H; message`); `None` when it is not one.
    #[must_use]
    pub fn parse(reason: &str) -> Option<Self> {
        let head = reason.strip_prefix("redirect ")?;
        let head = head.split_once(';').map_or(head, |(h, _)| h);
        let (mut addr, mut pin, mut host) = (None, None, None);
        for field in head.split_whitespace() {
            match field.split_once('=')? {
                ("addr", v) if !v.is_empty() && v.len() <= 255 => addr = Some(v.to_owned()),
                ("pin", v) => pin = Some(v.parse::<Pin>().ok()?),
                ("host", v) if v.len() <= 63 => host = Some(v.to_owned()),
                _ => return None,
            }
        }
        Some(Self {
            addr: addr?,
            pin: pin?,
            host: host.unwrap_or_default(),
        })
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

/// The host's access policy, consulted for every new session and every
/// resume, before any session state exists.
///
/// Called on the runtime's blocking pool (never on a connection's task), so
/// it may consult storage; it runs for every connection attempt, strangers'
/// included, so keep each look-up indexed and short.
pub trait Authorizer: Send + Sync + 'static {
    /// Admits or refuses the handset.
    ///
    /// # Errors
    ///
    /// The [`Refusal`] to send to the handset.
    fn authorize(&self, request: &AuthRequest<'_>) -> Result<Authorized, Refusal>;
}

/// One enrolled handset in a [`MemoryAuthorizer`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandsetRecord {
    /// The handset's name from its enrolling `Hello`.
    pub name: String,
    /// True once revoked.
    pub revoked: bool,
    /// After this time the enrollment is no longer valid.
    pub expires_at: Option<SystemTime>,
}

#[derive(Debug, Default)]
struct MemoryState {
    handsets: HashMap<Fingerprint, HandsetRecord>,
    used_tokens: HashSet<TokenId>,
    phones: Vec<(String, PhoneDisplay)>,
}

/// An in-memory [`Authorizer`]: mints enrollment tokens, enrolls a handset
/// the first time it presents a valid token (recording its fingerprint),
/// refuses reused and expired tokens, supports revocation and enrollment
/// expiry, and hands out phones by name.
///
/// Phones: if none were added, every session gets a phone named `"sim"`
/// (1080x2400, 420 dpi). An empty `Hello.phone_name` picks the first phone;
/// an unknown name is refused with PHONE_NOT_FOUND. Busy tracking and
/// per-handset assignment are the real host's business.
#[derive(Debug)]
pub struct MemoryAuthorizer {
    key: TokenKey,
    state: Mutex<MemoryState>,
}

impl MemoryAuthorizer {
    /// An authorizer minting tokens with `key`.
    #[must_use]
    pub fn new(key: TokenKey) -> Self {
        Self {
            key,
            state: Mutex::new(MemoryState::default()),
        }
    }

    /// An authorizer with a fresh random token key.
    ///
    /// # Errors
    ///
    /// If the system RNG fails.
    pub fn generate() -> Result<Self, BridgeError> {
        TokenKey::generate().map(Self::new)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // A poisoned lock only means another thread panicked mid-update of
        // plain maps; the data is still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Mints a single-use enrollment token valid for `ttl`.
    ///
    /// # Errors
    ///
    /// If the system RNG fails.
    pub fn mint_token(&self, ttl: Duration) -> Result<String, BridgeError> {
        self.key.mint(ttl).map(|(_, text)| text)
    }

    /// Mints a token that expires at `expires_at` (may be in the past, for
    /// tests).
    ///
    /// # Errors
    ///
    /// If the system RNG fails.
    pub fn mint_token_until(&self, expires_at: SystemTime) -> Result<String, BridgeError> {
        self.key.mint_until(expires_at).map(|(_, text)| text)
    }

    /// Enrolls a handset directly (without a token).
    pub fn enroll(&self, handset: Fingerprint, name: impl Into<String>) {
        self.state().handsets.insert(
            handset,
            HandsetRecord {
                name: name.into(),
                revoked: false,
                expires_at: None,
            },
        );
    }

    /// Revokes a handset: its next connection or resume is refused with
    /// REVOKED. Returns false if it was not enrolled.
    pub fn revoke(&self, handset: Fingerprint) -> bool {
        self.state()
            .handsets
            .get_mut(&handset)
            .map(|r| r.revoked = true)
            .is_some()
    }

    /// Sets when a handset's enrollment expires. Returns false if it was not
    /// enrolled.
    pub fn set_expiry(&self, handset: Fingerprint, expires_at: SystemTime) -> bool {
        self.state()
            .handsets
            .get_mut(&handset)
            .map(|r| r.expires_at = Some(expires_at))
            .is_some()
    }

    /// The record of an enrolled handset.
    #[must_use]
    pub fn handset(&self, handset: &Fingerprint) -> Option<HandsetRecord> {
        self.state().handsets.get(handset).cloned()
    }

    /// Adds a phone sessions can drive.
    pub fn add_phone(&self, name: impl Into<String>, display: PhoneDisplay) {
        self.state().phones.push((name.into(), display));
    }

    fn pick_phone(state: &MemoryState, wanted: &str) -> Result<Authorized, Refusal> {
        if state.phones.is_empty() {
            let display = PhoneDisplay {
                width_px: 1080,
                height_px: 2400,
                density_dpi: 420,
            };
            return match wanted {
                "" | "sim" => Ok(Authorized::new("sim", display)),
                other => Err(Refusal::new(
                    AppErrorCode::PhoneNotFound,
                    format!("no phone named {other:?}"),
                )),
            };
        }
        let found = if wanted.is_empty() {
            state.phones.first()
        } else {
            state.phones.iter().find(|(name, _)| name == wanted)
        };
        found
            .map(|(name, display)| Authorized::new(name.clone(), *display))
            .ok_or_else(|| {
                Refusal::new(
                    AppErrorCode::PhoneNotFound,
                    format!("no phone named {wanted:?}"),
                )
            })
    }
}

impl Authorizer for MemoryAuthorizer {
    fn authorize(&self, request: &AuthRequest<'_>) -> Result<Authorized, Refusal> {
        let now = SystemTime::now();
        let mut state = self.state();
        match state.handsets.get(&request.handset) {
            Some(record) if record.revoked => {
                return Err(Refusal::new(
                    AppErrorCode::Revoked,
                    "this handset has been revoked by the operator",
                ));
            }
            Some(record) if record.expires_at.is_some_and(|t| now >= t) => {
                return Err(Refusal::new(
                    AppErrorCode::Unauthorized,
                    "this handset's enrollment has expired; enroll again",
                ));
            }
            Some(_) => {}
            None => {
                let Some(token) = request.hello.enrollment_token.as_deref() else {
                    return Err(Refusal::new(
                        AppErrorCode::Unauthorized,
                        "unknown handset: enroll it with a token first",
                    ));
                };
                let verified = self.key.verify(token, now).map_err(|e| match e {
                    BridgeError::TokenExpired => Refusal::new(
                        AppErrorCode::TokenExpired,
                        "the enrollment token has expired; ask for a new one",
                    ),
                    _ => Refusal::new(
                        AppErrorCode::TokenInvalid,
                        "the enrollment token is not valid for this host",
                    ),
                })?;
                if !state.used_tokens.insert(verified.id) {
                    return Err(Refusal::new(
                        AppErrorCode::TokenReused,
                        "the enrollment token was already used",
                    ));
                }
                state.handsets.insert(
                    request.handset,
                    HandsetRecord {
                        name: request.hello.handset_name.clone(),
                        revoked: false,
                        expires_at: None,
                    },
                );
                tracing::info!(handset = %request.handset, token = %verified.id, "handset enrolled");
            }
        }
        Self::pick_phone(&state, &request.hello.phone_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(fp: Fingerprint, hello: &'a Hello) -> AuthRequest<'a> {
        AuthRequest {
            handset: fp,
            hello,
            remote: SocketAddr::from(([127, 0, 0, 1], 1)),
            resuming: None,
        }
    }

    fn code(r: Result<Authorized, Refusal>) -> AppErrorCode {
        r.err().map_or(AppErrorCode::NoError, |r| r.code)
    }

    #[test]
    fn token_enrolls_once_then_certificate_suffices() {
        let auth = MemoryAuthorizer::generate().expect("auth");
        let a = Fingerprint::of_spki(b"a");
        let b = Fingerprint::of_spki(b"b");
        let token = auth.mint_token(Duration::from_secs(60)).expect("mint");
        let with_token = Hello {
            enrollment_token: Some(token),
            ..Hello::default()
        };
        assert_eq!(
            code(auth.authorize(&req(a, &Hello::default()))),
            AppErrorCode::Unauthorized
        );
        assert!(auth.authorize(&req(a, &with_token)).is_ok());
        assert!(auth.authorize(&req(a, &Hello::default())).is_ok());
        assert_eq!(
            code(auth.authorize(&req(b, &with_token))),
            AppErrorCode::TokenReused
        );
        assert!(auth.revoke(a));
        assert_eq!(
            code(auth.authorize(&req(a, &Hello::default()))),
            AppErrorCode::Revoked
        );
    }

    #[test]
    fn phones_are_found_by_name() {
        let auth = MemoryAuthorizer::generate().expect("auth");
        let a = Fingerprint::of_spki(b"a");
        auth.enroll(a, "a");
        auth.add_phone("p1", PhoneDisplay::default());
        let hello = Hello {
            phone_name: "nope".into(),
            ..Hello::default()
        };
        assert_eq!(
            code(auth.authorize(&req(a, &hello))),
            AppErrorCode::PhoneNotFound
        );
        let granted = auth.authorize(&req(a, &Hello::default())).expect("ok");
        assert_eq!(granted.phone_name, "p1");
    }
}
