//! The live sessions: who holds which phone, their counters and sensor
//! latencies, and the operator's view of them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use device_bridge::ServerSession;
use sensor_proto::bridge::CloseReason;
use sensor_proto::operator as op;

use crate::HostError;

use super::admission::{Busy, SessionTable};

/// A bounded log of latencies (µs) with percentiles.
#[derive(Debug, Default)]
pub struct LatencyLog {
    samples: std::collections::VecDeque<u64>,
}

impl LatencyLog {
    const KEEP: usize = 8192;

    /// Records one latency.
    pub fn push(&mut self, us: u64) {
        if self.samples.len() == Self::KEEP {
            self.samples.pop_front();
        }
        self.samples.push_back(us);
    }

    /// The `p` quantile (0..=1) in µs, or `None` when empty.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        let mut v: Vec<u64> = self.samples.iter().copied().collect();
        v.sort_unstable();
        device_bridge::stats::quantile(&v, p)
    }

    /// The recorded latencies, oldest first, µs.
    pub fn samples(&self) -> Vec<u64> {
        self.samples.iter().copied().collect()
    }

    /// Number of recorded latencies (at most the last 8192 are kept).
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// A session's sensor latencies, µs from the sample's capture on the
/// handset (on the host's clock, through the handset's clock offset).
#[derive(Debug, Default)]
pub struct SensorLatency {
    /// Capture -> the sample arrived at the router (handset, network, QUIC).
    pub received: LatencyLog,
    /// Capture -> the phone acknowledged `setSensor` (the whole path).
    pub applied: LatencyLog,
    /// Arrived at the router -> the phone acknowledged it: the host's own
    /// part of the path (and the phone's), per applied sample.
    pub in_host: LatencyLog,
}

/// A session's sensor latencies, µs, oldest first (see [`SensorLatency`]).
#[derive(Debug, Clone, Default)]
pub struct SensorSamples {
    /// Capture -> received by the router.
    pub received: Vec<u64>,
    /// Capture -> applied in the phone.
    pub applied: Vec<u64>,
    /// Received -> applied: the host's (and the phone's) part.
    pub in_host: Vec<u64>,
}

/// What the router keeps for each live session (beside its phone and
/// handset, which the [`SessionTable`] holds).
#[derive(Debug)]
pub(super) struct Live {
    pub(super) session: Arc<ServerSession>,
    pub(super) started_ms: i64,
    pub(super) frames: Arc<AtomicU64>,
    pub(super) sensor_latency: Arc<Mutex<SensorLatency>>,
    pub(super) radio_lent: Arc<AtomicBool>,
}

/// The live sessions, for the operator API.
#[derive(Debug, Default)]
pub struct Sessions {
    live: Mutex<SessionTable<Live>>,
}

impl Sessions {
    /// How many sessions are live.
    #[must_use]
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, SessionTable<Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sensor sample -> applied-in-the-phone latency of a session, µs:
    /// `(p50, p99, count)`.
    pub fn sensor_latency(&self, id: &str) -> Option<(u64, u64, usize)> {
        self.sensor_log(id, |l| &l.applied)
    }

    /// Sensor sample -> received by the host's router, µs: `(p50, p99,
    /// count)`; the part of [`sensor_latency`](Self::sensor_latency) spent
    /// on the handset and the network.
    pub fn sensor_receive_latency(&self, id: &str) -> Option<(u64, u64, usize)> {
        self.sensor_log(id, |l| &l.received)
    }

    /// A session's recorded sensor latencies, µs, oldest first (at most
    /// the last 8192 each): received, applied and in the host, for pooling
    /// across sessions.
    pub fn sensor_latency_samples(&self, id: &str) -> Option<SensorSamples> {
        self.with_sensor_latency(id, |l| {
            Some(SensorSamples {
                received: l.received.samples(),
                applied: l.applied.samples(),
                in_host: l.in_host.samples(),
            })
        })
    }

    fn sensor_log(
        &self,
        id: &str,
        which: impl Fn(&SensorLatency) -> &LatencyLog,
    ) -> Option<(u64, u64, usize)> {
        self.with_sensor_latency(id, |l| {
            let log = which(l);
            Some((log.percentile(0.5)?, log.percentile(0.99)?, log.len()))
        })
    }

    /// `f` of a live session's sensor latencies; `None` for no such session.
    fn with_sensor_latency<T>(
        &self,
        id: &str,
        f: impl FnOnce(&SensorLatency) -> Option<T>,
    ) -> Option<T> {
        let live = self.lock();
        let logs = live
            .get(id)?
            .data
            .sensor_latency
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        f(&logs)
    }

    /// Ids of the live sessions.
    pub fn ids(&self) -> Vec<String> {
        self.lock().iter().map(|(id, _)| id.to_owned()).collect()
    }

    /// The admission check during a handshake (see
    /// [`SessionTable::check_handshake`]).
    ///
    /// # Errors
    /// [`Busy`] when another handset holds `phone`.
    pub fn check_handshake(&self, phone: &str, handset: &str, resuming: bool) -> Result<(), Busy> {
        self.lock().check_handshake(phone, handset, resuming)
    }

    /// The handsets of the live sessions (fingerprints, each once).
    pub fn handsets(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lock().iter().map(|(_, e)| e.handset.clone()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// Ends every live session of the handsets in `revoked` (`REVOKED`:
    /// the companion does not reconnect); returns how many.
    pub fn close_revoked(&self, revoked: &[String]) -> usize {
        let closing: Vec<Arc<ServerSession>> = self
            .lock()
            .iter()
            .filter(|(_, e)| revoked.contains(&e.handset))
            .map(|(_, e)| e.data.session.clone())
            .collect();
        for s in &closing {
            let s = s.clone();
            tokio::spawn(async move {
                s.close(
                    CloseReason::Revoked,
                    "this handset was revoked by the fleet's operator",
                )
                .await;
            });
        }
        closing.len()
    }

    /// The session attached to `phone`, if any.
    pub fn on_phone(&self, phone: &str) -> Option<Arc<ServerSession>> {
        self.lock()
            .holder(phone)
            .map(|(_, e)| e.data.session.clone())
    }
}

impl SessionDirectory for Sessions {
    fn list(&self) -> Vec<op::Session> {
        let mut v: Vec<op::Session> = self
            .lock()
            .iter()
            .map(|(_, e)| {
                let l = &e.data;
                let st = l.session.stats();
                op::Session {
                    id: l.session.id().to_owned(),
                    handset_fingerprint: l.session.handset().to_string(),
                    handset_name: e.handset_name.clone(),
                    phone: e.phone.clone(),
                    remote_addr: l
                        .session
                        .remote_address()
                        .map(|a| a.to_string())
                        .unwrap_or_default(),
                    started_at_unix_ms: l.started_ms.max(0) as u64,
                    resumed_count: st.connections.saturating_sub(1) as u32,
                    bytes_up: 0,
                    bytes_down: 0,
                    frames_sent: l.frames.load(Ordering::Relaxed),
                    radio_lent: l.radio_lent.load(Ordering::Relaxed),
                    state: if l.session.is_connected() {
                        op::SessionState::Connected
                    } else {
                        op::SessionState::Detached
                    } as i32,
                    rtt_us: st.rtt_us.min(u64::from(u32::MAX)) as u32,
                }
            })
            .collect();
        v.sort_by_key(|a| a.started_at_unix_ms);
        v
    }

    fn kick(&self, id: &str, reason: &str) -> Result<(), HostError> {
        let s = self
            .lock()
            .get(id)
            .map(|e| e.data.session.clone())
            .ok_or_else(|| HostError::NotFound {
                kind: "session",
                name: id.to_owned(),
            })?;
        let reason = reason.to_owned();
        tokio::spawn(async move { s.close(CloseReason::Kicked, &reason).await });
        Ok(())
    }
}

/// What the operator API needs from the session router.
pub trait SessionDirectory: Send + Sync + std::fmt::Debug {
    /// The live sessions.
    fn list(&self) -> Vec<op::Session>;
    /// Ends a session with a reason.
    ///
    /// # Errors
    /// [`HostError::NotFound`] for an unknown id.
    fn kick(&self, id: &str, reason: &str) -> Result<(), HostError>;
}

/// No sessions (a host without a handset listener, and tests).
#[derive(Debug, Default)]
pub struct NoSessions;

impl SessionDirectory for NoSessions {
    fn list(&self) -> Vec<op::Session> {
        Vec::new()
    }

    fn kick(&self, id: &str, _: &str) -> Result<(), HostError> {
        Err(HostError::NotFound {
            kind: "session",
            name: id.to_owned(),
        })
    }
}
