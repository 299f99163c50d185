//! Admission limits: how many connections the host holds at all, and how
//! many may wait unadmitted (TLS done or not, no `Welcome` yet), in total and
//! per source. A connection past a limit is refused at its first packet
//! (QUIC `CONNECTION_REFUSED`), before any TLS work or per-connection state.
//!
//! Sources are counted per IPv4 address and per IPv6 /64 (one subscriber's
//! prefix), so a peer cannot step around its limit by rotating addresses
//! inside its own network.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The host's connection limits. Construct with [`Default::default`] and
/// adjust fields.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct AdmissionLimits {
    /// Connections held at once, admitted or not.
    pub max_connections: usize,
    /// Connections waiting for admission at once, from everywhere.
    pub max_unadmitted: usize,
    /// Connections waiting for admission at once, from one source.
    pub max_unadmitted_per_source: usize,
    /// New connections one source may start per second, on average (each
    /// costs the host a TLS handshake); bursts up to `burst_per_source`.
    pub new_per_source_per_second: f64,
    /// The burst allowed above `new_per_source_per_second`.
    pub burst_per_source: f64,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            max_unadmitted: 64,
            max_unadmitted_per_source: 8,
            new_per_source_per_second: 10.0,
            burst_per_source: 20.0,
        }
    }
}

/// Which limit a connection hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Full {
    Connections,
    Unadmitted,
    Source,
    Rate,
}

#[derive(Debug, Default)]
struct Waiting {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
    /// Each recent source's token bucket: tokens left, when last filled.
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

/// Sources whose buckets are kept before idle full ones are forgotten.
const BUCKETS_KEPT: usize = 4096;

impl Waiting {
    /// Takes one token from `source`'s bucket, if it has one.
    fn take_token(&mut self, source: IpAddr, limits: &AdmissionLimits, now: Instant) -> bool {
        let (rate, burst) = (limits.new_per_source_per_second, limits.burst_per_source);
        if self.buckets.len() >= BUCKETS_KEPT {
            // A bucket that has refilled says nothing: forget it.
            self.buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = self.buckets.entry(source).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Counts unadmitted connections; hands out a [`Pass`] per admitted
/// attempt.
#[derive(Debug)]
pub(crate) struct Gate {
    limits: AdmissionLimits,
    waiting: Mutex<Waiting>,
    refused: AtomicU64,
    log: RateLimitedLog,
}

impl Gate {
    pub(crate) fn new(limits: AdmissionLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            waiting: Mutex::new(Waiting::default()),
            refused: AtomicU64::new(0),
            log: RateLimitedLog::new(Duration::from_secs(1)),
        })
    }

    /// A pass for a new connection from `ip` while `open` connections are
    /// held, or the limit it hits (counted, logged at most once a second).
    pub(crate) fn enter(self: &Arc<Self>, ip: IpAddr, open: usize) -> Result<Pass, Full> {
        let source = source_of(ip);
        let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let from_source = w.by_source.get(&source).copied().unwrap_or(0);
        let full = if open >= self.limits.max_connections {
            Some(Full::Connections)
        } else if w.total >= self.limits.max_unadmitted {
            Some(Full::Unadmitted)
        } else if from_source >= self.limits.max_unadmitted_per_source {
            Some(Full::Source)
        } else if !w.take_token(source, &self.limits, Instant::now()) {
            Some(Full::Rate)
        } else {
            None
        };
        if let Some(full) = full {
            drop(w);
            let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
            if let Some(suppressed) = self.log.allow() {
                tracing::warn!(
                    source = %source,
                    limit = ?full,
                    refused_total = n,
                    suppressed,
                    "refusing a connection: admission limit reached"
                );
            }
            return Err(full);
        }
        w.total += 1;
        *w.by_source.entry(source).or_insert(0) += 1;
        Ok(Pass {
            gate: self.clone(),
            source,
        })
    }

    /// Connections refused at a limit so far.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// One unadmitted connection's place; freed when dropped (admitted,
/// refused or gone).
#[derive(Debug)]
pub(crate) struct Pass {
    gate: Arc<Gate>,
    source: IpAddr,
}

impl Drop for Pass {
    fn drop(&mut self) {
        let mut w = self.gate.waiting.lock().unwrap_or_else(|p| p.into_inner());
        w.total = w.total.saturating_sub(1);
        if let Some(n) = w.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                w.by_source.remove(&self.source);
            }
        }
    }
}

/// IPv4 addresses as they are; IPv6 by /64 (IPv4-mapped ones as IPv4).
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
            }
        },
    }
}

/// At most one log line per `every`; says how many were left out.
#[derive(Debug)]
pub(crate) struct RateLimitedLog {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimitedLog {
    pub(crate) const fn new(every: Duration) -> Self {
        Self {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(lines left out since the last one)` when a line may be logged
    /// now.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = Instant::now();
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.0.is_some_and(|t| now.duration_since(t) < self.every) {
            s.1 += 1;
            return None;
        }
        let suppressed = s.1;
        *s = (Some(now), 0);
        Some(suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_hold_per_source_and_in_total_and_passes_free_their_place() {
        let gate = Gate::new(AdmissionLimits {
            max_connections: 10,
            max_unadmitted: 3,
            max_unadmitted_per_source: 2,
            ..AdmissionLimits::default()
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let p1 = gate.enter(a, 0).unwrap();
        let _p2 = gate.enter(a, 0).unwrap();
        assert_eq!(gate.enter(a, 0).unwrap_err(), Full::Source);
        let _p3 = gate.enter(b, 0).unwrap();
        assert_eq!(gate.enter(b, 0).unwrap_err(), Full::Unadmitted);
        drop(p1);
        assert!(gate.enter(a, 0).is_ok(), "a freed place is usable again");
        assert_eq!(gate.enter(b, 10).unwrap_err(), Full::Connections);
        assert_eq!(gate.refused(), 3);
    }

    #[test]
    fn an_ipv6_peer_cannot_rotate_addresses_inside_its_64() {
        let gate = Gate::new(AdmissionLimits {
            max_unadmitted_per_source: 1,
            ..AdmissionLimits::default()
        });
        let _p = gate.enter("2001:db8::1".parse().unwrap(), 0).unwrap();
        assert_eq!(
            gate.enter("2001:db8::ffff:2".parse().unwrap(), 0)
                .unwrap_err(),
            Full::Source
        );
        assert!(gate.enter("2001:db8:0:1::1".parse().unwrap(), 0).is_ok());
        let _q = gate.enter("::ffff:192.0.2.9".parse().unwrap(), 0).unwrap();
        assert_eq!(
            gate.enter("192.0.2.9".parse().unwrap(), 0).unwrap_err(),
            Full::Source,
            "IPv4-mapped is the same source as IPv4"
        );
    }

    #[test]
    fn each_source_starts_at_most_its_rate_of_connections() {
        let limits = AdmissionLimits {
            new_per_source_per_second: 10.0,
            burst_per_source: 3.0,
            ..AdmissionLimits::default()
        };
        let mut w = Waiting::default();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(w.take_token(a, &limits, t0));
        }
        assert!(!w.take_token(a, &limits, t0), "burst spent");
        assert!(w.take_token(b, &limits, t0), "another source has its own");
        assert!(!w.take_token(a, &limits, t0 + Duration::from_millis(50)));
        assert!(w.take_token(a, &limits, t0 + Duration::from_millis(160)));
        assert!(!w.take_token(a, &limits, t0 + Duration::from_millis(170)));
        // Refilled, never beyond the burst.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(w.take_token(a, &limits, later));
        }
        assert!(!w.take_token(a, &limits, later));
    }

    #[test]
    fn the_log_is_rate_limited_and_counts_what_it_left_out() {
        let log = RateLimitedLog::new(Duration::from_secs(60));
        assert_eq!(log.allow(), Some(0));
        assert_eq!(log.allow(), None);
        assert_eq!(log.allow(), None);
        let log = RateLimitedLog::new(Duration::ZERO);
        assert_eq!(log.allow(), Some(0));
        assert_eq!(log.allow(), Some(0));
    }
}
