//! The handset's sound: the phone's sound played here (`--audio-out`), and
//! this handset's microphone sent into the phone (`--mic`, off unless the
//! person asks).
//!
//! * Playback: frames arrive as datagrams into a [`JitterBuffer`] (delay
//!   sized from the measured jitter, see there); a playout thread takes each
//!   frame when it is due, decodes it (or conceals a lost one) and plays it
//!   on the system's output device or writes it, in real time, to a WAV
//!   file. Latency is measured per frame: from the phone's capture (the
//!   host's clock) to the moment its first sample leaves for the output.
//! * Microphone: 20 ms frames from the system's input device, a synthetic
//!   tone or a WAV file, at real-time pace, Opus-coded (speech mode, FEC,
//!   DTX) and sent as datagrams.

pub mod jitter;

#[cfg(feature = "sound")]
mod device;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use device_bridge::ClientSession;
use sensor_proto::bridge::AudioFrame;
use vphone_media::audio::{Content, OpusDecoder, OpusEncoder, SAMPLE_RATE, SAMPLES_PER_MS, Tone};

use self::jitter::{JitterBuffer, Slot};
use crate::ClientError;

/// Where the phone's sound goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AudioOut {
    /// The system's default output device; when it cannot be opened, no
    /// sound (with a warning) instead of no session.
    Auto,
    /// The system's default output device, or an error.
    Device,
    /// A WAV file (48 kHz, mono, 16-bit), written in real time: what this
    /// handset heard, silences included.
    Wav(PathBuf),
}

impl std::str::FromStr for AudioOut {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "device" => Ok(Self::Device),
            p if p.to_ascii_lowercase().ends_with(".wav") => Ok(Self::Wav(PathBuf::from(p))),
            other => Err(format!(
                "'{other}': use auto, device, or a file name ending in .wav"
            )),
        }
    }
}

/// Where the microphone sent into the phone comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum MicSpec {
    /// No microphone (the default: it is opened only when asked for).
    Off,
    /// The system's default input device.
    Default,
    /// A steady tone of this many Hz at -13 dBFS (tests, the demo).
    Synthetic(f32),
    /// A WAV file, played in a loop at real-time pace (any rate; mono or
    /// the channels averaged).
    Wav(PathBuf),
}

impl std::str::FromStr for MicSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(Self::Off),
            "default" => Ok(Self::Default),
            "synthetic" => Ok(Self::Synthetic(440.0)),
            _ => {
                if let Some(hz) = s.strip_prefix("synthetic:") {
                    let hz: f32 = hz
                        .parse()
                        .map_err(|_| format!("'{hz}' is not a frequency in Hz"))?;
                    if !(20.0..=20_000.0).contains(&hz) {
                        return Err(format!("{hz} Hz is outside 20..20000"));
                    }
                    Ok(Self::Synthetic(hz))
                } else if let Some(p) = s.strip_prefix("wav:") {
                    Ok(Self::Wav(PathBuf::from(p)))
                } else {
                    Err(format!(
                        "'{s}': use off, default, synthetic[:HZ] or wav:FILE"
                    ))
                }
            }
        }
    }
}

/// The sound settings of a session.
#[derive(Clone, Debug, PartialEq)]
pub struct AudioOptions {
    /// Play the phone's sound here; `None`: ask for none.
    pub out: Option<AudioOut>,
    /// The jitter buffer's smallest delay, ms.
    pub buffer_ms: u32,
    /// The microphone.
    pub mic: MicSpec,
}

impl Default for AudioOptions {
    fn default() -> Self {
        Self {
            out: None,
            buffer_ms: 20,
            mic: MicSpec::Off,
        }
    }
}

/// The sound's numbers so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AudioStats {
    /// The host sends sound (its `AudioState.playback`).
    pub playback: bool,
    /// The host takes the microphone.
    pub microphone: bool,
    /// Why the host did not take the microphone, if it said.
    pub microphone_refused: Option<String>,
    /// The jitter buffer's counters.
    pub jitter: jitter::JitterStats,
    /// Sound buffered now (jitter buffer and output queue), ms.
    pub buffer_ms: f64,
    /// The jitter buffer's delay target now, ms.
    pub target_ms: f64,
    /// Phone capture to output, p50, ms (the last 4096 frames).
    pub latency_p50_ms: f64,
    /// Phone capture to output, p99, ms.
    pub latency_p99_ms: f64,
    /// Output samples filled with silence while sound was playing.
    pub underrun_samples: u64,
    /// Bytes of coded sound received (payloads only).
    pub bytes_received: u64,
    /// Microphone frames sent.
    pub mic_frames_sent: u64,
    /// Microphone frames not sent (DTX silence is not counted).
    pub mic_frames_dropped: u64,
}

const LATENCY_KEEP: usize = 4096;
/// The output queue holds at most this much sound; more is dropped.
const FIFO_MAX: usize = 200 * SAMPLES_PER_MS;
/// The output clock's tick.
const TICK: Duration = Duration::from_millis(5);

#[derive(Debug)]
struct Shared {
    jb: Mutex<JitterBuffer>,
    latencies: Mutex<VecDeque<u64>>,
    fifo: Arc<Mutex<VecDeque<i16>>>,
    starved: Arc<AtomicU64>,
    state: Mutex<AudioStats>,
    mic_sent: AtomicU64,
    mic_dropped: AtomicU64,
    bytes: AtomicU64,
    stop: AtomicBool,
}

/// A session's sound, both ways. Dropping it stops everything; call
/// [`Audio::finish`] to close the WAV file properly.
#[derive(Debug)]
pub struct Audio {
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<Result<(), ClientError>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn unix_us() -> u64 {
    u64::try_from(device_bridge::clock::unix_us()).unwrap_or(0)
}

/// Checks that playback to `out` can work here, before connecting:
/// `Auto` becomes `Device` when the output opens, else `None` (no sound
/// asked for) with a warning; `Device` that does not open is an error.
///
/// # Errors
/// [`ClientError::Audio`] for `Device` without a working output.
pub fn resolve_out(out: Option<AudioOut>) -> Result<Option<AudioOut>, ClientError> {
    match out {
        Some(AudioOut::Auto) => match probe_output() {
            Ok(()) => Ok(Some(AudioOut::Device)),
            Err(e) => {
                tracing::warn!(
                    "{e}: the phone's sound is not played (--audio-out FILE.wav records it, \
                     --no-audio stops asking for it)"
                );
                Ok(None)
            }
        },
        Some(AudioOut::Device) => {
            probe_output().map_err(|e| {
                ClientError::Audio(format!(
                    "{e}; use --audio-out FILE.wav to record the sound, or --no-audio"
                ))
            })?;
            Ok(Some(AudioOut::Device))
        }
        other => Ok(other),
    }
}

#[cfg(feature = "sound")]
fn probe_output() -> Result<(), ClientError> {
    device::probe_output()
}

#[cfg(not(feature = "sound"))]
fn probe_output() -> Result<(), ClientError> {
    Err(ClientError::Audio(
        "this companion was built without sound devices (feature `sound`)".into(),
    ))
}

impl Audio {
    /// Starts playback (when `opts.out` is set) and the microphone (unless
    /// off) on `session`, whose `Hello.audio` announced the same.
    /// `offset_ns` is the clock offset (host minus handset).
    ///
    /// # Errors
    /// [`ClientError::Audio`] when the WAV file, device or microphone
    /// source cannot be opened.
    pub fn start(
        session: &ClientSession,
        opts: &AudioOptions,
        frame_ms: u32,
        offset_ns: Arc<AtomicI64>,
    ) -> Result<Self, ClientError> {
        let frame_us = u64::from(frame_ms) * 1000;
        let shared = Arc::new(Shared {
            jb: Mutex::new(JitterBuffer::new(
                frame_us,
                u64::from(opts.buffer_ms) * 1000,
                300_000,
            )),
            latencies: Mutex::new(VecDeque::new()),
            fifo: Arc::new(Mutex::new(VecDeque::new())),
            starved: Arc::new(AtomicU64::new(0)),
            state: Mutex::new(AudioStats::default()),
            mic_sent: AtomicU64::new(0),
            mic_dropped: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let mut me = Self {
            shared: shared.clone(),
            threads: Vec::new(),
            tasks: Vec::new(),
        };
        if let Some(out) = &opts.out {
            let wav = match out {
                AudioOut::Wav(p) => Some(
                    hound::WavWriter::create(
                        p,
                        hound::WavSpec {
                            channels: 1,
                            sample_rate: SAMPLE_RATE,
                            bits_per_sample: 16,
                            sample_format: hound::SampleFormat::Int,
                        },
                    )
                    .map_err(|e| ClientError::Audio(format!("creating {}: {e}", p.display())))?,
                ),
                _ => None,
            };
            let dec = OpusDecoder::new(frame_ms).map_err(|e| ClientError::Audio(e.to_string()))?;
            let s = shared.clone();
            let offset = offset_ns.clone();
            me.threads.push(
                std::thread::Builder::new()
                    .name("audio-out".into())
                    .spawn(move || playout(&s, dec, wav, &offset))
                    .map_err(|e| ClientError::Audio(format!("cannot start the playout: {e}")))?,
            );
            let s = shared.clone();
            let session = session.clone();
            me.tasks.push(tokio::spawn(async move {
                while let Ok(f) = session.recv_audio().await {
                    s.bytes.fetch_add(f.payload.len() as u64, Ordering::Relaxed);
                    s.jb.lock().unwrap_or_else(|p| p.into_inner()).push(
                        f.seq,
                        f.capture_time_us,
                        f.payload,
                        unix_us(),
                    );
                }
            }));
        }
        if opts.mic != MicSpec::Off {
            let source = MicSource::open(&opts.mic)?;
            let enc = OpusEncoder::new(frame_ms, 32_000, Content::Voice)
                .map_err(|e| ClientError::Audio(e.to_string()))?;
            let s = shared.clone();
            let session = session.clone();
            me.threads.push(
                std::thread::Builder::new()
                    .name("audio-mic".into())
                    .spawn(move || mic(&s, &session, source, enc))
                    .map_err(|e| ClientError::Audio(format!("cannot start the microphone: {e}")))?,
            );
        }
        Ok(me)
    }

    /// Takes the host's `AudioState`.
    pub fn host_state(&self, st: &sensor_proto::bridge::AudioState) {
        let mut s = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        s.playback = st.playback;
        s.microphone = st.microphone;
        s.microphone_refused =
            (!st.microphone_refused.is_empty()).then(|| st.microphone_refused.clone());
    }

    /// The numbers so far.
    #[must_use]
    pub fn stats(&self) -> AudioStats {
        let mut st = self
            .shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let jb = self.shared.jb.lock().unwrap_or_else(|p| p.into_inner());
        st.jitter = jb.stats();
        let fifo = self
            .shared
            .fifo
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        st.buffer_ms = (jb.level_us() as f64 / 1000.0) + fifo as f64 / SAMPLES_PER_MS as f64;
        st.target_ms = jb.target_us() as f64 / 1000.0;
        drop(jb);
        let mut l: Vec<u64> = self
            .shared
            .latencies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        l.sort_unstable();
        let q = |p| device_bridge::stats::quantile(&l, p).unwrap_or(0) as f64 / 1000.0;
        st.latency_p50_ms = q(0.5);
        st.latency_p99_ms = q(0.99);
        st.underrun_samples = self.shared.starved.load(Ordering::Relaxed);
        st.bytes_received = self.shared.bytes.load(Ordering::Relaxed);
        st.mic_frames_sent = self.shared.mic_sent.load(Ordering::Relaxed);
        st.mic_frames_dropped = self.shared.mic_dropped.load(Ordering::Relaxed);
        st
    }

    /// The latencies of the frames played since the last call, µs (the
    /// benchmark's series).
    pub fn take_latencies(&self) -> Vec<u64> {
        self.shared
            .latencies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect()
    }

    /// Stops both directions and closes the WAV file.
    ///
    /// # Errors
    /// [`ClientError::Audio`] when the WAV file could not be finished.
    pub fn finish(mut self) -> Result<(), ClientError> {
        self.stop_all()
    }

    fn stop_all(&mut self) -> Result<(), ClientError> {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let mut result = Ok(());
        for t in self.threads.drain(..) {
            match t.join() {
                Ok(Err(e)) => result = Err(e),
                Ok(Ok(())) => {}
                Err(_) => result = Err(ClientError::Audio("an audio thread panicked".into())),
            }
        }
        result
    }
}

impl Drop for Audio {
    fn drop(&mut self) {
        let _ = self.stop_all();
    }
}

/// The playout thread: moves due frames from the jitter buffer to the
/// output queue, and (for a WAV file) plays the queue in real time.
fn playout(
    s: &Shared,
    mut dec: OpusDecoder,
    mut wav: Option<hound::WavWriter<std::io::BufWriter<std::fs::File>>>,
    offset_ns: &AtomicI64,
) -> Result<(), ClientError> {
    #[cfg(feature = "sound")]
    let _device = if wav.is_none() {
        Some(device::open_output(s.fifo.clone(), s.starved.clone())?)
    } else {
        None
    };
    #[cfg(not(feature = "sound"))]
    if wav.is_none() {
        return Err(ClientError::Audio(
            "this companion was built without sound devices (feature `sound`); use \
             --audio-out FILE.wav"
                .into(),
        ));
    }
    let start = Instant::now();
    let mut written: u64 = 0;
    let mut pcm = Vec::with_capacity(2 * dec.frame_samples());
    let mut playing = false;
    let mut tick: u32 = 0;
    while !s.stop.load(Ordering::Relaxed) {
        tick += 1;
        let due = start + TICK * tick;
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let now_us = unix_us();
        loop {
            // A tick early: the output never waits for a frame due between
            // two ticks (that would be a gap of silence inside the sound).
            let early = now_us + TICK.as_micros() as u64;
            let slot =
                s.jb.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .pop_due(early);
            let Some(slot) = slot else { break };
            pcm.clear();
            let capture = match slot {
                Slot::Frame {
                    capture_us,
                    payload,
                    ..
                } => {
                    if dec.decode(&payload, &mut pcm).is_err() {
                        let _ = dec.conceal(None, &mut pcm);
                    }
                    Some(capture_us)
                }
                Slot::Conceal { next } => {
                    let _ = dec.conceal(next.as_deref(), &mut pcm);
                    None
                }
            };
            let mut fifo = s.fifo.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = capture {
                // Its first sample leaves after what is queued before it.
                let host_now = i128::from(now_us)
                    + i128::from(offset_ns.load(Ordering::Relaxed) / 1000)
                    + (fifo.len() / SAMPLES_PER_MS) as i128 * 1000;
                if let Some(l) = device_bridge::clock::elapsed_us(i128::from(c), host_now) {
                    let mut lat = s.latencies.lock().unwrap_or_else(|p| p.into_inner());
                    if lat.len() == LATENCY_KEEP {
                        lat.pop_front();
                    }
                    lat.push_back(l);
                }
            }
            fifo.extend(pcm.iter().copied());
            let excess = fifo.len().saturating_sub(FIFO_MAX);
            fifo.drain(..excess);
            playing = true;
        }
        // A WAV file is a device whose clock is this thread's.
        if let Some(w) = wav.as_mut() {
            let want = start.elapsed().as_micros() as u64 * u64::from(SAMPLE_RATE) / 1_000_000;
            let n = want.saturating_sub(written) as usize;
            let mut fifo = s.fifo.lock().unwrap_or_else(|p| p.into_inner());
            let have = fifo.len().min(n);
            if playing && have < n && !fifo.is_empty() {
                s.starved.fetch_add((n - have) as u64, Ordering::Relaxed);
            }
            for v in fifo.drain(..have) {
                w.write_sample(v)
                    .map_err(|e| ClientError::Audio(format!("writing the WAV file: {e}")))?;
            }
            drop(fifo);
            for _ in have..n {
                w.write_sample(0i16)
                    .map_err(|e| ClientError::Audio(format!("writing the WAV file: {e}")))?;
            }
            written += n as u64;
        }
    }
    if let Some(w) = wav {
        w.finalize()
            .map_err(|e| ClientError::Audio(format!("finishing the WAV file: {e}")))?;
    }
    Ok(())
}

/// Where microphone samples come from.
enum MicSource {
    Tone(Tone),
    Wav {
        samples: Vec<i16>,
        pos: usize,
    },
    /// The system's microphone, opened on the microphone thread.
    #[cfg(feature = "sound")]
    Device,
}

impl MicSource {
    fn open(spec: &MicSpec) -> Result<Self, ClientError> {
        match spec {
            MicSpec::Off => Err(ClientError::Audio("the microphone is off".into())),
            MicSpec::Synthetic(hz) => Ok(Self::Tone(Tone::new(*hz, 0.3, SAMPLE_RATE))),
            MicSpec::Wav(p) => {
                let r = hound::WavReader::open(p)
                    .map_err(|e| ClientError::Audio(format!("opening {}: {e}", p.display())))?;
                let spec = r.spec();
                let ch = usize::from(spec.channels.max(1));
                let raw: Vec<i32> = match spec.sample_format {
                    hound::SampleFormat::Int => {
                        let shift = i32::from(spec.bits_per_sample).saturating_sub(16);
                        r.into_samples::<i32>()
                            .map(|s| s.map(|v| if shift >= 0 { v >> shift } else { v << -shift }))
                            .collect::<Result<_, _>>()
                    }
                    hound::SampleFormat::Float => r
                        .into_samples::<f32>()
                        .map(|s| s.map(|v| (v.clamp(-1.0, 1.0) * 32767.0) as i32))
                        .collect::<Result<_, _>>(),
                }
                .map_err(|e| ClientError::Audio(format!("reading {}: {e}", p.display())))?;
                let mono: Vec<i32> = raw
                    .chunks(ch)
                    .map(|f| f.iter().sum::<i32>() / f.len() as i32)
                    .collect();
                // To 48 kHz, linearly (a microphone recording, not music).
                let ratio = f64::from(spec.sample_rate) / f64::from(SAMPLE_RATE);
                let n = (mono.len() as f64 / ratio) as usize;
                let samples: Vec<i16> = (0..n)
                    .map(|i| {
                        let x = i as f64 * ratio;
                        let k = x as usize;
                        let a = f64::from(mono[k.min(mono.len() - 1)]);
                        let b = f64::from(mono[(k + 1).min(mono.len() - 1)]);
                        (a + (b - a) * (x - k as f64)).clamp(-32768.0, 32767.0) as i16
                    })
                    .collect();
                if samples.is_empty() {
                    return Err(ClientError::Audio(format!(
                        "{} holds no sound",
                        p.display()
                    )));
                }
                Ok(Self::Wav { samples, pos: 0 })
            }
            #[cfg(feature = "sound")]
            MicSpec::Default => {
                let (tx, _rx) = std::sync::mpsc::sync_channel(1);
                // The stream must live on the thread that reads it; opened
                // here only to fail early, then again on the thread.
                drop(device::open_input(tx)?);
                Ok(Self::Device)
            }
            #[cfg(not(feature = "sound"))]
            MicSpec::Default => Err(ClientError::Audio(
                "this companion was built without sound devices (feature `sound`); use \
                 --mic synthetic or --mic wav:FILE"
                    .into(),
            )),
        }
    }
}

/// The microphone thread: a frame every `frame_ms`, coded and sent.
fn mic(
    s: &Shared,
    session: &ClientSession,
    mut source: MicSource,
    mut enc: OpusEncoder,
) -> Result<(), ClientError> {
    let n = enc.frame_samples();
    let frame_us = (n / SAMPLES_PER_MS) as u64 * 1000;
    #[cfg(feature = "sound")]
    let (_input, device_rx) = match &source {
        MicSource::Device => {
            let (tx, rx) = std::sync::mpsc::sync_channel(64);
            (Some(device::open_input(tx)?), Some(rx))
        }
        _ => (None, None),
    };
    #[cfg(feature = "sound")]
    let mut pending: Vec<i16> = Vec::new();
    let start = Instant::now();
    let start_us = unix_us();
    let mut seq: u64 = 0;
    let mut frame = vec![0i16; n];
    while !s.stop.load(Ordering::Relaxed) {
        seq += 1;
        // A frame is complete when its last sample has been "recorded".
        let due = start + Duration::from_micros(seq * frame_us);
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let capture_us = start_us + (seq - 1) * frame_us;
        match &mut source {
            MicSource::Tone(t) => {
                frame.fill(0);
                t.add_to(&mut frame);
            }
            MicSource::Wav { samples, pos } => {
                for v in &mut frame {
                    *v = samples[*pos];
                    *pos = (*pos + 1) % samples.len();
                }
            }
            #[cfg(feature = "sound")]
            MicSource::Device => {
                if let Some(rx) = &device_rx {
                    pending.extend(rx.try_iter().flatten());
                }
                if pending.len() < n {
                    continue;
                }
                frame.copy_from_slice(&pending[..n]);
                pending.drain(..n);
                // Never more than a few frames behind the device.
                let excess = pending.len().saturating_sub(3 * n);
                pending.drain(..excess);
            }
        }
        match enc.encode(&frame) {
            Ok(Some(payload)) => {
                let f = AudioFrame {
                    seq,
                    capture_time_us: capture_us,
                    payload,
                };
                match session.send_audio(f) {
                    Ok(()) => s.mic_sent.fetch_add(1, Ordering::Relaxed),
                    Err(device_bridge::BridgeError::SessionEnded(_)) => return Ok(()),
                    Err(_) => s.mic_dropped.fetch_add(1, Ordering::Relaxed),
                };
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "a microphone frame did not encode"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_bad_ones_say_what_works() {
        assert_eq!("auto".parse::<AudioOut>(), Ok(AudioOut::Auto));
        assert_eq!(
            "out/heard.WAV".parse::<AudioOut>(),
            Ok(AudioOut::Wav("out/heard.WAV".into()))
        );
        assert!("speaker".parse::<AudioOut>().unwrap_err().contains(".wav"));
        assert_eq!("off".parse::<MicSpec>(), Ok(MicSpec::Off));
        assert_eq!(
            "synthetic".parse::<MicSpec>(),
            Ok(MicSpec::Synthetic(440.0))
        );
        assert_eq!(
            "synthetic:880".parse::<MicSpec>(),
            Ok(MicSpec::Synthetic(880.0))
        );
        assert_eq!(
            "wav:a b.wav".parse::<MicSpec>(),
            Ok(MicSpec::Wav("a b.wav".into()))
        );
        assert!(
            "synthetic:99999"
                .parse::<MicSpec>()
                .unwrap_err()
                .contains("20..20000")
        );
        assert!(
            "loud"
                .parse::<MicSpec>()
                .unwrap_err()
                .contains("synthetic[:HZ]")
        );
    }
}
