//! The sim phone as a running device: its state, a render loop that publishes
//! a frame whenever the picture changes (and at least once a second, for the
//! clock), and the Android Emulator's `EmulatorController` gRPC API on top,
//! so the host drives it with the same client it uses for a real emulator.
//!
//! Served subset: getStatus, getScreenshot, streamScreenshot, sendTouch,
//! sendKey, streamInputEvent, setSensor, getSensor, setPhysicalModel,
//! getPhysicalModel, setGps, getGps, setBattery, getBattery, streamAudio,
//! injectAudio (see [`sound`]), getClipboard, setClipboard, streamClipboard;
//! getDisplayConfigurations answers FAILED_PRECONDITION (no secondary
//! displays), everything else UNIMPLEMENTED. Authentication is the emulator's
//! `authorization: Bearer <token>` header when a token is configured.
//! Screenshots travel in the messages or, with the emulator's `MMAP`
//! transport, through a region file the client created ([`Region`]).
//! The server runs on a thread of its own at latency priority (see
//! `backend::sim`); image conversions leave it for bulk-priority threads.
//!
//! Frames are served top-down (row 0 is the top of the screen), as the
//! emulator's raw screenshots are consumed by existing clients.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq as _;

use sensor_proto::emulator::emulator_controller_server::EmulatorControllerServer;
use sensor_proto::emulator::{
    BatteryState, EmulatorStatus, Entry, EntryList, GpsState, KeyboardEvent, TouchEvent,
    VmConfiguration, battery_state, keyboard_event, sensor_value, vm_configuration,
};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tonic::{Request, Status};

use super::{
    BluetoothView, Gps, LISTENED_SENSORS, Renderer, Ripple, SceneState, SensorName, StatusClock,
};
use host_core::HostError;

/// How a sim phone is built. Its `Debug` never shows the token.
#[derive(Clone)]
pub struct SimPhoneConfig {
    /// Screen width in pixels.
    pub width: u32,
    /// Screen height in pixels.
    pub height: u32,
    /// Screen density in dpi.
    pub dpi: u32,
    /// When set, every gRPC call must carry `authorization: Bearer <token>`.
    pub auth_token: Option<String>,
}

impl std::fmt::Debug for SimPhoneConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimPhoneConfig")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("dpi", &self.dpi)
            .field(
                "auth_token",
                &host_core::secret::Redacted(self.auth_token.is_some()),
            )
            .finish()
    }
}

impl Default for SimPhoneConfig {
    fn default() -> Self {
        Self {
            width: super::DEFAULT_WIDTH,
            height: super::DEFAULT_HEIGHT,
            dpi: 320,
            auth_token: None,
        }
    }
}

pub use vphone_media::Frame;

/// Counters of what the phone received.
#[derive(Debug, Default)]
pub struct SimStats {
    /// Frames published.
    pub frames: AtomicU64,
    /// Touch and key events applied.
    pub input_events: AtomicU64,
    /// setSensor calls applied.
    pub sensor_updates: AtomicU64,
    /// Inputs refused (bad values) or dropped (too many touches).
    pub rejected: AtomicU64,
    /// Images written into clients' shared memory regions (MMAP transport).
    pub region_images: AtomicU64,
}

const MAX_TOUCH_SLOTS: usize = 10;
const MAX_SENSOR_VALUES: usize = 16;
/// How many recent keys [`SimPhone::recent_keys`] remembers.
pub const KEY_LOG_LEN: usize = 1024;

#[derive(Debug)]
struct PhoneState {
    sensors: HashMap<i32, Vec<f32>>,
    physical: HashMap<i32, Vec<f32>>,
    gps: Option<GpsState>,
    battery: BatteryState,
    touches: HashMap<i32, (i32, i32)>,
    ripples: Vec<(f32, f32, i32, Instant)>,
    last_key: Option<String>,
    /// The most recent keys, oldest first (at most [`KEY_LOG_LEN`]).
    key_log: VecDeque<String>,
    bluetooth: BluetoothView,
    session: Option<String>,
    rotation: i32,
    /// What the status-bar clock shows.
    clock_face: StatusClock,
    /// Overrides the Sensor Lab's listened sensors (`name@hz` pairs).
    listening: Option<Vec<(String, u32)>>,
    /// The tones the phone plays.
    mixer: sound::Mixer,
    /// What the microphone heard last.
    mic: Option<MicHeard>,
    /// Capture-to-heard delays of the latest microphone packets, µs.
    mic_latency_us: VecDeque<u64>,
    /// The primary clipboard's text.
    clipboard: String,
    /// The Sensor Lab's text field: what was typed (at most
    /// [`TYPED_MAX`] characters). Ctrl+C copies it, Ctrl+V pastes into it.
    typed: String,
    /// A Control key is held.
    ctrl: bool,
}

/// The longest text the Sensor Lab's text field keeps, characters.
pub const TYPED_MAX: usize = 4096;

#[derive(Debug)]
struct Shared {
    cfg: SimPhoneConfig,
    state: Mutex<PhoneState>,
    changed: Notify,
    frames: watch::Sender<Option<Arc<Frame>>>,
    started: Instant,
    stats: SimStats,
    /// What `getStatus` says of the boot (the sim is ready at once; the
    /// emulator stand-in in the test tree boots slowly).
    booted: AtomicBool,
    /// A client feeds the microphone (`injectAudio`): one at a time.
    mic_busy: AtomicBool,
    /// Bumped on every clipboard change the guest makes (not on
    /// `setClipboard`), for `streamClipboard`.
    guest_clip: watch::Sender<u64>,
    /// Where in each second (or minute) this phone's status-bar clock turns
    /// (µs, taken modulo the clock's period): the phones of a host each tick
    /// at their own moment, not all at the top of the second (which woke
    /// every phone, screen feed, encoder and handset decoder at once). Its
    /// clock shows the time this much late.
    clock_phase_us: u64,
}

/// A running sim phone. Cheap to clone; all clones are the same phone.
#[derive(Clone, Debug)]
pub struct SimPhone {
    shared: Arc<Shared>,
}

/// Now, Unix µs (the timestamps of screen images).
fn unix_us() -> u64 {
    u64::try_from(device_bridge::clock::unix_us()).unwrap_or(0)
}

impl SimPhone {
    /// Builds the phone and starts its render loop on a thread of its own.
    /// The loop ends when every clone of the phone is dropped.
    ///
    /// # Errors
    /// [`HostError::InvalidSize`] for an unsupported screen size;
    /// [`HostError::Io`] when the display thread cannot start.
    pub fn start(cfg: SimPhoneConfig) -> Result<Self, HostError> {
        let renderer = Renderer::new(cfg.width, cfg.height)?;
        let (frames, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            clock_phase_us: fastrand::u64(0..60_000_000),
            cfg,
            state: Mutex::new(PhoneState {
                listening: None,
                sensors: HashMap::new(),
                physical: HashMap::new(),
                gps: None,
                battery: BatteryState {
                    has_battery: true,
                    is_present: true,
                    charger: battery_state::BatteryCharger::Ac as i32,
                    charge_level: 100,
                    health: battery_state::BatteryHealth::Good as i32,
                    status: battery_state::BatteryStatus::Charging as i32,
                },
                touches: HashMap::new(),
                ripples: Vec::new(),
                last_key: None,
                key_log: VecDeque::new(),
                bluetooth: BluetoothView::NoRadio,
                session: None,
                rotation: 0,
                clock_face: StatusClock::default(),
                mixer: sound::Mixer::default(),
                mic: None,
                mic_latency_us: VecDeque::new(),
                clipboard: String::new(),
                typed: String::new(),
                ctrl: false,
            }),
            changed: Notify::new(),
            frames,
            started: Instant::now(),
            stats: SimStats::default(),
            booted: AtomicBool::new(true),
            mic_busy: AtomicBool::new(false),
            guest_clip: watch::Sender::new(0),
        });
        // Rendering is CPU work: it gets its own lower-priority thread (see
        // `device_bridge::bulk_thread_priority`), never an async worker that
        // also serves the phone's gRPC API.
        host_core::threads::spawn_on_own_runtime(
            "sim-display",
            host_core::threads::Priority::Bulk,
            render_loop(Arc::downgrade(&shared), renderer),
        )?;
        Ok(Self { shared })
    }

    fn state(&self) -> MutexGuard<'_, PhoneState> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn touch(&self) {
        self.shared.changed.notify_one();
    }

    /// Sets what `getStatus` reports as `booted` (true from the start).
    pub fn set_booted(&self, booted: bool) {
        self.shared.booted.store(booted, Ordering::Relaxed);
    }

    /// Screen size and density.
    pub fn config(&self) -> &SimPhoneConfig {
        &self.shared.cfg
    }

    /// Counters.
    pub fn stats(&self) -> &SimStats {
        &self.shared.stats
    }

    /// Subscribes to published frames (the latest is available at once).
    pub fn frames(&self) -> watch::Receiver<Option<Arc<Frame>>> {
        self.shared.frames.subscribe()
    }

    /// Makes the phone listen to `sensors` (`(name, hz)`, names as in
    /// `getStatus`' `vphone.sensors.listening`, e.g. `gyroscope_uncalibrated`)
    /// instead of the Sensor Lab's default set: what an app switching to a
    /// game mode does. A session started afterwards asks the handset for them.
    pub fn set_listening(&self, sensors: Vec<(String, u32)>) {
        self.state().listening = Some(sensors);
    }

    /// Sets what the status-bar clock shows: `HH:MM:SS` (the default, a
    /// screen that changes every second) or `HH:MM` as on Android (a resting
    /// screen that stays still for a minute).
    pub fn set_status_clock(&self, face: StatusClock) {
        self.state().clock_face = face;
        self.touch();
    }

    /// The clock's phase: where in its period it turns, µs.
    fn clock_phase(&self, face: StatusClock) -> u64 {
        self.shared.clock_phase_us % face.period_us()
    }

    /// What the phone's Bluetooth status shows now.
    pub fn bluetooth(&self) -> BluetoothView {
        self.state().bluetooth.clone()
    }

    /// Sets what the Bluetooth area of the screen shows.
    pub fn set_bluetooth(&self, view: BluetoothView) {
        self.state().bluetooth = view;
        self.touch();
    }

    /// The last key event shown on screen, as text (e.g. `"GoHome press"`).
    pub fn last_key(&self) -> Option<String> {
        self.state().last_key.clone()
    }

    /// The most recent keys the phone received, oldest first, in the form
    /// the screen shows them (at most [`KEY_LOG_LEN`]).
    pub fn recent_keys(&self) -> Vec<String> {
        self.state().key_log.iter().cloned().collect()
    }

    /// What the microphone heard last (`None` before anything fed it).
    pub fn microphone(&self) -> Option<MicHeard> {
        self.state().mic
    }

    /// How long the latest microphone packets (at most 1024) took from
    /// their capture (the packet's timestamp) to the phone, µs; taken, so
    /// the next call returns only newer ones.
    pub fn take_mic_latencies(&self) -> Vec<u64> {
        self.state().mic_latency_us.drain(..).collect()
    }

    /// The clipboard's text.
    pub fn clipboard(&self) -> String {
        self.state().clipboard.clone()
    }

    /// The text typed into the Sensor Lab's text field.
    pub fn typed(&self) -> String {
        self.state().typed.clone()
    }

    /// Sets the attached handset's name shown under the title.
    pub fn set_session(&self, handset: Option<String>) {
        self.state().session = handset;
        self.touch();
    }

    /// The gRPC service for this phone (add it to a tonic server).
    pub fn service(&self) -> EmulatorControllerServer<SimService> {
        EmulatorControllerServer::new(SimService {
            phone: self.clone(),
        })
        .max_decoding_message_size(4 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024)
    }

    /// Serves the EmulatorController API on `listener` until `shutdown`.
    ///
    /// # Errors
    /// [`HostError::Io`] if the server fails.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), HostError> {
        let token = self.shared.cfg.auth_token.clone();
        let auth = move |req: Request<()>| -> Result<Request<()>, Status> {
            let Some(token) = &token else { return Ok(req) };
            let want = format!("Bearer {token}");
            match req
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
            {
                // Constant time, like the operator API's.
                Some(v) if bool::from(v.as_bytes().ct_eq(want.as_bytes())) => Ok(req),
                // The Android Emulator's answers, word for word (its
                // `BasicTokenAuth`), including the echo of what was sent.
                Some(v) => Err(Status::unauthenticated(format!(
                    "The token `{v}` is invalid"
                ))),
                None => Err(Status::unauthenticated(
                    "Missing the 'authorization' header with security credentials.",
                )),
            }
        };
        let svc = tonic::service::interceptor::InterceptedService::new(self.service(), auth);
        tonic::transport::Server::builder()
            .initial_stream_window_size(8 << 20)
            .initial_connection_window_size(16 << 20)
            .add_service(svc)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                shutdown,
            )
            .await
            .map_err(|e| HostError::io("sim phone gRPC server", std::io::Error::other(e)))
    }

    fn scene(&self, now: Instant) -> (SceneState, bool) {
        let mut st = self.state();
        st.ripples.retain(|r| {
            now.saturating_duration_since(r.3)
                < Duration::from_millis(u64::from(super::RIPPLE_LIFETIME_MS))
        });
        let v3 = |k: sensor_value::SensorType| -> [f32; 3] {
            let v = st.sensors.get(&(k as i32));
            let g = |i: usize| v.and_then(|v| v.get(i)).copied().unwrap_or(0.0);
            [g(0), g(1), g(2)]
        };
        let scene = SceneState {
            clock_unix_s: {
                let face = st.clock_face;
                let late = unix_us().saturating_sub(self.clock_phase(face));
                // Whole periods only: the scene stays equal (no render)
                // until the clock turns.
                (late / face.period_us() * face.period_us() / 1_000_000) as i64
            },
            clock_face: st.clock_face,
            battery_percent: st.battery.charge_level.clamp(0, 100) as u8,
            charging: st.battery.status == battery_state::BatteryStatus::Charging as i32,
            bluetooth: st.bluetooth.clone(),
            accel: v3(sensor_value::SensorType::Acceleration),
            gyro: v3(sensor_value::SensorType::Gyroscope),
            mag: v3(sensor_value::SensorType::MagneticField),
            orientation: v3(sensor_value::SensorType::Orientation),
            gps: st.gps.as_ref().map(|g| Gps {
                lat: g.latitude,
                lon: g.longitude,
                alt: g.altitude,
                speed: g.speed as f32,
                bearing: g.bearing as f32,
            }),
            touches: st
                .ripples
                .iter()
                .map(|&(x, y, id, t)| Ripple {
                    x,
                    y,
                    age_ms: now.saturating_duration_since(t).as_millis() as u32,
                    id,
                })
                .collect(),
            last_key: st.last_key.clone(),
            session: st.session.clone(),
            mic: st.mic.map(|m| {
                let hz =
                    m.hz.map_or_else(|| "quiet".to_owned(), |hz| format!("{hz:.0} Hz"));
                let on = if m.active { "" } else { " (closed)" };
                format!("{:.0} dBFS  {hz}{on}", m.level_dbfs)
            }),
            clipboard: (!st.clipboard.is_empty()).then(|| st.clipboard.clone()),
        };
        let animating = !st.ripples.is_empty();
        (scene, animating)
    }

    fn apply_touch(&self, ev: &TouchEvent) -> Result<(), Status> {
        if ev.display != 0 {
            return Err(Status::invalid_argument(format!(
                "display {} does not exist",
                ev.display
            )));
        }
        let (w, h) = (self.shared.cfg.width as i32, self.shared.cfg.height as i32);
        let mut st = self.state();
        for t in &ev.touches {
            let (x, y) = (t.x.clamp(0, w - 1), t.y.clamp(0, h - 1));
            if t.pressure == 0 {
                st.touches.remove(&t.identifier);
                continue;
            }
            if !st.touches.contains_key(&t.identifier) {
                if st.touches.len() >= MAX_TOUCH_SLOTS {
                    self.shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                st.ripples
                    .push((x as f32, y as f32, t.identifier, Instant::now()));
                st.mixer.touch(x as f32, w as u32, unix_us());
            }
            st.touches.insert(t.identifier, (x, y));
        }
        drop(st);
        self.shared
            .stats
            .input_events
            .fetch_add(1, Ordering::Relaxed);
        self.touch();
        Ok(())
    }

    fn apply_key(&self, ev: &KeyboardEvent) {
        let action = match keyboard_event::KeyEventType::try_from(ev.event_type) {
            Ok(keyboard_event::KeyEventType::Keydown) => "down",
            Ok(keyboard_event::KeyEventType::Keyup) => "up",
            _ => "press",
        };
        let what = if ev.key_code != 0 {
            let ns = keyboard_event::KeyCodeType::try_from(ev.code_type)
                .map_or("code", |c| c.as_str_name());
            format!("{ns} {} {action}", ev.key_code)
        } else if !ev.key.is_empty() {
            format!("{} {action}", ev.key.chars().take(24).collect::<String>())
        } else {
            format!("text \"{}\"", ev.text.chars().take(24).collect::<String>())
        };
        let mut st = self.state();
        let down = match action {
            "down" => Some(true),
            "up" => Some(false),
            _ => None,
        };
        if !ev.key.is_empty() {
            st.mixer.key(&ev.key, down, unix_us());
            match (ev.key.as_str(), down) {
                ("Control", Some(d)) => st.ctrl = d,
                ("c" | "C", Some(true) | None) if st.ctrl => {
                    // Copy: a change the guest makes, so clipboard streams
                    // hear of it.
                    st.clipboard = st.typed.clone();
                    self.shared.guest_clip.send_modify(|g| *g += 1);
                }
                ("v" | "V", Some(true) | None) if st.ctrl => {
                    let clip = st.clipboard.clone();
                    push_typed(&mut st.typed, &clip);
                }
                ("Backspace", Some(true) | None) => {
                    st.typed.pop();
                }
                _ => {}
            }
        } else if ev.key_code == 0 && !ev.text.is_empty() {
            push_typed(&mut st.typed, &ev.text);
        }
        if st.key_log.len() >= KEY_LOG_LEN {
            st.key_log.pop_front();
        }
        st.key_log.push_back(what.clone());
        st.last_key = Some(what);
        drop(st);
        self.shared
            .stats
            .input_events
            .fetch_add(1, Ordering::Relaxed);
        self.touch();
    }

    fn status(&self) -> EmulatorStatus {
        let cfg = &self.shared.cfg;
        let custom = self.state().listening.clone();
        let listening = custom.map(|l| {
            l.iter()
                .map(|(n, hz)| format!("{n}@{hz}"))
                .collect::<Vec<_>>()
                .join(",")
        });
        let listening = listening.unwrap_or_else(|| self.default_listening());
        self.status_with(cfg, listening)
    }

    fn default_listening(&self) -> String {
        LISTENED_SENSORS
            .iter()
            .map(|(s, hz)| {
                let n = match s {
                    SensorName::Accelerometer => "acceleration",
                    SensorName::Gyroscope => "gyroscope",
                    SensorName::Magnetometer => "magnetic_field",
                    SensorName::Orientation => "orientation",
                    SensorName::Gps => "gps",
                };
                format!("{n}@{hz}")
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    fn status_with(&self, cfg: &SimPhoneConfig, listening: String) -> EmulatorStatus {
        let entry = |k: &str, v: String| Entry {
            key: k.to_owned(),
            value: v,
        };
        EmulatorStatus {
            version: format!("vphone-sim {}", env!("CARGO_PKG_VERSION")),
            uptime: self.shared.started.elapsed().as_millis() as u64,
            booted: self.shared.booted.load(Ordering::Relaxed),
            vm_config: Some(VmConfiguration {
                hypervisor_type: vm_configuration::VmHypervisorType::None as i32,
                number_of_cpu_cores: 1,
                ram_size_bytes: 0,
            }),
            hardware_config: Some(EntryList {
                entry: vec![
                    entry("hw.lcd.width", cfg.width.to_string()),
                    entry("hw.lcd.height", cfg.height.to_string()),
                    entry("hw.lcd.density", cfg.dpi.to_string()),
                    entry(SENSORS_KEY, listening),
                ],
            }),
            heartbeat: self.shared.started.elapsed().as_secs(),
        }
    }
}

pub use host_core::emu_client::SENSORS_KEY;

/// Appends `text` to the text field, keeping its last [`TYPED_MAX`] chars.
fn push_typed(typed: &mut String, text: &str) {
    typed.push_str(text);
    let n = typed.chars().count();
    if n > TYPED_MAX {
        *typed = typed.chars().skip(n - TYPED_MAX).collect();
    }
}

/// The sim display's refresh interval (60 Hz).
const FRAME_INTERVAL: Duration = Duration::from_micros(16_667);

async fn render_loop(weak: std::sync::Weak<Shared>, mut renderer: Renderer) {
    let mut last_scene: Option<SceneState> = None;
    let mut seq = 0u32;
    let mut last_frame: Option<Instant> = None;
    loop {
        // Like a display at 60 Hz: changes arriving faster (sensors at
        // 200 Hz) are coalesced into the next frame.
        if let Some(t) = last_frame {
            let since = t.elapsed();
            if since < FRAME_INTERVAL {
                tokio::time::sleep(FRAME_INTERVAL - since).await;
            }
        }
        let Some(shared) = weak.upgrade() else { return };
        let phone = SimPhone { shared };
        let (scene, animating) = phone.scene(Instant::now());
        let (scene_face, scene_clock_s) = (scene.clock_face, scene.clock_unix_s);
        if last_scene.as_ref() != Some(&scene) {
            let (width, height) = (renderer.width(), renderer.height());
            // The renderer hands its buffer over: no copy into the frame,
            // and no second frame-sized buffer held while the screen rests.
            let rgba = renderer.render_owned(&scene);
            let same = phone
                .shared
                .frames
                .borrow()
                .as_ref()
                .is_some_and(|f| f.rgba == rgba);
            if !same {
                seq = seq.wrapping_add(1);
                let frame = Frame {
                    seq,
                    timestamp_us: unix_us(),
                    width,
                    height,
                    rgba: rgba.into(),
                };
                phone.shared.frames.send_replace(Some(Arc::new(frame)));
                last_frame = Some(Instant::now());
                phone.shared.stats.frames.fetch_add(1, Ordering::Relaxed);
            }
            last_scene = Some(scene);
        }
        let wait = if animating {
            Duration::from_millis(16)
        } else {
            // Wake when the clock this scene shows turns (its phase in the
            // period): from the scene's own value, so a turn during the
            // render is not slept through.
            let next_turn = u64::try_from(scene_clock_s)
                .unwrap_or(0)
                .saturating_mul(1_000_000)
                .saturating_add(scene_face.period_us())
                .saturating_add(phone.clock_phase(scene_face));
            Duration::from_micros(next_turn.saturating_sub(unix_us()) + 1_000)
        };
        let shared = phone.shared.clone();
        drop(phone);
        tokio::select! {
            () = shared.changed.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
        if Arc::strong_count(&shared) == 1 {
            return;
        }
    }
}

mod image;
mod region;
mod service;
pub mod sound;

pub use self::image::encode_image;
pub use self::region::Region;
pub use self::service::SimService;
pub use self::sound::MicHeard;
