//! A live companion session: connect with the enrolled identity, stream the
//! sensors the phone asks for, send touches and keys, receive and decode the
//! phone's screen, measure glass-to-glass latency with the bridge's clock
//! sync, and optionally record the video and the sensors. With
//! [`ConnectOptions::radio`] the session also lends the handset's Bluetooth
//! radio to the phone (see [`crate::radio`]).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use device_bridge::{
    BridgeClientConfig, BridgeError, ClientSession, SessionEnd, TransportSettings,
};
use sensor_proto::bridge::{
    ActiveSensors, AudioAbilities, AudioCodec, Clipboard, ClockPing, CloseReason, Hello,
    KeyframeRequest, Screen, VideoCodec, control_message, input_message,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::ClientError;
use crate::audio::{Audio, AudioOptions, AudioOut, AudioStats, MicSpec};
use crate::config;
use crate::radio::{LentRadio, RadioOptions, RadioRelay, RadioStats};
use crate::sensors::replay::{Recorder as SensorRecorder, RecordingSource};
use crate::sensors::sampler::{Sampler, SamplerEvent, run_sampler};
use crate::sensors::{MonotonicClock, SensorSource, SourceSpec};
use crate::video::{Picture, Recorder, VideoDecoder, save_png};

/// How to run a session.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// The companion's config dir (enrollment, identity).
    pub config_dir: PathBuf,
    /// The phone to drive; `None` = the first phone assigned to this handset.
    pub phone: Option<String>,
    /// Where sensor values come from.
    pub sensors: SourceSpec,
    /// Also write the sampled sensors to this file (replayable).
    pub record_sensors: Option<PathBuf>,
    /// Write the received H.264 stream to this file.
    pub record_h264: Option<PathBuf>,
    /// Save the last decoded frame as PNG here when the session ends.
    pub save_frame: Option<PathBuf>,
    /// QUIC timing (tests shorten it).
    pub transport: TransportSettings,
    /// This handset's screen: width, height (pixels), density (dpi).
    pub screen: (u32, u32, u32),
    /// Lend this radio to the phone's Bluetooth stack; `None` (the default):
    /// nothing touches Bluetooth.
    pub radio: Option<RadioOptions>,
    /// Sound both ways (the default here: none; the companion's command
    /// line plays the phone's sound on the device when it can).
    pub audio: AudioOptions,
    /// Carry the clipboard: the phone's changes arrive in
    /// [`Companion::clipboard`], [`Companion::paste`] sets the phone's.
    pub clipboard: bool,
}

impl ConnectOptions {
    /// Options with defaults: synthetic sensors, no recording.
    pub fn new(config_dir: PathBuf) -> Self {
        Self {
            config_dir,
            phone: None,
            sensors: SourceSpec::Synthetic { seed: 1 },
            record_sensors: None,
            record_h264: None,
            save_frame: None,
            transport: TransportSettings::default(),
            screen: (1080, 2400, 420),
            radio: None,
            audio: AudioOptions::default(),
            clipboard: false,
        }
    }
}

/// Numbers of a session so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Session id.
    pub session_id: String,
    /// Phone name.
    pub phone: String,
    /// Video frames received.
    pub frames: u64,
    /// Frames decoded to pictures.
    pub decoded: u64,
    /// Frames skipped because the decoder fell behind.
    pub skipped: u64,
    /// Keyframes received.
    pub keyframes: u64,
    /// Video bytes received.
    pub video_bytes: u64,
    /// Frames per second over the last few seconds.
    pub fps: f64,
    /// Video bitrate over the last few seconds, bits per second.
    pub bitrate_bps: f64,
    /// Glass-to-glass latency (phone capture -> decoded here), p50, ms;
    /// the session's first picture, drawn before the session began, is not
    /// counted.
    pub g2g_p50_ms: f64,
    /// Glass-to-glass latency p99, ms.
    pub g2g_p99_ms: f64,
    /// Sensor samples sent.
    pub sensor_samples: u64,
    /// Input events sent.
    pub input_events: u64,
    /// Estimated host clock minus handset clock, ns.
    pub clock_offset_ns: i64,
    /// QUIC round-trip time, µs.
    pub rtt_us: u64,
    /// Frames written to the `.h264` recording.
    pub recorded_frames: u64,
    /// The radio relay's counters while lending a radio (`None` without
    /// [`ConnectOptions::radio`]).
    pub radio: Option<RadioStats>,
    /// Sound's numbers (`None` when the session has no sound either way).
    pub audio: Option<AudioStats>,
    /// Sound frames the bridge received (0 for a handset that asked for
    /// none: the host sends it none).
    pub audio_frames_received: u64,
}

#[derive(Debug, Default)]
struct Live {
    frames: u64,
    decoded: u64,
    keyframes: u64,
    bytes: u64,
    decode_errors: u64,
    skipped: u64,
    g2g_us: VecDeque<u64>,
    window: VecDeque<(Instant, u64)>,
}

const G2G_KEEP: usize = 4096;
/// Received frames waiting for the decoder beyond which it skips ahead.
const MAX_DECODE_BACKLOG: usize = 3;
const WINDOW: Duration = Duration::from_secs(3);

use device_bridge::clock::unix_ns;

fn percentile(sorted: &[u64], p: f64) -> u64 {
    device_bridge::stats::quantile(sorted, p).unwrap_or(0)
}

/// The runtime `vphone-companion` runs a [`Companion`] on: two workers
/// named `vphone-session`, at ordinary priority. (Real-time priority, which
/// the host uses for its latency paths, was measured here too: it made no
/// difference to the sensor latency, 1.1 ms p99 either way, and slowed the
/// Bluetooth relay, whose radio peers are ordinary processes that a
/// real-time thread preempts instead of using an idle core.)
///
/// # Errors
/// [`ClientError::Session`] when the OS refuses the threads.
pub fn runtime() -> Result<tokio::runtime::Runtime, ClientError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("vphone-session")
        .enable_all()
        .build()
        .map_err(|e| ClientError::Session(format!("cannot start the runtime: {e}")))
}

/// A running companion session.
#[derive(Debug)]
pub struct Companion {
    session: ClientSession,
    phone: String,
    input: mpsc::Sender<input_message::Event>,
    pictures: watch::Receiver<Option<Arc<Picture>>>,
    live: Arc<Mutex<Live>>,
    offset_ns: Arc<AtomicI64>,
    input_events: Arc<AtomicU64>,
    sensor_samples: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
    decoder: Option<std::thread::JoinHandle<Option<Recorder>>>,
    frames_tx: Option<std::sync::mpsc::Sender<device_bridge::VideoFrame>>,
    save_frame: Option<PathBuf>,
    radio: Option<RadioRelay>,
    audio: Arc<Mutex<Option<Audio>>>,
    clipboard: watch::Receiver<Option<String>>,
    clipboard_on: bool,
}

fn map_connect_error(host: &str, e: BridgeError) -> ClientError {
    match e {
        BridgeError::Refused { code, reason } => ClientError::Refused { code, reason },
        BridgeError::PinMismatch { expected, actual } => ClientError::PinMismatch {
            expected: expected.to_string(),
            actual: actual.to_string(),
        },
        BridgeError::HandshakeTimeout
        | BridgeError::Connection(_)
        | BridgeError::Connect(_)
        | BridgeError::Io(_) => ClientError::Unreachable {
            host: host.to_owned(),
            why: e.to_string(),
        },
        other => ClientError::Session(other.to_string()),
    }
}

impl Companion {
    /// Connects and starts streaming.
    ///
    /// # Errors
    /// [`ClientError::NotEnrolled`], [`ClientError::Unreachable`],
    /// [`ClientError::PinMismatch`], [`ClientError::Refused`] (revoked, phone
    /// not assigned, phone busy...) with the host's reason;
    /// [`ClientError::Radio`] when a radio to lend cannot be opened (checked
    /// before connecting).
    pub async fn connect(opts: ConnectOptions) -> Result<Self, ClientError> {
        let cfg = config::load(&opts.config_dir)?;
        let identity = config::load_identity(&opts.config_dir)?;
        let addr: SocketAddr = tokio::net::lookup_host(&cfg.host)
            .await
            .map_err(|e| ClientError::Unreachable {
                host: cfg.host.clone(),
                why: format!("cannot resolve: {e}"),
            })?
            .next()
            .ok_or_else(|| ClientError::Unreachable {
                host: cfg.host.clone(),
                why: "no address".to_owned(),
            })?;

        let mut source: Box<dyn SensorSource> = opts.sensors.open()?;
        if let Some(path) = &opts.record_sensors {
            source = Box::new(RecordingSource::new(source, SensorRecorder::create(path)?));
        }
        let sampler = Sampler::new(source);
        // The radio first: a radio that cannot be lent fails before the host
        // sees a session.
        let radio = match &opts.radio {
            Some(r) => Some(LentRadio::open(r).await?),
            None => None,
        };
        let audio_opts = AudioOptions {
            out: crate::audio::resolve_out(opts.audio.out.clone())?,
            ..opts.audio.clone()
        };
        check_audio_files(&audio_opts)?;
        let (w, h, dpi) = opts.screen;
        let mut bridge = BridgeClientConfig::new(addr, cfg.pin, identity);
        bridge.enrollment_token = cfg.pending_token.clone();
        bridge.transport = opts.transport.clone();
        bridge.hello = Hello {
            handset_name: cfg.handset_name.clone(),
            capabilities: sampler.capabilities().to_vec(),
            screen: Some(Screen {
                width_px: w,
                height_px: h,
                density_dpi: dpi,
                refresh_rate_hz: 60.0,
            }),
            radio_available: radio.is_some(),
            phone_name: opts.phone.clone().unwrap_or_default(),
            video_codecs: vec![VideoCodec::H264 as i32],
            client_version: env!("CARGO_PKG_VERSION").to_owned(),
            audio: (audio_opts.out.is_some() || audio_opts.mic != MicSpec::Off).then(|| {
                AudioAbilities {
                    playback: audio_opts.out.is_some(),
                    microphone: audio_opts.mic != MicSpec::Off,
                    codecs: vec![AudioCodec::Opus as i32],
                }
            }),
            clipboard: opts.clipboard,
            ..Hello::default()
        };
        let session = match ClientSession::connect(bridge).await {
            Ok(s) => s,
            Err(e) => {
                if let Some(r) = radio {
                    r.close().await;
                }
                return Err(map_connect_error(&cfg.host, e));
            }
        };
        if cfg.pending_token.is_some() {
            config::mark_token_used(&opts.config_dir)?;
        }
        let phone = session.welcome().phone_name;
        tracing::info!(session = %session.id(), %phone, "connected");
        let radio = radio.map(|r| RadioRelay::start(session.clone(), r));

        let live = Arc::new(Mutex::new(Live::default()));
        let offset_ns = Arc::new(AtomicI64::new(0));
        let (pic_tx, pictures) = watch::channel(None);
        let mut tasks = Vec::new();

        // Control: ActiveSensors drive the sampler, pongs the clock offset,
        // AudioState starts the sound, Clipboard is the phone's clipboard.
        let (active_tx, active_rx) = watch::channel(ActiveSensors::default());
        let audio: Arc<Mutex<Option<Audio>>> = Arc::new(Mutex::new(None));
        let (clip_tx, clipboard) = watch::channel(None);
        {
            let s = session.clone();
            let offset = offset_ns.clone();
            let audio = audio.clone();
            tasks.push(tokio::spawn(async move {
                let mut recent: VecDeque<(i64, i64)> = VecDeque::new();
                while let Ok(m) = s.recv_control().await {
                    match m.msg {
                        Some(control_message::Msg::ActiveSensors(a)) => {
                            tracing::info!(
                                sensors = a.sensors.len(),
                                location = a.location_wanted,
                                "phone asks for sensors"
                            );
                            let _ = active_tx.send(a);
                        }
                        Some(control_message::Msg::RadioState(r)) => {
                            tracing::info!(wanted_lent = r.lent, "the host's radio state");
                        }
                        Some(control_message::Msg::AudioState(st)) => {
                            start_audio(&s, &audio, &audio_opts, &st, &offset);
                        }
                        Some(control_message::Msg::Clipboard(c)) => {
                            tracing::info!(bytes = c.text.len(), "the phone's clipboard changed");
                            let _ = clip_tx.send(Some(c.text));
                        }
                        Some(control_message::Msg::Pong(p)) => {
                            // NTP-style: the exchange with the smallest round
                            // trip bounds the error best, so keep the offset of
                            // the fastest of the recent exchanges.
                            let Some((rtt, off)) = device_bridge::clock::ping_estimate(
                                p.client_send_ns,
                                p.server_recv_ns,
                                p.server_send_ns,
                                unix_ns(),
                            ) else {
                                tracing::debug!("a pong with impossible times; ignored");
                                continue;
                            };
                            if recent.len() == 8 {
                                recent.pop_front();
                            }
                            recent.push_back((rtt, off));
                            if let Some(&(_, best)) = recent.iter().min_by_key(|(r, _)| *r) {
                                offset.store(best, Ordering::Relaxed);
                            }
                        }
                        _ => {}
                    }
                }
            }));
        }
        // Clock sync pings, and the measured offset reported to the host
        // (it places sensor timestamps on its own clock with it).
        {
            let s = session.clone();
            let offset = offset_ns.clone();
            tasks.push(tokio::spawn(async move {
                let mut id = 0;
                loop {
                    id += 1;
                    let _ = s
                        .send_control(control_message::Msg::Ping(ClockPing {
                            id,
                            client_send_ns: unix_ns().max(0) as u64,
                        }))
                        .await;
                    if id > 1 {
                        let mut stats = s.stats().to_proto();
                        stats.clock_offset_ns = offset.load(Ordering::Relaxed);
                        let _ = s.send_control(control_message::Msg::Stats(stats)).await;
                    }
                    tokio::time::sleep(if id < 3 {
                        Duration::from_millis(200)
                    } else {
                        Duration::from_secs(2)
                    })
                    .await;
                }
            }));
        }
        // Sensors.
        let sensor_samples = Arc::new(AtomicU64::new(0));
        let input_events = Arc::new(AtomicU64::new(0));
        let (input, mut input_rx) = mpsc::channel::<input_message::Event>(1024);
        {
            let (ev_tx, mut ev_rx) = mpsc::channel(64);
            tasks.push(tokio::spawn(async move {
                run_sampler(sampler, MonotonicClock::new(), active_rx, ev_tx).await;
            }));
            let s = session.clone();
            let n = sensor_samples.clone();
            let input = input.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(ev) = ev_rx.recv().await {
                    match ev {
                        SamplerEvent::Batch(b) => {
                            let k = b.samples.len() as u64;
                            if s.send_sensors(b.samples).is_ok() {
                                n.fetch_add(k, Ordering::Relaxed);
                            }
                        }
                        SamplerEvent::Location(l) => {
                            let _ = input.try_send(input_message::Event::Location(l));
                        }
                    }
                }
            }));
        }
        // Input, in order.
        {
            let s = session.clone();
            let n = input_events.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(ev) = input_rx.recv().await {
                    if s.send_input(ev).await.is_ok() {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        // Video: a decoder thread (decoding is CPU work) fed by a receiver task.
        let mut recorder = match &opts.record_h264 {
            Some(p) => Some(Recorder::create(p)?),
            None => None,
        };
        let (frames_tx, frames_rx) = std::sync::mpsc::channel::<device_bridge::VideoFrame>();
        let decoder = {
            let live = live.clone();
            let offset = offset_ns.clone();
            let s = session.clone();
            let handle = tokio::runtime::Handle::current();
            let mut dec = VideoDecoder::new()?;
            std::thread::Builder::new()
                .name("h264-decode".into())
                .spawn(move || {
                    // Video yields to the sensor, input and radio paths.
                    device_bridge::bulk_thread_priority();
                    let mut broken = false;
                    let mut backlog: VecDeque<device_bridge::VideoFrame> = VecDeque::new();
                    loop {
                        if backlog.is_empty() {
                            match frames_rx.recv() {
                                Ok(f) => backlog.push_back(f),
                                Err(_) => break,
                            }
                        }
                        backlog.extend(frames_rx.try_iter());
                        // Behind: every frame but the newest is late. Jump to the
                        // newest keyframe (frames before it are not needed), or
                        // drop everything and ask for one: late video is worse
                        // than a skipped frame.
                        if backlog.len() > MAX_DECODE_BACKLOG {
                            let skipped_to = backlog.iter().rposition(|f| f.header.keyframe);
                            let drop_n = skipped_to.unwrap_or(backlog.len());
                            for f in backlog.drain(..drop_n) {
                                if let Some(r) = recorder.as_mut() {
                                    let _ = r.write(&f.payload, f.header.keyframe);
                                }
                            }
                            live.lock().unwrap_or_else(|p| p.into_inner()).skipped += drop_n as u64;
                            if skipped_to.is_none() {
                                broken = true;
                                let s = s.clone();
                                handle.spawn(async move {
                                    let _ = s
                                        .send_control(control_message::Msg::KeyframeRequest(
                                            KeyframeRequest {
                                                last_decoded_seq: 0,
                                            },
                                        ))
                                        .await;
                                });
                            }
                        }
                        let Some(f) = backlog.pop_front() else {
                            continue;
                        };
                        if let Some(r) = recorder.as_mut() {
                            let _ = r.write(&f.payload, f.header.keyframe);
                        }
                        if broken && !f.header.keyframe {
                            continue;
                        }
                        match dec.decode(&f.payload) {
                            Ok(Some(pic)) => {
                                broken = false;
                                // The host's clock, now; the capture time is the host's.
                                let now_us = (i128::from(unix_ns())
                                    + i128::from(offset.load(Ordering::Relaxed)))
                                    / 1000;
                                let g2g = device_bridge::clock::elapsed_us(
                                    i128::from(f.header.capture_time_us),
                                    now_us,
                                );
                                // The session's first picture was drawn before the
                                // session began (a resting screen's, minutes ago):
                                // its age is no glass-to-glass latency.
                                let first_picture = f.header.keyframe && f.header.seq == 1;
                                let mut l = live.lock().unwrap_or_else(|p| p.into_inner());
                                l.decoded += 1;
                                if let Some(g2g) = g2g.filter(|_| !first_picture) {
                                    if l.g2g_us.len() == G2G_KEEP {
                                        l.g2g_us.pop_front();
                                    }
                                    l.g2g_us.push_back(g2g);
                                }
                                drop(l);
                                let _ = pic_tx.send(Some(Arc::new(pic)));
                            }
                            Ok(None) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "decode failed; asking for a keyframe");
                                live.lock().unwrap_or_else(|p| p.into_inner()).decode_errors += 1;
                                broken = true;
                                let s = s.clone();
                                handle.spawn(async move {
                                    let _ = s
                                        .send_control(control_message::Msg::KeyframeRequest(
                                            KeyframeRequest {
                                                last_decoded_seq: 0,
                                            },
                                        ))
                                        .await;
                                });
                            }
                        }
                    }
                    recorder
                })
                .map_err(|e| ClientError::Video(format!("cannot start the decoder thread: {e}")))?
        };
        {
            let s = session.clone();
            let live = live.clone();
            let tx = frames_tx.clone();
            tasks.push(tokio::spawn(async move {
                while let Ok(f) = s.recv_video().await {
                    {
                        let mut l = live.lock().unwrap_or_else(|p| p.into_inner());
                        l.frames += 1;
                        l.keyframes += u64::from(f.header.keyframe);
                        let n = f.payload.len() as u64;
                        l.bytes += n;
                        let now = Instant::now();
                        l.window.push_back((now, n));
                        while l
                            .window
                            .front()
                            .is_some_and(|(t, _)| now.duration_since(*t) > WINDOW)
                        {
                            l.window.pop_front();
                        }
                    }
                    if tx.send(f).is_err() {
                        break;
                    }
                }
            }));
        }
        Ok(Self {
            session,
            phone,
            input,
            pictures,
            live,
            offset_ns,
            input_events,
            sensor_samples,
            tasks,
            decoder: Some(decoder),
            frames_tx: Some(frames_tx),
            save_frame: opts.save_frame,
            radio,
            audio,
            clipboard,
            clipboard_on: opts.clipboard,
        })
    }

    /// The phone's clipboard as it last changed (`None` before it did).
    /// Only with [`ConnectOptions::clipboard`].
    pub fn clipboard(&self) -> watch::Receiver<Option<String>> {
        self.clipboard.clone()
    }

    /// Sets the phone's clipboard to `text` (a paste into the viewer).
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] for text over 16 KiB or a session
    /// without [`ConnectOptions::clipboard`]; [`ClientError::Session`].
    pub async fn paste(&self, text: &str) -> Result<(), ClientError> {
        if !self.clipboard_on {
            return Err(ClientError::InvalidArgument(
                "the session was opened without the clipboard".into(),
            ));
        }
        send_clipboard(&self.session, text).await
    }

    /// The latencies (phone capture to output, µs) of the sound frames
    /// played since the last call.
    pub fn take_audio_latencies(&self) -> Vec<u64> {
        lock_audio(&self.audio)
            .as_ref()
            .map(Audio::take_latencies)
            .unwrap_or_default()
    }

    /// The glass-to-glass latencies (phone capture to decoded here, µs) of
    /// the frames decoded since the last call (or the last ones kept), in
    /// order; later [`report`](Self::report)s start from none. The
    /// session's first picture is not among them: it was drawn before the
    /// session began.
    pub fn take_video_latencies(&self) -> Vec<u64> {
        let mut l = self.live.lock().unwrap_or_else(|p| p.into_inner());
        l.g2g_us.drain(..).collect()
    }

    /// Sends touches and keys (in order) with this.
    pub fn input(&self) -> mpsc::Sender<input_message::Event> {
        self.input.clone()
    }

    /// The newest decoded picture.
    pub fn pictures(&self) -> watch::Receiver<Option<Arc<Picture>>> {
        self.pictures.clone()
    }

    /// The underlying bridge session.
    pub fn session(&self) -> &ClientSession {
        &self.session
    }

    /// Asks the host for a keyframe.
    pub async fn request_keyframe(&self) {
        let _ = self
            .session
            .send_control(control_message::Msg::KeyframeRequest(KeyframeRequest {
                last_decoded_seq: 0,
            }))
            .await;
    }

    /// Waits for the session to end (host closed it, or resume failed).
    pub async fn ended(&self) -> SessionEnd {
        self.session.ended().await
    }

    /// The numbers so far.
    pub fn report(&self) -> Report {
        let l = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let mut g: Vec<u64> = l.g2g_us.iter().copied().collect();
        g.sort_unstable();
        let span = match (l.window.front(), l.window.back()) {
            (Some(a), Some(b)) if l.window.len() > 1 => b.0.duration_since(a.0).as_secs_f64(),
            _ => 0.0,
        };
        let (fps, bitrate) = if span >= 0.5 {
            let bytes: u64 = l.window.iter().skip(1).map(|(_, n)| n).sum();
            (
                (l.window.len() - 1) as f64 / span,
                bytes as f64 * 8.0 / span,
            )
        } else {
            (0.0, 0.0)
        };
        Report {
            session_id: self.session.id().to_owned(),
            phone: self.phone.clone(),
            frames: l.frames,
            decoded: l.decoded,
            skipped: l.skipped,
            keyframes: l.keyframes,
            video_bytes: l.bytes,
            fps,
            bitrate_bps: bitrate,
            g2g_p50_ms: percentile(&g, 0.5) as f64 / 1000.0,
            g2g_p99_ms: percentile(&g, 0.99) as f64 / 1000.0,
            sensor_samples: self.sensor_samples.load(Ordering::Relaxed),
            input_events: self.input_events.load(Ordering::Relaxed),
            clock_offset_ns: self.offset_ns.load(Ordering::Relaxed),
            rtt_us: self.session.stats().rtt_us,
            recorded_frames: 0,
            radio: self.radio.as_ref().map(RadioRelay::stats),
            audio: lock_audio(&self.audio).as_ref().map(Audio::stats),
            audio_frames_received: self.session.stats().audio_frames_received,
        }
    }

    /// Closes the session cleanly, flushes recordings and saves the last
    /// frame; returns the final numbers. A lent radio is given back first:
    /// `RadioState{lent: false}` to the host, capture flushed, adapter
    /// restored.
    ///
    /// # Errors
    /// [`ClientError::Io`]/[`ClientError::Video`] writing the outputs.
    pub async fn finish(mut self) -> Result<Report, ClientError> {
        // Tell the host the radio is no longer lent, flush the capture and
        // give the adapter back before the session closes.
        let radio = match self.radio.take() {
            Some(r) => Some(r.stop().await),
            None => None,
        };
        self.session
            .close(CloseReason::Normal, "companion finished")
            .await;
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let mut report = self.report();
        report.radio = radio;
        // Sound that failed on the way (a device that went away) is said,
        // not a reason to fail the session's end.
        let audio = lock_audio(&self.audio).take();
        if let Some(a) = audio
            && let Ok(Err(e)) = tokio::task::spawn_blocking(move || a.finish()).await
        {
            tracing::warn!(error = %e, "the sound ended with an error");
        }
        drop(self.frames_tx.take());
        if let Some(d) = self.decoder.take() {
            let rec = tokio::task::spawn_blocking(move || d.join()).await;
            if let Ok(Ok(Some(r))) = rec {
                report.recorded_frames = r.finish()?;
            }
        }
        if let Some(path) = &self.save_frame {
            let pic = self.pictures.borrow().clone();
            match pic {
                Some(p) => save_png(path, &p)?,
                None => {
                    return Err(ClientError::Video(
                        "no frame was decoded, so none was saved".to_owned(),
                    ));
                }
            }
        }
        Ok(report)
    }
}

fn lock_audio(a: &Mutex<Option<Audio>>) -> std::sync::MutexGuard<'_, Option<Audio>> {
    a.lock().unwrap_or_else(|p| p.into_inner())
}

/// Fails before connecting when a WAV file to write or read cannot be.
fn check_audio_files(opts: &AudioOptions) -> Result<(), ClientError> {
    if let Some(AudioOut::Wav(p)) = &opts.out {
        std::fs::File::create(p).map_err(|e| ClientError::io("creating", p, e))?;
    }
    if let MicSpec::Wav(p) = &opts.mic {
        std::fs::File::open(p).map_err(|e| ClientError::io("opening", p, e))?;
    }
    Ok(())
}

/// Starts the session's sound when the host first says what it sends.
fn start_audio(
    s: &ClientSession,
    audio: &Mutex<Option<Audio>>,
    opts: &AudioOptions,
    st: &sensor_proto::bridge::AudioState,
    offset: &Arc<AtomicI64>,
) {
    let mut a = lock_audio(audio);
    if a.is_none() && (st.playback || st.microphone) {
        let effective = AudioOptions {
            out: opts.out.clone().filter(|_| st.playback),
            mic: if st.microphone {
                opts.mic.clone()
            } else {
                MicSpec::Off
            },
            ..opts.clone()
        };
        match Audio::start(s, &effective, st.frame_ms, offset.clone()) {
            Ok(started) => {
                tracing::info!(
                    playback = st.playback,
                    microphone = st.microphone,
                    frame_ms = st.frame_ms,
                    "sound started"
                );
                *a = Some(started);
            }
            Err(e) => tracing::warn!(error = %e, "no sound"),
        }
    }
    if !st.microphone_refused.is_empty() {
        tracing::warn!(why = %st.microphone_refused, "the phone did not take the microphone");
    }
    if let Some(a) = a.as_ref() {
        a.host_state(st);
    }
}

/// Sets the phone's clipboard to `text` on `session` (opened with the
/// clipboard): what [`Companion::paste`] does, for holders of the session
/// alone (the viewer's paste task).
///
/// # Errors
/// [`ClientError::InvalidArgument`] for text over 16 KiB;
/// [`ClientError::Session`].
pub async fn send_clipboard(session: &ClientSession, text: &str) -> Result<(), ClientError> {
    if text.len() > sensor_proto::bridge::CLIPBOARD_MAX_BYTES {
        return Err(ClientError::InvalidArgument(format!(
            "{} bytes of text; the clipboard carries at most {}",
            text.len(),
            sensor_proto::bridge::CLIPBOARD_MAX_BYTES
        )));
    }
    session
        .send_control(control_message::Msg::Clipboard(Clipboard {
            text: text.to_owned(),
        }))
        .await
        .map_err(|e| ClientError::Session(e.to_string()))
}
