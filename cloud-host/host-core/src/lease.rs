//! Running phones under leases: what a host does each lease round.
//!
//! Every phone a host runs is leased to it in the registry (one host alone
//! on SQLite leases all its phones; hosts sharing PostgreSQL share them
//! out). The phone actor ([`crate::phones`]) starts a phone only once it
//! holds its lease and stops it when the lease is lost. The round itself
//! (heartbeat, renewal, claims, releases) runs off the actor, on a blocking
//! thread, so a registry that stops answering never holds the actor: the
//! actor checks the renewal deadline on its own timer and stops every phone
//! before another host may claim it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::HostError;
use crate::registry::{Labels, Lease, PhoneRecord, Registry};

/// How this host takes part in leasing.
#[derive(Clone)]
pub struct FleetConfig {
    /// The host's name in the registry.
    pub host: String,
    /// The most phones it runs.
    pub capacity: u32,
    /// What it offers phones that ask for labels.
    pub labels: Labels,
    /// How long a lease lasts unless renewed; rounds run every quarter of it.
    pub lease: Duration,
    /// Live sessions now, reported in the heartbeat.
    pub load: Arc<dyn Fn() -> u32 + Send + Sync>,
    /// The address handsets dial and the identity pin it registers with,
    /// to register again if its host record went missing.
    pub addr: String,
    /// See [`FleetConfig::addr`].
    pub pin: String,
}

impl std::fmt::Debug for FleetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetConfig")
            .field("host", &self.host)
            .field("capacity", &self.capacity)
            .field("labels", &self.labels.to_string())
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// The default lease: long against clock skew and a registry's hiccup,
/// short against the time a dead host's phones stay down.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

impl FleetConfig {
    /// One host on its own: every phone, no labels, the default lease.
    #[must_use]
    pub fn single(host: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            capacity: u32::MAX,
            labels: Labels::default(),
            lease: DEFAULT_LEASE,
            load: Arc::new(|| 0),
            addr: String::new(),
            pin: String::new(),
        }
    }

    /// A round's length: a quarter of the lease.
    #[must_use]
    pub fn round(&self) -> Duration {
        self.lease / 4
    }

    /// The longest one registry call of this host waits
    /// ([`call_timeout`]).
    #[must_use]
    pub fn call_timeout(&self) -> Duration {
        call_timeout(self.lease)
    }

    /// How long after a renewal was sent the host still serves its phones
    /// without another: the lease less a fifth (the margin for clock skew
    /// between hosts and for stopping) and less four registry calls (the
    /// most a command blocks the phone actor, whose timer enforces it).
    #[must_use]
    pub fn serve_for(&self) -> Duration {
        self.lease
            .saturating_sub(self.lease / 5)
            .saturating_sub(self.call_timeout() * 4)
    }

    /// Whether this host may run a phone asking for `labels` that the
    /// operator moved to `wanted`: it offers the labels, and the phone is
    /// not moved to another host that takes phones (`accepting`).
    pub fn may_run(
        &self,
        labels: &Labels,
        wanted: Option<&str>,
        accepting: impl Fn(&str) -> bool,
    ) -> bool {
        self.labels.satisfy(labels) && !wanted.is_some_and(|w| w != self.host && accepting(w))
    }

    /// This host's record as it registers, starting at `now_ms`: at start
    /// and again when its record went missing.
    #[must_use]
    pub fn registration(&self, now_ms: i64) -> crate::registry::HostRecord {
        crate::registry::HostRecord {
            name: self.host.clone(),
            addr: self.addr.clone(),
            pin: self.pin.clone(),
            capacity: self.capacity,
            labels: self.labels.clone(),
            draining: false,
            stopped: false,
            sessions: (self.load)(),
            started_at_ms: now_ms,
            heartbeat_ms: now_ms,
        }
    }

    /// The lease length in ms.
    #[must_use]
    pub fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX)
    }
}

/// The longest one registry call of a host with leases of `lease` waits: a
/// twentieth of it, at least 250 ms (500 ms for the default 10 s).
#[must_use]
pub fn call_timeout(lease: Duration) -> Duration {
    (lease / 20).max(Duration::from_millis(250))
}

/// What the actor hands a round.
#[derive(Debug)]
pub struct RoundInput {
    /// Leases to release (their phones have stopped).
    pub release: Vec<Lease>,
    /// The leases the actor holds: (phone, generation). Only these are
    /// renewed.
    pub held: Vec<(String, i64)>,
    /// The wall clock when the round began: a lease of this host claimed
    /// before it and not held is an orphan, released.
    pub began_ms: i64,
    /// Whether the host was draining at the last heartbeat (kept when a
    /// heartbeat fails).
    pub draining: bool,
}

/// What a round found.
#[derive(Debug, Default)]
pub struct RoundResult {
    /// Every phone in the registry (`None`: the read failed).
    pub records: Option<Vec<PhoneRecord>>,
    /// The leases held after renewal (`None`: renewal failed; the actor's
    /// deadline decides).
    pub renewed: Option<BTreeMap<String, Lease>>,
    /// Newly claimed leases.
    pub claimed: Vec<Lease>,
    /// Held phones to stop and then release: the host drains, or the
    /// operator moved them elsewhere.
    pub give_up: BTreeSet<String>,
    /// Whether the operator drains this host (`None`: the heartbeat
    /// failed; the last answer stands).
    pub draining: Option<bool>,
}

/// One round: heartbeat, releases, renewal, then claims up to capacity.
/// Runs on a blocking thread.
pub fn run_round(registry: &Registry, cfg: &FleetConfig, input: RoundInput) -> RoundResult {
    let mut out = RoundResult::default();
    let now = crate::unix_ms();
    let ttl = cfg.lease_ms();
    let draining = match registry.host_heartbeat(&cfg.host, now, (cfg.load)()) {
        Ok(h) => {
            out.draining = Some(h.draining);
            h.draining
        }
        Err(HostError::NotFound { .. }) if !cfg.pin.is_empty() => {
            // Forgotten by an operator while cut off from the registry, or
            // removed by a namesake's clean stop: without a record no front
            // door can send handsets here, so register again.
            tracing::warn!(
                "lease round: this host is not in the registry's host list; registering again"
            );
            match registry.register_host(&cfg.registration(now)) {
                Ok(()) => {
                    out.draining = Some(false);
                    false
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lease round: registering again failed");
                    input.draining
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "lease round: heartbeat failed");
            input.draining
        }
    };
    for lease in &input.release {
        match registry.release(lease, now) {
            Ok(true) => tracing::info!(phone = %lease.phone, "lease released"),
            Ok(false) => {}
            Err(e) => tracing::warn!(phone = %lease.phone, error = %e, "lease release failed"),
        }
    }
    let renewed = match registry.renew(&cfg.host, &input.held, now, ttl, input.began_ms) {
        Ok(leases) => leases
            .into_iter()
            .map(|l| (l.phone.clone(), l))
            .collect::<BTreeMap<_, _>>(),
        Err(e) => {
            tracing::warn!(error = %e, "lease round: renewal failed");
            return out;
        }
    };
    out.records = registry.phones().ok();
    let hosts = registry.hosts().unwrap_or_default();
    let accepting = |name: &str| {
        hosts
            .iter()
            .any(|h| h.name == name && h.accepting(now, ttl))
    };
    // Every phone's placement in one query, not one per held phone; none
    // at all for a host that holds none (a front door).
    let placements = match &out.records {
        Some(_) if !renewed.is_empty() => registry.placements().ok(),
        _ => None,
    };
    if let (Some(records), Some(placements)) = (&out.records, &placements) {
        for name in renewed.keys() {
            let Some((labels, wanted)) = placements.get(name) else {
                continue;
            };
            let stopped = records
                .iter()
                .any(|r| &r.name == name && r.desired == crate::registry::DesiredState::Stopped);
            if draining || stopped || !cfg.may_run(labels, wanted.as_deref(), accepting) {
                out.give_up.insert(name.clone());
            }
        }
    }
    let mut held = renewed.len() - out.give_up.len();
    if !draining && cfg.capacity > 0 {
        match registry.claimable(now) {
            Ok(phones) => {
                for c in phones {
                    if held >= cfg.capacity as usize {
                        break;
                    }
                    // A phone moved to a live host waits for it.
                    if !cfg.may_run(&c.labels, c.wanted_host.as_deref(), accepting) {
                        continue;
                    }
                    match registry.claim(&c.phone, &cfg.host, now, ttl) {
                        Ok(Some(lease)) => {
                            tracing::info!(phone = %lease.phone, generation = lease.generation, "lease claimed");
                            held += 1;
                            out.claimed.push(lease);
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!(phone = %c.phone, error = %e, "claim failed"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "lease round: reading claimable phones failed"),
        }
    }
    out.renewed = Some(renewed);
    out
}

/// Claims one phone now (a phone created or started on this host), if
/// this host has room, offers the labels it asks for, and the operator did
/// not move it to another live host. `held` is how many it holds.
///
/// # Errors
/// [`HostError::Registry`].
pub fn claim_now(
    registry: &Registry,
    cfg: &FleetConfig,
    phone: &str,
    held: usize,
) -> Result<Option<Lease>, HostError> {
    if held >= cfg.capacity as usize {
        return Ok(None);
    }
    let (labels, wanted) = registry.placement(phone)?;
    let now = crate::unix_ms();
    let accepting = |w: &str| {
        registry
            .host(w)
            .is_ok_and(|h| h.accepting(now, cfg.lease_ms()))
    };
    if !cfg.may_run(&labels, wanted.as_deref(), accepting) {
        return Ok(None);
    }
    registry.claim(phone, &cfg.host, now, cfg.lease_ms())
}
