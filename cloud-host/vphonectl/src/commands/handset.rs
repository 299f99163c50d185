//! `vphonectl handset ...`: enroll (a single-use string and its QR code),
//! list, revoke.

use clap::Subcommand;
use sensor_proto::operator as op;
use serde::Serialize;

use super::{enum_name, print_json};
use crate::client::{CliError, Client};

#[derive(Debug, Subcommand)]
pub(crate) enum HandsetCmd {
    /// Create a single-use enrollment string (and QR code) for a new handset.
    Enroll {
        /// Name the handset will have.
        #[arg(long)]
        name: Option<String>,
        /// A phone it may use (repeat for several). Required unless
        /// --all-phones.
        #[arg(long = "phone", required_unless_present = "all_phones")]
        phones: Vec<String>,
        /// Grant every phone on the host, present and future.
        #[arg(long, conflicts_with = "phones")]
        all_phones: bool,
        /// How long the enrollment string stays valid, in seconds.
        #[arg(long, default_value_t = 600)]
        ttl: u32,
        /// Print only the enrollment string.
        #[arg(long, short)]
        quiet: bool,
        /// Enroll a phone's browser instead: print a link (and its QR code)
        /// to open on the phone; the page keeps a key of its own and later
        /// visits are recognised like any enrolled handset.
        #[arg(long)]
        web: bool,
    },
    /// List handsets.
    List {
        /// Include revoked handsets.
        #[arg(long)]
        all: bool,
    },
    /// Revoke a handset (by name or fingerprint prefix); its sessions end.
    Revoke {
        /// Handset name or fingerprint (prefix of at least 6 characters).
        handset: String,
    },
}

#[derive(Debug, Serialize)]
struct EnrollmentJson<'a> {
    enrollment: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    web_link: &'a str,
    expires_at_unix_ms: u64,
    host_pin: &'a str,
}

#[derive(Debug, Serialize)]
struct HandsetJson<'a> {
    name: &'a str,
    fingerprint: &'a str,
    state: String,
    allowed_phones: &'a [String],
    all_phones: bool,
    enrolled_at_unix_ms: u64,
    last_seen_unix_ms: u64,
}

fn state_name(h: &op::Handset) -> String {
    enum_name(
        op::HandsetState::try_from(h.state)
            .unwrap_or_default()
            .as_str_name(),
        "HANDSET_STATE_",
    )
}

impl<'a> From<&'a op::Handset> for HandsetJson<'a> {
    fn from(h: &'a op::Handset) -> Self {
        Self {
            name: &h.name,
            fingerprint: &h.fingerprint,
            state: state_name(h),
            allowed_phones: &h.allowed_phones,
            all_phones: h.all_phones,
            enrolled_at_unix_ms: h.enrolled_at_unix_ms,
            last_seen_unix_ms: h.last_seen_unix_ms,
        }
    }
}

/// The enrollment string as a terminal QR code (light on dark), for the
/// handset's camera.
fn qr(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .build(),
    )
}

pub(crate) async fn run(c: &mut Client, cmd: HandsetCmd, as_json: bool) -> Result<(), CliError> {
    match cmd {
        HandsetCmd::Enroll {
            name,
            phones,
            all_phones,
            ttl,
            quiet,
            web,
        } => {
            let grants = if all_phones {
                "every phone on this host, present and future".to_owned()
            } else {
                phones.join(", ")
            };
            let r = c
                .enroll_handset(op::EnrollHandsetRequest {
                    name,
                    allowed_phones: phones,
                    ttl_seconds: ttl,
                    all_phones,
                })
                .await?
                .into_inner();
            if web && r.web_link.is_empty() {
                return Err(CliError::new(
                    crate::client::EXIT_FAIL,
                    "this host does not serve browser handsets (it runs with --no-web or \
                     VPHONE_WEB=0); the token minted for this request stays unused and expires on its own",
                ));
            }
            let shown = if web { &r.web_link } else { &r.enrollment };
            if quiet {
                println!("{shown}");
            } else if as_json {
                print_json(&EnrollmentJson {
                    enrollment: &r.enrollment,
                    web_link: &r.web_link,
                    expires_at_unix_ms: r.expires_at_unix_ms,
                    host_pin: &r.host_pin,
                })?;
            } else {
                println!("{shown}");
                if let Some(code) = qr(shown) {
                    println!("{code}");
                }
                println!("Grants: {grants}.");
                if web {
                    println!(
                        "Single use, valid for {ttl}s. Open the link on the phone (or scan the \
                         code) in Chrome, Edge or Firefox; the page keeps its own key, so later \
                         visits need no link."
                    );
                } else {
                    println!(
                        "Single use, valid for {ttl}s. On the handset: vphone-companion enroll '<the string above>'"
                    );
                }
            }
            Ok(())
        }
        HandsetCmd::List { all } => {
            let hs = c
                .list_handsets(op::ListHandsetsRequest {
                    include_revoked: all,
                })
                .await?
                .into_inner()
                .handsets;
            if as_json {
                let v: Vec<HandsetJson<'_>> = hs.iter().map(HandsetJson::from).collect();
                return print_json(&v);
            }
            println!("{:<20} {:<9} {:<18} PHONES", "NAME", "STATE", "FINGERPRINT");
            for h in &hs {
                println!(
                    "{:<20} {:<9} {:<18} {}",
                    h.name,
                    state_name(h),
                    h.fingerprint.chars().take(16).collect::<String>(),
                    if h.all_phones {
                        "(every phone)".to_owned()
                    } else if h.allowed_phones.is_empty() {
                        "(none)".to_owned()
                    } else {
                        h.allowed_phones.join(",")
                    }
                );
            }
            Ok(())
        }
        HandsetCmd::Revoke { handset } => {
            let h = c
                .revoke_handset(op::RevokeHandsetRequest { handset })
                .await?
                .into_inner();
            if !as_json {
                println!("revoked handset '{}' ({})", h.name, h.fingerprint);
            }
            Ok(())
        }
    }
}
