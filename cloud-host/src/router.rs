//! The session router: attaches each admitted handset session to its phone
//! and moves everything between them.
//!
//! * sensors (QUIC datagrams, latest wins) -> `setSensor` raw values, with a
//!   per-sensor rate limit (samples beyond twice the requested rate are
//!   dropped and counted) and coalescing (when the phone is slower than the
//!   handset, only the newest value per sensor is applied);
//! * location -> `setGps`; touch and keys -> one ordered `streamInputEvent`
//!   per phone; touches outside the screen are clamped and counted, unknown
//!   key codes dropped and counted;
//! * screen: `streamScreenshot` (RGBA) -> H.264 -> one QUIC stream per group
//!   of pictures. A keyframe starts every GOP: at session start, after a
//!   resume, on the handset's request and every few seconds. The newest
//!   screen image wins: when the handset falls behind, frames are dropped,
//!   never queued.
//!
//! One handset per phone: a second session for a busy phone is closed with
//! PHONE_BUSY and a message naming who holds it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use device_bridge::{BridgeError, BridgeServer, ServerSession};
use sensor_proto::bridge::{
    ActiveSensor, ActiveSensors, CloseReason, SensorKind, SensorSample, VideoCodec, VideoConfig,
    VideoFrameHeader, VideoStreamHeader, control_message, input_message,
};
use sensor_proto::bytes::Bytes;
use sensor_proto::emulator::image_format::ImgFormat;
use sensor_proto::emulator::{
    GpsState, InputEvent, KeyboardEvent, Touch, TouchEvent, input_event, keyboard_event,
};
use sensor_proto::operator as op;
use tokio::sync::{Notify, watch};
use tokio_stream::StreamExt;

use crate::HostError;
use crate::bluetooth::Bluetooth;
use crate::emu_client::{EmulatorClient, listened_sensors};
use crate::metrics::Metrics;
use crate::operator::SessionDirectory;
use crate::phones::PhoneManager;
use crate::region::ScreenRegion;
use crate::registry::{Registry, SessionRecord};
use crate::threads::{Priority, spawn_on_own_runtime, spawn_until_dropped};
use crate::video::{EncoderConfig, VideoEncoder};

/// Video and input settings per session.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// Frame-rate cap.
    pub max_fps: u32,
    /// Bitrate cap, bits per second.
    pub bitrate_bps: u32,
    /// A keyframe (and a new GOP) at least this often.
    ///
    /// `None` (the default): keyframes only at session start, after a
    /// resume and when the handset asks. QUIC delivers every frame of a GOP
    /// reliably, so periodic keyframes only cost bitrate (about 25 kbit/s
    /// on an idle screen at one per 10 s, against about 1.3 kbit/s without).
    pub keyframe_interval: Option<Duration>,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            max_fps: 60,
            bitrate_bps: 4_000_000,
            keyframe_interval: None,
        }
    }
}

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
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let i = ((v.len() - 1) as f64 * p.clamp(0.0, 1.0)).round() as usize;
        v.get(i).copied()
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
}

#[derive(Debug)]
struct Live {
    session: Arc<ServerSession>,
    phone: String,
    handset_name: String,
    started_ms: i64,
    frames: Arc<AtomicU64>,
    sensor_latency: Arc<Mutex<SensorLatency>>,
    radio_lent: Arc<AtomicBool>,
}

/// The live sessions, for the operator API.
#[derive(Debug, Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Live>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
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

    fn sensor_log(
        &self,
        id: &str,
        which: impl Fn(&SensorLatency) -> &LatencyLog,
    ) -> Option<(u64, u64, usize)> {
        let live = self.lock();
        let logs = live
            .get(id)?
            .sensor_latency
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let log = which(&logs);
        Some((log.percentile(0.5)?, log.percentile(0.99)?, log.len()))
    }

    /// Ids of the live sessions.
    pub fn ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// The name and certificate fingerprint of the handset holding
    /// `phone`, if one does.
    pub fn holder(&self, phone: &str) -> Option<(String, String)> {
        self.lock()
            .values()
            .find(|l| l.phone == phone)
            .map(|l| (l.handset_name.clone(), l.session.handset().to_string()))
    }

    /// The session attached to `phone`, if any.
    pub fn on_phone(&self, phone: &str) -> Option<Arc<ServerSession>> {
        self.lock()
            .values()
            .find(|l| l.phone == phone)
            .map(|l| l.session.clone())
    }
}

impl SessionDirectory for Sessions {
    fn list(&self) -> Vec<op::Session> {
        let mut v: Vec<op::Session> = self
            .lock()
            .values()
            .map(|l| {
                let st = l.session.stats();
                op::Session {
                    id: l.session.id().to_owned(),
                    handset_fingerprint: l.session.handset().to_string(),
                    handset_name: l.handset_name.clone(),
                    phone: l.phone.clone(),
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
            .map(|l| l.session.clone())
            .ok_or_else(|| HostError::NotFound {
                kind: "session",
                name: id.to_owned(),
            })?;
        let reason = reason.to_owned();
        tokio::spawn(async move { s.close(CloseReason::Kicked, &reason).await });
        Ok(())
    }
}

/// Routes sessions to phones.
#[derive(Debug)]
pub struct Router {
    phones: PhoneManager,
    registry: Arc<Registry>,
    sessions: Arc<Sessions>,
    metrics: Arc<Metrics>,
    cfg: RouterConfig,
    bluetooth: Arc<Bluetooth>,
}

/// Per-session counters of refused input.
#[derive(Debug, Default)]
struct Refused {
    clamped_touches: AtomicU64,
    unknown_keys: AtomicU64,
}

impl Router {
    /// A router over these parts.
    pub fn new(
        phones: PhoneManager,
        registry: Arc<Registry>,
        sessions: Arc<Sessions>,
        metrics: Arc<Metrics>,
        cfg: RouterConfig,
        bluetooth: Arc<Bluetooth>,
    ) -> Self {
        Self {
            phones,
            registry,
            sessions,
            metrics,
            cfg,
            bluetooth,
        }
    }

    /// Accepts sessions from `server` until `shutdown` resolves, then
    /// closes the server.
    pub async fn run(self: Arc<Self>, server: BridgeServer, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                s = server.accept() => match s {
                    Some(s) => { tokio::spawn(self.clone().attach(Arc::new(s))); }
                    None => break,
                },
                () = &mut shutdown => break,
            }
        }
        server.close("host shutting down");
    }

    async fn attach(self: Arc<Self>, s: Arc<ServerSession>) {
        use tracing::Instrument as _;
        let span = tracing::info_span!(
            "session",
            session = %s.id(),
            phone = %s.welcome().phone_name,
            handset = %s.hello().handset_name
        );
        self.attach_in_span(s).instrument(span).await;
    }

    async fn attach_in_span(self: Arc<Self>, s: Arc<ServerSession>) {
        let phone = s.welcome().phone_name;
        let handset_name = s.hello().handset_name.clone();
        let id = s.id().to_owned();
        let frames = Arc::new(AtomicU64::new(0));
        let sensor_latency = Arc::new(Mutex::new(SensorLatency::default()));
        let radio_lent = Arc::new(AtomicBool::new(false));
        {
            let mut live = self.sessions.lock();
            // The same handset connecting again (its app restarted, its old
            // connection not timed out yet) replaces its old session.
            let same = live
                .values()
                .find(|l| l.phone == phone && l.session.handset() == s.handset())
                .map(|l| l.session.clone());
            if let Some(old) = same {
                live.remove(old.id());
                tracing::info!(old = %old.id(), "the same handset connected again: replacing its old session");
                tokio::spawn(async move {
                    old.close(
                        CloseReason::Kicked,
                        "replaced by a new connection of the same handset",
                    )
                    .await;
                });
            }
            if let Some(other) = live.values().find(|l| l.phone == phone) {
                let msg = format!(
                    "phone '{phone}' is in use by handset '{}' (session {})",
                    other.handset_name,
                    other.session.id()
                );
                drop(live);
                tracing::info!("{msg}: refusing a second handset");
                let s2 = s.clone();
                tokio::spawn(async move { s2.close(CloseReason::PhoneBusy, &msg).await });
                return;
            }
            live.insert(
                id.clone(),
                Live {
                    session: s.clone(),
                    phone: phone.clone(),
                    handset_name: handset_name.clone(),
                    started_ms: crate::unix_ms(),
                    frames: frames.clone(),
                    sensor_latency: sensor_latency.clone(),
                    radio_lent: radio_lent.clone(),
                },
            );
        }
        self.metrics.sessions_total.fetch_add(1, Ordering::Relaxed);
        // SQLite writes wait on a blocking thread, not on a worker of the
        // latency runtime that reads every session's datagrams.
        let record = SessionRecord {
            id: id.clone(),
            fingerprint: s.handset().to_string(),
            phone: phone.clone(),
            remote: s.remote_address().map(|a| a.to_string()),
            started_at_ms: crate::unix_ms(),
            ended_at_ms: None,
            end_reason: None,
        };
        let registry = self.registry.clone();
        let _ = tokio::task::spawn_blocking(move || registry.session_started(&record)).await;
        let end = match self.phones.connect(&phone).await {
            Ok((client, sim)) => {
                if let Some(sim) = &sim {
                    sim.set_session(Some(handset_name.clone()));
                }
                tracing::info!("attached");
                let reason = self
                    .serve(s.clone(), client, frames, sensor_latency, radio_lent)
                    .await;
                if let Some(sim) = &sim {
                    sim.set_session(None);
                }
                reason
            }
            Err(e) => {
                let msg = e.to_string();
                s.close(CloseReason::PhoneStopped, &msg).await;
                msg
            }
        };
        tracing::info!(%end, "session ended");
        self.bluetooth
            .radio_released(&phone, &id, &format!("the handset's session ended: {end}"))
            .await;
        self.sessions.lock().remove(&id);
        let registry = self.registry.clone();
        let _ = tokio::task::spawn_blocking(move || {
            registry.session_ended(&id, &end, crate::unix_ms())
        })
        .await;
    }

    /// Runs the session's pipelines until it ends; returns why it ended.
    async fn serve(
        &self,
        s: Arc<ServerSession>,
        client: EmulatorClient,
        frames: Arc<AtomicU64>,
        sensor_latency: Arc<Mutex<SensorLatency>>,
        radio_lent: Arc<AtomicBool>,
    ) -> String {
        let status = client.status().await.ok();
        let listened = status.as_ref().map(listened_sensors).unwrap_or_default();
        let advertised: Vec<SensorKind> = s
            .hello()
            .capabilities
            .iter()
            .filter_map(|c| SensorKind::try_from(c.kind).ok())
            .collect();
        let active = active_sensors(&listened, &advertised);
        let rates: HashMap<i32, f32> = active.sensors.iter().map(|a| (a.kind, a.rate_hz)).collect();
        let _ = s
            .send_control(control_message::Msg::ActiveSensors(active))
            .await;
        let display = s.welcome().display.unwrap_or_default();
        let _ = s
            .send_control(control_message::Msg::VideoConfig(VideoConfig {
                codec: VideoCodec::H264 as i32,
                width: display.width_px,
                height: display.height_px,
                max_fps: self.cfg.max_fps,
                max_bitrate_bps: self.cfg.bitrate_bps,
            }))
            .await;
        let keyframe = Arc::new(Notify::new());
        let refused = Arc::new(Refused::default());
        let clock_offset_ns = Arc::new(std::sync::atomic::AtomicI64::new(0));
        // The sensor path gets its own thread, so a sample never waits behind
        // video work. Dropping `sensors` stops it.
        let sensors = spawn_until_dropped(
            "sensors",
            Priority::Latency,
            sensor_loop(
                s.clone(),
                client.clone(),
                rates,
                self.metrics.clone(),
                (clock_offset_ns.clone(), sensor_latency),
            ),
        )
        .inspect_err(|e| tracing::error!(error = %e, "sensors will not reach the phone"))
        .ok();
        // Video (screen feed, encoder) runs on its own lower-priority thread:
        // the sensor, input and HCI paths preempt it on a busy machine, and a
        // frame that ends up late is dropped, never queued. Dropping `video`
        // stops it.
        let video = spawn_until_dropped(
            "video",
            Priority::Bulk,
            video_loop(
                s.clone(),
                client.clone(),
                self.cfg.clone(),
                keyframe.clone(),
                frames,
                self.metrics.clone(),
                (display.width_px, display.height_px),
            ),
        )
        .inspect_err(|e| {
            tracing::error!(error = %e, "the phone's screen will not reach the handset");
        })
        .ok();
        let tasks = [
            tokio::spawn(input_loop(
                s.clone(),
                client.clone(),
                (display.width_px, display.height_px),
                refused.clone(),
            )),
            tokio::spawn(control_loop(
                s.clone(),
                keyframe,
                clock_offset_ns,
                (self.bluetooth.clone(), radio_lent),
            )),
        ];
        let end = s.ended().await;
        for t in tasks {
            t.abort();
        }
        drop(sensors);
        drop(video);
        let (c, k) = (
            refused.clamped_touches.load(Ordering::Relaxed),
            refused.unknown_keys.load(Ordering::Relaxed),
        );
        if c + k > 0 {
            tracing::info!(
                clamped_touches = c,
                unknown_keys = k,
                "input refused during the session"
            );
        }
        end.to_string()
    }
}

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

async fn sensor_loop(
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
            metrics.sensor_dropped.fetch_add(1, Ordering::Relaxed);
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
            .replace(sample)
            .is_some();
        if replaced {
            metrics.sensor_dropped.fetch_add(1, Ordering::Relaxed);
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
    let taken = sample.timestamp_ns as i64 + clock_offset_ns.load(Ordering::Relaxed);
    let now = crate::unix_ns();
    (sample.timestamp_ns > 0 && now >= taken).then(|| ((now - taken) / 1000) as u64)
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
    latest: Mutex<Option<SensorSample>>,
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
            let Some(sample) = next else { break };
            if client.set_sensor(target, &sample.values).await.is_ok() {
                metrics.sensor_samples.fetch_add(1, Ordering::Relaxed);
                record_since_capture(&sample, &clock_offset_ns, &latency, |l| &mut l.applied);
            } else {
                metrics.sensor_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn touch_event(
    t: &sensor_proto::bridge::Touch,
    (w, h): (u32, u32),
    clamped: &AtomicU64,
) -> TouchEvent {
    use sensor_proto::bridge::TouchAction;
    let action = TouchAction::try_from(t.action).unwrap_or(TouchAction::Unspecified);
    let (maxx, maxy) = (w.saturating_sub(1) as f32, h.saturating_sub(1) as f32);
    let touches = t
        .pointers
        .iter()
        .take(10)
        .map(|p| {
            let (x, y) = (
                if p.x.is_finite() { p.x } else { 0.0 },
                if p.y.is_finite() { p.y } else { 0.0 },
            );
            if x < 0.0 || y < 0.0 || x > maxx || y > maxy || !p.x.is_finite() || !p.y.is_finite() {
                clamped.fetch_add(1, Ordering::Relaxed);
            }
            let released = action == TouchAction::Cancel
                || (action == TouchAction::Up && p.id == t.action_pointer_id);
            Touch {
                x: x.clamp(0.0, maxx).round() as i32,
                y: y.clamp(0.0, maxy).round() as i32,
                identifier: p.id.min(i32::MAX as u32) as i32,
                pressure: if released {
                    0
                } else {
                    ((p.pressure.clamp(0.0, 1.0) * 1024.0) as i32).max(1)
                },
                touch_major: p.major_px.clamp(0.0, 1000.0) as i32,
                touch_minor: p.minor_px.clamp(0.0, 1000.0) as i32,
                ..Touch::default()
            }
        })
        .collect();
    TouchEvent {
        touches,
        display: 0,
    }
}

async fn input_loop(
    s: Arc<ServerSession>,
    client: EmulatorClient,
    screen: (u32, u32),
    refused: Arc<Refused>,
) {
    let (tx, done) = client.input_stream();
    while let Ok(msg) = s.recv_input().await {
        let ev = match msg.event {
            Some(input_message::Event::Touch(t)) => Some(input_event::Type::TouchEvent(
                touch_event(&t, screen, &refused.clamped_touches),
            )),
            Some(input_message::Event::Key(k)) => {
                use sensor_proto::bridge::KeyAction;
                let event_type = match KeyAction::try_from(k.action).unwrap_or(KeyAction::Press) {
                    KeyAction::Down => keyboard_event::KeyEventType::Keydown,
                    KeyAction::Up => keyboard_event::KeyEventType::Keyup,
                    _ => keyboard_event::KeyEventType::Keypress,
                };
                match (
                    crate::keymap::android_to_w3c(k.keycode),
                    k.text.as_deref().filter(|t| !t.is_empty()),
                ) {
                    (_, Some(text)) if text.len() <= 1024 => {
                        Some(input_event::Type::KeyEvent(KeyboardEvent {
                            event_type: keyboard_event::KeyEventType::Keypress as i32,
                            text: text.to_owned(),
                            ..KeyboardEvent::default()
                        }))
                    }
                    (Some(key), _) => Some(input_event::Type::KeyEvent(KeyboardEvent {
                        event_type: event_type as i32,
                        key: key.to_owned(),
                        ..KeyboardEvent::default()
                    })),
                    _ => {
                        refused.unknown_keys.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                }
            }
            Some(input_message::Event::Location(l)) => {
                let gps = GpsState {
                    passive_update: false,
                    latitude: l.latitude_deg,
                    longitude: l.longitude_deg,
                    speed: l.speed_mps.unwrap_or(0.0),
                    bearing: l.bearing_deg.unwrap_or(0.0),
                    altitude: l.altitude_m.unwrap_or(0.0),
                    satellites: l.satellites as i32,
                };
                if let Err(e) = client.set_gps(gps).await {
                    tracing::debug!(error = %e, "location refused by the phone");
                }
                None
            }
            None => None,
        };
        if let Some(t) = ev
            && tx.send(InputEvent { r#type: Some(t) }).await.is_err()
        {
            break;
        }
    }
    drop(tx);
    let _ = done.await;
}

async fn control_loop(
    s: Arc<ServerSession>,
    keyframe: Arc<Notify>,
    clock_offset_ns: Arc<std::sync::atomic::AtomicI64>,
    (bluetooth, radio_lent): (Arc<Bluetooth>, Arc<AtomicBool>),
) {
    let phone = s.welcome().phone_name;
    while let Ok(m) = s.recv_control().await {
        match m.msg {
            // The handset lends its radio (repeated as a heartbeat) or takes
            // it back.
            Some(control_message::Msg::RadioState(r)) if r.lent => {
                if !radio_lent.swap(true, Ordering::Relaxed) {
                    tracing::info!("the handset lends its Bluetooth radio");
                }
                bluetooth.radio_heartbeat(&phone, &s);
            }
            Some(control_message::Msg::RadioState(_)) => {
                if radio_lent.swap(false, Ordering::Relaxed) {
                    tracing::info!("the handset took its Bluetooth radio back");
                }
                bluetooth
                    .radio_released(&phone, s.id(), "the handset took its radio back")
                    .await;
            }
            Some(control_message::Msg::KeyframeRequest(_)) => keyframe.notify_one(),
            // The handset's offset is host minus handset; a sample taken at
            // handset time t happened at host time t + offset.
            Some(control_message::Msg::Stats(st)) => {
                clock_offset_ns.store(st.clock_offset_ns, Ordering::Relaxed)
            }
            _ => {}
        }
    }
}

/// The latest screen image, fed by a task that reads the phone's stream.
type Latest = watch::Receiver<Option<Arc<sensor_proto::emulator::Image>>>;

/// Reads the phone's screenshot stream on its own thread, runtime and
/// connection: each frame is megabytes of RGBA, and parsing them on the
/// shared async workers would delay the session's QUIC and sensor traffic.
/// The pixels travel through a shared memory region ([`ScreenRegion`],
/// the emulator's MMAP transport) when the phone accepts one, else inside
/// the messages. The thread ends when the returned receiver is dropped.
async fn screen_feed(client: EmulatorClient, display: (u32, u32)) -> Result<Latest, HostError> {
    let (tx, rx) = watch::channel(None);
    let (opened_tx, opened_rx) = tokio::sync::oneshot::channel();
    spawn_on_own_runtime("screen", Priority::Bulk, async move {
        let client = match client.separate_connection().await {
            Ok(c) => c,
            Err(e) => {
                let _ = opened_tx.send(Err(e));
                return;
            }
        };
        // A square box of the longer side fits the screen in either
        // orientation at its native size. The emulator maps the request's
        // width x height x 4 bytes of the file, so the file has that size;
        // it is sparse, and only the image's w x h x 4 bytes take memory.
        let side = display.0.max(display.1);
        let mut region = (side > 0)
            .then(|| ScreenRegion::create(u64::from(side) * u64::from(side) * 4))
            .transpose()
            .inspect_err(
                |e| tracing::warn!(error = %e, "screen images will travel in the messages"),
            )
            .ok()
            .flatten();
        let stream = match &region {
            Some(r) => match client
                .screenshots_into(ImgFormat::Rgba8888, (side, side), r.path())
                .await
            {
                Ok(s) => Ok(s),
                Err(e) => {
                    tracing::info!(error = %e, "the phone refuses a shared screen region; images travel in the messages");
                    region = None;
                    client.screenshots(ImgFormat::Rgba8888).await
                }
            },
            None => client.screenshots(ImgFormat::Rgba8888).await,
        };
        let mut stream = match stream {
            Ok(s) => {
                let _ = opened_tx.send(Ok(()));
                s
            }
            Err(e) => {
                let _ = opened_tx.send(Err(e));
                return;
            }
        };
        let mut images = 0u64;
        loop {
            tokio::select! {
                item = stream.next() => match item {
                    Some(Ok(mut img)) => {
                        images += 1;
                        if let Some(r) = &mut region {
                            // The phone has it open now: its name can go.
                            r.unlink();
                        }
                        // Read at once: the phone writes the next image into
                        // the same region (a late read would see it, torn).
                        if img.image.is_empty() && let Some(r) = &region {
                            let f = img.format.clone().unwrap_or_default();
                            let len = f.width as usize * f.height as usize * 4;
                            match r.read(len) {
                                Ok(px) => img.image = px.into(),
                                Err(e) => {
                                    tracing::error!(error = %e, "cannot read the phone's screen image");
                                    break;
                                }
                            }
                        }
                        if tx.send(Some(Arc::new(img))).is_err() {
                            break;
                        }
                    }
                    Some(Err(status)) if region.is_some() && images == 0 => {
                        // The region failed before any image (too small for the
                        // phone, no room in /dev/shm): pixels in the messages.
                        tracing::warn!(error = %status, "the shared screen region failed; images travel in the messages");
                        region = None;
                        match client.screenshots(ImgFormat::Rgba8888).await {
                            Ok(s) => stream = s,
                            Err(e) => {
                                tracing::error!(error = %e, "the phone's screen stream failed");
                                break;
                            }
                        }
                    }
                    Some(Err(status)) => {
                        tracing::error!(error = %status, "the phone's screen stream failed");
                        break;
                    }
                    None => {
                        tracing::info!("the phone's screen stream ended");
                        break;
                    }
                },
                () = tx.closed() => break,
            }
        }
    })?;
    opened_rx.await.map_err(|_| HostError::Invalid {
        what: "screen feed",
        why: "its thread ended before the stream opened".to_owned(),
    })??;
    Ok(rx)
}

async fn video_loop(
    s: Arc<ServerSession>,
    client: EmulatorClient,
    cfg: RouterConfig,
    keyframe_wanted: Arc<Notify>,
    frames: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    display: (u32, u32),
) {
    let mut latest = match screen_feed(client, display).await {
        Ok(rx) => rx,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the phone's screen");
            return;
        }
    };
    let force = Arc::new(AtomicBool::new(true));
    {
        let force = force.clone();
        tokio::spawn(async move {
            loop {
                keyframe_wanted.notified().await;
                force.store(true, Ordering::Relaxed);
            }
        });
    }
    let mut encoder: Option<VideoEncoder> = None;
    let mut gop = None;
    let mut last_key = Instant::now();
    let mut gop_id = 0u64;
    // A frame the fps cap skipped: offered again at the next slot, so the
    // last change of a screen that then stays still is never lost.
    let mut pending: Option<(Arc<sensor_proto::emulator::Image>, tokio::time::Instant)> = None;
    loop {
        let img = match pending.take() {
            None => {
                if latest.changed().await.is_err() {
                    return;
                }
                latest.borrow_and_update().clone()
            }
            Some((img, at)) => tokio::select! {
                r = latest.changed() => {
                    if r.is_err() {
                        return;
                    }
                    latest.borrow_and_update().clone()
                }
                () = tokio::time::sleep_until(at) => Some(img),
            },
        };
        let Some(img) = img else { continue };
        let f = img.format.clone().unwrap_or_default();
        let (w, h) = (f.width, f.height);
        if encoder
            .as_ref()
            .is_none_or(|e| (e.config().width, e.config().height) != (w, h))
        {
            match VideoEncoder::new(EncoderConfig {
                width: w,
                height: h,
                max_fps: cfg.max_fps,
                bitrate_bps: cfg.bitrate_bps,
                keyframe_interval_s: cfg
                    .keyframe_interval
                    .map_or(0, |d| d.as_secs().max(1) as u32),
            }) {
                Ok(e) => encoder = Some(e),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the video encoder");
                    return;
                }
            }
            force.store(true, Ordering::Relaxed);
        }
        let Some(enc) = encoder.as_mut() else {
            return;
        };
        let want_key = force.swap(false, Ordering::Relaxed)
            || gop.is_none()
            || cfg
                .keyframe_interval
                .is_some_and(|i| last_key.elapsed() >= i);
        let now_us = (crate::unix_ns() / 1000).max(0) as u64;
        // Too soon for the fps cap: offer this frame again at the next slot
        // (without encoding it now).
        if let Some(slot) = enc.next_slot_us()
            && now_us < slot
        {
            if want_key {
                force.store(true, Ordering::Relaxed);
            }
            pending = Some((
                img,
                tokio::time::Instant::now() + Duration::from_micros((slot - now_us).max(1000)),
            ));
            continue;
        }
        // Encoding is CPU work; this thread is the video's own (see
        // `Priority::Bulk`), so it encodes in place.
        let result = enc.encode_at(&img.image, img.timestamp_us, now_us, want_key);
        let encoded = match result {
            Ok(Some(e)) => e,
            Ok(None) => {
                if want_key {
                    force.store(true, Ordering::Relaxed);
                }
                let wait = enc.next_slot_us().map_or(0, |t| t.saturating_sub(now_us));
                pending = Some((
                    img,
                    tokio::time::Instant::now() + Duration::from_micros(wait.max(1000)),
                ));
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "encoding failed");
                return;
            }
        };
        if encoded.keyframe {
            last_key = Instant::now();
            gop_id += 1;
            match s
                .start_gop(VideoStreamHeader {
                    gop_id,
                    codec: VideoCodec::H264 as i32,
                    width: w,
                    height: h,
                    rotation_deg: 0,
                })
                .await
            {
                Ok(g) => gop = Some(g),
                Err(_) => {
                    gop = None;
                    force.store(true, Ordering::Relaxed);
                    continue;
                }
            }
        }
        let Some(writer) = gop.as_mut() else {
            force.store(true, Ordering::Relaxed);
            continue;
        };
        let len = encoded.data.len() as u64;
        let header = VideoFrameHeader {
            pts_us: encoded.pts_us,
            seq: 0,
            keyframe: encoded.keyframe,
            capture_time_us: encoded.capture_time_us,
            payload_len: 0,
        };
        match writer.write_frame(header, Bytes::from(encoded.data)).await {
            Ok(_) => {
                frames.fetch_add(1, Ordering::Relaxed);
                metrics.frames_sent.fetch_add(1, Ordering::Relaxed);
                metrics.bytes_down.fetch_add(len, Ordering::Relaxed);
            }
            Err(BridgeError::GopSuperseded { .. }) => {}
            Err(_) => {
                // Disconnected (a resume may follow) or closed: start over
                // with a keyframe on a new GOP.
                gop = None;
                force.store(true, Ordering::Relaxed);
                if !s.is_connected() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
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
    fn touches_are_clamped_and_counted_and_up_releases_one_pointer() {
        use sensor_proto::bridge::{Pointer, TouchAction};
        let clamped = AtomicU64::new(0);
        let t = sensor_proto::bridge::Touch {
            action: TouchAction::Up as i32,
            action_pointer_id: 2,
            pointers: vec![
                Pointer {
                    id: 1,
                    x: -50.0,
                    y: 5000.0,
                    pressure: 0.5,
                    ..Pointer::default()
                },
                Pointer {
                    id: 2,
                    x: 100.0,
                    y: 200.0,
                    pressure: 0.5,
                    ..Pointer::default()
                },
            ],
            timestamp_ns: 0,
        };
        let ev = touch_event(&t, (720, 1280), &clamped);
        assert_eq!(clamped.load(Ordering::Relaxed), 1);
        assert_eq!((ev.touches[0].x, ev.touches[0].y), (0, 1279));
        assert!(ev.touches[0].pressure > 0);
        assert_eq!(ev.touches[1].pressure, 0);
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
