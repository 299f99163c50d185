//! `vphonectl session ...`: list live sessions, end one.

use clap::Subcommand;
use sensor_proto::operator as op;
use serde::Serialize;

use super::print_json;
use crate::client::{CliError, Client};

#[derive(Debug, Subcommand)]
pub(crate) enum SessionCmd {
    /// List live sessions.
    List,
    /// End a session.
    Kick {
        /// Session id.
        id: String,
        /// Reason shown to the handset.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Debug, Serialize)]
struct SessionJson<'a> {
    id: &'a str,
    handset: &'a str,
    handset_fingerprint: &'a str,
    phone: &'a str,
    remote_addr: &'a str,
    started_at_unix_ms: u64,
    resumed_count: u32,
    bytes_up: u64,
    bytes_down: u64,
    frames_sent: u64,
    radio_lent: bool,
    rtt_us: u32,
}

impl<'a> From<&'a op::Session> for SessionJson<'a> {
    fn from(s: &'a op::Session) -> Self {
        Self {
            id: &s.id,
            handset: &s.handset_name,
            handset_fingerprint: &s.handset_fingerprint,
            phone: &s.phone,
            remote_addr: &s.remote_addr,
            started_at_unix_ms: s.started_at_unix_ms,
            resumed_count: s.resumed_count,
            bytes_up: s.bytes_up,
            bytes_down: s.bytes_down,
            frames_sent: s.frames_sent,
            radio_lent: s.radio_lent,
            rtt_us: s.rtt_us,
        }
    }
}

pub(crate) async fn run(c: &mut Client, cmd: SessionCmd, as_json: bool) -> Result<(), CliError> {
    match cmd {
        SessionCmd::List => {
            let ss = c
                .list_sessions(op::ListSessionsRequest {})
                .await?
                .into_inner()
                .sessions;
            if as_json {
                let v: Vec<SessionJson<'_>> = ss.iter().map(SessionJson::from).collect();
                return print_json(&v);
            }
            println!(
                "{:<26} {:<16} {:<16} {:<22} RADIO",
                "ID", "HANDSET", "PHONE", "REMOTE"
            );
            for s in &ss {
                println!(
                    "{:<26} {:<16} {:<16} {:<22} {}",
                    s.id,
                    s.handset_name,
                    s.phone,
                    s.remote_addr,
                    if s.radio_lent { "lent" } else { "-" }
                );
            }
            Ok(())
        }
        SessionCmd::Kick { id, reason } => {
            c.kick_session(op::KickSessionRequest {
                id: id.clone(),
                reason,
            })
            .await?;
            if !as_json {
                println!("ended session {id}");
            }
            Ok(())
        }
    }
}
