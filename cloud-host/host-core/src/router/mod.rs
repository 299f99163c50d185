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
//! * sound, microphone and clipboard (see `audio`): the phone's
//!   `streamAudio` -> Opus datagrams; the handset's microphone ->
//!   `injectAudio`; `streamClipboard` <-> `Clipboard` messages; each only
//!   as the handset's `Hello` asked.
//!
//! One handset per phone: a second session for a busy phone is closed with
//! PHONE_BUSY and a message naming who holds it.

mod admission;
mod audio;
mod control;
mod input;
mod pace;
mod sensors;
mod sessions;
mod video;

use self::admission::Entry;
pub use self::admission::{Busy, SessionTable};
use self::control::control_loop;
use self::input::input_loop;
pub use self::sensors::active_sensors;
use self::sensors::sensor_loop;
use self::sessions::Live;
pub use self::sessions::{
    LatencyLog, NoSessions, SensorLatency, SensorSamples, SessionDirectory, Sessions,
};
use self::video::{Net, video_loop};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use device_bridge::{BridgeServer, ServerSession};
use sensor_proto::bridge::{CloseReason, SensorKind, VideoCodec, VideoConfig, control_message};
use tokio::sync::{Notify, watch};

use crate::bluetooth::Bluetooth;
use crate::emu_client::{EmulatorClient, listened_sensors};
use crate::metrics::Metrics;
use crate::phones::{Lifecycle, PhoneManager, PhoneWatch};
use crate::registry::{Registry, SessionRecord};
use crate::threads::{Priority, spawn_until_dropped};

/// Video and input settings per session.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// Frame-rate cap.
    pub max_fps: u32,
    /// The encoder's tuning: bytes (screen) or CPU (camera).
    pub tuning: crate::video::Tuning,
    /// Bitrate cap, bits per second.
    pub bitrate_bps: u32,
    /// A keyframe (and a new GOP) at least this often.
    ///
    /// `None` (the default): keyframes only at session start, after a
    /// resume and when the handset asks. QUIC delivers every frame of a GOP
    /// reliably, so periodic keyframes only cost bitrate (about 25 kbit/s
    /// on an idle screen at one per 10 s, against about 1.3 kbit/s without).
    pub keyframe_interval: Option<Duration>,
    /// Pace video to what the path carries and adapt the bitrate (see
    /// `pace`); off only to measure what happens without it.
    pub adapt_to_path: bool,
    /// Opus bitrate of the phone's sound, bits per second.
    pub audio_bitrate_bps: u32,
    /// Length of a sound frame, ms (10 or 20).
    pub audio_frame_ms: u32,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            max_fps: 60,
            tuning: crate::video::Tuning::Screen,
            bitrate_bps: 4_000_000,
            keyframe_interval: None,
            adapt_to_path: true,
            audio_bitrate_bps: 64_000,
            audio_frame_ms: 20,
        }
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
        let attached = self.sessions.lock().attach(
            &id,
            Entry {
                phone: phone.clone(),
                handset: s.handset().to_string(),
                handset_name: handset_name.clone(),
                data: Live {
                    session: s.clone(),
                    started_ms: crate::unix_ms(),
                    frames: frames.clone(),
                    sensor_latency: sensor_latency.clone(),
                    radio_lent: radio_lent.clone(),
                },
            },
        );
        match attached {
            Ok(None) => {}
            Ok(Some((old_id, old))) => {
                tracing::info!(old = %old_id, "the same handset connected again: replacing its old session");
                tokio::spawn(async move {
                    old.session
                        .close(
                            CloseReason::Kicked,
                            "replaced by a new connection of the same handset",
                        )
                        .await;
                });
            }
            Err(busy) => {
                // The refused handset learns only that the phone is busy,
                // never who holds it: that is another tenant's business.
                let msg = format!("phone '{phone}' is in use by another handset; try again later");
                tracing::info!(
                    %phone,
                    holder = %busy.holder_name,
                    holder_session = %busy.session_id,
                    "phone busy: refusing a second handset"
                );
                let s2 = s.clone();
                tokio::spawn(async move { s2.close(CloseReason::PhoneBusy, &msg).await });
                return;
            }
        }
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
        // Recorded only while this host holds the phone's lease (the same
        // statement checks it): a host whose lease another host claimed
        // after the admission serves nothing more of that phone. A registry
        // error is logged and the session served: admission read the lease
        // a moment ago, and the audit is not worth a refused handset.
        let registry = self.registry.clone();
        match tokio::task::spawn_blocking(move || registry.session_started_under_lease(&record))
            .await
        {
            Ok(Ok(true)) | Err(_) => {}
            Ok(Ok(false)) => {
                // As a hand-over ends sessions: the companion comes back
                // through its front door to wherever the phone runs now.
                let msg = format!(
                    "phone '{phone}' moves to another host of the fleet (its lease moved); reconnect"
                );
                tracing::info!("refused: {msg}");
                self.sessions.lock().detach(&id);
                s.close(CloseReason::Shutdown, &msg).await;
                return;
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "the session audit could not record this session's start");
            }
        }
        self.metrics.sessions_attached.inc();
        let end = match self.phones.connect(&phone).await {
            Ok(client) => {
                // The phone shows who drives it (the sim paints it).
                let status = self.phones.status(&phone);
                status.set_session(Some(if s.is_browser() {
                    format!("{handset_name} (browser)")
                } else {
                    handset_name.clone()
                }));
                tracing::info!("attached");
                let phone_state = self.phones.watch(&phone);
                let reason = self
                    .serve(
                        s.clone(),
                        (client, phone_state),
                        frames,
                        sensor_latency,
                        radio_lent,
                    )
                    .await;
                status.set_session(None);
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
        self.sessions.lock().detach(&id);
        let registry = self.registry.clone();
        if let Ok(Err(e)) =
            tokio::task::spawn_blocking(move || registry.session_ended(&id, &end, crate::unix_ms()))
                .await
        {
            tracing::error!(error = %e, "the session audit could not record this session's end");
        }
    }

    /// Runs the session's pipelines until it ends; returns why it ended.
    async fn serve(
        &self,
        s: Arc<ServerSession>,
        (client, mut phone_state): (EmulatorClient, watch::Receiver<PhoneWatch>),
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
                // The runtime serving this session drives its connection:
                // the video thread's calls that touch it run there.
                Net::new(s.clone(), tokio::runtime::Handle::current()),
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
        // Sound both ways on a thread of its own (Opus is CPU work, a little
        // per frame), only when the handset asked for it.
        let wants_audio = s
            .hello()
            .audio
            .as_ref()
            .is_some_and(|a| a.playback || a.microphone);
        let audio = wants_audio
            .then(|| {
                spawn_until_dropped(
                    "audio",
                    Priority::Latency,
                    audio::audio_loop(
                        s.clone(),
                        client.clone(),
                        audio::AudioSettings {
                            frame_ms: self.cfg.audio_frame_ms,
                            bitrate_bps: self.cfg.audio_bitrate_bps,
                        },
                        self.metrics.clone(),
                        clock_offset_ns.clone(),
                    ),
                )
                .inspect_err(|e| tracing::error!(error = %e, "the session will have no sound"))
                .ok()
            })
            .flatten();
        let (clip_tx, clip_rx) = tokio::sync::mpsc::channel(8);
        let tasks = [
            tokio::spawn(audio::clipboard_loop(s.clone(), client.clone(), clip_rx)),
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
                clip_tx,
            )),
        ];
        // The session lasts as long as the handset's connection and the
        // phone: a phone that stops or dies ends it, saying why.
        let phone = s.welcome().phone_name;
        let end = tokio::select! {
            end = s.ended() => end.to_string(),
            (why, reason) = phone_left(&phone, &mut phone_state) => {
                tracing::warn!(%why, "the phone left: ending its session");
                s.close(reason, &why).await;
                why
            }
        };
        for t in tasks {
            t.abort();
        }
        drop(sensors);
        drop(video);
        drop(audio);
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
        end
    }
}

/// Resolves when `phone` is no longer running, with why, for its handset:
/// a failure since the session began (even one already followed by a
/// restart), or the state it went to.
/// Why the session's phone left, and the close reason to say it with: a
/// phone handed to another host of the fleet ends the session as a host
/// going away does (`SHUTDOWN`: the handset comes back through the front
/// door), any other stop or failure with `PHONE_STOPPED`.
async fn phone_left(phone: &str, state: &mut watch::Receiver<PhoneWatch>) -> (String, CloseReason) {
    let failures = state.borrow().failures;
    loop {
        let now = state.borrow_and_update().clone();
        if now.handed_over {
            return (
                format!("phone '{phone}' moves to another host of the fleet; reconnect"),
                CloseReason::Shutdown,
            );
        }
        if now.failures > failures {
            let why = now.last_failure.unwrap_or_default();
            let msg = match now.state {
                Lifecycle::Failed(_) => format!("phone '{phone}' failed: {why}"),
                _ => format!("phone '{phone}' failed: {why}; the host is restarting it"),
            };
            return (msg, CloseReason::PhoneStopped);
        }
        if now.state != Lifecycle::Running {
            return (
                format!("phone '{phone}' is {}", now.state.name()),
                CloseReason::PhoneStopped,
            );
        }
        if state.changed().await.is_err() {
            return (
                format!("phone '{phone}' is gone"),
                CloseReason::PhoneStopped,
            );
        }
    }
}
