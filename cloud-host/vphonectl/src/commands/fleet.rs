//! `vphonectl fleet`, `vphonectl host drain`, `vphonectl phone move`: the
//! hosts sharing this host's registry and where each phone runs.

use clap::Subcommand;
use sensor_proto::operator as op;
use serde::Serialize;

use super::{enum_name, print_json};
use crate::client::{CliError, Client};

#[derive(Debug, Subcommand)]
pub(crate) enum HostCmd {
    /// Drain a host: it gives its phones up (their sessions end cleanly and
    /// other hosts claim them) and claims none, until --undo.
    Drain {
        /// Host name (see `vphonectl fleet`).
        name: String,
        /// End the drain: the host claims phones again.
        #[arg(long)]
        undo: bool,
    },
    /// Remove a host that is gone from the fleet's list: a gateway replica
    /// whose node died, a host retired for good. Refused while it is alive
    /// or still holds a phone's lease.
    Forget {
        /// Host name (see `vphonectl fleet`).
        name: String,
    },
}

#[derive(Debug, Serialize)]
struct HostJson<'a> {
    name: &'a str,
    addr: &'a str,
    alive: bool,
    draining: bool,
    stopped: bool,
    capacity: u32,
    phones: u32,
    sessions: u32,
    labels: &'a str,
    heartbeat_age_ms: u64,
}

impl<'a> From<&'a op::FleetHost> for HostJson<'a> {
    fn from(h: &'a op::FleetHost) -> Self {
        Self {
            name: &h.name,
            addr: &h.addr,
            alive: h.alive,
            draining: h.draining,
            stopped: h.stopped,
            capacity: h.capacity,
            phones: h.phones,
            sessions: h.sessions,
            labels: &h.labels,
            heartbeat_age_ms: h.heartbeat_age_ms,
        }
    }
}

#[derive(Debug, Serialize)]
struct PhoneJson<'a> {
    name: &'a str,
    desired_state: String,
    host: Option<&'a str>,
    lease: &'a str,
    generation: u64,
    expires_in_ms: u64,
    labels: &'a str,
    wanted_host: Option<&'a str>,
}

impl<'a> From<&'a op::FleetPhone> for PhoneJson<'a> {
    fn from(p: &'a op::FleetPhone) -> Self {
        Self {
            name: &p.name,
            desired_state: desired(p),
            host: (!p.host.is_empty()).then_some(p.host.as_str()),
            lease: &p.lease,
            generation: p.generation,
            expires_in_ms: p.expires_in_ms,
            labels: &p.labels,
            wanted_host: (!p.wanted_host.is_empty()).then_some(p.wanted_host.as_str()),
        }
    }
}

#[derive(Debug, Serialize)]
struct FleetJson<'a> {
    registry: &'a str,
    answered_by: &'a str,
    lease_ms: u64,
    hosts: Vec<HostJson<'a>>,
    phones: Vec<PhoneJson<'a>>,
}

fn desired(p: &op::FleetPhone) -> String {
    enum_name(
        op::DesiredState::try_from(p.desired_state)
            .unwrap_or_default()
            .as_str_name(),
        "DESIRED_STATE_",
    )
}

fn host_state(h: &op::FleetHost) -> &'static str {
    if h.stopped {
        "stopped"
    } else if !h.alive {
        "lost"
    } else if h.draining {
        "draining"
    } else {
        "up"
    }
}

fn capacity(c: u32) -> String {
    if c == u32::MAX {
        "-".to_owned()
    } else {
        c.to_string()
    }
}

/// `vphonectl fleet`.
pub(crate) async fn show(c: &mut Client, as_json: bool) -> Result<(), CliError> {
    let f = c.get_fleet(op::GetFleetRequest {}).await?.into_inner();
    if as_json {
        return print_json(&FleetJson {
            registry: &f.registry,
            answered_by: &f.answered_by,
            lease_ms: f.lease_ms,
            hosts: f.hosts.iter().map(HostJson::from).collect(),
            phones: f.phones.iter().map(PhoneJson::from).collect(),
        });
    }
    println!(
        "registry {} (asked {}; leases {} s)",
        f.registry,
        f.answered_by,
        f.lease_ms / 1000
    );
    println!();
    println!(
        "{:<20} {:<9} {:>6} {:>8} {:>8} {:>9}  {:<22} LABELS",
        "HOST", "STATE", "PHONES", "CAPACITY", "SESSIONS", "HEARTBEAT", "ADDRESS"
    );
    for h in &f.hosts {
        println!(
            "{:<20} {:<9} {:>6} {:>8} {:>8} {:>8.1}s  {:<22} {}",
            h.name,
            host_state(h),
            h.phones,
            capacity(h.capacity),
            h.sessions,
            h.heartbeat_age_ms as f64 / 1000.0,
            h.addr,
            h.labels
        );
    }
    println!();
    println!(
        "{:<20} {:<8} {:<20} {:<9} {:>10} {:>8}  PLACEMENT",
        "PHONE", "DESIRED", "HOST", "LEASE", "GENERATION", "EXPIRES"
    );
    for p in &f.phones {
        let placement = match (p.labels.is_empty(), p.wanted_host.is_empty()) {
            (true, true) => "-".to_owned(),
            (false, true) => p.labels.clone(),
            (true, false) => format!("moved to {}", p.wanted_host),
            (false, false) => format!("{}; moved to {}", p.labels, p.wanted_host),
        };
        println!(
            "{:<20} {:<8} {:<20} {:<9} {:>10} {:>7.1}s  {}",
            p.name,
            desired(p),
            if p.host.is_empty() { "-" } else { &p.host },
            p.lease,
            p.generation,
            p.expires_in_ms as f64 / 1000.0,
            placement
        );
    }
    Ok(())
}

/// `vphonectl host ...`.
pub(crate) async fn host(c: &mut Client, cmd: HostCmd, as_json: bool) -> Result<(), CliError> {
    match cmd {
        HostCmd::Drain { name, undo } => {
            let h = c
                .drain_host(op::DrainHostRequest { name, undo })
                .await?
                .into_inner();
            if as_json {
                return print_json(&HostJson::from(&h));
            }
            if undo {
                println!("host '{}' claims phones again", h.name);
            } else {
                println!(
                    "host '{}' is draining: its {} phone(s) move to other hosts within a lease \
                     round; `vphonectl fleet` shows where",
                    h.name, h.phones
                );
            }
            Ok(())
        }
        HostCmd::Forget { name } => {
            c.forget_host(op::ForgetHostRequest { name: name.clone() })
                .await?;
            if as_json {
                return print_json(&serde_json::json!({ "forgotten": name }));
            }
            println!("host '{name}' is no longer in the fleet's list");
            Ok(())
        }
    }
}

/// `vphonectl phone move NAME --to HOST`.
pub(crate) async fn move_phone(
    c: &mut Client,
    name: String,
    to: Option<String>,
    as_json: bool,
) -> Result<(), CliError> {
    let p = c
        .move_phone(op::MovePhoneRequest {
            name,
            to_host: to.clone().unwrap_or_default(),
        })
        .await?
        .into_inner();
    if as_json {
        return print_json(&PhoneJson::from(&p));
    }
    match to {
        Some(host) => println!(
            "phone '{}' moves to host '{host}' (now on {}) within a lease round; its session \
             there ends",
            p.name,
            if p.host.is_empty() {
                "no host"
            } else {
                &p.host
            }
        ),
        None => println!("phone '{}' may run on any host again", p.name),
    }
    Ok(())
}
