//! The sampler: asks a [`SensorSource`] for exactly the sensors the host
//! activated, at (at most) the requested rates, and numbers the samples.
//!
//! [`Sampler`] is sans-IO: the caller passes the current monotonic time to
//! [`Sampler::poll`] and sleeps until [`Sampler::next_deadline`].
//! [`run_sampler`] is that loop on tokio.
//!
//! Rules:
//!
//! - Only kinds in the latest `ActiveSensors` are sampled; a new
//!   `ActiveSensors` replaces the set at once ([`Sampler::set_active`]):
//!   dropped kinds stop immediately, new kinds are sampled at the next poll,
//!   a changed rate applies from the last sample on.
//! - The rate is the requested `rate_hz`, capped by the source's
//!   `max_rate_hz` (when known) and by [`MAX_RATE_HZ`]; a missing or
//!   non-positive rate means [`DEFAULT_RATE_HZ`]. Kinds the source cannot
//!   produce, `UNSPECIFIED` and unknown values are ignored with a warning.
//! - Sampling keeps the cadence (due times advance by one period) but never
//!   bursts to catch up after a stall: a late poll takes one sample.
//! - `seq` is per kind, starts at 1 and increases by one per sample for the
//!   lifetime of the sampler (one session), also across deactivation.
//! - Location fixes are polled every `location_interval_ms` (default
//!   [`DEFAULT_LOCATION_INTERVAL_MS`]) while `location_wanted`.

use std::collections::BTreeMap;

use sensor_proto::bridge::{
    ActiveSensors, Location, SensorBatch, SensorCapability, SensorKind, SensorSample,
};
use tokio::sync::{mpsc, watch};

use super::{MonotonicClock, SensorSource, kind_name};

/// Rate used when the host asks for a sensor without a positive rate, Hz.
pub const DEFAULT_RATE_HZ: f64 = 5.0;

/// Highest rate the sampler ever uses, Hz.
pub const MAX_RATE_HZ: f64 = 1000.0;

/// Location interval used when the host wants locations without giving an
/// interval, ms.
pub const DEFAULT_LOCATION_INTERVAL_MS: u32 = 1000;

/// Shortest location interval the sampler uses, ms.
pub const MIN_LOCATION_INTERVAL_MS: u32 = 100;

/// The schedule of one active sensor.
#[derive(Clone, Debug)]
struct Slot {
    kind: SensorKind,
    rate_hz: f64,
    period_ns: u64,
    next_due_ns: u64,
    last_ns: Option<u64>,
    errors: u64,
}

/// A periodic schedule (location).
#[derive(Clone, Debug)]
struct Periodic {
    period_ns: u64,
    next_due_ns: u64,
    last_ns: Option<u64>,
    errors: u64,
}

/// Advances a due time by one period without bursting after a stall.
fn next_due(due: u64, period: u64, now: u64) -> u64 {
    let next = due.saturating_add(period);
    if next <= now {
        now.saturating_add(period)
    } else {
        next
    }
}

fn period_ns(rate_hz: f64) -> u64 {
    (1e9 / rate_hz).round().max(1.0) as u64
}

/// Logs the 1st, 2nd, 4th, 8th, ... error of a sensor.
fn log_error(errors: &mut u64, what: &str, e: &crate::ClientError) {
    *errors += 1;
    if errors.is_power_of_two() {
        tracing::warn!(sensor = what, count = *errors, error = %e, "sensor read failed");
    }
}

/// Turns a source into numbered `SensorBatch`es for the active sensors (see
/// the module docs).
#[derive(Debug)]
pub struct Sampler<S> {
    source: S,
    capabilities: Vec<SensorCapability>,
    slots: Vec<Slot>,
    location: Option<Periodic>,
    seqs: BTreeMap<i32, u64>,
}

impl<S: SensorSource> Sampler<S> {
    /// A sampler with nothing active.
    pub fn new(source: S) -> Self {
        let capabilities = source.capabilities();
        Self {
            source,
            capabilities,
            slots: Vec::new(),
            location: None,
            seqs: BTreeMap::new(),
        }
    }

    /// The source's capabilities (for `Hello.capabilities`).
    #[must_use]
    pub fn capabilities(&self) -> &[SensorCapability] {
        &self.capabilities
    }

    /// The source.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// The source, mutably.
    pub fn source_mut(&mut self) -> &mut S {
        &mut self.source
    }

    /// Gives the source back.
    pub fn into_source(self) -> S {
        self.source
    }

    /// The active kinds and the rates actually used, Hz.
    #[must_use]
    pub fn active(&self) -> Vec<(SensorKind, f64)> {
        self.slots.iter().map(|s| (s.kind, s.rate_hz)).collect()
    }

    /// True while location fixes are wanted.
    #[must_use]
    pub fn location_active(&self) -> bool {
        self.location.is_some()
    }

    /// The last `seq` given to `kind` (0 if none yet).
    #[must_use]
    pub fn last_seq(&self, kind: SensorKind) -> u64 {
        self.seqs.get(&(kind as i32)).copied().unwrap_or(0)
    }

    fn max_rate(&self, kind: SensorKind) -> Option<f64> {
        self.capabilities
            .iter()
            .find(|c| c.kind == kind as i32)
            .map(|c| f64::from(c.max_rate_hz))
    }

    /// Replaces the set of active sensors, effective immediately.
    pub fn set_active(&mut self, active: &ActiveSensors, now_ns: u64) {
        let mut slots: Vec<Slot> = Vec::with_capacity(active.sensors.len());
        for wanted in &active.sensors {
            let kind = match SensorKind::try_from(wanted.kind) {
                Ok(SensorKind::Unspecified) | Err(_) => {
                    tracing::warn!(kind = wanted.kind, "host activated an unknown sensor kind");
                    continue;
                }
                Ok(kind) => kind,
            };
            let Some(max) = self.max_rate(kind) else {
                tracing::warn!(
                    kind = kind_name(kind),
                    "host activated a sensor this source does not have"
                );
                continue;
            };
            let requested = f64::from(wanted.rate_hz);
            let mut rate = if requested.is_finite() && requested > 0.0 {
                requested
            } else {
                DEFAULT_RATE_HZ
            };
            if max.is_finite() && max > 0.0 {
                rate = rate.min(max);
            }
            rate = rate.min(MAX_RATE_HZ);
            let period = period_ns(rate);
            let previous = self.slots.iter().find(|s| s.kind == kind);
            let last_ns = previous.and_then(|s| s.last_ns);
            let slot = Slot {
                kind,
                rate_hz: rate,
                period_ns: period,
                next_due_ns: last_ns.map_or(now_ns, |last| last.saturating_add(period)),
                last_ns,
                errors: previous.map_or(0, |s| s.errors),
            };
            if let Some(dup) = slots.iter_mut().find(|s| s.kind == kind) {
                tracing::warn!(
                    kind = kind_name(kind),
                    "sensor listed twice in ActiveSensors; using the last entry"
                );
                *dup = slot;
            } else {
                slots.push(slot);
            }
        }
        self.slots = slots;

        self.location = if active.location_wanted {
            let ms = match active.location_interval_ms {
                0 => DEFAULT_LOCATION_INTERVAL_MS,
                ms => ms.max(MIN_LOCATION_INTERVAL_MS),
            };
            let period = u64::from(ms) * 1_000_000;
            let previous = self.location.as_ref();
            let last_ns = previous.and_then(|l| l.last_ns);
            Some(Periodic {
                period_ns: period,
                next_due_ns: last_ns.map_or(now_ns, |last| last.saturating_add(period)),
                last_ns,
                errors: previous.map_or(0, |l| l.errors),
            })
        } else {
            None
        };
        tracing::debug!(
            sensors = ?self.active().iter().map(|(k, r)| format!("{}@{r}Hz", kind_name(*k))).collect::<Vec<_>>(),
            location = self.location.is_some(),
            "active sensors changed"
        );
    }

    /// When the next sample or location fix is due (monotonic ns), `None`
    /// when nothing is active.
    #[must_use]
    pub fn next_deadline(&self) -> Option<u64> {
        self.slots
            .iter()
            .map(|s| s.next_due_ns)
            .chain(self.location.as_ref().map(|l| l.next_due_ns))
            .min()
    }

    /// Samples every active sensor that is due at `now_ns`. The batch is
    /// empty when nothing was due (or the source had nothing new). Read
    /// errors are logged and skipped.
    pub fn poll(&mut self, now_ns: u64) -> SensorBatch {
        let mut samples = Vec::new();
        for slot in &mut self.slots {
            if slot.next_due_ns > now_ns {
                continue;
            }
            slot.next_due_ns = next_due(slot.next_due_ns, slot.period_ns, now_ns);
            slot.last_ns = Some(now_ns);
            match self.source.sample(slot.kind, now_ns) {
                Ok(Some(reading)) => {
                    let seq = self.seqs.entry(slot.kind as i32).or_insert(0);
                    *seq += 1;
                    samples.push(SensorSample {
                        kind: slot.kind as i32,
                        seq: *seq,
                        timestamp_ns: reading.timestamp_ns,
                        values: reading.values,
                    });
                }
                Ok(None) => {}
                Err(e) => log_error(&mut slot.errors, kind_name(slot.kind), &e),
            }
        }
        SensorBatch { samples }
    }

    /// The location fix due at `now_ns`, if location is wanted, due and the
    /// source has one.
    pub fn poll_location(&mut self, now_ns: u64) -> Option<Location> {
        let periodic = self.location.as_mut()?;
        if periodic.next_due_ns > now_ns {
            return None;
        }
        periodic.next_due_ns = next_due(periodic.next_due_ns, periodic.period_ns, now_ns);
        periodic.last_ns = Some(now_ns);
        match self.source.location(now_ns) {
            Ok(location) => location,
            Err(e) => {
                log_error(&mut periodic.errors, "location", &e);
                None
            }
        }
    }
}

/// What [`run_sampler`] produces.
#[derive(Clone, Debug, PartialEq)]
pub enum SamplerEvent {
    /// Samples for one sensor datagram (never empty).
    Batch(SensorBatch),
    /// A location fix for the input stream.
    Location(Location),
}

/// Runs `sampler` on tokio until the `ActiveSensors` sender is dropped, the
/// event receiver is dropped or the source is finished; returns the
/// sampler (with its `seq` state). Applies every `ActiveSensors` the watch
/// channel carries as soon as it arrives. Events that do not fit the
/// channel are dropped (latest-wins sensors: better lost than late).
pub async fn run_sampler<S: SensorSource>(
    mut sampler: Sampler<S>,
    clock: MonotonicClock,
    mut active: watch::Receiver<ActiveSensors>,
    events: mpsc::Sender<SamplerEvent>,
) -> Sampler<S> {
    let initial = active.borrow_and_update().clone();
    sampler.set_active(&initial, clock.now_ns());
    let mut dropped: u64 = 0;
    let mut send = |event: SamplerEvent| match events.try_send(event) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            dropped += 1;
            if dropped.is_power_of_two() {
                tracing::debug!(dropped, "sensor event channel full; dropping");
            }
            true
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    };
    loop {
        if sampler.source().finished() {
            tracing::info!("sensor source finished");
            break;
        }
        let deadline = sampler.next_deadline();
        let sleep = async {
            match deadline {
                Some(ns) => {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(clock.instant_at(ns)))
                        .await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            changed = active.changed() => {
                if changed.is_err() {
                    break;
                }
                let set = active.borrow_and_update().clone();
                sampler.set_active(&set, clock.now_ns());
            }
            () = sleep => {
                let now = clock.now_ns();
                let batch = sampler.poll(now);
                if !batch.samples.is_empty() && !send(SamplerEvent::Batch(batch)) {
                    break;
                }
                if let Some(location) = sampler.poll_location(now)
                    && !send(SamplerEvent::Location(location))
                {
                    break;
                }
            }
        }
    }
    sampler
}

#[cfg(test)]
mod tests {
    use sensor_proto::bridge::ActiveSensor;

    use super::super::synthetic::{SyntheticConfig, SyntheticSource};
    use super::*;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;

    fn active(list: &[(SensorKind, f32)]) -> ActiveSensors {
        ActiveSensors {
            sensors: list
                .iter()
                .map(|&(kind, rate_hz)| ActiveSensor {
                    kind: kind as i32,
                    rate_hz,
                    max_latency_ms: 0,
                })
                .collect(),
            location_wanted: false,
            location_interval_ms: 0,
        }
    }

    fn synthetic() -> Sampler<SyntheticSource> {
        Sampler::new(SyntheticSource::new(SyntheticConfig::default()))
    }

    /// Polls every `step` from `from` (inclusive) to `to` (exclusive) and
    /// returns all samples.
    fn run<S: SensorSource>(
        sampler: &mut Sampler<S>,
        from: u64,
        to: u64,
        step: u64,
    ) -> Vec<SensorSample> {
        let mut out = Vec::new();
        let mut now = from;
        while now < to {
            out.extend(sampler.poll(now).samples);
            now += step;
        }
        out
    }

    fn of(samples: &[SensorSample], kind: SensorKind) -> Vec<&SensorSample> {
        samples.iter().filter(|s| s.kind == kind as i32).collect()
    }

    #[test]
    fn samples_active_kinds_at_their_rates() {
        let mut sampler = synthetic();
        sampler.set_active(
            &active(&[
                (SensorKind::Accelerometer, 200.0),
                (SensorKind::Gyroscope, 50.0),
            ]),
            S,
        );
        let samples = run(&mut sampler, S, 2 * S, MS);
        let accel = of(&samples, SensorKind::Accelerometer);
        let gyro = of(&samples, SensorKind::Gyroscope);
        assert_eq!(accel.len(), 200);
        assert_eq!(gyro.len(), 50);
        assert_eq!(samples.len(), 250, "inactive kinds produce nothing");
        for series in [&accel, &gyro] {
            for (i, s) in series.iter().enumerate() {
                assert_eq!(s.seq, i as u64 + 1);
                assert_eq!(s.values.len(), 3);
            }
            assert!(
                series
                    .windows(2)
                    .all(|w| w[0].timestamp_ns < w[1].timestamp_ns)
            );
        }
        assert_eq!(accel[1].timestamp_ns - accel[0].timestamp_ns, 5 * MS);
        assert_eq!(gyro[1].timestamp_ns - gyro[0].timestamp_ns, 20 * MS);
    }

    #[test]
    fn coarse_polling_never_exceeds_the_rate() {
        // Polling every 7 ms cannot deliver 200 Hz: one sample per due poll,
        // no bursts.
        let mut sampler = synthetic();
        sampler.set_active(&active(&[(SensorKind::Accelerometer, 200.0)]), 0);
        let samples = run(&mut sampler, 0, S, 7 * MS);
        assert!(samples.len() <= 143, "{}", samples.len());
        assert!(
            samples
                .windows(2)
                .all(|w| w[1].timestamp_ns - w[0].timestamp_ns >= 5 * MS)
        );
    }

    #[test]
    fn rates_are_capped_and_defaulted() {
        let mut sampler = synthetic();
        sampler.set_active(
            &active(&[
                (SensorKind::Accelerometer, 5000.0),
                (SensorKind::Light, 0.0),
                (SensorKind::HeartRate, 10.0),
            ]),
            0,
        );
        assert_eq!(
            sampler.active(),
            vec![
                (SensorKind::Accelerometer, 400.0),
                (SensorKind::Light, DEFAULT_RATE_HZ)
            ]
        );
        let samples = run(&mut sampler, 0, S, MS / 2);
        assert_eq!(of(&samples, SensorKind::Accelerometer).len(), 400);
        assert_eq!(of(&samples, SensorKind::Light).len(), 5);
        assert!(of(&samples, SensorKind::HeartRate).is_empty());
    }

    #[test]
    fn changes_take_effect_immediately_and_seq_continues() {
        let mut sampler = synthetic();
        sampler.set_active(&active(&[(SensorKind::Accelerometer, 100.0)]), 0);
        let first = run(&mut sampler, 0, S / 2, MS);
        assert_eq!(first.len(), 50);

        // Switch: accelerometer off, magnetometer on.
        sampler.set_active(&active(&[(SensorKind::Magnetometer, 10.0)]), S / 2);
        let second = run(&mut sampler, S / 2, S, MS);
        assert!(of(&second, SensorKind::Accelerometer).is_empty());
        let mag = of(&second, SensorKind::Magnetometer);
        assert_eq!(mag.len(), 5);
        assert_eq!(mag[0].timestamp_ns, S / 2, "new kind sampled at once");

        // Accelerometer back at a higher rate: seq continues after 50.
        sampler.set_active(&active(&[(SensorKind::Accelerometer, 200.0)]), S);
        let third = run(&mut sampler, S, S + S / 10, MS);
        let accel = of(&third, SensorKind::Accelerometer);
        assert_eq!(accel.len(), 20);
        assert_eq!(accel[0].seq, 51);
        assert_eq!(sampler.last_seq(SensorKind::Accelerometer), 70);

        // Nothing active: nothing due.
        sampler.set_active(&ActiveSensors::default(), 2 * S);
        assert_eq!(sampler.next_deadline(), None);
        assert!(sampler.poll(3 * S).samples.is_empty());
    }

    #[test]
    fn location_follows_its_interval() {
        let mut sampler = synthetic();
        let mut set = active(&[]);
        set.location_wanted = true;
        set.location_interval_ms = 250;
        sampler.set_active(&set, 0);
        let mut fixes = Vec::new();
        let mut now = 0;
        while now < 2 * S {
            fixes.extend(sampler.poll_location(now));
            now += 10 * MS;
        }
        assert_eq!(fixes.len(), 8);
        assert!(
            fixes
                .windows(2)
                .all(|w| w[1].timestamp_ns - w[0].timestamp_ns == 250 * MS)
        );
        set.location_wanted = false;
        sampler.set_active(&set, 2 * S);
        assert!(sampler.poll_location(10 * S).is_none());
    }

    #[test]
    fn unknown_kinds_are_ignored() {
        let mut sampler = synthetic();
        let mut set = active(&[(SensorKind::Gyroscope, 10.0)]);
        set.sensors.push(ActiveSensor {
            kind: 999,
            rate_hz: 10.0,
            max_latency_ms: 0,
        });
        set.sensors.push(ActiveSensor {
            kind: 0,
            rate_hz: 10.0,
            max_latency_ms: 0,
        });
        sampler.set_active(&set, 0);
        assert_eq!(sampler.active(), vec![(SensorKind::Gyroscope, 10.0)]);
    }

    #[tokio::test]
    async fn driver_streams_and_follows_changes() {
        let clock = MonotonicClock::new();
        let (active_tx, active_rx) = watch::channel(active(&[(SensorKind::Accelerometer, 100.0)]));
        let (tx, mut rx) = mpsc::channel(1024);
        let task = tokio::spawn(run_sampler(synthetic(), clock, active_rx, tx));

        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let mut set = active(&[(SensorKind::Gyroscope, 100.0)]);
        set.location_wanted = true;
        set.location_interval_ms = 100;
        active_tx.send(set).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        drop(active_tx);
        let sampler = task.await.unwrap();

        let mut accel = 0;
        let mut gyro = 0;
        let mut locations = 0;
        while let Ok(event) = rx.try_recv() {
            match event {
                SamplerEvent::Batch(b) => {
                    assert!(!b.samples.is_empty());
                    for s in b.samples {
                        if s.kind == SensorKind::Accelerometer as i32 {
                            accel += 1;
                        } else if s.kind == SensorKind::Gyroscope as i32 {
                            gyro += 1;
                        }
                    }
                }
                SamplerEvent::Location(_) => locations += 1,
            }
        }
        // Generous bounds: the machine is shared.
        assert!((5..=25).contains(&accel), "accel {accel}");
        assert!((5..=25).contains(&gyro), "gyro {gyro}");
        assert!((1..=4).contains(&locations), "locations {locations}");
        assert_eq!(sampler.last_seq(SensorKind::Accelerometer), accel);
    }
}
