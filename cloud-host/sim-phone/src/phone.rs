//! The sim phone as a running device: its state, a render loop that publishes
//! a frame whenever the picture changes (and at least once a second, for the
//! clock), and the Android Emulator's `EmulatorController` gRPC API on top,
//! so the host drives it with the same client it uses for a real emulator.
//!
//! Served subset: getStatus, getScreenshot, streamScreenshot, sendTouch,
//! sendKey, streamInputEvent, setSensor, getSensor, setPhysicalModel,
//! getPhysicalModel, setGps, getGps, setBattery, getBattery;
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
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sensor_proto::emulator::emulator_controller_server::{
    EmulatorController, EmulatorControllerServer,
};
use sensor_proto::emulator::{
    BatteryState, DisplayConfigurations, EmulatorStatus, Entry, EntryList, GpsState, Image,
    ImageFormat, InputEvent, KeyboardEvent, MouseEvent, PhysicalModelValue, Rotation, SensorValue,
    TouchEvent, VmConfiguration, VmRunState, WheelEvent, battery_state, image_format,
    image_transport, input_event, keyboard_event, physical_model_value, sensor_value,
    vm_configuration,
};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::{
    BluetoothView, Gps, LISTENED_SENSORS, Renderer, Ripple, SceneState, SensorName, encode_png,
};
use host_core::HostError;

/// How a sim phone is built.
#[derive(Clone, Debug)]
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
    /// Overrides the Sensor Lab's listened sensors (`name@hz` pairs).
    listening: Option<Vec<(String, u32)>>,
}

#[derive(Debug)]
struct Shared {
    cfg: SimPhoneConfig,
    state: Mutex<PhoneState>,
    changed: Notify,
    frames: watch::Sender<Option<Arc<Frame>>>,
    started: Instant,
    stats: SimStats,
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
            }),
            changed: Notify::new(),
            frames,
            started: Instant::now(),
            stats: SimStats::default(),
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
                Some(v) if v == want => Ok(req),
                Some(_) => Err(Status::unauthenticated("wrong bearer token")),
                None => Err(Status::unauthenticated("missing authorization header")),
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
            clock_unix_s: (unix_us() / 1_000_000) as i64,
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
            booted: true,
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
        if last_scene.as_ref() != Some(&scene) {
            let (width, height) = (renderer.width(), renderer.height());
            let rgba = renderer.render(&scene);
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
                    rgba: sensor_proto::bytes::Bytes::copy_from_slice(rgba),
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
            // Wake at the next second boundary, for the clock.
            Duration::from_micros(1_000_000 - unix_us() % 1_000_000 + 1_000)
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

/// A client's shared memory region (`ImageTransport` channel `MMAP`): the
/// phone writes each image's pixels into it, from offset 0, and the reply
/// carries no pixels, as the Android Emulator does. The handle is the path
/// of a file the client created and sized (`file://` prefix optional).
/// Unlike the emulator, which maps any path, the sim writes only into an
/// existing regular file with one link directly in `/dev/shm` or the temp
/// dir, opened without following a symlink and without blocking (a FIFO is
/// refused, not waited on); it never creates or truncates. A client that
/// reads the region after the next image was written sees that one instead
/// (tearing, as with the emulator).
#[derive(Debug)]
pub struct Region {
    file: std::fs::File,
    len: u64,
}

/// Where the sim accepts regions: the shared memory and temp dirs.
fn region_dir_allowed(dir: &std::path::Path) -> bool {
    dir == std::path::Path::new("/dev/shm") || dir == std::env::temp_dir()
}

impl Region {
    /// The region `want.transport` names; `None` for pixels in the message.
    ///
    /// # Errors
    /// INVALID_ARGUMENT naming what is wrong with the transport or the file.
    pub fn open(want: &ImageFormat) -> Result<Option<Self>, Status> {
        use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};

        use image_transport::TransportChannel;
        let Some(t) = &want.transport else {
            return Ok(None);
        };
        match TransportChannel::try_from(t.channel) {
            Ok(TransportChannel::Unspecified) => return Ok(None),
            Ok(TransportChannel::Mmap) => {}
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown transport channel {}",
                    t.channel
                )));
            }
        }
        if image_format::ImgFormat::try_from(want.format) == Ok(image_format::ImgFormat::Png) {
            return Err(Status::invalid_argument(
                "MMAP transport carries raw pixels: ask for RGBA8888 or RGB888, not PNG",
            ));
        }
        let path = std::path::Path::new(t.handle.strip_prefix("file://").unwrap_or(&t.handle));
        let bad =
            |why: &str| Status::invalid_argument(format!("MMAP region {}: {why}", path.display()));
        if !path.is_absolute() || !path.parent().is_some_and(region_dir_allowed) {
            return Err(bad(&format!(
                "the sim phone takes regions only directly in /dev/shm or {}",
                std::env::temp_dir().display()
            )));
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| bad(&e.to_string()))?;
        // Checked on what was opened, not on the name (which may change).
        let meta = file.metadata().map_err(|e| bad(&e.to_string()))?;
        if !meta.file_type().is_file() || meta.nlink() != 1 {
            return Err(bad(
                "not a regular file with one link (create and size it first)",
            ));
        }
        Ok(Some(Self {
            file,
            len: meta.len(),
        }))
    }

    /// Writes `image`'s pixels into the region and empties the message.
    ///
    /// # Errors
    /// FAILED_PRECONDITION when the region is too small, INTERNAL when the
    /// write fails.
    pub fn write(&self, image: &mut Image) -> Result<(), Status> {
        use std::os::unix::fs::FileExt as _;
        let need = image.image.len() as u64;
        if need > self.len {
            return Err(Status::failed_precondition(format!(
                "the MMAP region holds {} bytes; this {}x{} image needs {need}",
                self.len, image.width, image.height
            )));
        }
        self.file
            .write_all_at(&image.image, 0)
            .map_err(|e| Status::internal(format!("writing the MMAP region: {e}")))?;
        image.image = sensor_proto::bytes::Bytes::new();
        Ok(())
    }
}

/// Converts a frame for `want` (and writes it into `region`) on a blocking
/// thread at bulk priority: the API thread that applies sensors and input
/// must not spend milliseconds on pixels.
async fn image_for(
    phone: SimPhone,
    frame: Arc<Frame>,
    want: ImageFormat,
    region: Option<Arc<Region>>,
) -> Result<Image, Status> {
    let rotation = phone.state().rotation;
    tokio::task::spawn_blocking(move || {
        device_bridge::bulk_thread_priority();
        let mut image = encode_image(&frame, &want, rotation)?;
        if let Some(region) = &region {
            region.write(&mut image)?;
            phone.stats().region_images.fetch_add(1, Ordering::Relaxed);
        }
        Ok(image)
    })
    .await
    .map_err(|e| Status::internal(format!("image conversion failed: {e}")))?
}

/// Converts a frame to the format and size an `ImageFormat` asks for.
///
/// # Errors
/// INVALID_ARGUMENT / UNIMPLEMENTED statuses naming the unsupported request.
pub fn encode_image(frame: &Frame, want: &ImageFormat, rotation: i32) -> Result<Image, Status> {
    if want.display != 0 {
        return Err(Status::invalid_argument(format!(
            "display {} does not exist",
            want.display
        )));
    }
    let fmt = image_format::ImgFormat::try_from(want.format)
        .map_err(|_| Status::invalid_argument(format!("unknown image format {}", want.format)))?;
    let (w, h) = fit(frame.width, frame.height, want.width, want.height);
    let native = (w, h) == (frame.width, frame.height);
    let rgba: std::borrow::Cow<'_, [u8]> = if native {
        std::borrow::Cow::Borrowed(&frame.rgba)
    } else {
        std::borrow::Cow::Owned(scale_nearest(&frame.rgba, frame.width, frame.height, w, h))
    };
    let bytes: sensor_proto::bytes::Bytes = match fmt {
        // The common case shares the frame's buffer: no 3.7 MB copy per client.
        image_format::ImgFormat::Rgba8888 if native => frame.rgba.clone(),
        image_format::ImgFormat::Rgba8888 => rgba.into_owned().into(),
        image_format::ImgFormat::Rgb888 => rgba
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect::<Vec<u8>>()
            .into(),
        image_format::ImgFormat::Png => encode_png(w, h, &rgba)
            .map_err(|e| Status::internal(format!("PNG encoding failed: {e}")))?
            .into(),
    };
    Ok(Image {
        format: Some(ImageFormat {
            format: want.format,
            rotation: Some(Rotation {
                rotation,
                x_axis: 0.0,
                y_axis: 0.0,
                z_axis: f64::from(rotation) * -90.0,
            }),
            width: w,
            height: h,
            display: 0,
            transport: None,
            folded_display: None,
            display_mode: 0,
        }),
        width: w,
        height: h,
        image: bytes,
        seq: frame.seq,
        timestamp_us: frame.timestamp_us,
    })
}

/// The largest size inside `want` (0 = native) that keeps the aspect ratio.
fn fit(w: u32, h: u32, want_w: u32, want_h: u32) -> (u32, u32) {
    match (want_w, want_h) {
        (0, 0) => (w, h),
        (ww, 0) => (
            ww.min(w * 4).max(1),
            ((u64::from(h) * u64::from(ww) / u64::from(w)) as u32).max(1),
        ),
        (0, wh) => (
            ((u64::from(w) * u64::from(wh) / u64::from(h)) as u32).max(1),
            wh.min(h * 4).max(1),
        ),
        (ww, wh) => {
            if u64::from(ww) * u64::from(h) <= u64::from(wh) * u64::from(w) {
                fit(w, h, ww, 0)
            } else {
                fit(w, h, 0, wh)
            }
        }
    }
}

fn scale_nearest(src: &[u8], sw: u32, sh: u32, dw: u32, dh: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(dw as usize * dh as usize * 4);
    for y in 0..dh {
        let sy = (u64::from(y) * u64::from(sh) / u64::from(dh)) as usize;
        for x in 0..dw {
            let sx = (u64::from(x) * u64::from(sw) / u64::from(dw)) as usize;
            let i = (sy * sw as usize + sx) * 4;
            out.extend_from_slice(&src[i..i + 4]);
        }
    }
    out
}

/// The EmulatorController implementation behind a [`SimPhone`].
#[derive(Debug, Clone)]
pub struct SimService {
    phone: SimPhone,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn check_values(v: &[f32]) -> Result<(), Status> {
    if v.len() > MAX_SENSOR_VALUES {
        return Err(Status::invalid_argument(format!(
            "{} values given; at most {MAX_SENSOR_VALUES}",
            v.len()
        )));
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(Status::invalid_argument(
            "sensor values must be finite numbers",
        ));
    }
    Ok(())
}

#[tonic::async_trait]
impl EmulatorController for SimService {
    async fn stream_sensor(
        &self,
        _: Request<SensorValue>,
    ) -> Result<Response<BoxStream<SensorValue>>, Status> {
        Err(Status::unimplemented(
            "streamSensor is not served by the sim phone",
        ))
    }

    async fn get_sensor(&self, req: Request<SensorValue>) -> Result<Response<SensorValue>, Status> {
        let target = req.into_inner().target;
        sensor_value::SensorType::try_from(target)
            .map_err(|_| Status::invalid_argument(format!("unknown sensor type {target}")))?;
        let data = self
            .phone
            .state()
            .sensors
            .get(&target)
            .cloned()
            .unwrap_or_else(|| vec![0.0; 3]);
        Ok(Response::new(SensorValue {
            target,
            status: sensor_value::State::Ok as i32,
            value: Some(sensor_proto::emulator::ParameterValue { data }),
        }))
    }

    async fn set_sensor(&self, req: Request<SensorValue>) -> Result<Response<()>, Status> {
        let v = req.into_inner();
        sensor_value::SensorType::try_from(v.target)
            .map_err(|_| Status::invalid_argument(format!("unknown sensor type {}", v.target)))?;
        let data = v.value.map(|p| p.data).unwrap_or_default();
        if let Err(e) = check_values(&data) {
            self.phone
                .shared
                .stats
                .rejected
                .fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        self.phone.state().sensors.insert(v.target, data);
        self.phone
            .shared
            .stats
            .sensor_updates
            .fetch_add(1, Ordering::Relaxed);
        self.phone.touch();
        Ok(Response::new(()))
    }

    async fn set_physical_model(
        &self,
        req: Request<PhysicalModelValue>,
    ) -> Result<Response<()>, Status> {
        let v = req.into_inner();
        let kind = physical_model_value::PhysicalType::try_from(v.target).map_err(|_| {
            Status::invalid_argument(format!("unknown physical model target {}", v.target))
        })?;
        let data = v.value.map(|p| p.data).unwrap_or_default();
        check_values(&data)?;
        let mut st = self.phone.state();
        if kind == physical_model_value::PhysicalType::Rotation {
            let z = data.get(2).copied().unwrap_or(0.0);
            st.rotation = (((z / 90.0).round() as i32) + 4).rem_euclid(4);
        }
        st.physical.insert(v.target, data);
        Ok(Response::new(()))
    }

    async fn get_physical_model(
        &self,
        req: Request<PhysicalModelValue>,
    ) -> Result<Response<PhysicalModelValue>, Status> {
        let target = req.into_inner().target;
        physical_model_value::PhysicalType::try_from(target).map_err(|_| {
            Status::invalid_argument(format!("unknown physical model target {target}"))
        })?;
        let data = self
            .phone
            .state()
            .physical
            .get(&target)
            .cloned()
            .unwrap_or_else(|| vec![0.0; 3]);
        Ok(Response::new(PhysicalModelValue {
            target,
            status: physical_model_value::State::Ok as i32,
            value: Some(sensor_proto::emulator::ParameterValue { data }),
        }))
    }

    async fn stream_physical_model(
        &self,
        _: Request<PhysicalModelValue>,
    ) -> Result<Response<BoxStream<PhysicalModelValue>>, Status> {
        Err(Status::unimplemented(
            "streamPhysicalModel is not served by the sim phone",
        ))
    }

    async fn set_battery(&self, req: Request<BatteryState>) -> Result<Response<()>, Status> {
        let b = req.into_inner();
        if !(0..=100).contains(&b.charge_level) {
            return Err(Status::invalid_argument(format!(
                "chargeLevel {} is not 0..100",
                b.charge_level
            )));
        }
        self.phone.state().battery = b;
        self.phone.touch();
        Ok(Response::new(()))
    }

    async fn get_battery(&self, _: Request<()>) -> Result<Response<BatteryState>, Status> {
        Ok(Response::new(self.phone.state().battery))
    }

    async fn set_gps(&self, req: Request<GpsState>) -> Result<Response<()>, Status> {
        let g = req.into_inner();
        let ok = g.latitude.is_finite()
            && g.longitude.is_finite()
            && (-90.0..=90.0).contains(&g.latitude)
            && (-180.0..=180.0).contains(&g.longitude)
            && g.altitude.is_finite()
            && g.speed.is_finite()
            && g.bearing.is_finite();
        if !ok {
            self.phone
                .shared
                .stats
                .rejected
                .fetch_add(1, Ordering::Relaxed);
            return Err(Status::invalid_argument(
                "latitude must be -90..90 and longitude -180..180, all finite",
            ));
        }
        self.phone.state().gps = Some(g);
        self.phone.touch();
        Ok(Response::new(()))
    }

    async fn get_gps(&self, _: Request<()>) -> Result<Response<GpsState>, Status> {
        Ok(Response::new(self.phone.state().gps.unwrap_or_default()))
    }

    async fn send_key(&self, req: Request<KeyboardEvent>) -> Result<Response<()>, Status> {
        self.phone.apply_key(&req.into_inner());
        Ok(Response::new(()))
    }

    async fn send_touch(&self, req: Request<TouchEvent>) -> Result<Response<()>, Status> {
        self.phone.apply_touch(&req.into_inner())?;
        Ok(Response::new(()))
    }

    async fn send_mouse(&self, _: Request<MouseEvent>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented(
            "sendMouse is not served by the sim phone",
        ))
    }

    async fn inject_wheel(
        &self,
        _: Request<Streaming<WheelEvent>>,
    ) -> Result<Response<()>, Status> {
        Err(Status::unimplemented(
            "injectWheel is not served by the sim phone",
        ))
    }

    async fn stream_input_event(
        &self,
        req: Request<Streaming<InputEvent>>,
    ) -> Result<Response<()>, Status> {
        let mut events = req.into_inner();
        while let Some(ev) = events.next().await {
            match ev?.r#type {
                Some(input_event::Type::KeyEvent(k)) => self.phone.apply_key(&k),
                Some(input_event::Type::TouchEvent(t)) => {
                    if self.phone.apply_touch(&t).is_err() {
                        self.phone
                            .shared
                            .stats
                            .rejected
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ => {
                    self.phone
                        .shared
                        .stats
                        .rejected
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(Response::new(()))
    }

    async fn get_status(&self, _: Request<()>) -> Result<Response<EmulatorStatus>, Status> {
        Ok(Response::new(self.phone.status()))
    }

    async fn get_screenshot(&self, req: Request<ImageFormat>) -> Result<Response<Image>, Status> {
        let want = req.into_inner();
        let mut rx = self.phone.frames();
        let frame = loop {
            if let Some(f) = rx.borrow_and_update().clone() {
                break f;
            }
            rx.changed()
                .await
                .map_err(|_| Status::unavailable("the sim phone stopped"))?;
        };
        let region = Region::open(&want)?.map(Arc::new);
        Ok(Response::new(
            image_for(self.phone.clone(), frame, want, region).await?,
        ))
    }

    async fn stream_screenshot(
        &self,
        req: Request<ImageFormat>,
    ) -> Result<Response<BoxStream<Image>>, Status> {
        let want = req.into_inner();
        // Validate the request once, up front.
        image_format::ImgFormat::try_from(want.format).map_err(|_| {
            Status::invalid_argument(format!("unknown image format {}", want.format))
        })?;
        let region = Region::open(&want)?.map(Arc::new);
        let rx = self.phone.frames();
        let phone = self.phone.clone();
        let stream = tokio_stream::wrappers::WatchStream::new(rx)
            .filter_map(|f| f)
            .then(move |f| image_for(phone.clone(), f, want.clone(), region.clone()));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn set_vm_state(&self, _: Request<VmRunState>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented(
            "setVmState is not served by the sim phone",
        ))
    }

    async fn get_vm_state(&self, _: Request<()>) -> Result<Response<VmRunState>, Status> {
        Ok(Response::new(VmRunState {
            state: sensor_proto::emulator::vm_run_state::RunState::Running as i32,
        }))
    }

    async fn set_display_configurations(
        &self,
        _: Request<DisplayConfigurations>,
    ) -> Result<Response<DisplayConfigurations>, Status> {
        Err(Status::failed_precondition(
            "the sim phone has no secondary displays",
        ))
    }

    async fn get_display_configurations(
        &self,
        _: Request<()>,
    ) -> Result<Response<DisplayConfigurations>, Status> {
        Err(Status::failed_precondition(
            "the sim phone has no secondary displays",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_keeps_aspect() {
        assert_eq!(fit(720, 1280, 0, 0), (720, 1280));
        assert_eq!(fit(720, 1280, 360, 0), (360, 640));
        assert_eq!(fit(720, 1280, 0, 640), (360, 640));
        assert_eq!(fit(720, 1280, 360, 360), (202, 360));
        assert_eq!(fit(720, 1280, 1000, 640), (360, 640));
    }

    #[test]
    fn scale_nearest_picks_source_pixels() {
        // 2x1 image: red, blue -> 1x1 keeps the first.
        let src = [255, 0, 0, 255, 0, 0, 255, 255];
        assert_eq!(scale_nearest(&src, 2, 1, 1, 1), vec![255, 0, 0, 255]);
        assert_eq!(scale_nearest(&src, 2, 1, 4, 1).len(), 16);
    }
}
