//! Who may open a session: the registry-backed [`device_bridge::Authorizer`].
//!
//! A handset is admitted when its certificate fingerprint is enrolled and not
//! revoked, or when it presents a valid, unused, unexpired enrollment token
//! (which enrolls it, atomically, in the same step). It then gets the phone
//! it asked for, if it may use it, or the first phone it may use. A phone
//! whose lease another live host of the fleet holds is not served here: the
//! handset is redirected there (the front door).

use std::sync::Arc;
use std::time::SystemTime;

use device_bridge::{AuthRequest, Authorized, Authorizer, Refusal, TokenKey};
use sensor_proto::bridge::{AppErrorCode, PhoneDisplay};

use crate::HostError;
use crate::registry::{HandsetRecord, HandsetState, Registry};

/// Where a phone runs, for the front door.
enum Whereabouts {
    /// Served here.
    Here,
    /// On another live host.
    Elsewhere(device_bridge::Redirect),
    /// Between hosts: wanted running, no live lease.
    Moving,
}

/// Admits handsets by the registry.
#[derive(Debug)]
pub struct RegistryAuthorizer {
    registry: Arc<Registry>,
    key: TokenKey,
    sessions: Arc<crate::router::Sessions>,
    /// This host's name and the fleet's lease length.
    fleet: Option<(String, std::time::Duration)>,
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
            fleet: None,
        }
    }

    /// Redirects handsets to the host holding their phone's lease when it
    /// is not `host` (leases last `lease`).
    #[must_use]
    pub fn with_fleet(mut self, host: String, lease: std::time::Duration) -> Self {
        self.fleet = Some((host, lease));
        self
    }

    /// Where `phone` runs: here (or nowhere, as one host has it), on
    /// another live host (the redirect to it), or between hosts (its lease
    /// released or run out while it is wanted running: the next host is
    /// about to claim it).
    fn whereabouts(&self, phone: &crate::registry::PhoneRecord) -> Result<Whereabouts, HostError> {
        let Some((me, lease)) = &self.fleet else {
            return Ok(Whereabouts::Here);
        };
        let now = crate::unix_ms();
        let moving = phone.desired == crate::registry::DesiredState::Running;
        let Some(l) = self.registry.lease(&phone.name)? else {
            // Never leased: waiting for a host with room, or stopped.
            return Ok(if moving {
                Whereabouts::Moving
            } else {
                Whereabouts::Here
            });
        };
        if &l.host == me && l.expires_at_ms > now {
            return Ok(Whereabouts::Here);
        }
        if l.expires_at_ms <= now {
            return Ok(if moving {
                Whereabouts::Moving
            } else {
                Whereabouts::Here
            });
        }
        let holder = match self.registry.host(&l.host) {
            Ok(h) => Some(h),
            // Its record is gone (forgotten): as good as dead here.
            Err(HostError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let ttl = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let Some(holder) = holder.filter(|h| h.alive(now, ttl)) else {
            return Ok(if moving {
                Whereabouts::Moving
            } else {
                Whereabouts::Here
            });
        };
        let pin = holder.pin.parse().map_err(|_| HostError::Internal {
            what: "registry",
            why: format!("host '{}' has an unreadable pin", holder.name),
        })?;
        Ok(Whereabouts::Elsewhere(device_bridge::Redirect {
            addr: holder.addr,
            pin,
            host: holder.name,
        }))
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
        let registry_error = |e: HostError| {
            Refusal::new(
                AppErrorCode::InternalError,
                format!("host registry error: {e}"),
            )
        };
        let wanted = req.hello.phone_name.as_str();
        let phone = if wanted.is_empty() {
            self.registry
                .phones()
                .map_err(registry_error)?
                .into_iter()
                .find(|p| handset.may_use(&p.name))
                .ok_or_else(|| {
                    Refusal::new(
                        AppErrorCode::NotAssigned,
                        "no phone on this host is assigned to this handset",
                    )
                })?
        } else {
            // One primary-key look-up, not the whole phone table.
            let p = match self.registry.phone(wanted) {
                Ok(p) => p,
                Err(HostError::NotFound { .. }) => {
                    return Err(Refusal::new(
                        AppErrorCode::PhoneNotFound,
                        format!("phone '{wanted}' does not exist on this host"),
                    ));
                }
                Err(e) => return Err(registry_error(e)),
            };
            if !handset.may_use(&p.name) {
                return Err(Refusal::new(
                    AppErrorCode::NotAssigned,
                    format!("phone '{wanted}' is not assigned to this handset"),
                ));
            }
            p
        };
        // The front door: a phone another host runs is served there.
        match self.whereabouts(&phone) {
            Ok(Whereabouts::Elsewhere(to)) => {
                tracing::info!(phone = %phone.name, host = %to.host, "redirecting the handset to the phone's host");
                return Err(Refusal::redirect(
                    &to,
                    format!("phone '{}' runs on host '{}'", phone.name, to.host),
                ));
            }
            // Refused during the handshake with a code handsets retry
            // after, not admitted into a session that ends at once.
            Ok(Whereabouts::Moving) => {
                return Err(Refusal::new(
                    AppErrorCode::PhoneStopped,
                    format!(
                        "phone '{}' is moving between hosts; try again in a few seconds",
                        phone.name
                    ),
                ));
            }
            Ok(Whereabouts::Here) => {}
            Err(e) => {
                return Err(Refusal::new(
                    AppErrorCode::InternalError,
                    format!("host registry error: {e}"),
                ));
            }
        }
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
