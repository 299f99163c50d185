//! Who may open a session: the registry-backed [`device_bridge::Authorizer`].
//!
//! A handset is admitted when its certificate fingerprint is enrolled and not
//! revoked, or when it presents a valid, unused, unexpired enrollment token
//! (which enrolls it, atomically, in the same step). It then gets the phone
//! it asked for, if it may use it, or the first phone it may use.

use std::sync::Arc;
use std::time::SystemTime;

use device_bridge::{AuthRequest, Authorized, Authorizer, Refusal, TokenKey};
use sensor_proto::bridge::{AppErrorCode, PhoneDisplay};

use crate::HostError;
use crate::registry::{HandsetRecord, HandsetState, Registry};

/// Admits handsets by the registry.
#[derive(Debug)]
pub struct RegistryAuthorizer {
    registry: Arc<Registry>,
    key: TokenKey,
    sessions: Arc<crate::router::Sessions>,
}

impl RegistryAuthorizer {
    /// An authorizer over `registry`, verifying tokens with `key`; a phone
    /// with a live session in `sessions` is busy.
    pub fn new(
        registry: Arc<Registry>,
        key: TokenKey,
        sessions: Arc<crate::router::Sessions>,
    ) -> Self {
        Self {
            registry,
            key,
            sessions,
        }
    }

    fn handset(&self, req: &AuthRequest<'_>, fp: &str) -> Result<HandsetRecord, Refusal> {
        let internal = |e: HostError| {
            Refusal::new(
                AppErrorCode::InternalError,
                format!("host registry error: {e}"),
            )
        };
        match self.registry.handset(fp).map_err(internal)? {
            Some(h) if h.state == HandsetState::Revoked => Err(Refusal::new(
                AppErrorCode::Revoked,
                "this handset was revoked by the host's operator; ask them for a new enrollment string",
            )),
            Some(h) => Ok(h),
            None if req.resuming.is_some() => Err(Refusal::new(
                AppErrorCode::Revoked,
                "this handset is no longer enrolled",
            )),
            None => {
                let Some(token) = req
                    .hello
                    .enrollment_token
                    .as_deref()
                    .filter(|t| !t.is_empty())
                else {
                    return Err(Refusal::new(
                        AppErrorCode::Unauthorized,
                        "this handset is not enrolled on this host; enroll it with a string from `vphonectl handset enroll`",
                    ));
                };
                let verified = self.key.verify(token, SystemTime::now()).map_err(|e| {
                    Refusal::new(e.app_error_code(), format!("enrollment refused: {e}"))
                })?;
                let now = crate::unix_ms();
                let name = if req.hello.handset_name.is_empty() {
                    "handset"
                } else {
                    &req.hello.handset_name
                };
                self.registry
                    .enroll_with_token(&verified.id.to_string(), fp, name, now)
                    .map_err(|e| match e {
                        HostError::Invalid { .. } => Refusal::new(
                            AppErrorCode::MalformedMessage,
                            format!(
                                "enrollment refused: {e}; rename the handset \
                                 (vphone-companion enroll --name NAME)"
                            ),
                        ),
                        HostError::Token(why) => Refusal::new(
                            match why {
                                "was already used" => AppErrorCode::TokenReused,
                                "has expired" => AppErrorCode::TokenExpired,
                                _ => AppErrorCode::TokenInvalid,
                            },
                            format!("enrollment token {why}; ask the operator for a new one"),
                        ),
                        other => internal(other),
                    })
            }
        }
    }
}

impl Authorizer for RegistryAuthorizer {
    fn authorize(&self, req: &AuthRequest<'_>) -> Result<Authorized, Refusal> {
        let fp = req.handset.to_string();
        let handset = self.handset(req, &fp)?;
        let now = crate::unix_ms();
        if let Err(e) = self.registry.touch_handset(&fp, now) {
            // The handset is admitted all the same: last-seen is bookkeeping.
            tracing::error!(error = %e, "the registry could not record when this handset was last seen");
        }
        let phones = self.registry.phones().map_err(|e| {
            Refusal::new(
                AppErrorCode::InternalError,
                format!("host registry error: {e}"),
            )
        })?;
        let wanted = req.hello.phone_name.as_str();
        let phone = if wanted.is_empty() {
            phones
                .iter()
                .find(|p| handset.may_use(&p.name))
                .ok_or_else(|| {
                    Refusal::new(
                        AppErrorCode::NotAssigned,
                        "no phone on this host is assigned to this handset",
                    )
                })?
        } else {
            let p = phones.iter().find(|p| p.name == wanted).ok_or_else(|| {
                Refusal::new(
                    AppErrorCode::PhoneNotFound,
                    format!("phone '{wanted}' does not exist on this host"),
                )
            })?;
            if !handset.may_use(&p.name) {
                return Err(Refusal::new(
                    AppErrorCode::NotAssigned,
                    format!("phone '{wanted}' is not assigned to this handset"),
                ));
            }
            p
        };
        // One handset per phone: refuse here, during the handshake, so the
        // handset gets PHONE_BUSY with the reason (a resume is the same
        // session and passes; a new connection of the same handset replaces
        // its old session).
        if let Err(busy) = self
            .sessions
            .check_handshake(&phone.name, &fp, req.resuming.is_some())
        {
            // Who holds it is another tenant's business: logged, not told.
            tracing::info!(
                phone = %phone.name,
                holder = %busy.holder_name,
                "phone busy: refusing a second handset"
            );
            return Err(Refusal::new(
                AppErrorCode::PhoneBusy,
                format!(
                    "phone '{}' is in use by another handset; try again when it is free",
                    phone.name
                ),
            ));
        }
        // The session shows the registry's name, never the one the
        // handset declares in its Hello.
        Ok(Authorized::new(
            phone.name.clone(),
            PhoneDisplay {
                width_px: phone.width,
                height_px: phone.height,
                density_dpi: phone.dpi,
            },
        )
        .with_handset_name(handset.name))
    }
}
