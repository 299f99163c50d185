//! Shared fixtures for vphone's end-to-end tests: a testkit.
//!
//! Everything runs in-process on 127.0.0.1 only, the way `vphone-host demo`
//! does it (see `cloud-host/vphone-host/src/demo.rs`):
//!
//! * [`TestHost`] starts a whole host (registry, phone actor with the sim
//!   phone `phone-1`, operator API with `/metrics`, QUIC listener) in a
//!   temporary data dir, creates more sim phones, enrolls handsets with
//!   single-use tokens ([`TestHost::enroll`]) and gives direct access to a
//!   phone ([`TestHost::phone`]: its EmulatorController client and the
//!   [`SimPhone`] behind it).
//! * [`Handset`] is an enrolled handset (its companion config dir). It
//!   connects either as the real companion ([`Handset::connect`]) or as a
//!   raw, possibly hostile, `device_bridge::ClientSession`
//!   ([`Handset::connect_raw`]).
//! * Picture helpers: [`find_colour`] (count, centroid and bounding box of
//!   the pixels near a colour, with a per-channel tolerance because H.264
//!   only keeps colours approximately), [`wait_picture`] and
//!   [`wait_sim_frame`] (wait, with a timeout, for a decoded picture / an
//!   exact phone frame satisfying a check, reporting the last mismatch on
//!   timeout).
//! * [`standin::FakeSdk`]: an Android SDK whose emulator is the emulator
//!   stand-in, with AVDs made on demand, for the emulator backend's tests.
//! * [`companion::HeadlessCompanion`]: the real companion binary, enrolled
//!   and streaming headless, its log searched for what it said.
//! * Small builders: [`write_recording`] (a replay file for
//!   `SourceSpec::Replay`), [`touch`], [`key`], [`parse_metric`].

/// The `vphone-host` binary's allocator (see its main.rs), so every host a
/// test or benchmark runs in its own process allocates as the one that
/// ships.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

pub mod browser;
pub mod bumble;
pub mod companion;
pub mod fleet;
pub mod standin;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use device_bridge::{BridgeClientConfig, ClientSession};
use host_core::emu_client::EmulatorClient;
use host_core::phones::PhoneSpec;
use host_core::registry::Backend;
use mobile_client::ClientError;
use mobile_client::session::{Companion, ConnectOptions};
use mobile_client::video::Picture;
use sensor_proto::bridge::{
    Hello, Screen, SensorCapability, TouchAction, VideoCodec, input_message,
};
use sim_phone::SimKind;
use sim_phone::{Frame, SimPhone};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use vphone_operator::ServedHost;

/// Width of the sim phones' screen, pixels.
pub const SCREEN_W: u32 = sim_phone::DEFAULT_WIDTH;
/// Height of the sim phones' screen, pixels.
pub const SCREEN_H: u32 = sim_phone::DEFAULT_HEIGHT;

/// Per-channel tolerance for colours that went through H.264.
pub const VIDEO_TOLERANCE: u8 = 40;

/// Unix time, ns.
pub fn now_ns() -> u64 {
    u64::try_from(device_bridge::clock::unix_ns()).unwrap_or(0)
}

/// A whole host running in-process on loopback, in a temporary data dir.
#[derive(Debug)]
pub struct TestHost {
    /// The running host (its phone actor, registry, sessions, metrics...).
    pub host: ServedHost,
    /// The host's sim phones, to look at them directly.
    pub sims: SimKind,
    dir: tempfile::TempDir,
    handsets: u32,
}

impl TestHost {
    /// Starts a host on 127.0.0.1 (all ports chosen by the OS) and waits
    /// until its sim phone `phone-1` runs.
    ///
    /// # Panics
    /// When the host or the phone does not start.
    pub async fn start() -> Self {
        Self::start_with(|b| b).await
    }

    /// As [`TestHost::start`], with the host's backends changed by `adapt`
    /// (an emulator backend on a fake SDK, say).
    ///
    /// # Panics
    /// When the host or the phone does not start.
    pub async fn start_with(
        adapt: impl FnOnce(host_core::backend::Backends) -> host_core::backend::Backends,
    ) -> Self {
        Self::start_configured(|_| {}, adapt).await
    }

    /// As [`TestHost::start_with`], with the host's configuration (on
    /// loopback, in the test's data dir) changed by `configure` first.
    ///
    /// # Panics
    /// When the host or the phone does not start.
    pub async fn start_configured(
        configure: impl FnOnce(&mut host_core::config::HostConfig),
        adapt: impl FnOnce(host_core::backend::Backends) -> host_core::backend::Backends,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let sims = SimKind::default();
        let mut cfg = host_core::config::HostConfig::loopback(dir.path().join("host"));
        configure(&mut cfg);
        let listeners = host_core::daemon::Listeners::bind(&cfg)
            .await
            .expect("binding the host's ports");
        let host = ServedHost::start(&cfg, listeners, adapt(sims.backends()))
            .await
            .expect("starting the host");
        host.phones
            .wait_running("phone-1", Duration::from_secs(30))
            .await
            .expect("phone-1 running");
        Self {
            host,
            sims,
            dir,
            handsets: 0,
        }
    }

    /// Creates another 720x1280 sim phone and waits until it runs.
    ///
    /// # Panics
    /// When it cannot be created or started.
    pub async fn add_sim_phone(&self, name: &str) {
        self.host
            .phones
            .create(PhoneSpec {
                name: name.to_owned(),
                backend: Backend::Sim,
                display: (SCREEN_W, SCREEN_H, 320),
                avd: None,
                start: true,
            })
            .await
            .expect("creating a sim phone");
        self.host
            .phones
            .wait_running(name, Duration::from_secs(30))
            .await
            .expect("new sim phone running");
    }

    /// Mints a single-use token for `phones`, and enrolls a new handset
    /// named `name` with its enrollment string (as `vphone-companion
    /// enroll` does). The token is used on the handset's first connection.
    ///
    /// # Panics
    /// On any failure.
    pub fn enroll(&mut self, name: &str, phones: &[&str]) -> Handset {
        let host = &self.host;
        let enrollment = host_core::enroll::offer_enrollment(
            &host.registry,
            host.enroller.as_ref(),
            Some(name.to_owned()),
            host_core::registry::PhoneGrant::Only(phones.iter().map(|p| (*p).to_owned()).collect()),
            Duration::from_secs(120),
        )
        .expect("offering an enrollment")
        .enrollment;
        self.handsets += 1;
        let dir = self.dir.path().join(format!("handset-{}", self.handsets));
        mobile_client::config::enroll(&dir, &enrollment, name).expect("enrolling");
        Handset {
            dir,
            name: name.to_owned(),
        }
    }

    /// A single-use browser enrollment link for a handset to be called
    /// `name` that may use `phones` (what `vphonectl handset enroll --web`
    /// prints).
    ///
    /// # Panics
    /// When the host serves no browser handsets or the offer fails.
    pub fn web_link(&self, name: &str, phones: &[&str]) -> String {
        host_core::enroll::offer_enrollment(
            &self.host.registry,
            self.host.enroller.as_ref(),
            Some(name.to_owned()),
            host_core::registry::PhoneGrant::Only(phones.iter().map(|p| (*p).to_owned()).collect()),
            Duration::from_secs(120),
        )
        .expect("offering an enrollment")
        .web_link
        .expect("the host serves browser handsets")
    }

    /// The phone's EmulatorController client and its [`SimPhone`].
    ///
    /// # Panics
    /// When the phone is not running or not a sim phone.
    pub async fn phone(&self, name: &str) -> (EmulatorClient, SimPhone) {
        let client = self.host.phones.connect(name).await.expect("phone client");
        (client, self.sims.phone(name).expect("a running sim phone"))
    }

    /// Waits until a handset's radio is attached to `phone`.
    ///
    /// # Panics
    /// When none is within 10 s.
    pub async fn radio_attached(&self, phone: &str) {
        eventually(Duration::from_secs(10), || async {
            match self.host.bluetooth.info(phone).radio_session {
                Some(_) => Ok(()),
                None => Err(format!("no radio attached to {phone}")),
            }
        })
        .await
        .expect("the radio attaches");
    }

    /// The host's data dir (`vphonectl --data-dir`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("host")
    }

    /// A scratch directory inside the test's temporary dir.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).expect("scratch dir");
        p
    }

    /// `GET /metrics` on the operator port, as a scraper would.
    ///
    /// # Panics
    /// When the request fails or the answer is not `200`.
    pub async fn metrics_text(&self) -> String {
        let mut tcp = tokio::net::TcpStream::connect(self.host.operator_addr)
            .await
            .expect("connecting to the operator port");
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .expect("sending GET /metrics");
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut raw))
            .await
            .expect("GET /metrics timed out")
            .expect("reading /metrics");
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "GET /metrics answered: {head}"
        );
        body.to_owned()
    }

    /// One counter or gauge from `/metrics` (without labels).
    ///
    /// # Panics
    /// When the metric is missing.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.metrics_text().await;
        parse_metric(&text, name).unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
    }

    /// Stops the host.
    pub async fn shutdown(self) {
        self.host.shutdown().await;
    }
}

/// The value of an unlabelled metric in Prometheus text.
pub fn parse_metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok())?
    })
}

/// An enrolled handset: its companion config dir.
#[derive(Clone, Debug)]
pub struct Handset {
    /// The companion config dir (enrollment, identity).
    pub dir: PathBuf,
    /// The handset's name.
    pub name: String,
}

impl Handset {
    /// The host address this handset dials (from its enrollment).
    pub fn host_addr(&self) -> SocketAddr {
        mobile_client::config::load(&self.dir)
            .expect("companion config")
            .host
            .parse()
            .expect("host address")
    }

    /// Points this handset's companion at `addr` (what a handset behind a
    /// NAT or a proxy sees as the host).
    pub fn point_at(&self, addr: SocketAddr) {
        let mut cfg = mobile_client::config::load(&self.dir).expect("companion config");
        cfg.host = addr.to_string();
        cfg.save(&self.dir).expect("saving companion config");
    }

    /// Companion options for this handset, with `sensors` as the source.
    pub fn options(&self, sensors: mobile_client::sensors::SourceSpec) -> ConnectOptions {
        let mut o = ConnectOptions::new(self.dir.clone());
        o.sensors = sensors;
        o
    }

    /// Connects the real companion (replaying `recording` as its sensors).
    ///
    /// # Errors
    /// Whatever [`Companion::connect`] returns.
    pub async fn connect(&self, recording: &Path) -> Result<Companion, ClientError> {
        Companion::connect(self.options(mobile_client::sensors::SourceSpec::Replay {
            path: recording.to_path_buf(),
        }))
        .await
    }

    /// Connects as a raw bridge client (a hand-made, possibly hostile
    /// handset) that advertises `capabilities`, using the pending
    /// enrollment token like the companion does.
    ///
    /// # Panics
    /// When the config cannot be read or the host refuses.
    pub async fn connect_raw(&self, capabilities: Vec<SensorCapability>) -> ClientSession {
        let cfg = mobile_client::config::load(&self.dir).expect("companion config");
        let identity = mobile_client::config::load_identity(&self.dir).expect("identity");
        let addr: SocketAddr = cfg.host.parse().expect("host address");
        let mut bridge = BridgeClientConfig::new(addr, cfg.pin, identity);
        bridge.enrollment_token = cfg.pending_token.clone();
        bridge.hello = Hello {
            handset_name: cfg.handset_name.clone(),
            capabilities,
            screen: Some(Screen {
                width_px: 1080,
                height_px: 2400,
                density_dpi: 420,
                refresh_rate_hz: 60.0,
            }),
            video_codecs: vec![VideoCodec::H264 as i32],
            client_version: "hostile-test-handset".to_owned(),
            ..Hello::default()
        };
        let session = ClientSession::connect(bridge)
            .await
            .expect("raw handset admitted");
        mobile_client::config::mark_token_used(&self.dir).expect("token marked used");
        session
    }
}

/// Writes a sensor recording (replay format) to `dir/name` and returns its
/// path. `body` holds the record lines.
///
/// # Panics
/// When the file cannot be written.
pub fn write_recording(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    let text = format!("{}\n{body}", mobile_client::sensors::replay::HEADER);
    std::fs::write(&path, text).expect("writing the recording");
    path
}

/// A recording of a phone lying still and flat (few sensor updates, so the
/// screen changes only when something else happens).
///
/// # Panics
/// When the file cannot be written.
pub fn flat_recording(dir: &Path) -> PathBuf {
    write_recording(
        dir,
        "flat.rec",
        "1000000000 ACCELEROMETER 0 0 9.81\n1000000000 GYROSCOPE 0 0 0\n",
    )
}

/// CPU seconds (user + system) of the process or thread whose
/// `/proc/.../stat` file is `stat_path`; 0 when it cannot be read (the
/// process ended). Linux counts 100 ticks per second.
pub fn proc_cpu_seconds(stat_path: impl AsRef<Path>) -> f64 {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    // Fields after the command name (which may contain spaces); utime and
    // stime are fields 14 and 15 (1-based).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds of this process's threads whose name starts with `prefix`
/// (threads that ended are no longer counted); NaN when /proc cannot be
/// read.
pub fn threads_cpu_seconds(prefix: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    dir.flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|n| n.trim().starts_with(prefix))
        })
        .map(|t| proc_cpu_seconds(t.path().join("stat")))
        .sum()
}

/// A benchmark setting from the environment variable `name`, or `default`
/// when it is unset or does not parse.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A one-finger touch event (pointer 0), stamped now.
pub fn touch(action: TouchAction, x: f32, y: f32) -> input_message::Event {
    input_message::Event::one_finger(action, x, y, now_ns())
}

/// A handset tapping around the screen until `deadline`: a tap (down, 50 ms,
/// up) every 250 ms, walking a 5 x 7 grid, so the phone's ripples keep its
/// screen changing (the benchmarks' "active" load).
pub async fn tap_until(
    input: &tokio::sync::mpsc::Sender<input_message::Event>,
    deadline: std::time::Instant,
) {
    let mut i = 0u32;
    while std::time::Instant::now() < deadline {
        let (x, y) = (
            100.0 + (i % 5) as f32 * 120.0,
            300.0 + (i % 7) as f32 * 120.0,
        );
        let _ = input.send(touch(TouchAction::Down, x, y)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = input.send(touch(TouchAction::Up, x, y)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        i += 1;
    }
}

/// A key press with an Android keycode, stamped now.
pub fn key(keycode: i32) -> input_message::Event {
    input_message::Event::key_press(keycode, now_ns())
}

/// Where pixels of a colour are.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ColourBlob {
    /// Number of matching pixels.
    pub count: usize,
    /// Centroid x (pixel centres at +0.5).
    pub x: f32,
    /// Centroid y.
    pub y: f32,
    /// Bounding box: min x, min y, max x, max y (inclusive).
    pub bbox: (u32, u32, u32, u32),
}

/// Finds the pixels of packed RGBA `rgba` (`width` wide) whose R, G and B
/// are each within `tolerance` of `rgb`; `None` when there are none.
pub fn find_colour(rgba: &[u8], width: u32, rgb: [u8; 3], tolerance: u8) -> Option<ColourBlob> {
    let near = |a: u8, b: u8| a.abs_diff(b) <= tolerance;
    let (mut n, mut sx, mut sy) = (0usize, 0u64, 0u64);
    let mut bbox = (u32::MAX, u32::MAX, 0, 0);
    let w = width as usize;
    for (row, line) in rgba.chunks_exact(w * 4).enumerate() {
        for (col, p) in line.chunks_exact(4).enumerate() {
            if near(p[0], rgb[0]) && near(p[1], rgb[1]) && near(p[2], rgb[2]) {
                n += 1;
                sx += col as u64;
                sy += row as u64;
                bbox.0 = bbox.0.min(col as u32);
                bbox.1 = bbox.1.min(row as u32);
                bbox.2 = bbox.2.max(col as u32);
                bbox.3 = bbox.3.max(row as u32);
            }
        }
    }
    (n > 0).then(|| ColourBlob {
        count: n,
        x: sx as f32 / n as f32 + 0.5,
        y: sy as f32 / n as f32 + 0.5,
        bbox,
    })
}

/// Waits up to `timeout` for a picture on `pictures` (the current one
/// included) for which `check` returns `Ok`. On timeout returns the last
/// `Err` text (or a note that no picture arrived).
pub async fn wait_picture<T>(
    pictures: &mut watch::Receiver<Option<Arc<Picture>>>,
    timeout: Duration,
    check: impl FnMut(&Picture) -> Result<T, String>,
) -> Result<T, String> {
    wait_watch(pictures, timeout, check).await
}

/// Like [`wait_picture`] for the exact frames a sim phone publishes.
pub async fn wait_sim_frame<T>(
    frames: &mut watch::Receiver<Option<Arc<Frame>>>,
    timeout: Duration,
    check: impl FnMut(&Frame) -> Result<T, String>,
) -> Result<T, String> {
    wait_watch(frames, timeout, check).await
}

async fn wait_watch<P, T>(
    rx: &mut watch::Receiver<Option<Arc<P>>>,
    timeout: Duration,
    mut check: impl FnMut(&P) -> Result<T, String>,
) -> Result<T, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = "no picture arrived".to_owned();
    let mut seen = 0u64;
    loop {
        let current = rx.borrow_and_update().clone();
        if let Some(p) = current {
            seen += 1;
            match check(&p) {
                Ok(v) => return Ok(v),
                Err(e) => last = e,
            }
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(format!("the picture source ended; last: {last}")),
            Err(_) => {
                return Err(format!(
                    "timed out after {timeout:?} ({seen} pictures checked); last: {last}"
                ));
            }
        }
    }
}

pub use vphone_testkit::eventually;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_colour_centroid_with_tolerance() {
        let (w, h) = (10u32, 8u32);
        let mut rgba = vec![0u8; (w * h * 4) as usize];
        for (x, y, c) in [
            (2, 3, [250, 10, 240]),
            (4, 3, [255, 0, 255]),
            (9, 7, [0, 0, 0]),
        ] {
            let i = ((y * w + x) * 4) as usize;
            rgba[i..i + 3].copy_from_slice(&c);
        }
        let b = find_colour(&rgba, w, [255, 0, 255], 20).unwrap();
        assert_eq!(b.count, 2);
        assert_eq!((b.x, b.y), (3.5, 3.5));
        assert_eq!(b.bbox, (2, 3, 4, 3));
        assert!(find_colour(&rgba, w, [0, 200, 100], 20).is_none());
    }

    #[test]
    fn parses_metrics() {
        let text = "# HELP a_total A.\n# TYPE a_total counter\na_total 42\nb{x=\"1\"} 3\n";
        assert_eq!(parse_metric(text, "a_total"), Some(42.0));
        assert_eq!(parse_metric(text, "b"), None);
    }
}

/// The samples of a 16-bit mono WAV file (what a companion heard).
///
/// # Panics
/// When the file is not one.
pub fn read_wav(path: &Path) -> Vec<i16> {
    let r = hound::WavReader::open(path).expect("a WAV file");
    assert_eq!(r.spec().channels, 1, "mono");
    assert_eq!(r.spec().sample_rate, vphone_media::audio::SAMPLE_RATE);
    r.into_samples::<i16>()
        .map(|s| s.expect("a sample"))
        .collect()
}

/// One stretch of sound in a recording.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Burst {
    /// First sample.
    pub start: usize,
    /// Length, samples.
    pub len: usize,
    /// Its dominant frequency, Hz.
    pub hz: f32,
    /// Its level, dBFS.
    pub level_dbfs: f32,
}

/// The stretches of `pcm` (48 kHz) louder than `threshold_dbfs` in 5 ms
/// windows, gaps under 20 ms bridged, each with its pitch.
pub fn bursts(pcm: &[i16], threshold_dbfs: f32) -> Vec<Burst> {
    use vphone_media::audio::{SAMPLE_RATE, SAMPLES_PER_MS, dominant_hz, level_dbfs};
    let win = 5 * SAMPLES_PER_MS;
    let loud: Vec<bool> = pcm
        .chunks(win)
        .map(|w| level_dbfs(w) > threshold_dbfs)
        .collect();
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for (i, &l) in loud.iter().enumerate() {
        if !l {
            continue;
        }
        match spans.last_mut() {
            Some((_, end)) if i - *end <= 4 => *end = i + 1,
            _ => spans.push((i, i + 1)),
        }
    }
    spans
        .into_iter()
        .map(|(a, b)| {
            let (start, end) = (a * win, (b * win).min(pcm.len()));
            let part = &pcm[start..end];
            Burst {
                start,
                len: end - start,
                hz: dominant_hz(part, SAMPLE_RATE).unwrap_or(0.0),
                level_dbfs: level_dbfs(part),
            }
        })
        .collect()
}
