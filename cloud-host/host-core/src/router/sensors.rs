//! Sensors, handset -> phone: which sensors the handset samples, a rate
//! limit per sensor, and one worker per sensor applying the newest value
//! with `setSensor` (latest wins, in order per sensor).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use device_bridge::ServerSession;
use sensor_proto::bridge::{ActiveSensor, ActiveSensors, SensorKind, SensorSample};
use tokio::sync::Notify;

use crate::emu_client::EmulatorClient;
use crate::metrics::Metrics;

use super::sessions::{LatencyLog, SensorLatency};

/// What the handset should sample: the phone's listened sensors that the
/// handset has, or a default set for phones that do not say.
pub fn active_sensors(listened: &[(String, u32)], advertised: &[SensorKind]) -> ActiveSensors {
    let mut wanted: Vec<(SensorKind, f32)> = Vec::new();
    let mut location_hz = 0u32;
    if listened.is_empty() {
        for k in [
            SensorKind::Accelerometer,
            SensorKind::Gyroscope,
            SensorKind::Magnetometer,
        ] {
            wanted.push((k, 50.0));
        }
        location_hz = 1;
    }
    for (name, hz) in listened {
        let kind = match name.as_str() {
            "acceleration" => SensorKind::Accelerometer,
            "gyroscope" => SensorKind::Gyroscope,
            "magnetic_field" => SensorKind::Magnetometer,
            "orientation" => SensorKind::Orientation,
            "light" => SensorKind::Light,
            "proximity" => SensorKind::Proximity,
            "pressure" => SensorKind::Pressure,
            "acceleration_uncalibrated" => SensorKind::AccelerometerUncalibrated,
            "gyroscope_uncalibrated" => SensorKind::GyroscopeUncalibrated,
            "magnetic_field_uncalibrated" => SensorKind::MagnetometerUncalibrated,
            "gps" => {
                location_hz = *hz;
                continue;
            }
            _ => continue,
        };
        wanted.push((kind, *hz as f32));
    }
    ActiveSensors {
        sensors: wanted
            .into_iter()
            .filter(|(k, _)| advertised.contains(k))
            .map(|(k, hz)| ActiveSensor {
                kind: k as i32,
                rate_hz: hz,
                max_latency_ms: 0,
            })
            .collect(),
        location_wanted: location_hz > 0,
        location_interval_ms: 1000u32.checked_div(location_hz).unwrap_or(0),
    }
}

/// Token bucket per sensor: allows bursts, caps the sustained rate.
#[derive(Debug)]
struct RateLimit {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn new(rate_hz: f64) -> Self {
        Self {
            rate: rate_hz,
            tokens: rate_hz.max(4.0),
            last: Instant::now(),
        }
    }

    fn allow(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.rate.max(4.0));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub(super) async fn sensor_loop(
    s: Arc<ServerSession>,
    client: EmulatorClient,
    rates: HashMap<i32, f32>,
    metrics: Arc<Metrics>,
    (clock_offset_ns, latency): (Arc<std::sync::atomic::AtomicI64>, Arc<Mutex<SensorLatency>>),
) {
    // Sensors get their own connection: on the shared one they would queue
    // behind multi-megabyte screenshot frames.
    let client = client.separate_connection().await.unwrap_or(client);
    // One slot and one worker per sensor: the newest sample wins (coalescing
    // when the phone is slower than the handset), a sensor's samples reach
    // the phone in order, and different sensors go in parallel (HTTP/2
    // streams on one connection) instead of each sample waiting behind the
    // round trips of the other sensors' samples of the same instant.
    let mut slots: HashMap<i32, Arc<SensorSlot>> = HashMap::new();
    let mut workers = tokio::task::JoinSet::new();
    let mut limits: HashMap<i32, RateLimit> = rates
        .iter()
        .map(|(k, hz)| (*k, RateLimit::new(f64::from(*hz) * 2.0)))
        .collect();
    while let Ok(sample) = s.recv_sensor().await {
        record_since_capture(&sample, &clock_offset_ns, &latency, |l| &mut l.received);
        let ok = sample.values.iter().all(|v| v.is_finite())
            && limits
                .get_mut(&sample.kind)
                .is_some_and(|l| l.allow(Instant::now()));
        let target = SensorKind::try_from(sample.kind)
            .ok()
            .and_then(SensorKind::emulator_sensor_type);
        let (true, Some(target)) = (ok, target) else {
            metrics.sensor_dropped.inc();
            continue;
        };
        let slot = slots.entry(sample.kind).or_insert_with(|| {
            let slot = Arc::new(SensorSlot::default());
            workers.spawn(apply_sensor(
                slot.clone(),
                target,
                client.clone(),
                metrics.clone(),
                (clock_offset_ns.clone(), latency.clone()),
            ));
            slot
        });
        let replaced = slot
            .latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace((sample, Instant::now()))
            .is_some();
        if replaced {
            metrics.sensor_dropped.inc();
        }
        slot.ready.notify_one();
    }
    workers.abort_all();
}

/// µs from the sample's capture (handset clock, placed on the host's clock
/// with the offset the handset reports in Stats) to now; `None` without a
/// timestamp or when the clocks disagree on the order.
fn since_capture(
    sample: &SensorSample,
    clock_offset_ns: &std::sync::atomic::AtomicI64,
) -> Option<u64> {
    // Both numbers come from the handset: no overflow, whatever they say.
    let taken_ns =
        i128::from(sample.timestamp_ns) + i128::from(clock_offset_ns.load(Ordering::Relaxed));
    let now_ns = i128::from(crate::unix_ns());
    if sample.timestamp_ns == 0 {
        return None;
    }
    device_bridge::clock::elapsed_us(taken_ns / 1000, now_ns / 1000)
}

/// Records [`since_capture`] of `sample` in the log `which` picks.
fn record_since_capture(
    sample: &SensorSample,
    clock_offset_ns: &std::sync::atomic::AtomicI64,
    latency: &Mutex<SensorLatency>,
    which: fn(&mut SensorLatency) -> &mut LatencyLog,
) {
    if let Some(us) = since_capture(sample, clock_offset_ns) {
        which(&mut latency.lock().unwrap_or_else(|p| p.into_inner())).push(us);
    }
}

/// The newest not yet applied sample of one sensor.
#[derive(Default)]
struct SensorSlot {
    /// The sample and when it arrived.
    latest: Mutex<Option<(SensorSample, Instant)>>,
    ready: Notify,
}

/// Applies one sensor's samples to the phone, newest first, one at a time.
async fn apply_sensor(
    slot: Arc<SensorSlot>,
    target: sensor_proto::emulator::sensor_value::SensorType,
    client: EmulatorClient,
    metrics: Arc<Metrics>,
    (clock_offset_ns, latency): (Arc<std::sync::atomic::AtomicI64>, Arc<Mutex<SensorLatency>>),
) {
    loop {
        slot.ready.notified().await;
        loop {
            let next = slot.latest.lock().unwrap_or_else(|p| p.into_inner()).take();
            let Some((sample, arrived)) = next else { break };
            if client.set_sensor(target, &sample.values).await.is_ok() {
                metrics.sensor_samples.inc();
                record_since_capture(&sample, &clock_offset_ns, &latency, |l| &mut l.applied);
                let in_host = arrived.elapsed().as_micros() as u64;
                latency
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .in_host
                    .push(in_host);
            } else {
                metrics.sensor_dropped.inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn active_sensors_follow_the_phone_and_the_handset() {
        let listened = vec![
            ("acceleration".to_owned(), 60),
            ("gyroscope".to_owned(), 60),
            ("orientation".to_owned(), 60),
            ("gps".to_owned(), 1),
        ];
        let a = active_sensors(
            &listened,
            &[
                SensorKind::Accelerometer,
                SensorKind::Orientation,
                SensorKind::Light,
            ],
        );
        let kinds: Vec<i32> = a.sensors.iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            vec![
                SensorKind::Accelerometer as i32,
                SensorKind::Orientation as i32
            ]
        );
        assert!(a.location_wanted);
        assert_eq!(a.location_interval_ms, 1000);
        // A phone that does not say gets the default set.
        let d = active_sensors(&[], &[SensorKind::Accelerometer, SensorKind::Gyroscope]);
        assert_eq!(d.sensors.len(), 2);
    }

    #[test]
    fn rate_limit_caps_sustained_rate() {
        let mut r = RateLimit::new(100.0);
        let t0 = Instant::now();
        let mut allowed = 0;
        // 10 000 samples over one second = 100x a 100 Hz rate.
        for i in 0..10_000u32 {
            if r.allow(t0 + Duration::from_micros(u64::from(i) * 100)) {
                allowed += 1;
            }
        }
        assert!((100..=210).contains(&allowed), "{allowed}");
    }
}
