//! The sim phone's sound: what it plays (`streamAudio`), what it hears
//! (`injectAudio`), in the Android Emulator's formats.
//!
//! It plays a short tone for every finger that touches down, whose pitch
//! tells where: [`touch_tone_hz`] of the touch's x, so a test can check from
//! the decoded audio alone that the right sound came out for the right
//! touch; and, while a key is held, a steady quiet tone of that key
//! ([`key_tone_hz`]). Between sounds it plays silence: its stream never
//! blocks (the emulator's can, while the guest plays nothing).
//!
//! What it hears it measures: the level and the dominant frequency of the
//! last 100 ms, shown on the Sensor Lab screen ([`MicHeard`]).

use std::f32::consts::TAU;

use sensor_proto::emulator::{AudioFormat, AudioPacket, audio_format};
use tonic::Status;
use vphone_media::audio::{dominant_hz, level_dbfs};

/// How long a touch's tone lasts, µs.
pub const TOUCH_TONE_US: u64 = 150_000;
/// A touch tone's amplitude (0..1 of full scale): -9 dBFS RMS.
pub const TOUCH_TONE_AMPLITUDE: f32 = 0.5;
/// A held key's tone amplitude: quiet, -29 dBFS RMS.
pub const KEY_TONE_AMPLITUDE: f32 = 0.05;
/// How long a key press (down and up in one event) sounds, µs.
const KEY_PRESS_US: u64 = 100_000;
/// Fade in and out of every tone, µs (no clicks).
const FADE_US: f32 = 5_000.0;
/// Voices sounding at once at most (older ones are dropped).
const MAX_VOICES: usize = 32;
/// A packet of sound every this many µs, as the emulator does (20-30 ms).
pub const PACKET_US: u64 = 20_000;
/// The span the microphone meter measures, µs.
const METER_US: u64 = 100_000;

/// The pitch of the tone a touch at `x` on a screen `width` pixels wide
/// plays: 400 Hz at the left edge to 2000 Hz at the right edge, linearly.
#[must_use]
pub fn touch_tone_hz(x: f32, width: u32) -> f32 {
    let w = width.saturating_sub(1).max(1) as f32;
    400.0 + 1600.0 * (x / w).clamp(0.0, 1.0)
}

/// The pitch of a held key's tone: 200..590 Hz in 10 Hz steps, from the
/// key's name.
#[must_use]
pub fn key_tone_hz(key: &str) -> f32 {
    let h = key
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    200.0 + 10.0 * (h % 40) as f32
}

#[derive(Clone, Debug)]
struct Voice {
    hz: f32,
    amplitude: f32,
    start_us: u64,
    end_us: Option<u64>,
    key: Option<String>,
}

/// The phone's mixer: the tones sounding now and soon.
#[derive(Debug, Default)]
pub(super) struct Mixer {
    voices: Vec<Voice>,
}

impl Mixer {
    fn add(&mut self, v: Voice) {
        if self.voices.len() >= MAX_VOICES {
            self.voices.remove(0);
        }
        self.voices.push(v);
    }

    /// A finger touched down at `x`.
    pub(super) fn touch(&mut self, x: f32, width: u32, now_us: u64) {
        self.add(Voice {
            hz: touch_tone_hz(x, width),
            amplitude: TOUCH_TONE_AMPLITUDE,
            start_us: now_us,
            end_us: Some(now_us + TOUCH_TONE_US),
            key: None,
        });
    }

    /// A key went down (sounds until it goes up), up, or was pressed.
    pub(super) fn key(&mut self, key: &str, down: Option<bool>, now_us: u64) {
        match down {
            Some(true) => {
                if self
                    .voices
                    .iter()
                    .any(|v| v.key.as_deref() == Some(key) && v.end_us.is_none())
                {
                    return;
                }
                self.add(Voice {
                    hz: key_tone_hz(key),
                    amplitude: KEY_TONE_AMPLITUDE,
                    start_us: now_us,
                    end_us: None,
                    key: Some(key.to_owned()),
                });
            }
            Some(false) => {
                for v in &mut self.voices {
                    if v.key.as_deref() == Some(key) && v.end_us.is_none() {
                        v.end_us = Some(now_us.max(v.start_us + 2 * FADE_US as u64));
                    }
                }
            }
            None => self.add(Voice {
                hz: key_tone_hz(key),
                amplitude: KEY_TONE_AMPLITUDE,
                start_us: now_us,
                end_us: Some(now_us + KEY_PRESS_US),
                key: None,
            }),
        }
    }

    /// Renders `n` mono samples at `rate` Hz starting at Unix µs `t0_us`,
    /// as floats in -1..1, and forgets voices that ended before it.
    pub(super) fn render(&mut self, t0_us: u64, n: usize, rate: u32) -> Vec<f32> {
        self.voices
            .retain(|v| v.end_us.is_none_or(|e| e + 1_000_000 > t0_us));
        let mut out = vec![0.0f32; n];
        let step_us = 1e6 / rate as f64;
        for v in &self.voices {
            for (k, s) in out.iter_mut().enumerate() {
                let t = t0_us as f64 + k as f64 * step_us;
                let since = (t - v.start_us as f64) as f32;
                if since < 0.0 {
                    continue;
                }
                let until = v.end_us.map_or(f32::MAX, |e| (e as f64 - t) as f32);
                if until <= 0.0 {
                    continue;
                }
                let env = (since / FADE_US).min(until / FADE_US).min(1.0);
                *s += v.amplitude * env * (TAU * v.hz * since / 1e6).sin();
            }
        }
        out
    }
}

/// A requested output format, checked as the emulator checks it.
#[derive(Clone, Copy, Debug)]
pub(super) struct PcmFormat {
    pub(super) rate: u32,
    pub(super) stereo: bool,
    pub(super) u8: bool,
}

impl PcmFormat {
    pub(super) fn from_proto(f: &AudioFormat) -> Result<Self, Status> {
        let rate = if f.sampling_rate == 0 {
            44_100
        } else {
            f.sampling_rate
        };
        if !(8_000..=48_000).contains(&rate) {
            return Err(Status::invalid_argument(format!(
                "The sampling rate {rate} Hz was too high or low (8000..48000)"
            )));
        }
        let stereo = match audio_format::Channels::try_from(f.channels) {
            Ok(audio_format::Channels::Mono) => false,
            Ok(audio_format::Channels::Stereo) => true,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown channel layout {}",
                    f.channels
                )));
            }
        };
        let u8 = match audio_format::SampleFormat::try_from(f.format) {
            Ok(audio_format::SampleFormat::AudFmtU8) => true,
            Ok(audio_format::SampleFormat::AudFmtS16) => false,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown sample format {}",
                    f.format
                )));
            }
        };
        Ok(Self {
            rate: rate as u32,
            stereo,
            u8,
        })
    }

    fn bytes_per_frame(self) -> usize {
        (if self.u8 { 1 } else { 2 }) * (if self.stereo { 2 } else { 1 })
    }

    /// Mono floats to this format's bytes.
    pub(super) fn encode(self, mono: &[f32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(mono.len() * self.bytes_per_frame());
        for &s in mono {
            let s = s.clamp(-1.0, 1.0);
            for _ in 0..(if self.stereo { 2 } else { 1 }) {
                if self.u8 {
                    out.push(((s * 127.0) + 128.0).round() as u8);
                } else {
                    out.extend_from_slice(&((s * 32767.0).round() as i16).to_le_bytes());
                }
            }
        }
        out
    }

    /// This format's bytes to mono `i16` (channels averaged). A trailing
    /// partial frame is ignored.
    pub(super) fn decode(self, bytes: &[u8]) -> Vec<i16> {
        bytes
            .chunks_exact(self.bytes_per_frame())
            .map(|f| {
                let sample = |i: usize| -> i32 {
                    if self.u8 {
                        (i32::from(f[i]) - 128) << 8
                    } else {
                        i32::from(i16::from_le_bytes([f[2 * i], f[2 * i + 1]]))
                    }
                };
                if self.stereo {
                    ((sample(0) + sample(1)) / 2) as i16
                } else {
                    sample(0) as i16
                }
            })
            .collect()
    }

    /// The largest packet the phone takes: its whole 300 ms buffer.
    pub(super) fn max_packet_bytes(self) -> usize {
        self.rate as usize * 3 / 10 * self.bytes_per_frame()
    }
}

/// What the phone's microphone hears.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MicHeard {
    /// Level of the last 100 ms, dBFS.
    pub level_dbfs: f32,
    /// The dominant frequency of the last 100 ms, Hz (`None` when quiet).
    pub hz: Option<f32>,
    /// Packets received since the microphone was opened.
    pub packets: u64,
    /// A client is feeding the microphone now.
    pub active: bool,
}

/// The microphone's meter: the last 100 ms of what it heard.
#[derive(Debug)]
pub(super) struct Meter {
    rate: u32,
    window: std::collections::VecDeque<i16>,
    packets: u64,
}

impl Meter {
    pub(super) fn new(rate: u32) -> Self {
        Self {
            rate,
            window: std::collections::VecDeque::new(),
            packets: 0,
        }
    }

    /// Takes a packet's samples; returns what the meter shows now.
    pub(super) fn hear(&mut self, mono: &[i16]) -> MicHeard {
        self.packets += 1;
        let keep = (u64::from(self.rate) * METER_US / 1_000_000) as usize;
        self.window.extend(mono.iter().copied());
        while self.window.len() > keep {
            self.window.pop_front();
        }
        let pcm: Vec<i16> = self.window.iter().copied().collect();
        MicHeard {
            level_dbfs: level_dbfs(&pcm),
            hz: dominant_hz(&pcm, self.rate),
            packets: self.packets,
            active: true,
        }
    }
}

/// One packet of `pcm` mono floats in `format`, captured at `t0_us`.
pub(super) fn packet(
    format: &AudioFormat,
    pcm: PcmFormat,
    mono: &[f32],
    t0_us: u64,
) -> AudioPacket {
    AudioPacket {
        format: Some(*format),
        timestamp: t0_us,
        audio: pcm.encode(mono).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_touch_sounds_its_position_and_a_held_key_hums() {
        let mut m = Mixer::default();
        m.touch(0.0, 720, 1_000_000);
        m.touch(719.0, 720, 2_000_000);
        let rate = 48_000;
        let pcm = |m: &mut Mixer, t0| -> Vec<i16> {
            m.render(t0, 4800, rate)
                .iter()
                .map(|s| (s * 32767.0) as i16)
                .collect()
        };
        let left = pcm(&mut m, 1_020_000);
        assert!((dominant_hz(&left, rate).unwrap() - 400.0).abs() < 4.0);
        let right = pcm(&mut m, 2_020_000);
        assert!((dominant_hz(&right, rate).unwrap() - 2000.0).abs() < 4.0);
        // After the tones: silence.
        assert_eq!(dominant_hz(&pcm(&mut m, 2_300_000), rate), None);
        m.key("a", Some(true), 3_000_000);
        let hum = pcm(&mut m, 3_500_000);
        assert!((dominant_hz(&hum, rate).unwrap() - key_tone_hz("a")).abs() < 4.0);
        assert!(level_dbfs(&hum) < -25.0, "quiet");
        m.key("a", Some(false), 4_000_000);
        assert_eq!(dominant_hz(&pcm(&mut m, 4_100_000), rate), None);
    }

    #[test]
    fn formats_round_trip_and_bad_ones_are_refused() {
        let f = |rate, ch: audio_format::Channels, fmt: audio_format::SampleFormat| AudioFormat {
            sampling_rate: rate,
            channels: ch as i32,
            format: fmt as i32,
            mode: 0,
        };
        use audio_format::{Channels::*, SampleFormat::*};
        let pcm = PcmFormat::from_proto(&f(0, Stereo, AudFmtS16)).unwrap();
        assert_eq!(pcm.rate, 44_100);
        let mono = [0.5f32, -0.25, 0.0];
        let back = pcm.decode(&pcm.encode(&mono));
        assert_eq!(back, [16384, -8192, 0]);
        let pcm8 = PcmFormat::from_proto(&f(8000, Mono, AudFmtU8)).unwrap();
        assert_eq!(pcm8.decode(&pcm8.encode(&[0.5])), [(64 << 8)]);
        let e = PcmFormat::from_proto(&f(96_000, Mono, AudFmtS16)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(PcmFormat::from_proto(&f(48_000, Mono, AudFmtS16)).is_ok());
        let mut bad = f(48_000, Mono, AudFmtS16);
        bad.channels = 7;
        assert!(PcmFormat::from_proto(&bad).is_err());
    }
}
